"""Cell-level pair statistics between two groups of cells, and for a whole circuit.

Orientation (as everywhere in the package, post × pre):

* ``W`` — forward tensor between group A (its pre, N_A cells) and group B (its post, N_B cells),
  shape (N_B, N_A): ``W[j, i]`` is the synapse from cell i of A onto cell j of B.
* ``F`` — the direct feedback tensor, shape (N_A, N_B): ``F[i, j]`` is the synapse from cell j of
  B back onto cell i of A. ``None`` when there is no direct feedback (PFA routes errors through
  its intermediate population ē; DFA from the readout): every connected pair is then
  unidirectional.

A synapse exists where ``|w| > threshold`` (default: nonzero), or where an explicit boolean mask
says so. A cell pair (i, j) is unordered; it can hold two synapses, i→j (in W) and j→i (in F).
Strengths are the signed weights (``absolute=True``: their magnitudes, the EPSP analogue).

The rat cortex values to compare with are in :mod:`connectomes.reference`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats

from connectomes.analysis import alignment_deg, angle_deg
from connectomes.reference import RAT_CORTEX


# --------------------------------------------------------------------------- small statistics
def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


def pearson(x, y) -> float:
    """Pearson correlation (scipy.stats.pearsonr); NaN with fewer than 2 values or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _constant(x) or _constant(y):
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr, ties at their average rank); NaN as for
    :func:`pearson`."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _constant(x) or _constant(y):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def lognormal_fit(weights) -> dict:
    """Fit ln|w| ~ N(mu, sigma²) over the nonzero entries of ``weights`` (any shape).

    Returns ``mu``, ``sigma`` (ML: population sd), ``ks`` (Kolmogorov–Smirnov distance between
    ln|w| and the fitted normal), ``ks_pvalue`` (scipy only; approximate, since mu and sigma are
    fitted from the same data) and ``n``. NaNs when fewer than 2 nonzero weights.
    """
    w = np.abs(_numpy(weights)).ravel()
    logw = np.log(w[w > 0])
    out = {"mu": float("nan"), "sigma": float("nan"), "ks": float("nan"),
           "ks_pvalue": float("nan"), "n": int(logw.size)}
    if logw.size < 2:
        return out
    mu, sigma = float(logw.mean()), float(logw.std())
    out.update(mu=mu, sigma=sigma)
    if sigma == 0:
        return out
    res = stats.kstest(logw, "norm", args=(mu, sigma))
    out.update(ks=float(res.statistic), ks_pvalue=float(res.pvalue))
    return out


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


# --------------------------------------------------------------------------- pair statistics
@dataclass
class PairStats:
    """Pair statistics of one forward tensor and its direct feedback (see the module doc).

    Counts: ``n_pre`` (N_A), ``n_post`` (N_B), ``possible_pairs`` (N_A·N_B unordered pairs),
    ``forward_synapses``, ``feedback_synapses``, ``connected_pairs`` (pairs with at least one
    synapse), ``bidirectional_pairs``.
    """

    n_pre: int
    n_post: int
    possible_pairs: int
    forward_synapses: int
    feedback_synapses: int
    connected_pairs: int
    bidirectional_pairs: int
    connection_probability: float   # synapses / possible ordered pairs (2·N_A·N_B)
    bidirectional_fraction: float   # bidirectional pairs / connected pairs
    reciprocity_ratio: float        # P(i↔j) / P(i→j)²
    pearson_bidirectional: float    # forward vs feedback strength, bidirectional pairs only
    spearman_bidirectional: float
    pearson_connected: float        # over all connected pairs, an absent synapse = 0 (0 if a
                                    # direction has no synapse at all, e.g. PFA)
    spearman_connected: float
    alignment_deg: float            # ∠(vec Wᵀ, vec F); 90 without direct feedback
    lognormal_mu: float             # ln|w| over every synapse of the pair (W and F)
    lognormal_sigma: float
    lognormal_ks: float
    lognormal_n: int
    direct_feedback: bool
    name: str = ""
    rule: str = ""
    route: str = ""                 # "direct", "indirect" (PFA's ē, DFA) or "none"
    transported: bool = False       # the feedback is a function of W (BP's Wᵀ, SF's signs)
    feedback_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Pairs:
    """Flattened cell pairs, in W's order (index j·N_A + i)."""

    fwd: np.ndarray      # W[j, i]
    bwd: np.ndarray      # F[i, j] (0 without feedback)
    fe: np.ndarray       # forward synapse exists
    be: np.ndarray       # feedback synapse exists


