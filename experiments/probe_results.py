"""One page from the probes of several trained runs (``python -m probes``): the curvature,
robustness and landscape of each rule side by side.

Reads DIR/NAME/probes.json for every NAME under DIR (as ``python -m probes RUN ... --out DIR``
writes them) and writes DIR/summary.md (table), DIR/summary.json (the table's numbers) and
DIR/summary.png (Hessian trace and top eigenvalue per run; accuracy against corruption severity,
averaged over the corruptions; accuracy against the PGD L∞ and L2 budgets) and, for runs probed
with ``--over-training``, DIR/summary_over_training.png and a table of the Hessian at each kept
epoch, and, where a run name was probed for two or more seeds (NAME-sSEED), the mean ± sd over
them, and, where the run names are one sweep (PREFIX-VALUE-sSEED with a number VALUE: the IFA angle
sweep's ifa-θ-sS), DIR/summary_sweep.png: each measure against VALUE, every seed as a dot and the
mean ± sd over seeds; regenerated from the committed probes.json files alone (the text under the
title from ROOT/note.txt):

    python experiments/probe_results.py docs/results/ifa/probes
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics

import numpy as np

from circuits.sweep import write_report


def load(root: str) -> dict:
    out = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "probes.json")
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
    if not out:
        raise SystemExit(f"no NAME/probes.json under {root}")
    return out


def summary(results: dict) -> dict:
    rows = {}
    for name, r in results.items():
        h, c, a = r.get("hessian"), r.get("corruptions"), r.get("attacks")
        row = {"rule": r["rule"], "seed": r["seed"], "examples": r["examples"],
               "weight_norm": float(np.sqrt(sum(v ** 2 for v in r.get("weight_norms", {}).values())))
               if r.get("weight_norms") else float("nan")}
        if h:
            row.update(trace=h["trace"]["trace"], trace_stderr=h["trace"]["stderr"], top=h["top_eigenvalues"][0],
                       second=h["top_eigenvalues"][1] if len(h["top_eigenvalues"]) > 1 else float("nan"))
        if c:
            kinds = [k for k in c if k != "clean"]
            row.update(clean=c["clean"], corrupted_by_severity=[float(np.mean([c[k][s] for k in kinds])) for s in range(5)],
                       corrupted_mean=float(np.mean([c[k] for k in kinds])))
        if a:
            row.update(budgets=a["budgets"], attacks=a["accuracy"])
        if r.get("hessian_over_training"):
            t = r["hessian_over_training"]
            row["over_training"] = {"epochs": t["epochs"], "trace": t["trace"], "stderr": t["stderr"],
                                    "top": [v[0] for v in t["top_eigenvalues"]], "weight_norm": t["weight_norm"]}
        rows[name] = row
    return rows


def write(rows: dict, out: str, note: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(k in r for r in rows.values() for k in ("trace", "clean", "attacks")):
        # only the Hessian over training was probed: its figure is the page's
        lines, fig = over_training(rows)
        return write_report(out, "summary", {"rows": rows}, fig, ["# Probes of trained runs", "", note, *lines],
                            "Hessian trace, λ₁ and ‖W‖ against the epoch, per run")
    names = list(rows)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    x = np.arange(len(names))
    if all("trace" in rows[n] for n in names):
        axes[0].bar(x, [rows[n]["trace"] for n in names], yerr=[rows[n]["trace_stderr"] for n in names])
        axes[1].bar(x, [rows[n]["top"] for n in names])
    for ax, label in [(axes[0], "Hessian trace"), (axes[1], "largest Hessian eigenvalue")]:
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(label)
    for i, n in enumerate(names):
        r = rows[n]
        if "clean" in r:
            axes[2].plot(range(0, 6), [100 * r["clean"], *[100 * v for v in r["corrupted_by_severity"]]], "o-", ms=3,
                         color=f"C{i % 10}", label=n)
        if "attacks" in r:
            axes[3].plot(r["budgets"]["pgd_linf"], [100 * v for v in r["attacks"]["pgd_linf"]], "o-", ms=3,
                         color=f"C{i % 10}", label=n)
    axes[2].set(xlabel="corruption severity (0: clean; mean over the 10 kinds)", ylabel="test accuracy (%)")
    axes[3].set(xlabel="PGD L∞ budget ε (pixel units)", ylabel="test accuracy (%)")
    axes[2].legend(fontsize=6)
    axes[3].legend(fontsize=6)
    lines = ["# Probes of trained runs", "", note, "",
             "| run | rule | seed | ‖W‖ (all forward weights) | Hessian trace | λ₁ | λ₂ | clean accuracy | "
             "mean corrupted accuracy | FGSM ε=0.1 | PGD L∞ ε=0.1 | PGD L2 ε=1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def at(r, kind, eps):
        accuracy = attack_accuracy(r, kind, eps)
        return "—" if accuracy is None else f"{100 * accuracy:.1f}%"

    for n, r in rows.items():
        trace = f"{r['trace']:.2f} ± {r['trace_stderr']:.2f}" if "trace" in r else "—"
        l1 = f"{r['top']:.3f}" if "top" in r else "—"
        l2 = f"{r['second']:.3f}" if "second" in r else "—"
        clean = f"{100 * r['clean']:.1f}%" if "clean" in r else "—"
        corr = f"{100 * r['corrupted_mean']:.1f}%" if "corrupted_mean" in r else "—"
        norm = "—" if r["weight_norm"] != r["weight_norm"] else f"{r['weight_norm']:.1f}"
        lines.append(f"| {n} | {r['rule']} | {r['seed']} | {norm} | {trace} | {l1} | {l2} | {clean} | {corr} | "
                     f"{at(r, 'fgsm', 0.1)} | {at(r, 'pgd_linf', 0.1)} | {at(r, 'pgd_l2', 1.0)} |")
    lines += seed_means(rows)
    lines += sweep_figure(rows, out)
    more, over_fig = over_training(rows)
    if over_fig is not None:
        tmp = os.path.join(out, "summary_over_training.tmp.png")
        over_fig.savefig(tmp, dpi=120)
        os.replace(tmp, os.path.join(out, "summary_over_training.png"))
        plt.close(over_fig)
        more += ["![Hessian trace, λ₁ and ‖W‖ against the epoch, per run](summary_over_training.png)", ""]
    return write_report(out, "summary", {"rows": rows}, fig, lines + more, "curvature and robustness per run")


def attack_accuracy(row: dict, kind: str, eps: float) -> float | None:
    """A summary row's accuracy under attack ``kind`` at budget ``eps``; None where not probed."""
    if "attacks" not in row or eps not in row["budgets"][kind]:
        return None
    return row["attacks"][kind][row["budgets"][kind].index(eps)]


