"""The connectivity report of one or more run directories.

    python -m connectomes.report RUN_DIR [RUN_DIR ...] --out DIR

writes ``DIR/report.md`` and PNG figures beside it: learning curves, alignment and norm-ratio
curves per projection, the cell-level reciprocity table of each run beside rat cortex (Song et
al. 2005), three-cell motifs against a pair-keeping null (small circuits), forward-vs-feedback
weight scatter plots (rules with direct feedback) and weight distributions (ln|w|).

A run directory holds ``config.json`` and ``metrics.jsonl`` (written by the training loop) and,
for the connectome sections, ``connectome.h5`` (:func:`connectomes.files.write_connectome`).
A run without ``connectome.h5`` still gets its curves; the report says what is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from connectomes.files import ConnectomeFileError, read_connectome
from connectomes.motifs import cell_graph, motif_census
from connectomes.reciprocity import circuit_reciprocity, feedback_routes, lognormal_fit, reciprocity_table
from connectomes.reference import RAT_CORTEX


class ReportError(ValueError):
    """A run directory that is missing or malformed."""


@dataclass
class Run:
    """One run directory: its config, per-epoch metrics and (if present) connectome records."""

    path: str
    config: dict
    metrics: list[dict]
    label: str = ""
    records: list[dict] | None = None
    connectome_note: str = ""     # why there are no records, when there are none

    @property
    def rule(self) -> str:
        return str(self.config.get("rule", "?"))

    @property
    def seed(self):
        return self.config.get("seed", "?")


# --------------------------------------------------------------------------- loading
def load_run(run_dir: str) -> Run:
    """Read ``config.json``, ``metrics.jsonl`` and ``connectome.h5`` (optional) of a run.

    Raises :class:`ReportError` naming the directory when it does not exist or its config or
    metrics are missing or malformed. An unreadable ``connectome.h5`` is noted, not raised.
    """
    if not os.path.isdir(run_dir):
        raise ReportError(f"run directory {run_dir!r} does not exist or is not a directory")
    cfg_path = os.path.join(run_dir, "config.json")
    met_path = os.path.join(run_dir, "metrics.jsonl")
    for p in (cfg_path, met_path):
        if not os.path.isfile(p):
            raise ReportError(f"{run_dir!r} is not a run directory: it has no {os.path.basename(p)}")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ReportError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    metrics = []
    with open(met_path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReportError(f"{met_path}: line {n} is not valid JSON ({err})") from None
            if not isinstance(rec, dict) or "epoch" not in rec:
                raise ReportError(f"{met_path}: line {n} is not an epoch record (no 'epoch' key)")
            metrics.append(rec)
    run = Run(os.path.abspath(run_dir), config, metrics)
    h5 = os.path.join(run_dir, "connectome.h5")
    if not os.path.isfile(h5):
        run.connectome_note = f"no connectome.h5 in {run_dir}"
    else:
        try:
            run.records = read_connectome(h5)
        except (ConnectomeFileError, OSError) as err:
            run.connectome_note = f"connectome.h5 could not be read: {err}"
    return run


def _label_runs(runs: list[Run]) -> None:
    labels = [f"{r.rule} seed {r.seed}" for r in runs]
    for r, lab in zip(runs, labels):
        r.label = lab if labels.count(lab) == 1 else f"{lab} ({os.path.basename(r.path)})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# --------------------------------------------------------------------------- figures
def _figure(nrows: int, ncols: int, w: float = 4.2, h: float = 3.2):
    from matplotlib.figure import Figure  # Agg through Figure.savefig; no pyplot state

    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _series(run: Run, key: str) -> tuple[list, list]:
    pts = [(m["epoch"], m[key]) for m in run.metrics if isinstance(m.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_learning_curves(runs: list[Run], path: str) -> str:
    """Accuracy (train, test) and loss (train, test) per epoch, one line per run."""
    fig, axes = _figure(2, 2)
    for (row, col), key, title in (((0, 0), "train_acc", "train accuracy"), ((0, 1), "test_acc", "test accuracy"),
                                   ((1, 0), "train_loss", "train loss"), ((1, 1), "test_loss", "test loss")):
        ax = axes[row][col]
        for r in runs:
            x, y = _series(r, key)
            if x:
                ax.plot(x, y, marker="o", ms=3, label=r.label)
        ax.set_title(title)
        _epoch_axis(ax)
    axes[0][0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def _projections(runs: list[Run]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for m in r.metrics:
            for n, v in (m.get("projections") or {}).items():
                if n not in names and "alignment_deg" in v:
                    names.append(n)
    return names


def plot_alignment(runs: list[Run], path: str) -> str | None:
    """Alignment angle (top row) and norm ratio (bottom row) per epoch, one column per
    projection, one line per run. None when no run recorded projection metrics."""
    names = _projections(runs)
    if not names:
        return None
    fig, axes = _figure(2, len(names), w=3.6)
    for c, name in enumerate(names):
        for row, key, ylabel in ((0, "alignment_deg", "alignment (deg)"), (1, "norm_ratio", "norm ratio")):
            ax = axes[row][c]
            for r in runs:
                pts = [(m["epoch"], m["projections"][name].get(key)) for m in r.metrics
                       if name in (m.get("projections") or {})]
                pts = [(e, v) for e, v in pts if isinstance(v, (int, float))]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=r.label)
            _epoch_axis(ax)
            ax.set_ylabel(ylabel)
            if row == 0:
                ax.set_title(name)
                ax.axhline(90, color="grey", lw=0.6, ls=":")
            else:
                ax.axhline(1, color="grey", lw=0.6, ls=":")
    axes[0][0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_weight_correlation(run: Run, path: str, *, max_points: int = 4000, seed: int = 0) -> str | None:
    """Forward W[j, i] against direct feedback F[i, j] for every cell pair, one panel per
    projection with direct feedback (a random sample of ``max_points`` pairs). None when the
    run has no direct feedback."""
    if not run.records:
        return None
    routes = [it for it in feedback_routes(run.records) if it["direct"]]
    if not routes:
        return None
    rng = np.random.default_rng(seed)
    fig, axes = _figure(1, len(routes), w=3.6, h=3.4)
    for ax, it in zip(axes[0], routes):
        W = it["forward"]["weight"].double().numpy()
        F = sum(r["weight"].double().numpy() for r in it["direct"])
        x, y = W.ravel(), F.T.ravel()
        r = float(np.corrcoef(x, y)[0, 1]) if x.size > 1 and x.std() > 0 and y.std() > 0 else float("nan")
        if x.size > max_points:
            pick = rng.choice(x.size, max_points, replace=False)
            x, y = x[pick], y[pick]
        ax.scatter(x, y, s=3, alpha=0.4)
        lim = float(max(np.abs(x).max(), np.abs(y).max(), 1e-12))
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{it['forward']['name']}  r = {r:.3f}", fontsize=9)
        ax.set_xlabel("forward W[j, i] (i → j)")
        ax.set_ylabel("feedback F[i, j] (j → i)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run.label}: forward vs feedback strength per cell pair")
    fig.savefig(path, dpi=110)
    return path


def plot_weight_distributions(runs: list[Run], path: str) -> str | None:
    """Histograms of ln|w| of the forward and the feedback synapses of each run with a
    connectome, with the fitted normal (i.e. lognormal in w). None when no run has one."""
    runs = [r for r in runs if r.records]
    if not runs:
        return None
    fig, axes = _figure(1, len(runs), w=4.0)
    for ax, run in zip(axes[0], runs):
        for kind in ("forward", "feedback"):
            ws = [r["weight"].double().numpy().ravel() for r in run.records
                  if r.get("kind") == kind and not r.get("transported")]
            if not ws:
                continue
            w = np.abs(np.concatenate(ws))
            logw = np.log(w[w > 0])
            if logw.size < 2:
                continue
            fit = lognormal_fit(w)
            color = "tab:blue" if kind == "forward" else "tab:orange"
            ax.hist(logw, bins=60, density=True, alpha=0.4, color=color,
                    label=f"{kind}: μ={fit['mu']:.2f}, σ={fit['sigma']:.2f}")
            if fit["sigma"] > 0:
                xs = np.linspace(logw.min(), logw.max(), 200)
                ax.plot(xs, np.exp(-0.5 * ((xs - fit["mu"]) / fit["sigma"]) ** 2)
                        / (fit["sigma"] * math.sqrt(2 * math.pi)), lw=1.2, color=color)
        ax.set_title(f"{run.label} (rat: σ = {RAT_CORTEX['lognormal_sigma'].value})", fontsize=9)
        ax.set_xlabel("ln |w|")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- the report
def _fmt(v, spec=".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def _reference_list() -> list[str]:
    lines = ["Rat cortex reference (`connectomes.reference.RAT_CORTEX`):", ""]
    for key, ref in RAT_CORTEX.items():
        lines.append(f"- **{key}** = {ref}: {ref.note} ({ref.source})")
    return lines


def write_report(run_dirs: list[str], out_dir: str, *, motifs: bool = True, motif_max_cells: int = 1000,
                 motif_repeats: int = 10, threshold: float = 0.0) -> str:
    """Load every run, write the figures and ``report.md`` into ``out_dir``; return the report
    path. Raises :class:`ReportError` for a missing or malformed run directory."""
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    _label_runs(runs)
    os.makedirs(out_dir, exist_ok=True)
    md = ["# Connectivity report", ""]
    md += ["| run | rule | seed | epochs | final train acc | final test acc | directory |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        last = r.metrics[-1] if r.metrics else {}
        md.append(f"| {r.label} | {r.rule} | {r.seed} | {len(r.metrics)} | {_fmt(last.get('train_acc'))} | "
                  f"{_fmt(last.get('test_acc'))} | `{r.path}` |")
    md.append("")

    md += ["## Learning curves", "", f"![learning curves]({os.path.basename(plot_learning_curves(runs, os.path.join(out_dir, 'learning_curves.png')))})", ""]

    md += ["## Alignment and norm ratio", ""]
    align = plot_alignment(runs, os.path.join(out_dir, "alignment.png"))
    if align:
        md += ["Weight alignment ∠(Wᵀ, B) (for PFA the path alignment ∠(Wᵀ, RB)) and ‖B‖/‖W‖ "
               "(‖RB‖/‖W‖) per epoch.", "", f"![alignment]({os.path.basename(align)})", ""]
        names = _projections(runs)
        md += ["Final epoch, angle (deg) / norm ratio:", "",
               "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in runs:
            proj = (r.metrics[-1].get("projections") or {}) if r.metrics else {}
            cells = [f"{_fmt(proj[n].get('alignment_deg'), '.1f')} / {_fmt(proj[n].get('norm_ratio'), '.3f')}"
                     if n in proj else "–" for n in names]
            md.append(f"| {r.label} | " + " | ".join(cells) + " |")
        md.append("")
    else:
        md += ["No run recorded per-projection alignment.", ""]

    md += ["## Cell-level reciprocity against rat cortex", "",
           "A cell pair is connected when one of its two possible synapses exists; forward and feedback "
           "strengths are the signed weights, an absent synapse counting as 0 over connected pairs. "
           "`pooled` takes every projection whose pre cells receive errors together. Rules without "
           "direct feedback (PFA through ē, DFA) have zero reciprocal synapses. "
           "μ of ln|w| depends on units (mV for the rat); compare σ.", ""]
    md += _reference_list() + [""]
    for r in runs:
        md += [f"### {r.label}", ""]
        if not r.records:
            md += [f"*Not available: {r.connectome_note}.*", ""]
            continue
        stats = circuit_reciprocity(r.records, threshold=threshold)
        if not stats:
            md += ["*No dense projection to analyse.*", ""]
            continue
        md += [reciprocity_table(stats), ""]
        if motifs:
            md += _motif_section(r, threshold, motif_max_cells, motif_repeats)

    md += ["## Weight correlation", ""]
    for r in runs:
        if not r.records:
            md.append(f"- {r.label}: *not available ({r.connectome_note})*")
            continue
        p = plot_weight_correlation(r, os.path.join(out_dir, f"weight_correlation_{_slug(r.label)}.png"))
        if p:
            md += ["", f"{r.label}:", "", f"![weight correlation {r.label}]({os.path.basename(p)})", ""]
        else:
            md.append(f"- {r.label}: no direct feedback synapses (rule {r.rule}), nothing to correlate.")
    md.append("")

    md += ["## Weight distributions", ""]
    dist = plot_weight_distributions(runs, os.path.join(out_dir, "weight_distributions.png"))
    if dist:
        md += [f"Histograms of ln|w| with the fitted normal (a lognormal in |w|); rat EPSPs: "
               f"ln(EPSP/mV) ~ N({RAT_CORTEX['lognormal_mu'].value}, {RAT_CORTEX['lognormal_sigma'].value}²). "
               "Transported feedback (BP's Wᵀ, SF's signs) is left out.", "",
               f"![weight distributions]({os.path.basename(dist)})", ""]
    else:
        md += ["*No run has a connectome.h5.*", ""]

    path = os.path.join(out_dir, "report.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(tmp, path)
    return path


def _motif_section(run: Run, threshold: float, max_cells: int, repeats: int) -> list[str]:
    g = cell_graph(run.records, threshold=threshold)
    if g.n < 3:
        return []
    if g.n > max_cells:
        return [f"Three-cell motifs: skipped ({g.n} cells > {max_cells}; raise `--motif-max-cells`).", ""]
    census = motif_census(g, repeats=repeats, seed=0)
    return [f"Three-cell motifs over all {g.n} cells (every synapse of the circuit), against {repeats} "
            "draws of a null that keeps the numbers of uni- and bidirectional pairs "
            f"(rat cortex: {RAT_CORTEX['triplet_motifs'].value}):", "", census.table(), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m connectomes.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (config.json, metrics.jsonl, connectome.h5)")
    ap.add_argument("--out", required=True, help="folder for report.md and the figures")
    ap.add_argument("--threshold", type=float, default=0.0, help="a synapse exists where |w| > threshold")
    ap.add_argument("--no-motifs", action="store_true", help="leave out the three-cell motif census")
    ap.add_argument("--motif-max-cells", type=int, default=1000, help="skip motifs above this many cells")
    ap.add_argument("--motif-repeats", type=int, default=10, help="null-model draws")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.runs, args.out, motifs=not args.no_motifs, motif_max_cells=args.motif_max_cells,
                            motif_repeats=args.motif_repeats, threshold=args.threshold)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