def _exists(t: np.ndarray, threshold: float, mask) -> np.ndarray:
    if mask is not None:
        m = _numpy(mask).astype(bool)
        if m.shape != t.shape:
            raise ValueError(f"mask of shape {m.shape} does not match the tensor's {t.shape}")
        return m & (t != 0) if threshold == 0 else m & (np.abs(t) > threshold)
    return np.abs(t) > threshold


def _pairs(W, F, threshold, mask, feedback_mask) -> _Pairs:
    w = _numpy(W)
    if w.ndim != 2:
        raise ValueError(f"cell-level pair statistics need a dense 2-D forward tensor (N_post × N_pre), "
                         f"got shape {w.shape}")
    fe = _exists(w, threshold, mask)
    if F is None:
        if feedback_mask is not None:
            raise ValueError("feedback_mask given without a feedback tensor")
        return _Pairs(w.ravel(), np.zeros(w.size), fe.ravel(), np.zeros(w.size, dtype=bool))
    f = _numpy(F)
    if f.shape != w.shape[::-1]:
        raise ValueError(f"direct feedback of shape {f.shape} does not match Wᵀ of shape {w.shape[::-1]} "
                         "(feedback is stored post × pre of its own projection: N_pre_fwd × N_post_fwd)")
    be = _exists(f, threshold, feedback_mask).T
    return _Pairs(w.ravel(), f.T.ravel(), fe.ravel(), be.ravel())


def _connected_corr(corr, x, y, n_f: int, n_b: int) -> float:
    """Correlation over connected pairs; 0 (no correlation, as PFA's 90°) when one direction
    has no synapse at all, so that its strengths are identically absent."""
    if x.size >= 2 and (n_f == 0 or n_b == 0):
        return 0.0
    return corr(x, y)


def _stats(p: _Pairs, n_pre: int, n_post: int, *, absolute: bool, direct: bool,
           alignment: float | None = None) -> PairStats:
    fwd = np.abs(p.fwd) if absolute else p.fwd
    bwd = np.abs(p.bwd) if absolute else p.bwd
    n_pairs = int(p.fe.size)
    n_f, n_b = int(p.fe.sum()), int(p.be.sum())
    bi = p.fe & p.be
    conn = p.fe | p.be
    n_bi, n_conn = int(bi.sum()), int(conn.sum())
    p_conn = (n_f + n_b) / (2 * n_pairs) if n_pairs else float("nan")
    p_bi = n_bi / n_pairs if n_pairs else float("nan")
    x_conn = np.where(p.fe, fwd, 0.0)[conn]
    y_conn = np.where(p.be, bwd, 0.0)[conn]
    if alignment is None:
        alignment = angle_deg(torch.from_numpy(np.where(p.fe, p.fwd, 0.0)),
                              torch.from_numpy(np.where(p.be, p.bwd, 0.0))) if direct else 90.0
    fit = lognormal_fit(np.concatenate([p.fwd[p.fe], p.bwd[p.be]]))
    return PairStats(
        n_pre=n_pre, n_post=n_post, possible_pairs=n_pairs,
        forward_synapses=n_f, feedback_synapses=n_b,
        connected_pairs=n_conn, bidirectional_pairs=n_bi,
        connection_probability=p_conn,
        bidirectional_fraction=n_bi / n_conn if n_conn else float("nan"),
        reciprocity_ratio=p_bi / p_conn ** 2 if p_conn else float("nan"),
        pearson_bidirectional=pearson(fwd[bi], bwd[bi]),
        spearman_bidirectional=spearman(fwd[bi], bwd[bi]),
        pearson_connected=_connected_corr(pearson, x_conn, y_conn, n_f, n_b),
        spearman_connected=_connected_corr(spearman, x_conn, y_conn, n_f, n_b),
        alignment_deg=alignment,
        lognormal_mu=fit["mu"], lognormal_sigma=fit["sigma"], lognormal_ks=fit["ks"],
        lognormal_n=fit["n"], direct_feedback=direct,
    )