def seed_means(rows: dict) -> list[str]:
    """Markdown: mean ± sample sd over the seeds of each run name without its -sSEED (the sweeps'
    run_name; only where two or more seeds were probed), of the table's numbers. The suffix
    stripped is the run's own recorded seed, so a folder named otherwise stays on its own."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for name, r in rows.items():
        groups.setdefault(name.removesuffix(f"-s{r['seed']}"), []).append(r)
    groups = {g: rs for g, rs in groups.items() if len(rs) > 1}
    if not groups:
        return []

    def cell(rs, value, scale=1.0, digits=2):
        vals = [scale * v for v in (value(r) for r in rs) if v is not None and v == v]
        if len(vals) < 2:
            return "—"
        return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"

    def attack(kind, eps):
        return lambda r: attack_accuracy(r, kind, eps)

    lines = ["", "Mean ± sample sd over the seeds probed:", "",
             "| runs | seeds | ‖W‖ | Hessian trace | λ₁ | clean (%) | mean corrupted (%) | FGSM ε=0.1 (%) | "
             "PGD L∞ ε=0.1 (%) | PGD L2 ε=1 (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g, rs in groups.items():
        lines.append(f"| {g} | {','.join(str(r['seed']) for r in rs)} | {cell(rs, lambda r: r['weight_norm'], digits=1)} | "
                     f"{cell(rs, lambda r: r.get('trace'))} | {cell(rs, lambda r: r.get('top'), digits=3)} | "
                     f"{cell(rs, lambda r: r.get('clean'), 100, 1)} | {cell(rs, lambda r: r.get('corrupted_mean'), 100, 1)} | "
                     f"{cell(rs, attack('fgsm', 0.1), 100, 1)} | {cell(rs, attack('pgd_linf', 0.1), 100, 1)} | "
                     f"{cell(rs, attack('pgd_l2', 1.0), 100, 1)} |")
    return lines


SWEEP_MEASURES = (("trace", "Hessian trace", 1.0), ("top", "largest Hessian eigenvalue λ₁", 1.0),
                  ("weight_norm", "‖W‖ (all forward weights)", 1.0),
                  ("corrupted_mean", "mean corrupted accuracy (%)", 100.0),
                  (("fgsm", 0.1), "FGSM ε=0.1 accuracy (%)", 100.0), (("pgd_linf", 0.1), "PGD L∞ ε=0.1 accuracy (%)", 100.0))


# the x-axis label of a sweep's figure by its run-name prefix (default: "VALUE in PREFIX-VALUE-sSEED")
SWEEP_LABELS = {"ifa": "IFA's angle θ between B and W₀ᵀ (degrees)"}


def sweep_values(rows: dict):
    """(prefix, {value: [row per seed]}) when every run name is PREFIX-VALUE-sSEED with one PREFIX,
    a number VALUE and the run's recorded seed, and there are two or more values; else None."""
    prefixes, groups = set(), {}
    for name, r in rows.items():
        m = re.fullmatch(r"(.+)-(-?[0-9.]+)-s" + str(r["seed"]), name)
        if not m:
            return None
        try:
            value = float(m.group(2))
        except ValueError:
            return None
        prefixes.add(m.group(1))
        groups.setdefault(value, []).append(r)
    if len(prefixes) != 1 or len(groups) < 2:
        return None
    return prefixes.pop(), dict(sorted(groups.items()))


