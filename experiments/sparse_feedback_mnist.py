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

from circuits.sweep import compare, final, holm, mean_sd, run_cells_from_args, seeds_of, sweep_parser, training_note, write_report
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
    return {"rows": rows, "graceful": graceful(rows)}


def graceful(rows: list[dict]) -> list[dict]:
    """The claim that PFA degrades most gracefully, tested at each sparse density (p < 1) where PFA
    and another rule have runs: PFA's final test accuracy against the best other rule's (Welch's
    test over seeds, ``compare``: difference in pp, p-value, 90% interval), and each rule's drop
    from its own dense (p = 1) mean in pp. ``p_holm``: the p-value adjusted by Holm's method over
    the densities tested (those with two or more seeds on both sides; NaN at the others): with five
    independent tests, chance alone puts at least one below 0.05 in 1 − 0.95⁵ ≈ 23% of studies."""
    by = {(row["rule"], row["density"]): row for row in rows}
    out = []
    for p in sorted({row["density"] for row in rows if row["density"] < 1}, reverse=True):
        others = [row for row in rows if row["density"] == p and row["rule"] != "pfa"]
        if ("pfa", p) not in by or not others:
            continue
        best = max(others, key=lambda row: row["test_acc"])
        drops = {row["rule"]: 100 * (by[(row["rule"], 1.0)]["test_acc"] - row["test_acc"])
                 for row in rows if row["density"] == p and (row["rule"], 1.0) in by}
        out.append({"density": p, "best_other": best["rule"],
                    "pfa_vs_best_other": compare(by[("pfa", p)]["test_acc_per_seed"], best["test_acc_per_seed"]),
                    "drop_from_dense_pp": drops,
                    "smallest_drop": min(drops, key=drops.get) if drops else None})
    tested = [t for t in out if t["pfa_vs_best_other"]["order"] != "?"]
    for t, adjusted in zip(tested, holm([t["pfa_vs_best_other"]["p"] for t in tested])):
        t["p_holm"] = adjusted
    for t in out:
        t.setdefault("p_holm", float("nan"))
    return out


def graceful_lines(tests: list[dict]) -> list[str]:
    """Markdown: ``graceful``'s table and its count, or [] when no density has PFA and another rule."""
    if not tests:
        return []
    rules = list(dict.fromkeys(r for t in tests for r in t["drop_from_dense_pp"]))
    lines = ["", "## Does PFA degrade most gracefully? (computed from the rows above)", "",
             "Per sparse density: PFA's final test accuracy minus the best other rule's (Welch's t-test over "
             "seeds, its 90% interval; '>' / '<': p < 0.05, '≈': not significant, '?': fewer than two seeds), and "
             "each rule's drop from its own dense (p = 1) mean. Holm p: Welch's p adjusted by Holm's method "
             "for the number of densities tested (the chance of any false call among them stays below 0.05).", "",
             "| density p | best other rule | PFA − best other (pp) | 90% interval | Welch p | Holm p | " +
             " | ".join(f"{r} drop (pp)" for r in rules) + " | smallest drop |",
             "|---|---|---|---|---|---|" + "---|" * len(rules) + "---|"]
    for t in tests:
        c = t["pfa_vs_best_other"]
        interval, pvalue, adjusted = (("—", "—", "—") if c["order"] == "?" else
                                      (f"[{c['lo']:+.2f}, {c['hi']:+.2f}]", f"{c['p']:.3f}", f"{t['p_holm']:.3f}"))
        lines.append(f"| {t['density']:g} | {t['best_other']} | {c['diff']:+.2f} {c['order']} | {interval} | {pvalue} | "
                     f"{adjusted} | " +
                     " | ".join(f"{t['drop_from_dense_pp'][r]:.2f}" if r in t["drop_from_dense_pp"] else "—" for r in rules) +
                     f" | {t['smallest_drop'] or '—'} |")
    early = [t for t in tests if t["pfa_vs_best_other"]["order"] == "?"]
    tests = [t for t in tests if t not in early]  # the count is of densities with 2+ seeds on both sides
    highest = [t for t in tests if t["pfa_vs_best_other"]["diff"] > 0]
    significant = [t for t in tests if t["pfa_vs_best_other"]["order"] == ">"]
    after_holm = [t for t in significant if t["p_holm"] < 0.05]
    below = [t for t in tests if t["pfa_vs_best_other"]["order"] == "<"]
    smallest = [t for t in tests if t["smallest_drop"] == "pfa"]
    fmt = lambda ts: ", ".join(f"{t['density']:g}" for t in ts) or "none"  # noqa: E731
    lines += ["", f"PFA has the highest mean final accuracy at {len(highest)} of {len(tests)} sparse densities "
                  f"({fmt(highest)}), significantly (Welch p < 0.05) at {len(significant)} ({fmt(significant)}), "
                  f"{len(after_holm)} of them after Holm's correction for the {len(tests)} densities ({fmt(after_holm)}); "
                  f"significantly below another rule at {len(below)} ({fmt(below)}); the smallest drop from its dense "
                  f"self (point estimates, untested) at {len(smallest)} ({fmt(smallest)})."]
    if early:
        lines[-1] += f" Not counted (fewer than two seeds of PFA or of the best other rule): {fmt(early)}."
    return lines


def table_cell(row: dict, key: str, scale: float, digits: int) -> str:
    """A table cell: row[key] × scale, ± its sample sd where the row has two or more seeds; "—" for NaN."""
    if row[key] != row[key]:
        return "—"
    sd = f" ± {scale * row[key + '_sd']:.{digits}f}" if len(row["seeds"]) > 1 else ""
    return f"{scale * row[key]:.{digits}f}{sd}"


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
        lines.append(f"| {row['rule']} | {row['density']:g} | {','.join(map(str, row['seeds']))} | {row['epochs']} | "
                     f"{table_cell(row, 'test_acc', 100, 2)} | {table_cell(row, 'best_test_acc', 100, 2)} | "
                     f"{table_cell(row, 'alignment_h1_h2_deg', 1, 1)} | {table_cell(row, 'alignment_h2_digits_deg', 1, 1)} | "
                     f"{row['seconds']:.0f} |")
    lines += graceful_lines(result["graceful"])
    return write_report(out, "sparse_feedback", result, fig, lines, "accuracy and alignment against feedback density")


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "sparse_feedback"))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--densities", default=",".join(f"{p:g}" for p in DENSITIES))
    args = ap.parse_args(argv)
    rules = tuple(r.strip() for r in args.rules.split(","))
    densities = tuple(float(p) for p in args.densities.split(","))
    histories = run_cells_from_args(os.path.join(HERE, "mnist_mlp.py"), cells(rules, densities), args)
    note = (f"Written by `experiments/sparse_feedback_mnist.py --epochs {args.epochs or 40}` "
            f"(seeds {','.join(map(str, seeds_of(args)))}, mask seed 1, circuit and training of "
            f"experiments/mnist_mlp.py); mean ± sample sd over the seeds; wall time: the training epochs' "
            f"seconds per run; {training_note(histories)}.")
    print(write(summarize(histories, rules, densities), args.out, note))


if __name__ == "__main__":
    main()
