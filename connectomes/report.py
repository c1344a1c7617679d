"""The connectivity report of one or more run directories: how close is each learned
connectome to cortex, and to which measurement?

    python -m connectomes.report RUN_DIR [RUN_DIR ...] --out DIR [--density P] [--no-motifs]

writes ``DIR/report.md``, ``DIR/report.json`` (every number in it) and PNG figures. The report
opens with one figure and one table: per run, reciprocity over chance, the log-space correlation
of bidirectional pairs, the connection probability and the spread of ln w, each with a 95%
bootstrap interval, beside every published reference (``connectomes.reference``), and a
one-line verdict. A dense network (every possible synapse present) is compared at the matched
density (each direction keeps its strongest |w| so that its connection probability equals the
cortex's; ``--density``), with the dependence on that choice shown; a sparse circuit as it is.
Then: learning, alignment and norm-ratio curves, per-projection tables, weight-correlation
figures, weight distributions and three-cell motifs against a null over feasible cell pairs.

A run directory holds ``config.json`` and ``metrics.jsonl`` (written by the training loop) and,
for the connectome sections, ``connectome.h5`` (:func:`connectomes.files.write_connectome`).
A run without ``connectome.h5`` still gets its curves; the report says what is missing and how
to make it (``python -m circuits.run --connectome RUN_DIR``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from connectomes.files import ConnectomeFileError, read_connectome
from connectomes.motifs import cell_graph, motif_census
from connectomes.reciprocity import (HEADLINE, PairStats, bootstrap_intervals, cell_type_reciprocity,
                                     circuit_reciprocity, density_sweep,
                                     direct_feedback,
                                     feedback_routes, fmt, lognormal_fit, projection_pairs, reciprocity_table)
from connectomes.reference import CLOSE, REFERENCES, RAT_CORTEX, references_for

DEFAULT_DENSITY = 0.116          # Song et al. 2005's connection probability (unverified: see reference.py)
DENSITIES = (0.02, 0.05, 0.073, 0.116, 0.2, 0.31, 0.5, 1.0)   # the matched-density sweep
COMPARED = (  # (PairStats field, label, axis label, log axis)
    ("reciprocity_over_chance", "reciprocity over chance", "P(i↔j) / (p_fwd·p_bwd)", True),
    ("log_pearson_bidirectional", "log-space r, bidirectional pairs", "Pearson r of ln w (both w > 0)", False),
    ("lognormal_sigma", "σ of ln w, excitatory synapses", "sd of ln w (w > 0)", False),
    ("strength_ratio_bidirectional", "strength, bidirectional / unidirectional", "ratio of median w (w > 0)", True),
)


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

    @property
    def circuit(self) -> str:
        circ = self.config.get("circuit")
        return str(circ.get("name", "?")) if isinstance(circ, dict) else "?"

    def final(self, key: str):
        """The last epoch's value of ``key`` (None when absent)."""
        return self.metrics[-1].get(key) if self.metrics else None


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
        run.connectome_note = (f"no connectome.h5 in {run_dir} (write it from the checkpoint with "
                               f"`python -m circuits.run --connectome {run_dir}`)")
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


# --------------------------------------------------------------------------- the comparison
@dataclass
class Analysis:
    """One run's connectome against cortex: the projection compared (``main``: the one with
    the most cell pairs among those whose pre cells receive errors), the ``view`` ("matched
    density" for a dense projection, "as is" for a sparse one), the statistics of every
    projection as they are (``native``) and at the matched density (``matched``), bootstrap
    intervals of the headline view, the density sweep and the verdict."""

    main: str
    view: str
    density: float
    native: dict[str, PairStats]
    matched: dict[str, PairStats]
    sweep: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    verdict: str = ""
    shape: tuple[int, int] = (0, 0)

    @property
    def headline(self) -> PairStats:
        return (self.matched if self.view == "matched density" else self.native)[self.main]

    def to_dict(self) -> dict:
        return {"main": self.main, "view": self.view, "density": self.density, "shape": list(self.shape),
                "headline": self.headline.to_dict(), "checks": self.checks, "verdict": self.verdict,
                "native": {k: v.to_dict() for k, v in self.native.items()},
                "matched": {k: v.to_dict() for k, v in self.matched.items()},
                "sweep": [{k: row[k] for k in ("density", *HEADLINE, "bidirectional_pairs")} for row in self.sweep]}


def compare(st: PairStats) -> list[dict]:
    """Each compared statistic of ``st`` against each usable reference for it."""
    out = []
    for key, label, _, _ in COMPARED:
        value = getattr(st, key)
        for ref in references_for(key, usable_only=True):
            row = {"statistic": key, "label": label, "value": value, "interval": st.intervals.get(key),
                   "reference": ref.value, "range": [ref.low, ref.high], "study": ref.study, "close": None,
                   "why": st.notes.get(key, "")}
            if not math.isnan(value):
                row["close"] = ref.meets(value, st.intervals.get(key))
            out.append(row)
    return out


