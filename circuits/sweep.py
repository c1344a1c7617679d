"""Grids of training runs for the experiment scripts: one experiment file, its circuit trained
with several rule variants (a sparse connector, an IFA angle, a mixture...). Each cell trains
into its own run directory ``OUT/runs/CELL``; a finished cell is skipped and a stopped one
resumed from its checkpoint, so an interrupted sweep continues where it stopped."""
from __future__ import annotations

import json
import os
import sys

from circuits.run import load_experiment, started_run
from circuits.rundir import sha256_file
from circuits.train import train
from plasticity import Rule


def run_cells(file: str, cells: dict[str, Rule], out: str, *, data_root: str, seed: int = 0,
              epochs: int | None = None, sets: dict | None = None, device: str = "cpu",
              progress: bool = True) -> dict[str, list[dict]]:
    """Train ``file``'s circuit once per cell with the cell's rule on every plastic projection;
    training settings are the file's, resolved for the rule (``per_rule``), then ``sets`` and
    ``epochs``. Returns {cell: metrics per epoch}."""
    circuit, training = load_experiment(file)
    histories = {}
    for cell, rule in cells.items():
        c = circuit.with_rule(rule)
        c.seed = seed
        t = training.resolve(rule.name).with_values(dict(sets or {}))
        if epochs is not None:
            t = t.with_values({"epochs": epochs}, where="epochs")
        run_dir = os.path.join(out, "runs", cell)
        resume, finished = started_run(run_dir, t.epochs)
        if finished is not None:
            histories[cell] = finished
            continue
        invocation = {"file": os.path.abspath(file), "sha256": sha256_file(file), "rule": rule.name, "rule_options": rule.describe(),
                      "seed": seed, "sets": dict(sets or {}), "cell": cell}
        histories[cell] = train(c, t, rule=rule.name, run_dir=run_dir, data_root=data_root, seed=seed,
                                device=device, progress=progress, resume=resume, invocation=invocation)
        last = histories[cell][-1] if histories[cell] else {}
        print(f"{cell}: {len(histories[cell])} epochs, test accuracy {last.get('test_acc', float('nan')):.4f}",
              file=sys.stderr)
    return histories


def final(history: list[dict], key: str = "test_acc", projection: str | None = None):
    """The last epoch's value of ``key`` (of one projection's metrics if ``projection``)."""
    if not history:
        return float("nan")
    last = history[-1]
    if projection is not None:
        return last.get("projections", {}).get(projection, {}).get(key, float("nan"))
    return last.get(key, float("nan"))


def sweep_parser(description: str, default_out: str):
    """The command-line options every sweep script shares (its own are added by the caller)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--epochs", type=int, help="epochs per run (default: the experiment file's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run_cells_from_args(file: str, cells: dict[str, Rule], args) -> dict[str, list[dict]]:
    """``run_cells`` with the options of ``sweep_parser``."""
    from circuits.run import parse_sets

    return run_cells(file, cells, args.out, data_root=args.data_root, seed=args.seed, epochs=args.epochs,
                     sets=parse_sets(args.set), device=args.device, progress=not args.no_progress)


def write_report(out: str, stem: str, data: dict, fig, lines: list[str], caption: str) -> str:
    """Write a sweep's results to ``out``: STEM.json (``data``), STEM.png (the matplotlib
    ``fig``, closed afterwards) and STEM.md (``lines``, then the figure under ``caption``), each
    atomically (a temporary file, then a rename). Returns the markdown."""
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, stem)

    def replace(suffix, write):
        tmp = f"{path}.tmp{suffix}"  # matplotlib picks the format from the suffix
        write(tmp)
        os.replace(tmp, path + suffix)

    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
    replace(".json", dump)
    fig.tight_layout()
    replace(".png", lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    text = "\n".join([*lines, "", f"![{caption}]({stem}.png)", ""])

    def markdown(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    replace(".md", markdown)
    return text
