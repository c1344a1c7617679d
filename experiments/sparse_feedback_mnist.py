"""Sparse feedback on MNIST: FA, DFA, uSF and PFA with a fraction p of their feedback synapses
(a fixed random mask of density p; for PFA on both B and R, B's gain scaled by 1/√p so its
variance stays 1/N̄; W stays dense), p = 1, 0.5, 0.3, 0.17, 0.1, 0.05.

The circuit and training are experiments/mnist_mlp.py's (784-512-512-10 ReLU, batch 64, SGD
0.01, momentum 0.9, the paper's weight decay). Each (rule, p, seed) trains in WORK/RULE-pP-sSEED
(an interrupted sweep resumes) and its metrics are copied to OUT/runs/RULE-pP-sSEED when it ends; the table, sparse_feedback.json and sparse_feedback.png (final test
accuracy and h1→h2 alignment against density, mean ± sd over seeds) go to OUT.

    python experiments/sparse_feedback_mnist.py --data-root ../shared/data --seeds 0,1,2 \\
        --work runs/sparse --out docs/results/sparse_feedback
    python experiments/sparse_feedback_mnist.py --seeds 0,1,2 --report-only    # the page from OUT/runs
"""
from __future__ import annotations

import os
import statistics
import time

from circuits.sweep import final, mean_sd, run_cells_from_args, seeds_of, sweep_parser, write_report
from connectomes import FixedProbability
from plasticity import make_rule

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = ("fa", "dfa", "usf", "pfa")
DENSITIES = (1.0, 0.5, 0.3, 0.17, 0.1, 0.05)


def cells(rules=RULES, densities=DENSITIES, mask_seed: int = 1) -> dict:
    """{"RULE-pP": rule with a FixedProbability(P) connector on its feedback (none at P = 1)}."""
    return {f"{r}-p{p:g}": make_rule(r, connector=FixedProbability(p, seed=mask_seed) if p < 1 else None)
            for r in rules for p in densities}


def summarize(histories: dict, rules=RULES, densities=DENSITIES) -> dict:
    """One row per (rule, p): final test accuracy and alignments, mean ± sd over the seeds run."""
    rows = []
    for r in rules:
        for p in densities:
            runs = histories.get(f"{r}-p{p:g}", {})
            if not runs:
                continue
            row = {"rule": r, "density": p, "seeds": sorted(runs), "epochs": min(len(h) for h in runs.values()),
                   "test_acc_per_seed": [final(runs[s]) for s in sorted(runs)],
                   "seconds": statistics.fmean(sum(m.get("seconds", 0.0) for m in h) for h in runs.values())}
            row["test_acc"], row["test_acc_sd"] = mean_sd(row["test_acc_per_seed"])
            row["best_test_acc"], row["best_test_acc_sd"] = mean_sd(max(m["test_acc"] for m in h) for h in runs.values())
            for key, proj in (("alignment_h1_h2_deg", "h1->h2"), ("alignment_h2_digits_deg", "h2->digits")):
                row[key], row[key + "_sd"] = mean_sd(final(h, "alignment_deg", proj) for h in runs.values())
            rows.append(row)
    return {"rows": rows}


def write(result: dict, out: str, note: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, r in enumerate(dict.fromkeys(row["rule"] for row in rows)):
        mine = [row for row in rows if row["rule"] == r]
        ps = [row["density"] for row in mine]
        axes[0].errorbar(ps, [100 * row["test_acc"] for row in mine], yerr=[100 * row["test_acc_sd"] for row in mine],
                         fmt="o-", capsize=3, color=f"C{i}", label=r)
        if r != "dfa":  # DFA's feedback comes from the readout: no h1→h2 alignment to show
            axes[1].errorbar(ps, [row["alignment_h1_h2_deg"] for row in mine],
                             yerr=[row["alignment_h1_h2_deg_sd"] for row in mine], fmt="o-", capsize=3,
                             color=f"C{i}", label=r)
    for ax, label in [(axes[0], "final test accuracy (%), mean ± sd over seeds"),
                      (axes[1], "h1→h2 alignment to Wᵀ (deg)")]:
        ax.set_xscale("log")
        ax.set_xlabel("feedback density p")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lines = ["# Sparse feedback on MNIST", "", note, "",
             "| rule | density p | seeds | epochs | final test accuracy (%) | best-epoch test accuracy (%) | "
             "h1→h2 alignment (deg) | h2→digits alignment (deg) | wall time per run (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        a1, a2 = ("—" if row[k] != row[k] else f"{row[k]:.1f} ± {row[k + '_sd']:.1f}"
                  for k in ("alignment_h1_h2_deg", "alignment_h2_digits_deg"))
        lines.append(f"| {row['rule']} | {row['density']:g} | {','.join(map(str, row['seeds']))} | {row['epochs']} | "
                     f"{100 * row['test_acc']:.2f} ± {100 * row['test_acc_sd']:.2f} | "
                     f"{100 * row['best_test_acc']:.2f} ± {100 * row['best_test_acc_sd']:.2f} | {a1} | {a2} | {row['seconds']:.0f} |")
    return write_report(out, "sparse_feedback", result, fig, lines, "accuracy and alignment against feedback density")


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "sparse_feedback"))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--densities", default=",".join(f"{p:g}" for p in DENSITIES))
    args = ap.parse_args(argv)
    rules = tuple(r.strip() for r in args.rules.split(","))
    densities = tuple(float(p) for p in args.densities.split(","))
    start = time.time()
    histories = run_cells_from_args(os.path.join(HERE, "mnist_mlp.py"), cells(rules, densities), args)
    note = (f"Written by `experiments/sparse_feedback_mnist.py --epochs {args.epochs or 40}` "
            f"(seeds {','.join(map(str, seeds_of(args)))}, mask seed 1, circuit and training of "
            f"experiments/mnist_mlp.py); mean ± sample sd over the seeds; wall time: the training epochs' "
            f"seconds per run (this invocation: {time.time() - start:.0f} s, finished runs skipped).")
    print(write(summarize(histories, rules, densities), args.out, note))


if __name__ == "__main__":
    main()
