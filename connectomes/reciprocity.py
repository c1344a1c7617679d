"""Cell-level pair statistics between two groups of cells, and for a whole circuit, measured the
way the cortical references measure them (definitions: ``docs/connectomes.md``).

Orientation (as everywhere in the package, post × pre):

* ``W`` — forward tensor between group A (its pre, N_A cells) and group B (its post, N_B cells),
  shape (N_B, N_A): ``W[j, i]`` is the synapse from cell i of A onto cell j of B.
* ``F`` — the direct feedback tensor, shape (N_A, N_B): ``F[i, j]`` is the synapse from cell j of
  B back onto cell i of A. ``None`` when the architecture has no direct feedback synapse (PFA
  routes errors through its intermediate population ē; DFA from the readout): the reverse
  direction then *cannot* exist, and the statistics count only the forward direction as possible.

A synapse exists where ``|w| > threshold`` (default: nonzero), where a boolean mask allows it,
and, with ``density=p``, only among the strongest |w| of its direction (the matched-density
view: each direction keeps its ``round(p · N_A · N_B)`` strongest synapses, so that a dense
network is compared with a sparse cortex at the cortex's connection probability).

Strengths: cortical EPSPs are excitatory amplitudes; an ANN's weights are signed. Statistics
named ``log_…``/``lognormal_…``/``strength_…`` use excitatory synapses (w > 0) in log space, as
Song et al. (2005) do; those named ``signed_…`` use the signed weights, as the PFA paper's
appendix model does. A value that is undefined is NaN, and ``notes[field]`` says why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats as sstats

from connectomes.reference import RAT_CORTEX, references_for


class NonFiniteWeightError(ValueError):
    """A weight that is NaN or infinite: statistics over the rest would be silently wrong."""


# --------------------------------------------------------------------------- small statistics
def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


def pearson(x, y) -> float:
    """Pearson correlation in float64; NaN with fewer than 2 values or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _constant(x) or _constant(y):
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()   # elementwise sums: no BLAS thread hand-off on small arrays
    return float(np.clip((xc * yc).sum() / math.sqrt((xc * xc).sum() * (yc * yc).sum()), -1.0, 1.0))