def pair_statistics(W, F=None, *, threshold: float = 0.0, mask=None, feedback_mask=None,
                    absolute: bool = False) -> PairStats:
    """Pair statistics of forward ``W`` (N_B × N_A) and direct feedback ``F`` (N_A × N_B) or None.

    ``threshold``: a synapse exists where |w| > threshold. ``mask`` / ``feedback_mask``: boolean
    tensors shaped like W / F restricting where synapses may exist. ``absolute``: correlate
    |w| instead of the signed weights. ``alignment_deg`` is
    :func:`connectomes.analysis.alignment_deg` of the tensors with absent synapses zeroed
    (90° when F is None).
    """
    p = _pairs(W, F, threshold, mask, feedback_mask)
    n_post, n_pre = tuple(W.shape)
    alignment = 90.0
    if F is not None:
        w_eff = torch.as_tensor(np.where(p.fe, p.fwd, 0.0).reshape(n_post, n_pre))
        f_eff = torch.as_tensor(np.where(p.be, p.bwd, 0.0).reshape(n_post, n_pre).T)
        alignment = alignment_deg(w_eff, f_eff)
    return _stats(p, n_pre, n_post, absolute=absolute, direct=F is not None, alignment=alignment)


# --------------------------------------------------------------------------- whole circuit
def feedback_routes(records: list[dict]) -> list[dict]:
    """Pair each dense forward record with its feedback, from ``CompiledCircuit.connectome()``.

    Returns, per forward record with a 2-D weight, ``{"forward": rec, "direct": [recs],
    "route": ...}``: ``direct`` are the feedback records whose pre is the forward's post and
    whose post is the forward's pre (and whose ``forward`` names it); route is "direct" if
    there are any, "indirect" if the projection has other feedback records only (PFA's B and R
    through ē, DFA from the readout), and "none" if it has no feedback at all (e.g. the
    projection out of the input, whose cells receive no error).
    """
    out = []
    feedback = [r for r in records if r.get("kind") == "feedback"]
    for rec in records:
        if rec.get("kind") != "forward" or rec["weight"].dim() != 2:
            continue
        name = rec["name"]
        mine = [r for r in feedback if r.get("forward", name) == name]
        direct = [r for r in mine if r["pre"] == rec["post"] and r["post"] == rec["pre"]]
        route = "direct" if direct else ("indirect" if mine else "none")
        out.append({"forward": rec, "direct": direct, "route": route})
    return out


def _direct_tensor(direct: list[dict]) -> torch.Tensor | None:
    """The direct feedback of one projection: the sum of its direct records (disjoint masked
    groups of a mixed rule add up to one tensor)."""
    if not direct:
        return None
    total = direct[0]["weight"].detach().double().clone()
    for r in direct[1:]:
        total += r["weight"].detach().double()
    return total