def sweep_figure(rows: dict, out: str) -> list[str]:
    """Write DIR/summary_sweep.png (each of SWEEP_MEASURES against the sweep's value: every seed a
    dot, the mean ± sample sd over seeds a line) and return its markdown, or [] when the runs are not
    one sweep (``sweep_values``)."""
    import matplotlib.pyplot as plt

    sweep = sweep_values(rows)
    if sweep is None:
        return []
    prefix, groups = sweep

    def measure(r, key):
        if isinstance(key, tuple):
            return attack_accuracy(r, *key)
        v = r.get(key)
        return None if v is None or v != v else v

    fig, axes = plt.subplots(1, len(SWEEP_MEASURES), figsize=(3.2 * len(SWEEP_MEASURES), 3.4))
    for ax, (key, label, scale) in zip(axes, SWEEP_MEASURES):
        xs, means, sds = [], [], []
        for value, rs in groups.items():
            vals = [scale * v for v in (measure(r, key) for r in rs) if v is not None]
            ax.plot([value] * len(vals), vals, ".", color="0.6", ms=5)
            if vals:
                xs.append(value)
                means.append(statistics.fmean(vals))
                sds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.errorbar(xs, means, yerr=sds, fmt="o-", ms=4, capsize=3, color="C0")
        ax.set(xlabel=SWEEP_LABELS.get(prefix, f"VALUE in {prefix}-VALUE-sSEED"), ylabel=label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = os.path.join(out, "summary_sweep.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, os.path.join(out, "summary_sweep.png"))
    plt.close(fig)
    seeds = sorted({r["seed"] for rs in groups.values() for r in rs})
    lines = ["", f"Against the sweep value ({SWEEP_LABELS.get(prefix, 'VALUE in ' + prefix + '-VALUE-sSEED')}): "
                 "Spearman's rank correlation over every probed run (each seed a point), its two-sided p-value, and the "
                 "mean over seeds at the smallest and the largest value.", "",
             "| measure | runs | Spearman ρ | p | mean at smallest value | mean at largest value |", "|---|---|---|---|---|---|"]
    for key, label, scale in SWEEP_MEASURES:
        points = [(value, scale * v) for value, rs in groups.items() for v in (measure(r, key) for r in rs) if v is not None]
        ends = [[v for x, v in points if x == end] for end in (min(groups), max(groups))]
        if len(points) < 3 or not all(ends):
            continue
        rho, pvalue = spearman([x for x, _ in points], [v for _, v in points])
        if rho != rho:
            continue  # the measure is constant over the runs
        lines.append(f"| {label} | {len(points)} | {rho:+.2f} | {pvalue:.2g} | {statistics.fmean(ends[0]):.3g} | "
                     f"{statistics.fmean(ends[1]):.3g} |")
    return lines + ["", f"![{prefix} runs: each measure against the sweep value, every seed a dot (grey), mean ± sample sd "
                        f"over seeds {','.join(map(str, seeds))} (blue; no bar where one seed)](summary_sweep.png)"]


def spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    """Spearman's rank correlation of x and y and its two-sided p-value (scipy; ties get mean ranks);
    (nan, nan) when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan")
    result = spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def over_training(rows: dict):
    """(markdown lines, figure) of the Hessian over training (``--over-training``) of every run
    that has it: a table of the trace, λ₁ and ‖W‖ at each kept epoch, and a figure of them
    against the epoch (one line per run). ([], None) when no run has it."""
    import matplotlib.pyplot as plt

    runs = {n: r["over_training"] for n, r in rows.items() if "over_training" in r}
    if not runs:
        return [], None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, (n, t) in enumerate(runs.items()):
        axes[0].errorbar(t["epochs"], t["trace"], yerr=t["stderr"], fmt="o-", ms=3, capsize=2, color=f"C{i % 10}",
                         label=n)
        axes[1].plot(t["epochs"], t["top"], "o-", ms=3, color=f"C{i % 10}", label=n)
        axes[2].plot(t["epochs"], t["weight_norm"], "o-", ms=3, color=f"C{i % 10}", label=n)
    for ax, label in zip(axes, ("Hessian trace (Hutchinson)", "largest Hessian eigenvalue λ₁", "‖W‖ (all forward weights)")):
        ax.set(xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    lines = ["", "## The Hessian over training", "",
             "At each epoch kept during training (`--set keep_every=K`), the circuit set to that epoch's forward "
             "weights, biases and norms (`python -m probes --over-training`): trace (± standard error), λ₁, ‖W‖.", ""]
    for n, t in runs.items():
        lines += [f"**{n}**", "", "| epoch | " + " | ".join(map(str, t["epochs"])) + " |",
                  "|---|" + "---|" * len(t["epochs"]),
                  "| trace | " + " | ".join(f"{v:.1f} ± {e:.1f}" for v, e in zip(t["trace"], t["stderr"])) + " |",
                  "| λ₁ | " + " | ".join(f"{v:.3g}" for v in t["top"]) + " |",
                  "| ‖W‖ | " + " | ".join(f"{v:.1f}" for v in t["weight_norm"]) + " |", ""]
    return lines, fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="folder of NAME/probes.json")
    ap.add_argument("--note", help="text under the title (default: ROOT/note.txt, if present)")
    args = ap.parse_args(argv)
    note = args.note
    if note is None and os.path.exists(os.path.join(args.root, "note.txt")):
        with open(os.path.join(args.root, "note.txt")) as f:
            note = f.read().strip()
    print(write(summary(load(args.root)), args.root, note or ""))


if __name__ == "__main__":
    main()
