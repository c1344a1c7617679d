"""Why WM fails on LeNet where BP trains: WM's feedback B against controlled stand-ins for it.

WM (and PAL, which learns B the same way) diverge or stall on LeNet at every rate from 0.01 to
0.001 (docs/results/mnist_lenet/lr_selection/selection.md), although their B ends within 2–8°
of Wᵀ. Each variant below trains LeNet with WM's machinery (the mirror still runs) and differs
only in what B is after every optimizer step:

    wm           B as WM learns it (mirror rate 0.5: B follows W with a time constant of about
                 1 / (10 · lr · rate) steps, 200 at lr 0.001)
    wm-fast      mirror rate 5 (time constant 10× shorter, each estimate noisier)
    wm-quiet     mirror batch 1024 instead of 64 (16× the noise samples: a less noisy B)
    oracle       B := Wᵀ (backprop through the same code)
    late-oracle  WM's B in the first epoch, B := Wᵀ from the second on (is the state WM's first
                 epoch leaves the problem?)
    noisy        B := Wᵀ + fresh Gaussian noise each step, 0.1 ‖W‖ in norm (≈ 5.7°)
    lagT         no mirror, no noise: B += (Wᵀ − B) / T each step (B lags W by about T steps,
                 from WM's random start), e.g. lag200 (WM's lag at lr 0.001), lag20

    python experiments/lenet_feedback_probe.py wm oracle late-oracle noisy lag200 lag20 wm-fast wm-quiet \\
        --lr 0.001 --epochs 4 --data-root ../shared/data

Training: batch 64, SGD momentum 0.9, weight decay 1e-4, constant lr, the 50,000 training images
left after holding out 10,000 (the selection runs' split), seed 0 (the batches of the selection
run). Per epoch: the mean training loss, the validation accuracy and each projection's
alignment ∠(B, Wᵀ) (deg). A variant stops when its training loss exceeds 50 or is not finite.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from circuits import Training, zoo  # noqa: E402
from circuits import data as datasets  # noqa: E402
from circuits.train import evaluate_split, make_optimizer  # noqa: E402
from plasticity import make_rule, set_epoch_weight_decay  # noqa: E402

MIRROR = {"wm": {}, "wm-fast": {"rate": 5.0}, "wm-quiet": {"mirror_batch": 1024}, "oracle": {}, "late-oracle": {}}
NOISE = 0.1  # the noisy variant's noise norm relative to ‖W‖
BLOWN_UP = 50.0  # a training loss above this (chance is 2.30) ends a variant


def lag_of(variant: str) -> int | None:
    """T of a ``lagT`` variant, None for the others."""
    if variant.startswith("lag") and variant[3:].isdigit() and int(variant[3:]) >= 1:
        return int(variant[3:])
    return None


def check(variant: str) -> None:
    if variant not in MIRROR and variant != "noisy" and lag_of(variant) is None:
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(MIRROR)}, noisy, lagT (T ≥ 1 steps)")


@torch.no_grad()
def set_feedback(variant: str, epoch: int, projections: dict) -> None:
    """Overwrite B after an optimizer step as ``variant`` says (nothing for the WM variants)."""
    for p in projections.values():
        Wt = p.weight.transpose(0, 1)  # Wᵀ in feedback layout (pre × post × kernel)
        if variant == "oracle" or (variant == "late-oracle" and epoch >= 1):
            p.B.copy_(Wt)
        elif variant == "noisy":
            noise = torch.randn_like(Wt)
            p.B.copy_(Wt + noise * (NOISE * Wt.norm() / noise.norm()))
        elif lag_of(variant) is not None:
            p.B.add_(Wt - p.B, alpha=1.0 / lag_of(variant))


def probe(variant: str, splits: dict, args) -> None:
    options = MIRROR.get(variant, {"rate": 0.0})  # rate 0: the mirror moves B no more
    training = Training(data="mnist", batch_size=64, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    torch.manual_seed(args.seed)
    model = zoo.lenet(feedback=make_rule("wm", **options)).compile(seed=args.seed)
    optimizer = make_optimizer(model, training)
    model.attach_optimizer(optimizer)
    set_epoch_weight_decay(optimizer, 0)
    projections = {n: p for n, p in model.projections.items() if getattr(p, "B", None) is not None}
    set_feedback("oracle" if variant == "oracle" else "", 0, projections)
    start = time.time()
    for epoch in range(args.epochs):
        losses = []
        for step, (x, y) in enumerate(datasets.batches(splits["train"], 64, seed=args.seed, epoch=epoch)):
            optimizer.zero_grad()
            loss = model.loss(model(x), y)
            loss.backward()
            optimizer.step()
            set_feedback(variant, epoch, projections)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]) or losses[-1] > BLOWN_UP:
                print(f"{variant}: blew up in epoch {epoch + 1}, step {step} (training loss {losses[-1]:.4g})",
                      flush=True)
                return
        model.eval()
        val = evaluate_split(model, splits["val"], 1000)
        model.train()
        angles = ", ".join(f"{n} {m['alignment_deg']:.1f}" for n, m in model.alignment().items() if "alignment_deg" in m)
        print(f"{variant} epoch {epoch + 1}: training loss {sum(losses) / len(losses):.4f}, validation accuracy "
              f"{100 * val['acc']:.2f}%, alignment (deg) {angles} ({time.time() - start:.0f} s)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, help="only the first N training images (a quick check)")
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)
    for v in args.variants:
        check(v)
    splits = datasets.load("mnist", args.data_root, 10_000)
    if args.train_size:
        splits["train"] = splits["train"].head(args.train_size)
    print(f"# lenet_feedback_probe.py {' '.join(args.variants)} --lr {args.lr:g} --epochs {args.epochs} "
          f"--seed {args.seed}", flush=True)
    for v in args.variants:
        probe(v, splits, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