def circuit_reciprocity(records: list[dict], *, threshold: float = 0.0, absolute: bool = False,
                        pooled: bool = True) -> dict[str, PairStats]:
    """Pair statistics for every dense forward projection of a circuit, keyed by its name.

    PFA's and DFA's projections have no direct feedback: zero reciprocal synapses. With
    ``pooled``, the key ``"pooled"`` holds the statistics over the cell pairs of every
    projection whose pre cells receive errors (route "direct" or "indirect") taken together.
    Non-dense (e.g. convolution) projections are skipped.
    """
    out: dict[str, PairStats] = {}
    pooled_pairs: list[_Pairs] = []
    n_pre_total = n_post_total = 0
    any_direct = False
    for item in feedback_routes(records):
        fwd, direct = item["forward"], item["direct"]
        F = _direct_tensor(direct)
        st = pair_statistics(fwd["weight"], F, threshold=threshold, absolute=absolute)
        st.name, st.rule, st.route = fwd["name"], fwd.get("rule", ""), item["route"]
        st.transported = any(bool(r.get("transported")) for r in direct)
        st.feedback_names = [r["name"] for r in direct]
        out[fwd["name"]] = st
        if item["route"] != "none":
            pooled_pairs.append(_pairs(fwd["weight"], F, threshold, None, None))
            n_pre_total += st.n_pre
            n_post_total += st.n_post
            any_direct |= F is not None
    if pooled and pooled_pairs:
        cat = _Pairs(*(np.concatenate([getattr(p, k) for p in pooled_pairs]) for k in ("fwd", "bwd", "fe", "be")))
        st = _stats(cat, n_pre_total, n_post_total, absolute=absolute, direct=any_direct)
        rules = sorted({s.rule for s in out.values() if s.route != "none"})
        st.name, st.rule, st.route = "pooled", "+".join(rules), "pooled"
        st.transported = any(s.transported for s in out.values())
        out["pooled"] = st
    return out


# --------------------------------------------------------------------------- tables
_ROWS = [  # (label, PairStats field, reference key, format)
    ("feedback route", "route", None, "s"),
    ("connection probability", "connection_probability", "connection_probability", ".3f"),
    ("bidirectional / connected pairs", "bidirectional_fraction", "bidirectional_fraction", ".3f"),
    ("reciprocity P(i↔j)/P(i→j)²", "reciprocity_ratio", "reciprocity_ratio", ".2f"),
    ("Pearson r, bidirectional pairs", "pearson_bidirectional", "pearson_bidirectional", ".3f"),
    ("Spearman ρ, bidirectional pairs", "spearman_bidirectional", None, ".3f"),
    ("Pearson R, connected pairs (absent = 0)", "pearson_connected", "pearson_connected", ".3f"),
    ("Spearman ρ, connected pairs", "spearman_connected", None, ".3f"),
    ("alignment angle (deg)", "alignment_deg", "alignment_deg", ".1f"),
    ("lognormal σ of ln(abs w)", "lognormal_sigma", "lognormal_sigma", ".3f"),
    ("lognormal μ of ln(abs w)", "lognormal_mu", "lognormal_mu", ".3f"),
    ("KS distance to the lognormal fit", "lognormal_ks", None, ".3f"),
    ("connected pairs", "connected_pairs", "connected_pairs", "d"),
    ("bidirectional pairs", "bidirectional_pairs", "bidirectional_pairs", "d"),
]


def _fmt(value, spec: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if spec == "s":
        return str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def reciprocity_table(stats: dict[str, PairStats], *, reference: bool = True) -> str:
    """A Markdown table: one row per quantity, one column per projection, and the rat cortex
    value (Song et al. 2005; the PFA appendix for R and the angle) in the last column."""
    names = list(stats)
    header = ["quantity"] + [f"{n} ({stats[n].rule})" if stats[n].rule else n for n in names]
    if reference:
        header.append("rat cortex")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key, ref, spec in _ROWS:
        cells = [label] + [_fmt(getattr(stats[n], key), spec) for n in names]
        if reference:
            cells.append(str(RAT_CORTEX[ref]) if ref else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_reciprocity(records_or_stats, **kwargs) -> None:
    """Print :func:`reciprocity_table` of connectome records (or of ready statistics)."""
    if isinstance(records_or_stats, dict):
        stats = records_or_stats
    else:
        stats = circuit_reciprocity(records_or_stats, **kwargs)
    print(reciprocity_table(stats))