def _verdict(label: str, a: "Analysis") -> str:
    st = a.headline
    parts = []
    if not st.feedback_possible:
        parts.append("no reciprocal synapse can exist (feedback only through other cells): bidirectional "
                     f"fraction 0 against {RAT_CORTEX['bidirectional_fraction']} (Song)")
    judged = [c for c in a.checks if c["close"] is not None]
    for key, name, _, _ in COMPARED:
        rows = [c for c in judged if c["statistic"] == key]
        if rows:
            refs = ", ".join(f"{c['study']} {_ref_text(c)}: {'yes' if c['close'] else 'no'}" for c in rows)
            parts.append(f"{name} {_value_text(rows[0])} ({refs})")
    n_close = sum(bool(c["close"]) for c in judged)
    view = (f"at matched density {a.density:g}" if a.view == "matched density" else "as it is")
    head = f"**{label}** ({a.main}, {view}): close to cortex on {n_close} of {len(judged)} comparisons"
    return head + ("; " + "; ".join(parts) if parts else "")


def _value_text(c: dict) -> str:
    iv = c["interval"]
    return fmt(c["value"], ".2f") + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")


def _ref_text(c: dict) -> str:
    lo, hi = c["range"]
    return f"{lo:g}–{hi:g}" if lo is not None else f"{c['reference']:g}"


def analyse(run: Run, *, density: float = DEFAULT_DENSITY, threshold: float = 0.0, intervals: int = 100,
            sweep=DENSITIES) -> Analysis | None:
    """The comparison of one run's connectome with cortex (None without records or without a
    dense projection whose pre cells receive errors)."""
    if not run.records:
        return None
    native = circuit_reciprocity(run.records, threshold=threshold)
    candidates = [n for n, st in native.items() if st.route in ("direct", "indirect")]
    if not candidates:
        return None
    main = max(candidates, key=lambda n: native[n].possible_pairs)
    matched = circuit_reciprocity(run.records, threshold=threshold, density=density)
    dense = native[main].connection_probability > 0.5
    a = Analysis(main, "matched density" if dense else "as is", density, native, matched,
                 shape=(native[main].n_post, native[main].n_pre))
    if intervals:
        block = projection_pairs(run.records, main, threshold=threshold, density=density if dense else None)
        a.headline.intervals = bootstrap_intervals([block], repeats=intervals)
    a.sweep = density_sweep(run.records, sweep, projection=main, threshold=threshold)
    a.checks = compare(a.headline)
    a.verdict = _verdict(run.label, a)
    return a


# --------------------------------------------------------------------------- figures
def _short(run: Run, a: Analysis) -> str:
    return f"{run.label}\n{a.main} {a.shape[0]}×{a.shape[1]}"


def _reference_lines(ax, key: str) -> None:
    """Every reference for ``key``: a band for a published range, a line for a point; dashed
    grey for unverified numbers."""
    colors = {"song2005": "tab:red", "campagnola2022": "tab:green", "avermann2012": "tab:purple",
              "cossell2015": "tab:brown", "pfa-appendix": "tab:gray"}
    for ref in references_for(key):
        if not isinstance(ref.value, (int, float)):
            continue
        c = colors.get(ref.study, "k")
        label = f"{ref.study} {ref}" + (" (unverified)" if ref.status == "unverified" else "")
        if ref.status == "unverified":
            ax.axhline(float(ref.value), color="grey", ls="--", lw=0.9, label=label)
        elif ref.low is not None:
            ax.axhspan(ref.low, ref.high, color=c, alpha=0.12, label=label)
            ax.axhline(float(ref.value), color=c, lw=0.8)
        else:
            ax.axhline(float(ref.value), color=c, lw=1.2, label=label)


