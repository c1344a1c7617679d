"""IFA's one-time soft alignment: MNIST trained with fixed feedback B whose angle θ to W₀ᵀ is
set exactly at initialisation (0° = symmetric start, 90° = FA with B scaled to ‖W₀‖), for
θ = 0, 15, 30, 45, 60, 75, 90°: final test accuracy, the alignment at the start (which equals θ)
and at the end (W moves towards its fixed B).

The circuit and training are experiments/mnist_mlp.py's; each angle and seed trains in
WORK/ifa-θ-sSEED (an interrupted sweep resumes) and its metrics are copied to OUT/runs when it
ends; table, ifa_angle_sweep.json and ifa_angle_sweep.png go to OUT.

    python experiments/ifa_angle_sweep.py --data-root ../shared/data --seeds 0,1,2 \\
        --work runs/ifa --out docs/results/ifa_angle_sweep

``--probe-out DIR`` probes every finished run of the sweep whose checkpoint is in WORK and that
has no DIR/NAME/probes.json yet (``python -m probes`` with ``--probe-args``, by default the
settings of docs/results/ifa/angle_probes), then rewrites DIR's summary
(experiments/probe_results.py): the probes are taken while the checkpoints exist and committed
as small json files, so a machine that loses WORK loses nothing.
"""
from __future__ import annotations

import os
import statistics
import sys

from circuits.rundir import in_use
from circuits.run import load_experiment
from circuits.sweep import (final, mean_sd, run_cells_from_args, run_name, seeds_of, shard_of, sweep_parser,
                            training_note, write_report)
from plasticity import IFA

HERE = os.path.dirname(os.path.abspath(__file__))
ANGLES = (0, 15, 30, 45, 60, 75, 90)
PROJECTIONS = ("h1->h2", "h2->digits")
# the probes of docs/results/ifa/angle_probes (its note.txt)
PROBE_ARGS = "--hessian --landscape random --points 11 --corruptions --attacks --examples 1000 --matvecs 30 --ncv 30"


def probe_finished(cells: dict, histories: dict, args) -> list[str]:
    """Probe each finished run of this process's shard (checkpoint in WORK, not being written by
    another process) that has no PROBE_OUT/NAME/probes.json; returns the names probed. The shard's
    runs are those it trains (every N-th of the seed × cell order), so shards never probe one run
    twice."""
    import shlex

    from probes.__main__ import parse, probe_run

    work = args.work or os.path.join(args.out, "runs")
    k, n = shard_of(args)
    order = [(seed, cell) for seed in seeds_of(args) for cell in cells]
    done = []
    for seed, cell in (pair for i, pair in enumerate(order) if i % n == k):
        name = run_name(cell, seed)
        run_dir, out = os.path.join(work, name), os.path.join(args.probe_out, name)
        if (seed not in histories.get(cell, {}) or os.path.exists(os.path.join(out, "probes.json"))
                or in_use(run_dir) or not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))):
            continue  # not finished, probed already, being written, or its checkpoint is gone
        probe_run(run_dir, out, parse([run_dir, "--out", args.probe_out, "--data-root", args.data_root,
                                       *shlex.split(args.probe_args)]))
        print(f"{name}: probed into {out}", file=sys.stderr)
        done.append(name)
    return done


def initial_alignment(angle: float, seed: int) -> dict:
    """The alignment of each projection right after initialisation (before any step)."""
    circuit, _ = load_experiment(os.path.join(HERE, "mnist_mlp.py"))
    c = circuit.with_rule(IFA(angle=angle))
    c.seed = seed
    return {name: m["alignment_deg"] for name, m in c.compile().alignment().items() if "alignment_deg" in m}