def rank(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties at their average rank (as scipy.stats.rankdata), from one unstable
    sort (scipy's stable sort takes several times as long on millions of values)."""
    order = np.argsort(a)
    s = a[order]
    new = np.empty(s.size, dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    out = np.empty(a.size, dtype=np.float64)
    if new.all():
        out[order] = np.arange(1, a.size + 1, dtype=np.float64)
        return out
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], a.size)
    out[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(new) - 1]
    return out


def spearman(x, y) -> float:
    """Spearman rank correlation (ties at their average rank, as scipy.stats.spearmanr); NaN as
    for :func:`pearson`. Each array is ranked once."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if _constant(x) or _constant(y):
        return float("nan")
    return pearson(rank(x), rank(y))


def lognormal_fit(weights) -> dict:
    """Fit ln|w| ~ N(mu, sigma²) over the nonzero entries of ``weights`` (any shape; pass the
    excitatory synapses for a comparison with EPSPs).

    Returns ``mu``, ``sigma`` (ML: population sd), ``ks`` (Kolmogorov–Smirnov distance between
    ln|w| and the fitted normal), ``ks_pvalue`` (approximate, since mu and sigma are fitted from
    the same data) and ``n``. NaNs when fewer than 2 nonzero weights.
    """
    w = np.abs(_numpy(weights)).ravel()
    return _normal_fit(np.log(w[w > 0]))


def _normal_fit(logw: np.ndarray) -> dict:
    out = {"mu": float("nan"), "sigma": float("nan"), "ks": float("nan"),
           "ks_pvalue": float("nan"), "n": int(logw.size)}
    if logw.size < 2:
        return out
    mu, sigma = float(logw.mean()), float(logw.std())
    out.update(mu=mu, sigma=sigma)
    if sigma == 0:
        return out
    res = sstats.ks_1samp(logw, sstats.norm(mu, sigma).cdf)
    out.update(ks=float(res.statistic), ks_pvalue=float(res.pvalue))
    return out


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def check_finite(t: np.ndarray, name: str, pre: str = "pre", post: str = "post") -> None:
    """Raise :class:`NonFiniteWeightError` naming the tensor and the first non-finite cell pair
    of ``t`` (post × pre)."""
    bad = ~np.isfinite(t)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = (f" (the synapse from cell {idx[1]} of {pre} onto cell {idx[0]} of {post})"
                 if len(idx) == 2 else "")
        raise NonFiniteWeightError(f"{name}{list(idx)} = {t[idx]} is not finite{where}; "
                                   f"{int(bad.sum())} non-finite entries in {name}")


# --------------------------------------------------------------------------- pair statistics
# the statistics that stand beside a reference (bootstrap intervals are drawn for these)
HEADLINE = ("connection_probability", "reciprocity_over_chance", "bidirectional_fraction",
            "log_pearson_bidirectional", "signed_pearson_connected", "lognormal_sigma",
            "strength_ratio_bidirectional")


@dataclass
class PairStats:
    """Pair statistics of one forward tensor and its direct feedback (see the module doc and
    ``docs/connectomes.md`` for each definition). Counts: ``possible_pairs`` (N_A·N_B unordered
    pairs), ``forward_synapses``, ``feedback_synapses``, ``connected_pairs`` (at least one
    synapse), ``bidirectional_pairs``, ``excitatory_bidirectional_pairs`` (both synapses w > 0).
    ``intervals`` holds bootstrap 95% intervals when :func:`bootstrap_intervals` filled them."""

    n_pre: int
    n_post: int
    possible_pairs: int
    forward_synapses: int
    feedback_synapses: int
    connected_pairs: int
    bidirectional_pairs: int
    excitatory_bidirectional_pairs: int
    feedback_possible: bool             # the architecture has a direct reverse synapse j → i
    density: float | None               # matched density (None: synapses as they are)
    connection_probability: float       # synapses / possible ordered pairs (reverse only where possible)
    p_forward: float                    # forward synapses / pairs
    p_feedback: float                   # feedback synapses / pairs (NaN: impossible)
    bidirectional_fraction: float       # bidirectional pairs / connected pairs
    reciprocity_over_chance: float      # P(i↔j) / (p_forward · p_feedback)
    log_pearson_bidirectional: float    # Pearson r of (ln w_fwd, ln w_bwd), bidirectional pairs, both w > 0 (Song)
    signed_pearson_bidirectional: float
    signed_spearman_bidirectional: float
    sign_agreement_bidirectional: float  # fraction of bidirectional pairs whose two weights share a sign
    signed_pearson_connected: float     # over connected pairs, absent = 0, signed (the PFA appendix)
    alignment_deg: float                # ∠(vec Wᵀ, vec F), absent = 0 (90 by convention without feedback synapses)
    strength_ratio_bidirectional: float  # median w>0 in bidirectional pairs / in unidirectional pairs
    lognormal_mu: float                 # fit of ln w over excitatory synapses (w > 0), W and F
    lognormal_sigma: float
    lognormal_ks: float
    lognormal_n: int
    excitatory_fraction: float          # synapses with w > 0 / synapses
    abs_lognormal_sigma: float          # sd of ln|w| over every synapse, signs folded (not Song's)
    name: str = ""
    rule: str = ""
    route: str = ""                     # "direct", "indirect" (PFA's ē, DFA), "none", or "pooled"
    transported: bool = False           # the feedback is a function of W (BP's Wᵀ, SF's signs)
    feedback_names: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        """Every possible synapse exists: the native view says nothing about sparsity."""
        return self.connection_probability == 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairBlock:
    """The cell pairs of one projection, flattened in W's order (index j·N_A + i); ``empty``
    counts further pairs with no synapse that are not stored (a bootstrap resample keeps only
    the connected pairs it drew)."""

    fwd: np.ndarray      # W[j, i]
    bwd: np.ndarray      # F[i, j] (0 where there is no feedback tensor)
    fe: np.ndarray       # forward synapse exists
    be: np.ndarray       # feedback synapse exists
    reverse: bool        # a feedback synapse can exist
    empty: int = 0

    @property
    def size(self) -> int:
        return self.fe.size + self.empty

    def connected(self) -> "PairBlock":
        """The same pairs, the unconnected ones only counted."""
        on = self.fe | self.be
        return PairBlock(self.fwd[on], self.bwd[on], self.fe[on], self.be[on], self.reverse,
                         self.size - int(on.sum()))

    def resample(self, rng: np.random.Generator) -> "PairBlock":
        """A bootstrap resample of all ``size`` pairs (with replacement), drawn as: how many
        draws land on connected pairs (binomial), then which (uniform). Call on
        :meth:`connected` blocks (empty pairs carry no values)."""
        n_on = self.fe.size
        k = int(rng.binomial(self.size, n_on / self.size)) if n_on else 0
        idx = rng.integers(0, n_on, k) if k else np.zeros(0, dtype=np.int64)
        return PairBlock(self.fwd[idx], self.bwd[idx], self.fe[idx], self.be[idx], self.reverse, self.size - k)


def _exists(t: np.ndarray, threshold: float, mask) -> np.ndarray:
    on = np.abs(t) > threshold
    if mask is not None:
        m = _numpy(mask).astype(bool)
        if m.shape != t.shape:
            raise ValueError(f"mask of shape {m.shape} does not match the tensor's {t.shape}")
        on &= m
    return on


def strongest(t: np.ndarray, exists: np.ndarray, k: int) -> np.ndarray:
    """``exists`` restricted to the ``k`` entries of largest |t| (all of them if fewer)."""
    flat = np.flatnonzero(exists)
    if k >= flat.size:
        return exists
    keep = flat[np.argpartition(-np.abs(t.ravel()[flat]), k - 1)[:k]] if k > 0 else flat[:0]
    out = np.zeros(t.size, dtype=bool)
    out[keep] = True
    return out.reshape(t.shape)


def pair_block(W, F=None, threshold: float = 0.0, mask=None, feedback_mask=None, density: float | None = None,
               name: str = "W", feedback_name: str = "F", pre: str = "pre", post: str = "post") -> PairBlock:
    """The cell pairs of forward ``W`` and direct feedback ``F`` (arguments as
    :func:`pair_statistics`), the unit :func:`bootstrap_intervals` resamples."""
    w = _numpy(W)
    if w.ndim != 2:
        raise ValueError(f"{name}: cell-level pair statistics need a dense 2-D forward tensor "
                         f"(N_post × N_pre), got shape {w.shape}")
    check_finite(w, name, pre, post)
    fe = _exists(w, threshold, mask)
    if density is not None:
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        fe = strongest(w, fe, int(round(density * w.size)))
    if F is None:
        if feedback_mask is not None:
            raise ValueError(f"{name}: feedback_mask given without a feedback tensor")
        return PairBlock(w.ravel(), np.zeros(w.size), fe.ravel(), np.zeros(w.size, dtype=bool), False)
    f = _numpy(F)
    if f.shape != w.shape[::-1]:
        raise ValueError(f"{feedback_name}: direct feedback of shape {f.shape} does not match Wᵀ of shape "
                         f"{w.shape[::-1]} (feedback is stored post × pre of its own projection: "
                         "N_pre_fwd × N_post_fwd)")
    check_finite(f, feedback_name, post, pre)
    be = _exists(f, threshold, feedback_mask)
    if density is not None:
        be = strongest(f, be, int(round(density * f.size)))
    return PairBlock(w.ravel(), f.T.ravel(), fe.ravel(), be.T.ravel(), True)


def _nan(notes: dict, key: str, why: str) -> float:
    notes[key] = why
    return float("nan")


def _median_ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(a) / np.median(b)) if a.size and b.size else float("nan")


def _headline(blocks: list[PairBlock], notes: dict | None = None, *, full: bool = False) -> dict:
    """The statistics of the pairs of ``blocks`` taken together (chance per block, from each
    block's own densities). ``full``: also the rank, KS and alignment statistics (slower)."""
    notes = {} if notes is None else notes
    if len(blocks) == 1:
        fwd, bwd, fe, be = blocks[0].fwd, blocks[0].bwd, blocks[0].fe, blocks[0].be
    else:
        fwd, bwd, fe, be = (np.concatenate([getattr(b, k) for b in blocks]) for k in ("fwd", "bwd", "fe", "be"))
    sizes = np.array([b.size for b in blocks])
    reverse = np.array([b.reverse for b in blocks])
    n_f_k = np.array([int(b.fe.sum()) for b in blocks])
    n_b_k = np.array([int(b.be.sum()) for b in blocks])
    n_pairs, n_f, n_b = int(sizes.sum()), int(n_f_k.sum()), int(n_b_k.sum())
    bi, conn = fe & be, fe | be
    n_bi, n_conn = int(bi.sum()), int(conn.sum())
    out: dict = {"possible_pairs": n_pairs, "forward_synapses": n_f, "feedback_synapses": n_b,
                 "connected_pairs": n_conn, "bidirectional_pairs": n_bi}
    feasible = int(sizes.sum() + sizes[reverse].sum())
    out["connection_probability"] = (n_f + n_b) / feasible if feasible else float("nan")
    out["p_forward"] = n_f / n_pairs if n_pairs else float("nan")
    rev_pairs = int(sizes[reverse].sum())
    out["p_feedback"] = (n_b / rev_pairs if rev_pairs else
                         _nan(notes, "p_feedback", "the reverse synapse cannot exist (no direct feedback)"))
    out["bidirectional_fraction"] = (n_bi / n_conn if n_conn else
                                     _nan(notes, "bidirectional_fraction", "no connected pair"))
    expected = float(np.sum(n_f_k * n_b_k / np.maximum(sizes, 1)))
    if not rev_pairs:
        out["reciprocity_over_chance"] = _nan(notes, "reciprocity_over_chance",
                                              "the reverse synapse cannot exist (no direct feedback): chance level undefined")
    elif expected == 0:
        out["reciprocity_over_chance"] = _nan(notes, "reciprocity_over_chance",
                                              "no synapse in one direction: chance level 0")
    else:
        out["reciprocity_over_chance"] = n_bi / expected
    exc = bi & (fwd > 0) & (bwd > 0)
    out["excitatory_bidirectional_pairs"] = int(exc.sum())
    r = pearson(np.log(fwd[exc]), np.log(bwd[exc])) if exc.any() else float("nan")
    n_exc = int(exc.sum())
    out["log_pearson_bidirectional"] = r if not math.isnan(r) else _nan(
        notes, "log_pearson_bidirectional",
        f"{n_exc} bidirectional pairs with both synapses excitatory" if n_exc < 2 else
        f"the strengths of one direction are all equal over the {n_exc} excitatory bidirectional pairs "
        "(sign feedback of one magnitude): a correlation is undefined")
    x, y = np.where(fe, fwd, 0.0), np.where(be, bwd, 0.0)
    r = pearson(x[conn], y[conn])
    out["signed_pearson_connected"] = r if not math.isnan(r) else _nan(
        notes, "signed_pearson_connected",
        "one direction has no synapse (or constant strengths): a correlation is undefined")
    # excitatory synapses: in bidirectional pairs, in unidirectional pairs, all
    pos_f, pos_b = fe & (fwd > 0), be & (bwd > 0)
    strengths_bi = np.concatenate([fwd[pos_f & be], bwd[pos_b & fe]])
    strengths_uni = np.concatenate([fwd[pos_f & ~be], bwd[pos_b & ~fe]])
    out["strength_ratio_bidirectional"] = (_median_ratio(strengths_bi, strengths_uni)
                                           if strengths_bi.size and strengths_uni.size else _nan(
        notes, "strength_ratio_bidirectional",
        f"{strengths_bi.size} excitatory synapses in bidirectional pairs, {strengths_uni.size} in unidirectional ones"))
    log_exc = np.log(np.concatenate([fwd[pos_f], bwd[pos_b]]))
    sd = float(log_exc.std()) if log_exc.size >= 2 else float("nan")
    out["lognormal_sigma"] = sd if not math.isnan(sd) else _nan(notes, "lognormal_sigma", "fewer than 2 excitatory synapses")
    if not full:
        return out
    out["signed_pearson_bidirectional"] = pearson(fwd[bi], bwd[bi])
    out["signed_spearman_bidirectional"] = spearman(fwd[bi], bwd[bi])
    out["sign_agreement_bidirectional"] = (float(np.mean(np.sign(fwd[bi]) == np.sign(bwd[bi]))) if n_bi
                                           else float("nan"))
    if n_bi < 2:
        for k in ("signed_pearson_bidirectional", "signed_spearman_bidirectional"):
            notes[k] = f"{n_bi} bidirectional pairs"
    nx, ny = float((x * x).sum()), float((y * y).sum())
    if ny == 0:
        out["alignment_deg"] = 90.0
        notes["alignment_deg"] = "no feedback synapse: 90° by convention (the PFA paper's: no correlation)"
    elif nx == 0:
        out["alignment_deg"] = _nan(notes, "alignment_deg", "no forward synapse")
    else:
        out["alignment_deg"] = math.degrees(math.acos(max(-1.0, min(1.0, float((x * y).sum()) / math.sqrt(nx * ny)))))
    fit = _normal_fit(log_exc)
    out.update(lognormal_mu=fit["mu"], lognormal_ks=fit["ks"], lognormal_n=fit["n"])
    n_syn = n_f + n_b
    out["excitatory_fraction"] = log_exc.size / n_syn if n_syn else float("nan")
    every = np.abs(np.concatenate([fwd[fe], bwd[be]]))
    out["abs_lognormal_sigma"] = float(np.log(every).std()) if every.size >= 2 else float("nan")
    return out


def _pair_stats(blocks: list[PairBlock], n_pre: int, n_post: int, density) -> PairStats:
    notes: dict[str, str] = {}
    values = _headline(blocks, notes, full=True)
    return PairStats(n_pre=n_pre, n_post=n_post, feedback_possible=any(b.reverse for b in blocks),
                     density=density, notes=notes, **values)


def pair_statistics(W, F=None, *, threshold: float = 0.0, mask=None, feedback_mask=None,
                    density: float | None = None, name: str = "W", feedback_name: str = "F",
                    pre: str = "pre", post: str = "post") -> PairStats:
    """Pair statistics of forward ``W`` (N_B × N_A) and direct feedback ``F`` (N_A × N_B) or
    None (no reverse synapse can exist).

    ``threshold``: a synapse exists where |w| > threshold. ``mask`` / ``feedback_mask``: boolean
    tensors shaped like W / F restricting where synapses may exist. ``density``: the matched-
    density view (each direction keeps its round(density · N_A·N_B) strongest |w|). ``name``,
    ``feedback_name``, ``pre``, ``post`` name the tensors and populations in errors: a NaN or
    infinite weight raises :class:`NonFiniteWeightError` naming the tensor and cell pair.
    """
    b = pair_block(W, F, threshold, mask, feedback_mask, density, name, feedback_name, pre, post)
    n_post, n_pre = tuple(W.shape)
    return _pair_stats([b], n_pre, n_post, density)


def bootstrap_intervals(blocks: list[PairBlock], *, repeats: int = 200, seed: int = 0,
                        level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the :data:`HEADLINE` statistics: cell pairs resampled
    with replacement within each projection. Pairs that share a cell are not independent, so
    the intervals are a lower bound on the uncertainty; across seeds is the stronger test."""
    rng = np.random.default_rng(seed)
    blocks = [b.connected() for b in blocks]
    draws: dict[str, list[float]] = {k: [] for k in HEADLINE}
    for _ in range(repeats):
        res = _headline([b.resample(rng) for b in blocks])
        for k in HEADLINE:
            draws[k].append(res[k])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k, v in draws.items():
        a = np.asarray(v, dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size >= max(10, repeats // 2):
            out[k] = [float(np.percentile(a, lo)), float(np.percentile(a, hi))]
    return out


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


def direct_feedback(direct: list[dict]) -> torch.Tensor | None:
    """The direct feedback of one projection: the sum of its direct records (disjoint masked
    groups of a mixed rule add up to one tensor). Each record is checked for non-finite values
    under its own name."""
    if not direct:
        return None
    total = None
    for r in direct:
        w = r["weight"].detach().double()
        check_finite(w.numpy(), r["name"], r.get("pre", "pre"), r.get("post", "post"))
        total = w.clone() if total is None else total + w
    return total


def projection_pairs(records: list[dict], projection: str, *, threshold: float = 0.0,
                     density: float | None = None) -> PairBlock:
    """The cell pairs of one forward projection of connectome records and its direct feedback."""
    item = next((it for it in feedback_routes(records) if it["forward"]["name"] == projection), None)
    if item is None:
        raise KeyError(f"no dense forward projection {projection!r} in these records")
    fwd, direct = item["forward"], item["direct"]
    return pair_block(fwd["weight"], direct_feedback(direct), threshold, None, None, density, projection,
                      "+".join(r["name"] for r in direct) or "F", fwd["pre"], fwd["post"])


def circuit_reciprocity(records: list[dict], *, threshold: float = 0.0, density: float | None = None,
                        pooled: bool = True, intervals: int = 0, seed: int = 0) -> dict[str, PairStats]:
    """Pair statistics for every dense forward projection of a circuit, keyed by its name.

    PFA's and DFA's projections have no direct feedback (the reverse synapse cannot exist).
    ``density``: the matched-density view. With ``pooled``, the key ``"pooled"`` holds the
    statistics over the cell pairs of every projection whose pre cells receive errors (route
    "direct" or "indirect") taken together, chance computed per projection. ``intervals=K``
    adds bootstrap intervals from K resamples. Non-dense projections are skipped.
    """
    out: dict[str, PairStats] = {}
    blocks: list[PairBlock] = []
    n_pre_total = n_post_total = 0
    for item in feedback_routes(records):
        fwd, direct = item["forward"], item["direct"]
        F = direct_feedback(direct)
        b = pair_block(fwd["weight"], F, threshold, None, None, density, fwd["name"],
                   "+".join(r["name"] for r in direct) or "F", fwd["pre"], fwd["post"])
        n_post, n_pre = tuple(fwd["weight"].shape)
        st = _pair_stats([b], n_pre, n_post, density)
        st.name, st.rule, st.route = fwd["name"], fwd.get("rule", ""), item["route"]
        st.transported = any(bool(r.get("transported")) for r in direct)
        st.feedback_names = [r["name"] for r in direct]
        if intervals:
            st.intervals = bootstrap_intervals([b], repeats=intervals, seed=seed)
        out[fwd["name"]] = st
        if item["route"] != "none":
            blocks.append(b)
            n_pre_total += n_pre
            n_post_total += n_post
    if pooled and blocks:
        st = _pair_stats(blocks, n_pre_total, n_post_total, density)
        rules = sorted({s.rule for s in out.values() if s.route != "none"})
        st.name, st.rule, st.route = "pooled", "+".join(rules), "pooled"
        st.transported = any(s.transported for s in out.values())
        if intervals:
            st.intervals = bootstrap_intervals(blocks, repeats=intervals, seed=seed)
        out["pooled"] = st
    return out


TYPE_PAIRS = ("E→E", "E→I", "I→E", "I→I")  # pre type → post type of the forward synapse


def cell_type_reciprocity(records: list[dict], *, threshold: float = 0.0, density: float | None = None,
                          intervals: int = 0, seed: int = 0) -> dict[str, PairStats]:
    """Pair statistics split by cell type (Dale's principle), keyed by ``TYPE_PAIRS``: the pairs
    of pre cell type A and post cell type B of every dense forward projection whose pre and post
    populations have cell types (records with ``pre_sign`` and ``post_sign``) and whose pre cells
    receive errors, pooled over those projections (chance computed per projection and type pair).
    A pair's forward synapse is A → B and its reverse synapse (direct feedback) B → A.

    Within a type pair every synapse's sign is fixed by its sender's type, so strengths are the
    magnitudes |w| (a synapse exists where |w| > threshold): for E→E these are the positive
    amplitudes Song et al. (2005) measured between pyramidal cells, a like-for-like comparison;
    E→I, I→E and I→I are reported beside it, compared with no reference. ``density``: each
    direction of each type block keeps its strongest synapses at that connection probability.
    ``{}`` when no record has cell types (older files, circuits without them)."""
    blocks: dict[str, list[PairBlock]] = {k: [] for k in TYPE_PAIRS}
    cells: dict[str, list[int]] = {k: [0, 0] for k in TYPE_PAIRS}
    for item in feedback_routes(records):
        fwd = item["forward"]
        if item["route"] == "none" or fwd.get("pre_sign") is None or fwd.get("post_sign") is None:
            continue
        F = direct_feedback(item["direct"])
        w = _numpy(fwd["weight"])
        check_finite(w, fwd["name"], fwd["pre"], fwd["post"])
        w = np.abs(w)
        f = None if F is None else np.abs(F.numpy())
        pre_e, post_e = _numpy(fwd["pre_sign"]) > 0, _numpy(fwd["post_sign"]) > 0
        for a, rows in (("E", pre_e), ("I", ~pre_e)):
            for b, cols in (("E", post_e), ("I", ~post_e)):
                if not rows.any() or not cols.any():
                    continue
                key = f"{a}→{b}"
                sub_f = None if f is None else f[np.ix_(rows, cols)]
                blocks[key].append(pair_block(w[np.ix_(cols, rows)], sub_f, threshold, None, None, density,
                                              f"{fwd['name']} {key}", "F", fwd["pre"], fwd["post"]))
                cells[key][0] += int(rows.sum())
                cells[key][1] += int(cols.sum())
    out = {}
    for key, bs in blocks.items():
        if not bs:
            continue
        st = _pair_stats(bs, cells[key][0], cells[key][1], density)
        st.name, st.route = key, "pooled"
        st.rule = "+".join(sorted({r.get("rule", "") for r in records if r.get("kind") == "forward"}))
        if intervals:
            st.intervals = bootstrap_intervals(bs, repeats=intervals, seed=seed)
        out[key] = st
    return out


def density_sweep(records: list[dict], densities, *, projection: str, threshold: float = 0.0) -> list[dict]:
    """The matched-density statistics of one projection at each density (the dependence of the
    comparison on that choice): a list of ``{"density": p, **PairStats.to_dict()}``."""
    rows = []
    for p in densities:
        st = circuit_reciprocity(records, threshold=threshold, density=p, pooled=False)[projection]
        rows.append({"density": p, **st.to_dict()})
    return rows


# --------------------------------------------------------------------------- tables
_ROWS = [  # (label, PairStats field, format)
    ("feedback route", "route", "s"),
    ("connection probability (possible ordered pairs)", "connection_probability", ".3f"),
    ("bidirectional / connected pairs", "bidirectional_fraction", ".3f"),
    ("reciprocity over chance P(i↔j)/(p_fwd·p_bwd)", "reciprocity_over_chance", ".2f"),
    ("log-space Pearson r, bidirectional excitatory pairs", "log_pearson_bidirectional", ".3f"),
    ("signed Pearson r, bidirectional pairs", "signed_pearson_bidirectional", ".3f"),
    ("signed Spearman ρ, bidirectional pairs", "signed_spearman_bidirectional", ".3f"),
    ("sign agreement, bidirectional pairs", "sign_agreement_bidirectional", ".3f"),
    ("signed Pearson R, connected pairs (absent = 0)", "signed_pearson_connected", ".3f"),
    ("alignment angle ∠(Wᵀ, F) (deg)", "alignment_deg", ".1f"),
    ("median strength, bidirectional / unidirectional", "strength_ratio_bidirectional", ".2f"),
    ("lognormal σ of ln w, excitatory synapses", "lognormal_sigma", ".3f"),
    ("lognormal μ of ln w, excitatory synapses (units)", "lognormal_mu", ".3f"),
    ("KS distance to the lognormal fit", "lognormal_ks", ".3f"),
    ("excitatory fraction of synapses", "excitatory_fraction", ".3f"),
    ("σ of ln abs(w), all synapses (signs folded)", "abs_lognormal_sigma", ".3f"),
    ("connected pairs", "connected_pairs", "d"),
    ("bidirectional pairs", "bidirectional_pairs", "d"),
]


def fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if spec == "s":
        return str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _reference_cell(key: str) -> str:
    refs = references_for(key)
    return "; ".join(f"{r}{'†' if r.status == 'unverified' else ''} ({r.study})" for r in refs)


def reciprocity_table(stats: dict[str, PairStats], *, reference: bool = True) -> str:
    """A Markdown table: one row per quantity, one column per projection, and the published
    values (every study of ``connectomes.reference``; † unverified) in the last column."""
    names = list(stats)
    header = ["quantity"] + [f"{n} ({stats[n].rule})" if stats[n].rule else n for n in names]
    if reference:
        header.append("cortex (study)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key, spec in _ROWS:
        cells = [label] + [fmt(getattr(stats[n], key), spec) for n in names]
        if reference:
            cells.append(_reference_cell(key))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_reciprocity(records_or_stats, **kwargs) -> None:
    """Print :func:`reciprocity_table` of connectome records (or of ready statistics)."""
    if isinstance(records_or_stats, dict):
        stats = records_or_stats
    else:
        stats = circuit_reciprocity(records_or_stats, **kwargs)
    print(reciprocity_table(stats))


__all__ = ["HEADLINE", "TYPE_PAIRS", "cell_type_reciprocity", "NonFiniteWeightError", "direct_feedback", "PairBlock", "PairStats", "pair_block", "projection_pairs", "RAT_CORTEX", "bootstrap_intervals", "check_finite",
           "circuit_reciprocity", "density_sweep", "feedback_routes", "lognormal_fit", "pair_statistics",
           "pearson", "print_reciprocity", "reciprocity_table", "spearman", "strongest"]
