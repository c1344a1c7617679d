"""The first training steps of LeNet on MNIST for one rule, with or without the first epoch's
weight decay: the loss and each projection's ‖W‖ every 50 steps (the probe behind the LeNet page's
PFA-o finding, docs/results/mnist_lenet/README.md).

    python experiments/lenet_first_steps.py pfa-o --first-epoch-weight-decay 0.03 --data-root ../shared/data
    python experiments/lenet_first_steps.py pfa-o --first-epoch-weight-decay 0 --data-root ../shared/data
"""
import argparse

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
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)
    splits = datasets.load("mnist", args.data_root, 0)
    training = Training(data="mnist", batch_size=64, lr=args.lr, momentum=0.9, weight_decay=1e-4,
                        first_epoch_weight_decay=args.first_epoch_weight_decay or None)
    torch.manual_seed(args.seed)
    model = zoo.lenet(feedback=make_rule(args.rule)).compile(seed=args.seed)
    optimizer = make_optimizer(model, training)
    model.attach_optimizer(optimizer)
    set_epoch_weight_decay(optimizer, 0)
    for step, (x, y) in enumerate(datasets.batches(splits["train"], 64, seed=args.seed, epoch=0)):
        optimizer.zero_grad()
        loss = model.loss(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            norms = {n: round(p.weight.norm().item(), 3) for n, p in model.projections.items()
                     if getattr(p, "weight", None) is not None}
            print(f"step {step}: loss {loss.item():.4f}, ‖W‖ {norms}", flush=True)
        if step == args.steps:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
