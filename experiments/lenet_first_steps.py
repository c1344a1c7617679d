"""The first training steps of LeNet on MNIST for one rule, with or without the first epoch's
weight decay: the loss and each projection's ‖W‖ every 50 steps (the probe behind the LeNet page's
PFA-o finding, docs/results/mnist_lenet/README.md).

    python experiments/lenet_first_steps.py pfa-o --first-epoch-weight-decay 0.03 --data-root ../shared/data
    python experiments/lenet_first_steps.py pfa-o --first-epoch-weight-decay 0 --data-root ../shared/data
    python experiments/lenet_first_steps.py pfa-o --seeds 0,1,2,3,4,5,6,7 --data-root ../shared/data
    python experiments/lenet_first_steps.py wm --first-epoch-weight-decay 0 --steps 110 --every 10 --alignment \
        --data-root ../shared/data

With ``--seeds`` it probes each seed in turn and ends with one line per seed: the loss at the
last step (mean of the last 20 steps' losses) and the product of the projections' ‖W‖ relative
to its start (the network's gain; weight decay with momentum 0.9 shrinks W by about
10·lr·decay per step, 3·10⁻³ at lr 0.01 and decay 0.03, unless learning outpaces it).
"""
import argparse
import ast
import math

import torch

from circuits import Training, zoo
from circuits import data as datasets
from circuits.train import make_optimizer
from plasticity import make_rule, set_epoch_weight_decay


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rule")
    ap.add_argument("--first-epoch-weight-decay", type=float, default=0.03, help="0: none (weight decay 1e-4 from the start)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="comma-separated seeds to probe in turn (instead of --seed), with a summary")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a rule option (repeatable; a Python literal), e.g. --option rate=2 for wm")
    ap.add_argument("--every", type=int, default=50, help="print every K steps (default 50)")
    ap.add_argument("--alignment", action="store_true",
                    help="also print each projection's alignment (deg) and norm ratio of its feedback to Wᵀ")
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)
    splits = datasets.load("mnist", args.data_root, 0)
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    summary = [(seed, *probe(args, splits, seed)) for seed in seeds]
    if args.seeds:
        print(f"{args.rule}, first-epoch weight decay {args.first_epoch_weight_decay:g}, lr {args.lr:g}, "
              f"step {args.steps}:")
        for seed, loss, gain in summary:
            print(f"  seed {seed}: loss {loss:.3f} (mean of the last 20 steps), Π‖W‖ / start {gain:.3f}")
    return 0


def probe(args, splits, seed: int) -> tuple[float, float]:
    """Train ``args.steps`` steps with ``seed``, printing every 50; returns (mean loss of the last
    20 steps, Π‖W‖ over the projections relative to the start)."""
    training = Training(data="mnist", batch_size=64, lr=args.lr, momentum=0.9, weight_decay=1e-4,
                        first_epoch_weight_decay=args.first_epoch_weight_decay or None)
    torch.manual_seed(seed)
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    model = zoo.lenet(feedback=make_rule(args.rule, **options)).compile(seed=seed)
    optimizer = make_optimizer(model, training)
    model.attach_optimizer(optimizer)
    set_epoch_weight_decay(optimizer, 0)
    weights = {n: p.weight for n, p in model.projections.items() if getattr(p, "weight", None) is not None}
    gain = lambda: math.prod(w.norm().item() for w in weights.values())  # noqa: E731
    start, losses = gain(), []
    for step, (x, y) in enumerate(datasets.batches(splits["train"], 64, seed=seed, epoch=0)):
        optimizer.zero_grad()
        loss = model.loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            norms = {n: round(w.norm().item(), 3) for n, w in weights.items()}
            line = f"seed {seed} step {step}: loss {loss.item():.4f}, ‖W‖ {norms}"
            if args.alignment:
                line += ", alignment (deg, norm ratio) " + str({
                    n: (round(m["alignment_deg"]), round(m["norm_ratio"], 2))
                    for n, m in model.alignment().items() if "alignment_deg" in m})
            print(line, flush=True)
        if step == args.steps:
            break
    return sum(losses[-20:]) / len(losses[-20:]), gain() / start

if __name__ == "__main__":
    raise SystemExit(main())
