"""Three-cell motifs: the triad census of a cell-level directed graph against a pair-keeping null.

The graph is a boolean adjacency matrix ``adj`` (n × n) with ``adj[a, b]`` True when cell a
synapses onto cell b (source × target; note this is the transpose of the post × pre weight
layout). :func:`cell_graph` builds it from ``CompiledCircuit.connectome()`` records.

The 16 triad types are those of ``networkx.triadic_census`` (Holland & Leinhardt names). The
census here is computed from seven matrix products of the mutual, asymmetric and null dyad
matrices, so a few thousand cells take well under a second; :func:`triad_census` can also
delegate to networkx (``method="networkx"``) for checking.

The null model keeps the pair statistics, as in Song et al. 2005: the observed numbers of
bidirectional and unidirectional cell pairs are reassigned at random over all cell pairs (or over
``candidates``), each unidirectional pair getting a random direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

TRIAD_TYPES = ("003", "012", "102", "021D", "021U", "021C", "111D", "111U",
               "030T", "030C", "201", "120D", "120U", "120C", "210", "300")


# --------------------------------------------------------------------------- the cell graph
@dataclass
class CellGraph:
    """A directed cell-level graph: ``adjacency`` (n × n bool, source × target), ``cells``
    (population, index) per row, and ``offsets`` population → (first row, size)."""

    adjacency: np.ndarray
    cells: list[tuple[str, int]] = field(default_factory=list)
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.adjacency.shape[0]

    def to_networkx(self):
        """A networkx DiGraph with nodes "population[i]" and attributes population, index."""
        import networkx as nx

        g = nx.DiGraph()
        names = [f"{p}[{i}]" for p, i in self.cells] or list(range(self.n))
        for k, name in enumerate(names):
            attrs = {"population": self.cells[k][0], "index": self.cells[k][1]} if self.cells else {}
            g.add_node(name, **attrs)
        src, dst = np.nonzero(self.adjacency)
        g.add_edges_from((names[a], names[b]) for a, b in zip(src.tolist(), dst.tolist()))
        return g


def cell_graph(records: list[dict], *, threshold: float = 0.0, populations=None) -> CellGraph:
    """The directed graph of every synapse in ``records`` (connectome records, weights post × pre).

    A record's ``weight[r, c] `` with |w| > threshold is an edge from cell c of its ``pre`` to
    cell r of its ``post``, for forward and feedback records alike (PFA's ē cells are cells).
    ``populations`` restricts the graph to those population names. Non-2-D tensors are skipped.
    """
    sizes: dict[str, int] = {}
    dense = [r for r in records if r["weight"].dim() == 2]
    if populations is not None:
        keep = set(populations)
        dense = [r for r in dense if r["pre"] in keep and r["post"] in keep]
    for r in dense:
        n_post, n_pre = r["weight"].shape
        for pop, n in ((r["pre"], n_pre), (r["post"], n_post)):
            if sizes.setdefault(pop, n) != n:
                raise ValueError(f"population {pop!r} has {sizes[pop]} cells in one record and {n} in "
                                 f"{r['name']!r}")
    offsets, start = {}, 0
    for pop, n in sizes.items():
        offsets[pop] = (start, n)
        start += n
    adj = np.zeros((start, start), dtype=bool)
    for r in dense:
        w = r["weight"].detach().cpu().numpy()
        rows, cols = np.nonzero(np.abs(w) > threshold)
        adj[offsets[r["pre"]][0] + cols, offsets[r["post"]][0] + rows] = True
    np.fill_diagonal(adj, False)
    cells = [(pop, i) for pop, (_, n) in offsets.items() for i in range(n)]
    return CellGraph(adj, cells, offsets)


def _as_adjacency(graph) -> np.ndarray:
    if isinstance(graph, CellGraph):
        return graph.adjacency
    adj = np.asarray(graph).astype(bool)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"an adjacency matrix must be square, got shape {adj.shape}")
    adj = adj.copy()
    np.fill_diagonal(adj, False)
    return adj


# --------------------------------------------------------------------------- the census
def dyads(adj: np.ndarray) -> dict[str, int]:
    """Counts of unordered cell pairs: ``mutual`` (bidirectional), ``asymmetric``
    (unidirectional), ``null`` (unconnected)."""
    adj = _as_adjacency(adj)
    n = adj.shape[0]
    mutual = int(np.triu(adj & adj.T, 1).sum())
    asym = int((adj & ~adj.T).sum())
    return {"mutual": mutual, "asymmetric": asym, "null": n * (n - 1) // 2 - mutual - asym}


def triad_census(graph, method: str = "matrix") -> dict[str, int]:
    """The 16 triad-type counts of a directed graph (adjacency matrix, CellGraph, or with
    ``method="networkx"`` also a networkx DiGraph), keyed as ``networkx.triadic_census``."""
    if method == "networkx":
        import networkx as nx

        g = graph if isinstance(graph, nx.DiGraph) else nx.DiGraph(_as_adjacency(graph))
        return {k: int(v) for k, v in nx.triadic_census(g).items()}
    if method != "matrix":
        raise ValueError(f"method must be 'matrix' or 'networkx', got {method!r}")
    adj = _as_adjacency(graph)
    n = adj.shape[0]
    # Entries of the products are ≤ n: exact in float32 (n < 2**24); sums are taken in float64.
    M = (adj & adj.T).astype(np.float32)
    A = (adj & ~adj.T).astype(np.float32)
    N = (~(adj | adj.T)).astype(np.float32)
    np.fill_diagonal(N, 0)
    At = np.ascontiguousarray(A.T)
    # four BLAS calls instead of seven (fewer thread hand-offs on a busy machine)
    AA, AAt, AM = np.split(A @ np.hstack([A, At, M]), 3, axis=1)
    AtA, AtM = np.split(At @ np.hstack([A, M]), 2, axis=1)
    MM, NN = M @ M, N @ N

    def s(X, Y):
        return float(np.sum(X * Y, dtype=np.float64))

    counts = {
        "003": s(N, NN) / 6, "012": s(A, NN), "102": s(M, NN) / 2,
        "021D": s(N, AtA) / 2, "021U": s(N, AAt) / 2, "021C": s(N, AA),
        "111D": s(N, AM), "111U": s(N, AtM),
        "030T": s(A, AA), "030C": s(At, AA) / 3,
        "201": s(N, MM) / 2, "120D": s(M, AtA) / 2, "120U": s(M, AAt) / 2, "120C": s(M, AA),
        "210": s(A, MM), "300": s(M, MM) / 6,
    }
    out = {k: int(round(v)) for k, v in counts.items()}
    total = n * (n - 1) * (n - 2) // 6
    if sum(out.values()) != total:  # a guard on the formulas, not expected to fire
        raise AssertionError(f"triad census sums to {sum(out.values())}, expected C({n},3) = {total}")
    return out


# --------------------------------------------------------------------------- the null model
def pair_null(adj, rng: np.random.Generator, candidates=None) -> np.ndarray:
    """One random graph with the same numbers of bidirectional and unidirectional pairs as
    ``adj``, placed uniformly over all cell pairs (or the pairs where the symmetric boolean
    matrix ``candidates`` is True), unidirectional ones in a random direction."""
    adj = _as_adjacency(adj)
    n = adj.shape[0]
    d = dyads(adj)
    iu, ju = np.triu_indices(n, 1)
    if candidates is not None:
        cand = np.asarray(candidates, dtype=bool)
        keep = cand[iu, ju]
        iu, ju = iu[keep], ju[keep]
    k_bi, k_uni = d["mutual"], d["asymmetric"]
    if k_bi + k_uni > iu.size:
        raise ValueError(f"{k_bi + k_uni} connected pairs do not fit in {iu.size} candidate pairs")
    pick = rng.choice(iu.size, size=k_bi + k_uni, replace=False)
    a, b = iu[pick], ju[pick]
    out = np.zeros((n, n), dtype=bool)
    out[a[:k_bi], b[:k_bi]] = True
    out[b[:k_bi], a[:k_bi]] = True
    ua, ub = a[k_bi:], b[k_bi:]
    flip = rng.random(ua.size) < 0.5
    out[np.where(flip, ub, ua), np.where(flip, ua, ub)] = True
    return out


@dataclass
class MotifCensus:
    """Observed triad counts beside the pair-keeping null: per type, ``observed``,
    ``null_mean``, ``null_sd``, ``ratio`` (observed / null mean) and ``z``."""

    observed: dict[str, int]
    null_mean: dict[str, float]
    null_sd: dict[str, float]
    repeats: int
    seed: int

    @property
    def ratio(self) -> dict[str, float]:
        out = {}
        for k in TRIAD_TYPES:
            o, m = self.observed[k], self.null_mean[k]
            out[k] = o / m if m > 0 else (float("inf") if o > 0 else float("nan"))
        return out

    @property
    def z(self) -> dict[str, float]:
        out = {}
        for k in TRIAD_TYPES:
            sd = self.null_sd[k]
            diff = self.observed[k] - self.null_mean[k]
            out[k] = diff / sd if sd > 0 else (0.0 if diff == 0 else math.copysign(float("inf"), diff))
        return out

    def to_dict(self) -> dict:
        ratio, z = self.ratio, self.z
        return {k: {"observed": self.observed[k], "null_mean": self.null_mean[k],
                    "null_sd": self.null_sd[k], "ratio": ratio[k], "z": z[k]} for k in TRIAD_TYPES}

    def table(self) -> str:
        """A Markdown table of the 16 types."""
        lines = ["| triad | observed | null mean ± sd | observed / null |", "|---|---|---|---|"]
        ratio = self.ratio
        for k in TRIAD_TYPES:
            r = ratio[k]
            rs = "–" if math.isnan(r) else ("∞" if math.isinf(r) else f"{r:.2f}")
            lines.append(f"| {k} | {self.observed[k]} | {self.null_mean[k]:.1f} ± {self.null_sd[k]:.1f} | {rs} |")
        return "\n".join(lines)


def motif_census(graph, *, repeats: int = 10, seed: int = 0, candidates=None) -> MotifCensus:
    """Triad census of ``graph`` (adjacency or :class:`CellGraph`) and of ``repeats`` seeded
    draws of :func:`pair_null` (mean and sd, ddof=1 when repeats > 1)."""
    adj = _as_adjacency(graph)
    observed = triad_census(adj)
    rng = np.random.default_rng(seed)
    draws = np.array([[c[k] for k in TRIAD_TYPES] for c in
                      (triad_census(pair_null(adj, rng, candidates)) for _ in range(repeats))],
                     dtype=np.float64).reshape(repeats, len(TRIAD_TYPES))
    mean = draws.mean(0) if repeats else np.full(len(TRIAD_TYPES), np.nan)
    sd = draws.std(0, ddof=1) if repeats > 1 else np.zeros(len(TRIAD_TYPES))
    return MotifCensus(observed, dict(zip(TRIAD_TYPES, mean.tolist())), dict(zip(TRIAD_TYPES, sd.tolist())),
                       repeats, seed)
