"""How to keep Dale's principle through training: a projection after each step or a parametrisation.

784-512-512-10 ReLU MLP on MNIST trained by BP (plain PyTorch, the circuit's training settings:
batch 64, SGD lr 0.01, momentum 0.9, weight decay 1e-4), the hidden layers' cells 80% E / 20% I,
so W(h1→h2) and W(h2→out) have one sign per pre cell; W(pixels→h1) is signed (the inputs have
no cell type). Every arm starts from the same balanced draw (``connectomes.dale.balanced_init``):

    signed       no constraint, Glorot draw (the reference)
    projection   W trained as it is; after each step a synapse whose sign flipped is set to 0
                 (``Projection.enforce_dale``; Cornford et al.'s code for Song et al.'s networks)
    abs          W = s ⊙ |V|, V trained (a synapse that crosses zero comes back with |V|)
    relu         W = s ⊙ relu(V) (Song, Yang & Wang 2016): a synapse at V < 0 gets no gradient
    softplus     W = s ⊙ softplus(V): the gradient on V is ∂W · sigmoid(V), a per-synapse learning
                 rate of about |W| / 1 for small weights

    python benchmarks/dale_enforcement.py --data-root ../shared/data [--train-size 60000 --epochs 1]

Writes benchmarks/results/dale_enforcement.{json,md}: test accuracy after the epochs and the
median wall time of one training step per arm (one thread).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from circuits.data import batches, load  # noqa: E402
from connectomes.dale import balanced_init, project_signs_, sign_violations  # noqa: E402
from connectomes.geometry import Dense, xavier_uniform  # noqa: E402
from plasticity.base import seeded_generator  # noqa: E402
from populations import cell_signs  # noqa: E402

SIZES = (784, 512, 512, 10)
ARMS = ("signed", "projection", "abs", "relu", "softplus")


def initial(seed: int, dale: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """[(W₀, column signs or None)] per layer."""
    out = []
    for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:])):
        g = seeded_generator(seed, f"layer{i}", "W")
        signs = cell_signs({"E": 0.8, "I": 0.2}, n_in) if dale and i > 0 else None
        W = (xavier_uniform((n_out, n_in), g) if signs is None else
             balanced_init((n_out, n_in), signs, g, Dense().init_mean_square((n_out, n_in))))
        out.append((W, signs))
    return out


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class Net(torch.nn.Module):
    def __init__(self, arm: str, seed: int):
        super().__init__()
        self.arm = arm
        self.signs, self.V = [], torch.nn.ParameterList()
        for W, s in initial(seed, arm != "signed"):
            self.signs.append(s)
            if s is None or arm == "projection":
                V = W
            elif arm in ("abs", "relu"):
                V = W.abs()
            else:
                V = inverse_softplus(W.abs().clamp_min(1e-12))
            self.V.append(torch.nn.Parameter(V.clone()))
        self.b = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(n)) for n in SIZES[1:]])

    def weight(self, i: int) -> torch.Tensor:
        V, s = self.V[i], self.signs[i]
        if s is None or self.arm == "projection":
            return V
        mag = {"abs": torch.abs, "relu": torch.relu, "softplus": F.softplus}[self.arm](V)
        return mag * s.to(V.dtype)

    def forward(self, x):
        h = x.flatten(1)
        for i in range(len(self.V)):
            h = F.linear(h, self.weight(i), self.b[i])
            if i < len(self.V) - 1:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def project(self):
        if self.arm == "projection":
            for V, s in zip(self.V, self.signs):
                if s is not None:
                    project_signs_(V, s)

    def violations(self) -> int:
        with torch.no_grad():
            return sum(sign_violations(self.weight(i), s) for i, s in enumerate(self.signs) if s is not None)


def run(arm: str, splits: dict, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = Net(arm, seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    times = []
    for epoch in range(epochs):
        for x, y in batches(splits["train"], 64, seed=seed, epoch=epoch):
            t0 = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            net.project()
            times.append(time.perf_counter() - t0)
    with torch.no_grad():
        test = splits["test"]
        acc = float((net(test.x).argmax(1) == test.y).float().mean())
    zero = sum(int((net.weight(i) == 0).sum()) for i in (1, 2))
    total = sum(net.weight(i).numel() for i in (1, 2))
    return {"arm": arm, "test_acc": acc, "step_ms": 1000 * statistics.median(times), "steps": len(times),
            "sign_violations": net.violations(), "zero_fraction_hidden": zero / total}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    splits = load("mnist", args.data_root)
    train = splits["train"]
    train.x, train.y = train.x[:args.train_size], train.y[:args.train_size]
    rows = [run(a.strip(), splits, args.epochs, args.seed) for a in args.arms.split(",")]
    lines = ["# Dale's principle: projection after each step or a parametrisation", "",
             f"`python benchmarks/dale_enforcement.py --train-size {args.train_size} --epochs {args.epochs} "
             f"--seed {args.seed}`: BP on MNIST, 784-512-512-10, hidden cells 80% E / 20% I, one thread.", "",
             "| arm | test accuracy (%) | step (ms, median) | sign violations | zero hidden synapses |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {100 * r['test_acc']:.2f} | {r['step_ms']:.2f} | {r['sign_violations']} | "
                     f"{r['zero_fraction_hidden']:.3f} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dale_enforcement.json"), "w") as f:
        json.dump({"train_size": args.train_size, "epochs": args.epochs, "seed": args.seed, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "dale_enforcement.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