def _log_axis(ax, values, key: str) -> None:
    """A log y axis spanning the positive values and references (a range from 0 is clipped)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    pts = [float(v) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    for ref in references_for(key):
        if isinstance(ref.value, (int, float)):
            pts += [x for x in (float(ref.value), ref.high) if x and x > 0]
    ax.set_yscale("log")
    if pts:
        ax.set_ylim(min(pts) / 1.5, max(pts) * 1.5)
    ax.yaxis.set_major_formatter(ScalarFormatter())
    if pts and max(pts) / min(pts) < 20:     # within about a decade: label the minor ticks too
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=6)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_cortex_comparison(pairs: list[tuple[Run, Analysis]], path: str) -> str:
    """The first screen: one panel per compared statistic, one point per run (its headline
    view) with its 95% bootstrap interval, beside every reference."""
    fig, axes = _figure(2, 2, w=max(4.5, 0.45 * len(pairs) + 1.5), h=3.9)
    xs = np.arange(len(pairs))
    same = len({(a.main, a.shape) for _, a in pairs}) == 1
    for ax, (key, title, ylabel, log) in zip(axes.ravel(), COMPARED):
        _reference_lines(ax, key)
        for x, (run, a) in zip(xs, pairs):
            st = a.headline
            v = getattr(st, key)
            if math.isnan(v):
                ax.annotate("undefined", (x, 0.5), xycoords=("data", "axes fraction"), rotation=90,
                            ha="center", va="center", fontsize=7, color="grey")
                continue
            iv = st.intervals.get(key)
            err = [[v - iv[0]], [iv[1] - v]] if iv else None
            ax.errorbar([x], [v], yerr=err, fmt="o", ms=5, capsize=3,
                        color="tab:blue" if a.view == "matched density" else "tab:orange")
        if log:
            _log_axis(ax, [getattr(a.headline, key) for _, a in pairs], key)
        ax.set_xticks(xs, [r.label if same else _short(r, a) for r, a in pairs], rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    views = sorted({a.view for _, a in pairs})
    which = f"{pairs[0][1].main} ({pairs[0][1].shape[0]}×{pairs[0][1].shape[1]}) of every run; " if same else ""
    fig.suptitle(f"Learned connectome vs cortex: {which}blue: matched density, orange: as stored; bars: 95% "
                 f"bootstrap over cell pairs (views here: {', '.join(views)})", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def plot_density_dependence(pairs: list[tuple[Run, Analysis]], path: str) -> str:
    """Reciprocity over chance and log-space r of the compared projection against the matched
    density, one line per run; one row per circuit (different shapes are not mixed)."""
    circuits = sorted({r.circuit for r, _ in pairs})
    keys = COMPARED[:2]
    fig, axes = _figure(len(circuits), len(keys), w=4.6, h=3.4)
    for row, circ in enumerate(circuits):
        for ax, (key, title, ylabel, log) in zip(axes[row], keys):
            _reference_lines(ax, key)
            for i, (r, a) in enumerate(pairs):
                if r.circuit != circ:
                    continue
                pts = [(s["density"], s[key]) for s in a.sweep if not math.isnan(s[key])]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, color=_run_color(i, len(pairs)), label=f"{r.label} ({a.main})")
            for p, name in ((0.073, "Campagnola p"), (DEFAULT_DENSITY, "Song p (unverified)")):
                ax.axvline(p, color="grey", lw=0.6, ls=":")
            ax.set_xscale("log")
            if log:
                _log_axis(ax, [s[key] for _, a in pairs for s in a.sweep], key)
            ax.set_xlabel("matched connection probability per direction")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{circ}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        run_labels = {f"{r.label} ({a.main})" for r, a in pairs}
        for ax in axes[row][:-1]:   # references here; runs and references beside the last panel
            handles = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in run_labels]
            if handles:
                ax.legend(*zip(*handles), fontsize=6)
        axes[row][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=110)
    return path


def _run_color(i: int, n: int):
    """Distinct colours for up to 20 runs (matplotlib's default cycle repeats after 10)."""
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"](i % 20)


def _pfa_theory_deg(expansion: float) -> float:
    return math.degrees(math.acos(1 / math.sqrt(1 + 1 / expansion)))


def _expansion(run: Run, projection: str) -> float | None:
    """N̄ / N_post of a PFA projection, from its B record (N̄ × N_post)."""
    for r in run.records or []:
        if r.get("forward") == projection and r["name"].endswith(":B") and r["post"].endswith(":ebar"):
            n_bar, n_post = r["weight"].shape[:2]
            return n_bar / n_post
    return None


def plot_alignment(runs: list[Run], path: str) -> str | None:
    """Alignment angle (top row) and norm ratio (bottom row) per epoch, one column per
    (circuit, projection), one line per run; reference lines: 90° (no alignment), the cortex
    model's 78° (PFA appendix), and for PFA runs the theory angle arccos(1/√(1 + 1/expansion))."""
    cols = _projection_columns(runs)
    if not cols:
        return None
    fig, axes = _figure(2, len(cols), w=3.6)
    for c, (circ, name) in enumerate(cols):
        for row, key, ylabel in ((0, "alignment_deg", "alignment (deg)"), (1, "norm_ratio", "norm ratio")):
            ax = axes[row][c]
            for r in runs:
                if r.circuit != circ:
                    continue
                pts = [(m["epoch"], m["projections"][name].get(key)) for m in r.metrics
                       if name in (m.get("projections") or {})]
                pts = [(e, v) for e, v in pts if isinstance(v, (int, float))]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=r.label)
            _epoch_axis(ax)
            ax.set_ylabel(ylabel)
            if row == 0:
                ax.set_title(f"{circ}: {name}" if len({cc for cc, _ in cols}) > 1 else name, fontsize=9)
                ax.axhline(90, color="grey", lw=0.6, ls=":")
                ax.axhline(RAT_CORTEX["alignment_deg"].value, color="tab:gray", lw=0.8, ls="--",
                           label="cortex model 78° (PFA appendix)")
                for e in sorted({x for x in (_expansion(r, name) for r in runs if r.circuit == circ
                                              and r.rule in ("pfa", "pfa-o")) if x}):
                    ax.axhline(_pfa_theory_deg(e), color="tab:green", lw=0.8, ls="--",
                               label=f"PFA theory {_pfa_theory_deg(e):.1f}° (expansion {e:g})")
            else:
                ax.axhline(1, color="grey", lw=0.6, ls=":")
    axes[0][0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def _projection_columns(runs: list[Run]) -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    for r in runs:
        for m in r.metrics:
            for n, v in (m.get("projections") or {}).items():
                if (r.circuit, n) not in cols and "alignment_deg" in v:
                    cols.append((r.circuit, n))
    return cols


def _subsample(n: int, max_points: int, rng) -> np.ndarray:
    return rng.choice(n, max_points, replace=False) if n > max_points else np.arange(n)


def plot_weight_correlation(run: Run, path: str, *, max_points: int = 4000, seed: int = 0) -> str | None:
    """For every projection with direct feedback: the signed strengths W[j, i] against F[i, j]
    (left) and, as Song et al.'s Fig. 6B, ln w of both synapses of the excitatory bidirectional
    pairs on log axes (right). Each panel says how many pairs it shows of how many. None when the
    run has no direct feedback."""
    if not run.records:
        return None
    routes = [it for it in feedback_routes(run.records) if it["direct"]]
    if not routes:
        return None
    rng = np.random.default_rng(seed)
    fig, axes = _figure(len(routes), 2, w=3.8, h=3.5)
    for row, it in enumerate(routes):
        W = it["forward"]["weight"].double().numpy()
        F = direct_feedback(it["direct"]).numpy()
        x, y = W.ravel(), F.T.ravel()
        both = (x != 0) & (y != 0)
        xb, yb = x[both], y[both]
        ax = axes[row][0]
        pick = _subsample(xb.size, max_points, rng)
        ax.scatter(xb[pick], yb[pick], s=3, alpha=0.4)
        lim = float(max(np.abs(xb).max(initial=0), np.abs(yb).max(initial=0), 1e-12))
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.6, ls=":")
        r = np.corrcoef(xb, yb)[0, 1] if xb.size > 1 and xb.std() > 0 and yb.std() > 0 else float("nan")
        ax.set_title(f"{it['forward']['name']}: signed, r = {fmt(r)}\n{pick.size} of {xb.size} "
                     "bidirectional pairs shown", fontsize=8)
        ax.set_xlabel("forward W[j, i] (i → j)")
        ax.set_ylabel("feedback F[i, j] (j → i)")
        ax.grid(alpha=0.3)
        ax = axes[row][1]
        exc = (xb > 0) & (yb > 0)
        xe, ye = xb[exc], yb[exc]
        pick = _subsample(xe.size, max_points, rng)
        if xe.size:
            ax.scatter(xe[pick], ye[pick], s=3, alpha=0.4, color="tab:red")
            ax.set_xscale("log")
            ax.set_yscale("log")
        r_log = (np.corrcoef(np.log(xe), np.log(ye))[0, 1] if xe.size > 1 and np.log(xe).std() > 0
                 and np.log(ye).std() > 0 else float("nan"))
        ax.set_title(f"excitatory pairs, log axes: r(ln) = {fmt(r_log)} (Song: "
                     f"{RAT_CORTEX['log_pearson_bidirectional']})\n{pick.size} of {xe.size} pairs shown", fontsize=8)
        ax.set_xlabel("forward w > 0")
        ax.set_ylabel("feedback w > 0")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{run.label}: forward vs feedback strength per cell pair (as stored, all synapses)", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def plot_pfa_paths(run: Run, path: str, *, max_points: int = 4000, seed: int = 0) -> str | None:
    """PFA's weight correlation: for every projection with B and R, Wᵀ against the path R B per
    cell pair (the error's effective feedback, theory angle arccos(1/√(1 + 1/expansion))),
    R against its target Wᵀ Bᵀ per synapse (pre cell ← ē cell), and the entries of BᵀB
    (diagonal vs off-diagonal: why R B ≈ BᵀB Wᵀ ≈ Wᵀ). W has no elementwise partner in B or R
    (their shapes differ): no cell pair is bidirectional."""
    if not run.records:
        return None
    by_name = {r["name"]: r for r in run.records}
    pairs = []
    for it in feedback_routes(run.records):
        name = it["forward"]["name"]
        if f"{name}:B" in by_name and f"{name}:R" in by_name and it["forward"]["weight"].dim() == 2:
            pairs.append((it["forward"], by_name[f"{name}:B"], by_name[f"{name}:R"]))
    if not pairs:
        return None
    rng = np.random.default_rng(seed)
    fig, axes = _figure(len(pairs), 3, w=3.7, h=3.4)
    for row, (fwd, Brec, Rrec) in enumerate(pairs):
        W, B, R = (t["weight"].double().numpy() for t in (fwd, Brec, Rrec))
        RB, target = R @ B, W.T @ B.T
        n_bar, n_post = B.shape
        for ax, (a, b, xl, yl, what) in zip(axes[row], (
                (W.T.ravel(), RB.ravel(), "Wᵀ[i, j]", "(R B)[i, j]", "cell pairs"),
                (target.ravel(), R.ravel(), "(Wᵀ Bᵀ)[i, k]", "R[i, k]", "R synapses"))):
            pick = _subsample(a.size, max_points, rng)
            ax.scatter(a[pick], b[pick], s=3, alpha=0.4)
            cos = float(a @ b / math.sqrt((a @ a) * (b @ b))) if (a @ a) > 0 and (b @ b) > 0 else float("nan")
            ang = math.degrees(math.acos(max(-1, min(1, cos)))) if not math.isnan(cos) else float("nan")
            extra = f", theory {_pfa_theory_deg(n_bar / n_post):.1f}°" if what == "cell pairs" else ""
            ax.set_title(f"{fwd['name']}: angle {fmt(ang, '.1f')}°{extra}\n{pick.size} of {a.size} {what} shown",
                         fontsize=8)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        G = B.T @ B
        off = G[~np.eye(n_post, dtype=bool)]
        ax = axes[row][2]
        ax.hist(off, bins=60, alpha=0.6, density=True, label=f"off-diagonal (sd {off.std():.3f})")
        ax.hist(np.diag(G), bins=30, alpha=0.6, density=True, label=f"diagonal (mean {np.diag(G).mean():.3f})")
        ax.set_title(f"{fwd['name']}: entries of BᵀB (N̄ = {n_bar})", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run.label}: PFA's feedback path against W (no direct reciprocal synapse)", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def plot_weight_distributions(runs: list[Run], path: str) -> str | None:
    """Per run (its own panel: circuits differ), histograms of ln w of the excitatory (w > 0)
    forward and feedback synapses with the fitted normal, and Song et al.'s shape (σ = 0.94)
    centred on the forward fit for comparison (μ depends on units, σ does not). None when no
    run has a connectome."""
    runs = [r for r in runs if r.records]
    if not runs:
        return None
    sigma_rat = RAT_CORTEX["lognormal_sigma"].value
    ncols = min(4, len(runs))
    fig, axes = _figure(math.ceil(len(runs) / ncols), ncols, w=4.0)
    for ax in axes.ravel()[len(runs):]:
        ax.set_visible(False)
    for ax, run in zip(axes.ravel(), runs):
        for kind, color in (("forward", "tab:blue"), ("feedback", "tab:orange")):
            ws = [r["weight"].double().numpy().ravel() for r in run.records
                  if r.get("kind") == kind and not r.get("transported")]
            if not ws:
                continue
            w = np.concatenate(ws)
            w = w[w > 0]
            if w.size < 2:
                continue
            logw = np.log(w)
            fit = lognormal_fit(w)
            ax.hist(logw, bins=60, density=True, alpha=0.4, color=color,
                    label=f"{kind} (w > 0): μ={fit['mu']:.2f}, σ={fit['sigma']:.2f}")
            xs = np.linspace(logw.min(), logw.max(), 200)
            if fit["sigma"] > 0:
                ax.plot(xs, _normal_pdf(xs, fit["mu"], fit["sigma"]), lw=1.2, color=color)
            if kind == "forward":
                ax.plot(xs, _normal_pdf(xs, fit["mu"], sigma_rat), lw=1.0, ls="--", color="tab:red",
                        label=f"rat shape σ = {sigma_rat:.2f} (Song), centred here")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("ln w (excitatory synapses)")
        ax.set_ylabel("density")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def _normal_pdf(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------- the report
def _first_screen(pairs: list[tuple[Run, Analysis]], out_dir: str, density: float) -> list[str]:
    md = ["## How close is each connectome to cortex?", "",
          f"![learned connectome vs cortex]({os.path.basename(plot_cortex_comparison(pairs, os.path.join(out_dir, 'cortex_comparison.png')))})",
          "",
          "Per run, the projection with the most cell pairs among those whose pre cells receive errors. "
          f"A dense projection (every possible synapse present) is compared at the **matched density** "
          f"p = {density:g} per direction (each direction keeps its strongest |w|); a sparse one as it is. "
          "Intervals: 95% bootstrap over cell pairs (pairs sharing a cell are not independent: a lower "
          f"bound on the uncertainty). *Close*: the interval meets a published range, or lies within ±{CLOSE:.0%} "
          "of a published point (of ln(ratio) for a ratio, of cos(angle) for an angle). Definitions: `docs/connectomes.md`.", "",
          "| run | projection (post × pre) | view | p as stored | reciprocity over chance | "
          "log-space r, bidirectional | σ of ln w (w > 0) | strength bi / uni | bidirectional / connected | test acc |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for run, a in pairs:
        st, nat = a.headline, a.native[a.main]
        cells = [_with_interval(st, k, ".2f") for k in ("reciprocity_over_chance", "log_pearson_bidirectional",
                                                        "lognormal_sigma", "strength_ratio_bidirectional")]
        view = a.view + (", transported feedback" if st.transported else "")
        md.append(f"| {run.label} | {a.main} ({a.shape[0]}×{a.shape[1]}) | {view} | "
                  f"{fmt(nat.connection_probability, '.3f')} | " + " | ".join(cells)
                  + f" | {fmt(st.bidirectional_fraction, '.3f')} | {fmt(run.final('test_acc'), '.4f')} |")
    for key_study in _reference_rows():
        md.append(key_study)
    md += ["", "Verdicts (references marked † are unverified and not used):", ""]
    md += [f"- {a.verdict}" for _, a in pairs]
    md.append("")
    return md


def _with_interval(st: PairStats, key: str, spec: str) -> str:
    v = getattr(st, key)
    if isinstance(v, float) and math.isnan(v):
        return "undefined" if key in st.notes else "–"
    iv = st.intervals.get(key)
    return fmt(v, spec) + (f" [{iv[0]:{spec}}, {iv[1]:{spec}}]" if iv else "")


def _reference_rows() -> list[str]:
    keys = ("reciprocity_over_chance", "log_pearson_bidirectional", "lognormal_sigma", "strength_ratio_bidirectional",
            "bidirectional_fraction")
    rows = []
    for study in ("song2005", "campagnola2022", "avermann2012", "cossell2015"):
        cells = []
        for k in keys:
            refs = [r for r in REFERENCES if r.study == study and r.statistic == k]
            cells.append("; ".join(f"{r}{'†' if r.status == 'unverified' else ''}" for r in refs) or "")
        p = [r for r in REFERENCES if r.study == study and r.statistic == "connection_probability"]
        p_text = "; ".join(f"{r}{'†' if r.status == 'unverified' else ''}" for r in p)
        rows.append(f"| *{study}* | cortex | measured | {p_text} | " + " | ".join(cells) + " | |")
    return rows


def _reference_list() -> list[str]:
    lines = ["Every reference number (`connectomes.reference.REFERENCES`), with its definition at the source "
             "and how we hold it (primary: read in the paper; secondary: quoted by another paper; derived: "
             "computed by us from sourced numbers; unverified: not found in the retrievable text, not used "
             "for verdicts):", ""]
    for ref in REFERENCES:
        lines.append(f"- **{ref.statistic}** = {ref} [{ref.status}] — {ref.note}. *{ref.source}.*")
    return lines


def write_report(run_dirs: list[str], out_dir: str, *, motifs: bool = True, motif_max_cells: int = 2500,
                 motif_repeats: int = 10, threshold: float = 0.0, density: float = DEFAULT_DENSITY,
                 intervals: int = 100, progress: bool = False) -> str:
    """Load every run, write the figures, ``report.md`` and ``report.json`` into ``out_dir``;
    return the report path. Raises :class:`ReportError` for a missing or malformed run
    directory."""
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    _label_runs(runs)
    os.makedirs(out_dir, exist_ok=True)
    pairs: list[tuple[Run, Analysis]] = []
    it = runs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(runs, desc="connectome statistics", unit="run")
    for r in it:
        a = analyse(r, density=density, threshold=threshold, intervals=intervals)
        if a is not None:
            pairs.append((r, a))

    md = ["# Connectivity report", ""]
    if pairs:
        md += _first_screen(pairs, out_dir, density)
    else:
        md += ["*No run has a connectome.h5 with a dense projection whose pre cells receive errors: "
               "nothing to compare with cortex. Make one with `python -m circuits.run --connectome RUN_DIR`.*", ""]

    md += ["## Runs", "", "| run | rule | seed | circuit | epochs | final train acc | final test acc | directory |",
           "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        md.append(f"| {r.label} | {r.rule} | {r.seed} | {r.circuit} | {len(r.metrics)} | "
                  f"{fmt(r.final('train_acc'), '.4f')} | {fmt(r.final('test_acc'), '.4f')} | `{r.path}` |")
    md.append("")
    if pairs:
        md += ["## Dependence on the matched density", "",
               "The comparison of a dense network depends on the density it is cut to: reciprocity over "
               "chance and the log-space r of the compared projection at each matched connection probability "
               "(dotted: Campagnola's 0.073 and Song's 0.116†).", "",
               f"![density dependence]({os.path.basename(plot_density_dependence(pairs, os.path.join(out_dir, 'density_dependence.png')))})",
               ""]

    md += ["## Learning curves", "",
           f"![learning curves]({os.path.basename(plot_learning_curves(runs, os.path.join(out_dir, 'learning_curves.png')))})",
           ""]
    md += _alignment_section(runs, out_dir)

    md += ["## Cell-level statistics per projection", "",
           "Each run twice: synapses as stored, and at the matched density. `pooled` takes every projection "
           "whose pre cells receive errors together (chance computed per projection). Rules without direct "
           "feedback (PFA through ē, DFA from the readout) cannot form a reciprocal pair: their reverse "
           "direction is not counted as possible, and the chance level is undefined. Undefined values (–) "
           "say why in `report.json` (`notes`).", ""]
    for r in runs:
        md += [f"### {r.label}", ""]
        if not r.records:
            md += [f"*Not available: {r.connectome_note}.*", ""]
            continue
        a = next((a for rr, a in pairs if rr is r), None)
        if a is None:
            md += ["*No dense projection to analyse.*", ""]
            continue
        md += ["As stored:", "", reciprocity_table(a.native), "",
               f"At the matched density p = {density:g}:", "", reciprocity_table(a.matched), ""]

    md += _cell_type_section(runs, threshold, density)
    md += _correlation_section(runs, out_dir)
    md += ["## Weight distributions", ""]
    dist = plot_weight_distributions(runs, os.path.join(out_dir, "weight_distributions.png"))
    if dist:
        md += ["Histograms of ln w over the excitatory (w > 0) synapses with the fitted normal (a lognormal in "
               f"w); dashed: rat EPSPs' shape, ln(EPSP/mV) ~ N({RAT_CORTEX['lognormal_mu'].value}, "
               f"{RAT_CORTEX['lognormal_sigma'].value:.3f}²) (Song et al. 2005), drawn at the forward fit's μ since "
               "μ depends on units and σ does not. Transported feedback (BP's Wᵀ, SF's signs) is left out.", "",
               f"![weight distributions]({os.path.basename(dist)})", ""]
    else:
        md += ["*No run has a connectome.h5.*", ""]
    if motifs:
        md += ["## Three-cell motifs", "",
               "The triad census of the cell-level graph (every synapse, forward and feedback, ē cells "
               "included) against a null that keeps, for every pair of populations, its numbers of "
               "bidirectional pairs and of unidirectional pairs in each direction, placed at random over that "
               "pair's own cells (pairs the architecture cannot connect stay empty). Codes (Holland & "
               "Leinhardt): the numbers of mutual, asymmetric and null pairs, then D(own), U(p), C(yclic), "
               f"T(ransitive). Rat cortex: {RAT_CORTEX['triplet_motifs'].value} (Song et al. 2005: clustered "
               "triplets over-represented; which and by how much not retrieved).", ""]
        for r in runs:
            if r.records:
                a = next((a for rr, a in pairs if rr is r), None)
                p = density if a is not None and a.view == "matched density" else None
                md += _motif_section(r, threshold, motif_max_cells, motif_repeats, progress, p)
    md += ["## References", ""] + _reference_list() + [""]

    data = {"density": density, "close": CLOSE, "intervals": intervals,
            "references": [ref.to_dict() for ref in REFERENCES],
            "runs": [{"label": r.label, "path": r.path, "rule": r.rule, "seed": r.seed, "circuit": r.circuit,
                      "test_acc": r.final("test_acc"),
                      "analysis": next((a.to_dict() for rr, a in pairs if rr is r), None),
                      **({"cell_types": {k: st.to_dict() for k, st in cell_type_reciprocity(
                          r.records, threshold=threshold, density=density).items()}}
                         if r.records and cell_type_reciprocity(r.records) else {})} for r in runs]}
    _write_atomic(os.path.join(out_dir, "report.json"), json.dumps(plain_json(data), indent=1, allow_nan=False) + "\n")
    path = os.path.join(out_dir, "report.md")
    _write_atomic(path, "\n".join(md) + "\n")
    return path


def plain_json(v):
    """JSON-ready: NaN and infinities become null (strict JSON), numpy scalars Python numbers."""
    if isinstance(v, dict):
        return {str(k): plain_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain_json(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _alignment_section(runs: list[Run], out_dir: str) -> list[str]:
    md = ["## Alignment and norm ratio", ""]
    align = plot_alignment(runs, os.path.join(out_dir, "alignment.png"))
    if not align:
        return md + ["No run recorded per-projection alignment.", ""]
    md += ["Weight alignment ∠(Wᵀ, B) (for PFA the path alignment ∠(Wᵀ, RB)) and ‖B‖/‖W‖ (‖RB‖/‖W‖) per "
           "epoch; dashed: the cortex model's 78° (PFA appendix) and, for PFA runs, the theory angle "
           "arccos(1/√(1 + 1/expansion)).", "", f"![alignment]({os.path.basename(align)})", ""]
    cols = _projection_columns(runs)
    md += ["Final epoch, angle (deg) / norm ratio:", "",
           "| run | " + " | ".join(f"{c}: {n}" if len({cc for cc, _ in cols}) > 1 else n for c, n in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for r in runs:
        proj = (r.metrics[-1].get("projections") or {}) if r.metrics else {}
        cells = [f"{fmt(proj[n].get('alignment_deg'), '.1f')} / {fmt(proj[n].get('norm_ratio'), '.3f')}"
                 if c == r.circuit and n in proj else "–" for c, n in cols]
        md.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return md + [""]


def cell_type_lines(records: list[dict], label: str, *, threshold: float = 0.0, density: float = DEFAULT_DENSITY) -> list[str]:
    """The Markdown of one run's statistics split by cell type (Dale's principle), as stored and at
    the matched density, E→E compared with cortex; [] when its records have no cell types."""
    native = cell_type_reciprocity(records, threshold=threshold)
    if not native:
        return []
    matched = cell_type_reciprocity(records, threshold=threshold, density=density)
    lines = [f"### {label}", "", "As stored (strengths are magnitudes |w|: the sign is the sender's type):", "",
             reciprocity_table(native, reference=False), "",
             f"At the matched density p = {density:g}:", "", reciprocity_table(matched, reference=False), ""]
    if "E→E" in matched:
        lines += [f"E→E against cortex (matched density {density:g}): " + "; ".join(
            f"{c['label']} {fmt(c['value'], '.2f')} vs {c['study']} {_ref_text(c)}"
            + ("" if c["close"] is None else (" (close)" if c["close"] else " (not close)"))
            for c in compare(matched["E→E"])), ""]
    return lines


def _cell_type_section(runs: list[Run], threshold: float, density: float) -> list[str]:
    body = []
    for r in runs:
        if r.records:
            body += cell_type_lines(r.records, r.label, threshold=threshold, density=density)
    if not body:
        return []
    return ["## Cell types (Dale's principle)", "",
            "Pairs split by the types of the forward synapse's pre and post cells (A→B; the reverse synapse "
            "runs B→A), pooled over the projections whose pre and post populations have cell types. Song et "
            "al. (2005) measured E→E pairs (pyramidal cells, positive EPSP amplitudes): only E→E stands "
            "beside cortex; E→I, I→E and I→I are reported on their own.", ""] + body


def _correlation_section(runs: list[Run], out_dir: str) -> list[str]:
    md = ["## Weight correlation", ""]
    for r in runs:
        if not r.records:
            md.append(f"- {r.label}: *not available ({r.connectome_note})*")
            continue
        p = plot_weight_correlation(r, os.path.join(out_dir, f"weight_correlation_{_slug(r.label)}.png"))
        if p:
            md += ["", f"{r.label}:", "", f"![weight correlation {r.label}]({os.path.basename(p)})", ""]
            continue
        p = plot_pfa_paths(r, os.path.join(out_dir, f"pfa_paths_{_slug(r.label)}.png"))
        if p:
            md += ["", f"{r.label}: no direct feedback synapse (no cell pair is bidirectional); its feedback "
                   "path R B against Wᵀ, R against Wᵀ Bᵀ, and BᵀB:", "",
                   f"![PFA paths {r.label}]({os.path.basename(p)})", ""]
        else:
            md.append(f"- {r.label}: no direct feedback synapses (rule {r.rule}), nothing to correlate.")
    return md + [""]


def _motif_section(run: Run, threshold: float, max_cells: int, repeats: int, progress: bool,
                   density: float | None) -> list[str]:
    g = cell_graph(run.records, threshold=threshold, density=density)
    if g.n < 3:
        return []
    if g.n > max_cells:
        return [f"### {run.label}", "", f"Skipped: {g.n} cells > {max_cells} (each census costs about "
                f"{4.5 * 2 * g.n ** 3 / 1e11:.0f} s of BLAS at 100 GFLOP/s; raise `--motif-max-cells`).", ""]
    census = motif_census(g, repeats=repeats, seed=0, progress=progress)
    view = (f"at the matched density {density:g} (each tensor keeps its strongest |w|; as stored the graph is "
            "complete between connected populations and the census equals its null)" if density else "as stored")
    return [f"### {run.label}", "",
            f"{g.n} cells ({', '.join(f'{p} {n}' for p, (_, n) in g.offsets.items())}), {view}, {repeats} null draws:",
            "",
            census.table(), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m connectomes.report",
        description="The connectivity report of run directories: each learned connectome against cortex.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m connectomes.report runs/mnist/pfa-s0 runs/mnist/fa-s0 --out runs/report")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (config.json, metrics.jsonl, connectome.h5)")
    ap.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    ap.add_argument("--threshold", type=float, default=0.0, help="a synapse exists where |w| > threshold")
    ap.add_argument("--density", type=float, default=DEFAULT_DENSITY,
                    help="matched connection probability per direction for dense projections")
    ap.add_argument("--intervals", type=int, default=100, help="bootstrap resamples (0: none)")
    ap.add_argument("--no-motifs", action="store_true", help="leave out the three-cell motif census")
    ap.add_argument("--motif-max-cells", type=int, default=2500, help="skip motifs above this many cells")
    ap.add_argument("--motif-repeats", type=int, default=10, help="null-model draws")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if not 0 < args.density <= 1:
        ap.error(f"--density must be in (0, 1], got {args.density}")
    try:
        path = write_report(args.runs, args.out, motifs=not args.no_motifs, motif_max_cells=args.motif_max_cells,
                            motif_repeats=args.motif_repeats, threshold=args.threshold, density=args.density,
                            intervals=args.intervals, progress=not args.no_progress and sys.stderr.isatty())
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
