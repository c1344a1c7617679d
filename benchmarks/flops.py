"""Floating-point operations of one training step of every rule against plain PyTorch backprop.

The workloads are ``step_time.py``'s (the same models, batches and optimizer). Each row is built
in turn, takes one warm-up step (so that every rule's state exists), and its next step (forward,
loss, backward, optimizer step) runs under ``torch.utils.flop_counter.FlopCounterMode``, which
counts the FLOPs of the matrix products and convolutions that reach the dispatcher (forward and
backward alike; elementwise ops, the noise draws and the optimizer's updates are not counted: on
these workloads they are a small part of the work). The count is a property of the code, not of
the machine: the same every run.

Why: a rule whose step does more products than BP's cannot take BP's time. Beside the FLOP
ratio the table puts the measured time ratio of the same row from ``results/step_time.json``
(the tag given by ``--time-tag``), so that a gap in time is either the rule's own arithmetic
(time ratio ≈ FLOP ratio) or overhead to remove (time ratio well above it).

    python benchmarks/flops.py                           # MLP and ResNet-20, every rule
    python benchmarks/flops.py --workload mlp --rules wm,pal
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "plain PyTorch BP"


def count(build) -> int:
    """FLOPs of one step after a warm-up step."""
    step = build()
    step()
    with FlopCounterMode(display=False) as mode:
        step()
    return int(mode.get_total_flops())


def measure(name: str, batch: int, rules) -> dict[str, dict]:
    """{row label: {"flops", "ratio_to_plain_bp"}} on the CPU."""
    rows = {}
    for label, build in step_time.builders(name, "cpu", batch, rules).items():
        torch.manual_seed(0)
        rows[label] = {"flops": count(build)}
    base = rows[BASE]["flops"]
    for row in rows.values():
        row["ratio_to_plain_bp"] = row["flops"] / base
    return rows


def time_ratios(out: str, key: str) -> dict[str, float]:
    """{row label: median step-time ratio to plain BP} from OUT/step_time.json[key], if recorded."""
    path = os.path.join(out, "step_time.json")
    if not os.path.exists(path):
        return {}
    run = json.load(open(path)).get(key, {})
    return {label: row["ratio_to_plain_bp"] for label, row in run.get("rows", {}).items() if "ratio_to_plain_bp" in row}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="all", choices=[*step_time.WORKLOADS, "all"], help="all: the MLP and ResNet-20")
    ap.add_argument("--rules", default=",".join(step_time.RULES), help="comma-separated rules (default: all)")
    ap.add_argument("--batch-size", type=int, help="default: step_time.py's (MLP 64, ResNet-20 128)")
    ap.add_argument("--time-tag", default="cpu", help="step_time.json's tag whose time ratios go beside (WORKLOAD-TAG)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    rules = step_time.chosen_rules(ap, args.rules)
    for name, batch, described in step_time.state_workloads(args.workload, args.batch_size):
        print(f"{name}: batch {batch}", flush=True)
        rows = measure(name, batch, rules)
        times = time_ratios(args.out, f"{name}-{args.time_tag}")
        for label, row in rows.items():
            if label in times:
                row["time_ratio"] = times[label]
        step_time.save_result(args.out, "flops", name, {
            "workload": described,
            "method": "torch.utils.flop_counter.FlopCounterMode (matrix products and convolutions)",
            "time_source": f"step_time.json {name}-{args.time_tag}" if times else None,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "commit": step_time.git_commit(),
            "rows": rows}, write_markdown)
    print(open(os.path.join(args.out, "flops.md")).read())


def write_markdown(data: dict, path: str) -> None:
    lines = ["# FLOPs of a training step, each rule against plain PyTorch backprop", "",
             "Written by `benchmarks/flops.py` (the method is in its docstring): GFLOP of one step's matrix products",
             "and convolutions (forward, backward and the rule's own feedback work), its ratio to plain BP's, and",
             "beside it the measured step-time ratio of the same row (`step_time.md`), so that a time gap is read",
             "as the rule's arithmetic (time ratio ≈ FLOP ratio) or as overhead (time ratio well above it).", ""]
    for key, run in data.items():
        lines += [f"## {key}: {run['workload']}", "",
                  f"{run['method']}, torch {run['torch']}, {run['date']}, commit {run['commit']}; time ratios from "
                  f"{run['time_source'] or '(none recorded)'}", "",
                  "| workload | GFLOP per step | FLOP ratio to plain BP | time ratio to plain BP |", "|---|---|---|---|"]
        for label, row in run["rows"].items():
            t = f"{row['time_ratio']:.3f}" if "time_ratio" in row else ""
            lines.append(f"| {label} | {row['flops'] / 1e9:.3f} | {row['ratio_to_plain_bp']:.3f} | {t} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
