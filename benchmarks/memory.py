"""Peak memory of one training step of every rule against plain PyTorch backprop.

The workloads are ``step_time.py``'s (the same models, batches, SGD with momentum 0.9 and weight
decay 1e-4; plain BP is the same architecture as an ordinary nn.Module). Each row is built in
turn, takes ``--warmup`` steps (so that gradients, momentum buffers and any rule state exist),
and then one measured step (zero_grad + forward + loss + backward + optimizer step). Reported:
the bytes held when the step starts (weights, feedback tensors, gradients, optimizer state),
the peak during the step, and the peak's ratio to plain BP's. The issue's target: ≤ 1.10 × BP
for every rule on its default route.

How it is measured:

- CPU: every allocation and free of PyTorch's CPU allocator, as ``torch.profiler`` records them
  (``profile_memory=True``), from before the model is built to the end of the measured step; the
  bytes live at any moment are the running sum, and the peak is its maximum inside the measured
  step. These are the sizes the tensors ask for, so a fixed sequence of ops gives the same bytes
  every run (ratios compare exactly, whatever the machine's load). Not chosen: the process's RSS
  (adds the allocator's caching and the OS's pages, and moves with other work), tracemalloc
  (does not see tensor memory). Scratch memory a library takes outside PyTorch's allocator (some
  oneDNN kernels) is not seen; it is the same for BP and the rules where they run the same kernels.
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of the
  measured step (every tensor of the process on that device).

The input batches are built once before every row (the same for all, not counted).

    python benchmarks/memory.py                                  # CPU: MLP and ResNet-20
    python benchmarks/memory.py --workload mlp --rules fa,pfa
    python benchmarks/memory.py --device cuda --tag gpu          # benchmarks/results/memory.{json,md}
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = step_time.RULES
TARGET = 1.10  # peak memory of a step, as a multiple of plain BP's (every rule, default route)
BASE = "plain PyTorch BP"
STEP = "circuits.benchmarks.memory: measured step"


def measure_cpu(build, warmup: int) -> dict:
    """{"held_bytes", "peak_bytes"} of one step after ``warmup`` steps, from the CPU allocator's
    events (the whole workload built inside the profiled session)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step = build()
        for _ in range(warmup):
            step()
        with record_function(STEP):
            step()
        del step
    events = list(prof.profiler.kineto_results.events())
    marks = [e for e in events if e.name() == STEP]
    if len(marks) != 1:
        raise RuntimeError(f"the profiler recorded {len(marks)} measured steps, not 1")
    start, end = marks[0].start_ns(), marks[0].start_ns() + marks[0].duration_ns()
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = held = peak = 0
    for e in memory:
        if e.start_ns() > end:
            break
        live += e.nbytes()
        if e.start_ns() < start:
            held = live
        else:
            peak = max(peak, live)
    return {"held_bytes": held, "peak_bytes": max(peak, held)}


def measure_cuda(build, warmup: int, device: str) -> dict:
    """{"held_bytes", "peak_bytes"} of one step on a CUDA device (the caching allocator's counts)."""
    torch.cuda.synchronize(device)
    step = build()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    held = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del step
    return {"held_bytes": held, "peak_bytes": peak}


def measure(name: str, device: str, batch: int, rules, warmup: int) -> dict[str, dict]:
    """{row label: held and peak bytes, peak's ratio to plain BP's (and the target for the rules)}."""
    rows = {}
    for label, build in step_time.builders(name, device, batch, rules).items():
        if label in (step_time.REFERENCE_FA, step_time.REFERENCE_FA_WT):
            continue  # the step-time reference rows say nothing of memory
        torch.manual_seed(0)
        rows[label] = (measure_cuda(build, warmup, device) if str(device).startswith("cuda")
                       else measure_cpu(build, warmup))
    base = rows[BASE]["peak_bytes"]
    for label, row in rows.items():
        row["ratio_to_plain_bp"] = row["peak_bytes"] / base
        if label in RULES:
            row["target"] = TARGET
            row["met"] = row["ratio_to_plain_bp"] <= TARGET
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="all", choices=[*step_time.WORKLOADS, "all"],
                    help="all: the MLP and ResNet-20")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated rules (default: all)")
    ap.add_argument("--batch-size", type=int, help="default: step_time.py's (MLP 64, ResNet-20 128)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tag", default="cpu", help="key of this run in the results file")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    rules = step_time.chosen_rules(ap, args.rules)
    for name, batch, described in step_time.state_workloads(args.workload, args.batch_size):
        print(f"{name}: batch {batch}", flush=True)
        rows = measure(name, args.device, batch, rules, args.warmup)
        step_time.save_result(args.out, "memory", f"{name}-{args.tag}", {
            "workload": described,
            "device": args.device,
            "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.machine(),
            "method": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else
                      "torch.profiler CPU allocator events (profile_memory=True)",
            "warmup": args.warmup, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "commit": step_time.git_commit(), "rows": rows}, write_markdown)
    print(open(os.path.join(args.out, "memory.md")).read())


def write_markdown(data: dict, path: str) -> None:
    lines = ["# Peak memory of a training step, each rule against plain PyTorch backprop", "",
             "Written by `benchmarks/memory.py` (the method is in its docstring). held = bytes held when the",
             "step starts (weights, feedback tensors, gradients, momentum); peak = most bytes live during",
             f"the step; ratio = peak / plain BP's peak; target ≤ {TARGET:.2f} for every rule on its default route.", ""]
    for key, run in data.items():
        lines += [f"## {key}: {run['workload']}", "",
                  f"{run['device']} ({run['device_name']}), {run['method']}, torch {run['torch']}, "
                  f"{run['warmup']} warm-up steps, {run['date']}, commit {run['commit']}", "",
                  "| workload | held (MB) | peak (MB) | ratio to plain BP | target |", "|---|---|---|---|---|"]
        for label, row in run["rows"].items():
            target = ""
            if "target" in row:
                target = f"≤ {row['target']:.2f} " + ("met" if row["met"] else "**not met**")
            lines.append(f"| {label} | {row['held_bytes'] / 1e6:.3f} | {row['peak_bytes'] / 1e6:.3f} | "
                         f"{row['ratio_to_plain_bp']:.3f} | {target} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
