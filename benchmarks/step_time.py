"""Time one training step of every rule against plain PyTorch backprop, in one process.

A step is zero_grad + forward + loss + backward + optimizer step (SGD, momentum 0.9, weight
decay 1e-4). "Plain BP" is the same architecture written as an ordinary nn.Module. Workloads
are timed in interleaved repetitions: every workload once per repetition, in a shuffled order,
so a slow spell of the machine hits all of them alike. A rule's ratio is the median over the
repetitions of (its step time / plain BP's step time in the same repetition), with the
interquartile range of those ratios beside it; the issue's targets are listed with the result.

    python benchmarks/step_time.py                     # CPU: MLP, ResNet-20 and the host overhead
    python benchmarks/step_time.py --workload mlp --reps 60 --rules fa,kp
    python benchmarks/step_time.py --device cuda --tag gpu   # writes benchmarks/results/step_time.{json,md}
    python benchmarks/step_time.py --workload overhead --compile default --tag cpu-compiled

``--compile MODE`` runs every model, plain BP's included, through ``torch.compile(mode=MODE)``
(``reduce-overhead``: CUDA graphs on a GPU); the ratios are then to compiled plain BP.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import types
from typing import Callable, NamedTuple

import torch
from torch import nn

from circuits import Training, zoo
from circuits.train import COMPILE_MODES, make_optimizer
from connectomes.geometry import xavier_uniform
from plasticity import make_rule

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "ifa", "pfa", "pfa-o"]
# variants that show what the fast routes buy: the paper's step-by-step ē route, and R kept as
# an explicit parameter (cheapest explicit order, no implicit closed form)
VARIANTS = {"pfa (explicit ē route)": ("pfa", {"route": "explicit"}, False),
            "pfa (R as parameter)": ("pfa", {}, False)}
REFERENCE_FA = "reference: FA as a minimal autograd.Function (no circuit)"
REFERENCE_FA_WT = "reference: the same Function with B = Wᵀ (no second matrix)"


class Workload(NamedTuple):
    circuit: Callable  # circuit factory, taking feedback=
    plain: Callable  # the same network as a plain nn.Module
    input_shape: tuple
    batch: int  # default batch size
    label: str
    steps_scale: float  # steps a repetition, as a multiple of --steps (at least 1)
    pfa_target: float | None  # issue 4's PFA/PFA-o target here; None: a diagnostic, no targets
    mlp_sizes: tuple | None = None  # an MLP's layer sizes: the minimal-FA reference rows run on it


MLP, TINY = (784, 512, 512, 10), (16, 16, 16, 10)
WORKLOADS = {
    "mlp": Workload(zoo.mlp, zoo.PlainMLP, (1, 28, 28), 64, "MLP 784-512-512-10", 1, 1.6, MLP),
    "resnet20": Workload(zoo.resnet20, lambda: zoo.PlainResNetCifar(20), (3, 32, 32), 128, "ResNet-20 on 32×32",
                         0.1, 1.25),
    # products that cost next to nothing: what is left is the host's own work a step (Python,
    # dispatch, kernel launches), which is what a small network's step costs on a GPU
    "overhead": Workload(lambda feedback=None: zoo.mlp(TINY, feedback=feedback), lambda: zoo.PlainMLP(TINY),
                         (16,), 4, "MLP 16-16-16-10 (the host's per-step overhead; no targets)", 5, None, TINY),
}


class _MinimalFA(torch.autograd.Function):
    """FA in the fewest Python lines PyTorch allows: y = x Wᵀ + b, e_in = δ Bᵀ (B: pre × post)."""

    @staticmethod
    def forward(ctx, x, W, b, B):
        ctx.save_for_backward(x, B)
        return nn.functional.linear(x, W, b)

    @staticmethod
    def backward(ctx, delta):
        x, B = ctx.saved_tensors
        e_in = nn.functional.linear(delta, B) if ctx.needs_input_grad[0] else None
        return e_in, delta.t().mm(x), delta.sum(0), None


class MinimalFAMLP(zoo.PlainMLP):
    """The plain MLP with FA written by hand as one small autograd.Function per layer that
    sends errors: what any PyTorch FA implementation pays, without the circuit runtime (a
    reference row for the MLP).

    ``transported=True`` hands the Function Wᵀ (a view of W) as its B: the same Python
    backward and the same products as BP, but no second matrix to read, so the two reference
    rows split FA's cost into the Function's own and that of reading B."""

    def __init__(self, sizes=MLP, transported=False):
        super().__init__(sizes)
        self.transported = transported
        g = torch.Generator().manual_seed(0)
        for i, layer in enumerate(self.layers[1:], start=1):  # FA's B: Glorot, pre × post
            if not transported:
                self.register_buffer(f"B{i}", xavier_uniform((layer.in_features, layer.out_features), g))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            if i == 0:  # the first layer sends no error: plain autograd
                x = layer(x)
            else:
                B = layer.weight.detach().t() if self.transported else getattr(self, f"B{i}")
                x = _MinimalFA.apply(x, layer.weight, layer.bias, B)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def make_step(model, optimizer, loss_fn, batches):
    it = iter(range(10**12))

    def step():
        x, y = batches[next(it) % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return step


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """``torch.compile(model, mode=mode)``, tracing a copy of the forward's code of its own. Dynamo
    keeps its graphs per code object, and every circuit runs ``CompiledCircuit.forward``: with
    the whole table compiled in one process, each call would first test the guards of the other
    circuits' graphs (measured: 1.3 ms a step where one compiled circuit takes 0.75)."""
    f = type(model).forward
    own = types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    model.forward = types.MethodType(own, model)
    return torch.compile(model, mode=mode)