def write(rows: list[dict], out: str, note: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = [r["angle"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].errorbar(angles, [100 * r["test_acc"] for r in rows], yerr=[100 * r["test_acc_sd"] for r in rows],
                     fmt="o-", capsize=3)
    axes[0].set_ylabel("final test accuracy (%), mean ± sd over seeds")
    for p in PROJECTIONS:
        axes[1].errorbar(angles, [r["final_alignment_deg"][p] for r in rows],
                         yerr=[r["final_alignment_sd"][p] for r in rows], fmt="o-", capsize=3, label=f"{p}, end of training")
    axes[1].plot(angles, angles, "k--", lw=1, label="at initialisation (= θ)")
    axes[1].set_ylabel("alignment of B to Wᵀ (deg)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("IFA initial angle θ (deg)")
        ax.grid(alpha=0.3)
    lines = ["# IFA: initial feedback angle against learning (MNIST)", "", note, "",
             "| θ (deg) | seeds | initial alignment h1→h2, h2→digits (deg) | final alignment h1→h2, h2→digits (deg) | "
             "final test accuracy (%) | epochs | wall time per run (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        a0, a1 = r["initial_alignment_deg"], r["final_alignment_deg"]
        lines.append(f"| {r['angle']:g} | {','.join(map(str, r['seeds']))} | {a0['h1->h2']:.2f}, {a0['h2->digits']:.2f} | "
                     f"{a1['h1->h2']:.1f}, {a1['h2->digits']:.1f} | {100 * r['test_acc']:.2f} ± {100 * r['test_acc_sd']:.2f} | "
                     f"{r['epochs']} | {r['seconds']:.0f} |")
    return write_report(out, "ifa_angle_sweep", {"rows": rows}, fig, lines,
                        "accuracy and alignment against the initial angle")


def summarize(angles, histories: dict, seeds) -> list[dict]:
    rows = []
    for a in angles:
        runs = histories.get(f"ifa-{a:g}", {})
        if not runs:
            continue
        row = {"angle": a, "seeds": sorted(runs), "epochs": min(len(h) for h in runs.values()),
               "test_acc_per_seed": [final(runs[s]) for s in sorted(runs)],
               "initial_alignment_deg": initial_alignment(a, min(runs)),
               "final_alignment_deg": {}, "final_alignment_sd": {},
               "seconds": statistics.fmean(sum(m.get("seconds", 0.0) for m in h) for h in runs.values())}
        row["test_acc"], row["test_acc_sd"] = mean_sd(row["test_acc_per_seed"])
        for p in PROJECTIONS:
            row["final_alignment_deg"][p], row["final_alignment_sd"][p] = mean_sd(
                final(h, "alignment_deg", p) for h in runs.values())
        rows.append(row)
    return rows


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "ifa_angle_sweep"))
    ap.add_argument("--angles", default=",".join(str(a) for a in ANGLES))
    ap.add_argument("--probe-out", metavar="DIR", help="probe each finished run into DIR/NAME (see above)")
    ap.add_argument("--probe-args", default=PROBE_ARGS, help=f"python -m probes options (default: {PROBE_ARGS!r})")
    args = ap.parse_args(argv)
    angles = [float(a) for a in args.angles.split(",")]
    cells = {f"ifa-{a:g}": IFA(angle=a) for a in angles}
    histories = run_cells_from_args(os.path.join(HERE, "mnist_mlp.py"), cells, args)
    rows = summarize(angles, histories, seeds_of(args))
    note = (f"Written by `experiments/ifa_angle_sweep.py --epochs {args.epochs or 40}` (seeds "
            f"{','.join(map(str, seeds_of(args)))}, circuit and training of experiments/mnist_mlp.py); mean ± sample "
            f"sd over the seeds; the initial alignment is the first seed's; wall time: the training epochs' seconds per "
            f"run; {training_note(histories)}.")
    print(write(rows, args.out, note))
    if args.probe_out and not args.report_only and probe_finished(cells, histories, args):
        import runpy
        runpy.run_path(os.path.join(HERE, "probe_results.py"))["main"]([args.probe_out])


if __name__ == "__main__":
    main()