def workloads(name, device, batch_size, rules=RULES, compile_mode=None):
    """{label: one training step} for plain PyTorch BP and each of ``rules`` on workload ``name``;
    each model's forward through ``torch.compile(mode=compile_mode)`` unless that is None."""
    return {label: build() for label, build in builders(name, device, batch_size, rules, compile_mode).items()}


def builders(name, device, batch_size, rules=RULES, compile_mode=None):
    """{label: a function that builds that workload's model and optimizer and returns one training
    step}, in the order ``workloads`` builds them (the memory benchmark builds each in turn)."""
    def run(model):
        return model if compile_mode is None else compiled(model, compile_mode)

    work = WORKLOADS[name]
    circuit_fn, plain_fn, shape = work.circuit, work.plain, work.input_shape
    training = Training(lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch_size, *shape, generator=g).to(device),
                torch.randint(0, 10, (batch_size,), generator=g).to(device)) for _ in range(4)]

    def plain_step():
        plain = plain_fn().to(device)
        opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return make_step(run(plain), opt, nn.functional.cross_entropy, batches)

    def reference_step(transported):
        ref = MinimalFAMLP(work.mlp_sizes, transported=transported).to(device)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return make_step(run(ref), ref_opt, nn.functional.cross_entropy, batches)

    def rule_step(rule, options, implicit):
        model = circuit_fn(feedback=make_rule(rule, **options)).compile(implicit_feedback=implicit).to(device)
        opt = make_optimizer(model, training)
        model.attach_optimizer(opt)
        return make_step(run(model), opt, model.loss, batches)

    out = {"plain PyTorch BP": plain_step}
    if work.mlp_sizes and "fa" in rules:
        for label, transported in ((REFERENCE_FA, False), (REFERENCE_FA_WT, True)):
            out[label] = lambda t=transported: reference_step(t)
    specs = [(r, r, {}, True) for r in rules] + [(k, *v) for k, v in VARIANTS.items() if v[0] in rules]
    for label, rule, options, implicit in specs:
        out[label] = lambda r=rule, o=options, i=implicit: rule_step(r, o, i)
    return out


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(steps, device, reps, per_rep, warmup):
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    times = {k: [] for k in steps}
    order = list(steps)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for k in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(per_rep):
                steps[k]()
            sync(device)
            times[k].append((time.perf_counter() - t0) / per_rep)
    return times


def git_commit() -> str | None:
    """The commit of the code being timed (with "+changes" if its code differs from it)."""
    try:
        root = os.path.dirname(HERE)  # the repository's root: pathspecs below cover all of its code
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", "*.py", "*.toml").strip()
        return run("rev-parse", "--short", "HEAD").strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def save_result(out: str, stem: str, key: str, record: dict, write_markdown: Callable[[dict, str], None]) -> None:
    """Put ``record`` under ``key`` in OUT/STEM.json, keeping the other keys (other devices,
    workloads, tags), written atomically (a temporary file, then a rename); then rewrite
    OUT/STEM.md from the whole file with ``write_markdown(data, path)``."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{stem}.json")
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[key] = record
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)
    write_markdown(data, os.path.join(out, f"{stem}.md"))


def targets(workload: str) -> dict[str, float]:
    """The speed targets of issue 4 (ratio to plain BP), by row label."""
    pfa = WORKLOADS[workload].pfa_target
    if pfa is None:
        return {}
    t = {"bp": 1.03, "fa": 1.10, "dfa": 1.10, "usf": 1.10, "frsf": 1.10, "kp": 1.10, "brsf": 1.25}
    return {**t, "pfa": pfa, "pfa-o": pfa}


def median_ci(values: list[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap confidence interval (percentile method, seeded) of the median of ``values``."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int((1 - level) / 2 * resamples)], medians[int((1 + level) / 2 * resamples) - 1]


def summarise(times: dict[str, list[float]]) -> dict[str, dict]:
    """Per workload: median and IQR of its step time, and the median, quartiles and a 95%
    bootstrap interval of the median of its paired ratio to plain BP (same repetition); the
    step times themselves (ms, one a repetition) are kept for any other reading."""
    base = times["plain PyTorch BP"]
    rows = {}
    for k, v in times.items():
        q = statistics.quantiles(v, n=4)
        ratios = [a / b for a, b in zip(v, base)]
        r = statistics.quantiles(ratios, n=4)
        rows[k] = {"median_ms": statistics.median(v) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3,
                   "ratio_to_plain_bp": statistics.median(ratios), "ratio_q1": r[0], "ratio_q3": r[2],
                   "ratio_ci95": median_ci(ratios), "times_ms": [round(t * 1e3, 4) for t in v]}
    return rows


def verdict(row: dict) -> str:
    """'met' or 'not met' when the 95% interval of the median ratio lies on one side of the
    target, 'within noise' when it holds the target (then the median says which side it leans)."""
    lo, hi = row.get("ratio_ci95", (row["ratio_to_plain_bp"],) * 2)
    if hi <= row["target"]:
        return "met"
    if lo > row["target"]:
        return "**not met**"
    return "within noise (" + ("met" if row["ratio_to_plain_bp"] <= row["target"] else "not met") + " by the median)"


def chosen_rules(ap, text: str) -> list[str]:
    """The comma-separated rules of ``--rules``; an unknown one is an argparse error naming it."""
    rules = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        ap.error(f"unknown rule(s) {', '.join(unknown)} (known: {', '.join(RULES)})")
    return rules


def state_workloads(choice: str, batch_size: int | None) -> list[tuple[str, int, str]]:
    """[(workload, batch, its description for a results file)] for ``--workload`` of the
    benchmarks that measure a step's state rather than its time (memory.py, flops.py): "all" is
    the MLP and ResNet-20 (the overhead MLP says nothing there)."""
    names = ["mlp", "resnet20"] if choice == "all" else [choice]
    out = []
    for name in names:
        batch = batch_size or WORKLOADS[name].batch
        out.append((name, batch, f"{WORKLOADS[name].label}, batch {batch}, SGD momentum 0.9, weight decay 1e-4"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="all", choices=[*WORKLOADS, "all"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated rules to time (default: all)")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=10, help="steps per repetition (MLP; ResNet-20 takes a tenth, at least 1; "
                         "the overhead MLP five times as many)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, help="default: 64 for the MLP, 128 for ResNet-20, 4 for the overhead MLP")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--compile", metavar="MODE", choices=[m for m in COMPILE_MODES if m],
                    help="torch.compile every model, plain BP's too, with this mode (default: eager)")
    ap.add_argument("--tag", default="cpu", help="key of this run in the results file")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    rules = chosen_rules(ap, args.rules)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (WORKLOADS if args.workload == "all" else [args.workload]):
        torch.manual_seed(0)
        batch = args.batch_size or WORKLOADS[name].batch
        per_rep = max(1, int(args.steps * WORKLOADS[name].steps_scale))
        steps = workloads(name, args.device, batch, rules, args.compile)
        print(f"{name}: {len(steps)} workloads × {args.reps} repetitions × {per_rep} steps", flush=True)
        rows = summarise(measure(steps, args.device, args.reps, per_rep, args.warmup))
        goal = targets(name)
        for k, row in rows.items():
            if k in goal:
                row["target"] = goal[k]
        device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                       else platform.processor() or platform.machine())
        save_result(args.out, "step_time", f"{name}-{args.tag}", {
            "workload": f"{WORKLOADS[name].label}, batch {batch}, SGD momentum 0.9, weight decay 1e-4",
            "device": args.device, "device_name": device_name, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "compile": args.compile, "reps": args.reps, "steps_per_rep": per_rep, "date": time.strftime("%Y-%m-%d"),
            "commit": git_commit(), "rows": rows}, write_markdown)
    print(open(os.path.join(args.out, "step_time.md")).read())


def write_markdown(data, path):
    lines = ["# Step time of each rule against plain PyTorch backprop", "",
             "Written by `benchmarks/step_time.py`. Every workload runs once per repetition, in a shuffled",
             "order; ratio = median over the repetitions of (step time / plain BP's step time in the same",
             "repetition), with the quartiles of that ratio and a 95% bootstrap interval of its median;",
             "target = issue 4's goal for the rule, met or not when that interval lies on one side of it.", ""]
    for key, r in data.items():
        lines += [f"## {key}: {r['workload']}", "",
                  f"{r['device']} ({r['device_name']}, {r['threads']} threads, {r['cpus']} CPUs), torch {r['torch']}"
                  + (f", torch.compile(mode={r['compile']!r}) for every model" if r.get("compile") else "")
                  + f", {r['reps']} × {r['steps_per_rep']} steps, {r['date']}"
                  + (f", commit {r['commit']}" if r.get("commit") else ""), "",
                  "| workload | median step (ms) | IQR (ms) | ratio to plain BP | 95% interval | ratio quartiles | target |",
                  "|---|---|---|---|---|---|---|"]
        for k, v in r["rows"].items():
            quart = f"{v['ratio_q1']:.2f}–{v['ratio_q3']:.2f}" if "ratio_q1" in v else ""
            ci = "{:.3f}–{:.3f}".format(*v["ratio_ci95"]) if "ratio_ci95" in v else ""
            target = f"≤ {v['target']:.2f} {verdict(v)}" if "target" in v else ""
            lines.append(f"| {k} | {v['median_ms']:.3f} | {v['iqr_ms']:.3f} | {v['ratio_to_plain_bp']:.3f} | {ci} | {quart} | {target} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
