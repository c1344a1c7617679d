"""Three-cell motifs: the triad census of a cell-level directed graph against a pair-keeping null.

The graph is a boolean adjacency matrix ``adj`` (n × n) with ``adj[a, b]`` True when cell a
synapses onto cell b (source × target; note this is the transpose of the post × pre weight
layout). :func:`cell_graph` builds it from ``CompiledCircuit.connectome()`` records.

The 16 triad types are those of ``networkx.triadic_census`` (Holland & Leinhardt names). The
census here is computed from seven matrix products of the mutual, asymmetric and null dyad
matrices, so a few thousand cells take well under a second; :func:`triad_census` can also
delegate to networkx (``method="networkx"``) for checking.

The null model keeps the pair statistics, as in Song et al. 2005, over the cell pairs that can
hold a synapse: for a :class:`CellGraph` it is stratified by population pair (each pair of
populations keeps its own numbers of bidirectional pairs and of unidirectional pairs in each
direction, placed at random over its own cell pairs), so pairs inside a population or between
populations that no projection joins stay empty, as the architecture forces. For a bare
adjacency matrix the pairs are spread over all cell pairs (or over ``candidates``), each
unidirectional pair in a random direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from connectomes.reciprocity import check_finite, strongest

TRIAD_TYPES = ("003", "012", "102", "021D", "021U", "021C", "111D", "111U",
               "030T", "030C", "201", "120D", "120U", "120C", "210", "300")

# Holland & Leinhardt's code: the numbers of Mutual, Asymmetric and Null pairs among the three
# cells, then D(own), U(p), C(yclic) or T(ransitive); edges as in networkx.triad_graph (a, b, c).
TRIAD_DESCRIPTIONS = {
    "003": "no synapse",
    "012": "one synapse (a → b)",
    "102": "one bidirectional pair (a ↔ b)",
    "021D": "divergence: b → a, b → c",
    "021U": "convergence: a → b, c → b",
    "021C": "chain: a → b → c",
    "111D": "a ↔ c, b → c (a synapse onto a reciprocal pair)",
    "111U": "a ↔ c, c → b (a synapse out of a reciprocal pair)",
    "030T": "feed-forward loop: a → b, c → b, a → c",
    "030C": "cycle: a → b → c → a",
    "201": "two reciprocal pairs: a ↔ b, a ↔ c",
    "120D": "divergence b → a, b → c, and a ↔ c",
    "120U": "convergence a → b, c → b, and a ↔ c",
    "120C": "chain a → b → c, and a ↔ c",
    "210": "a → b, b ↔ c, a ↔ c",
    "300": "all three pairs reciprocal",
}


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

    def groups(self) -> list[tuple[int, int]]:
        """(first row, size) of every population, the strata of the feasible-pair null."""
        return list(self.offsets.values())

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


def cell_graph(records: list[dict], *, threshold: float = 0.0, populations=None,
               density: float | None = None) -> CellGraph:
    """The directed graph of every synapse in ``records`` (connectome records, weights post × pre).

    A record's ``weight[r, c] `` with |w| > threshold is an edge from cell c of its ``pre`` to
    cell r of its ``post``, for forward and feedback records alike (PFA's ē cells are cells).
    ``populations`` restricts the graph to those population names. ``density``: the matched-
    density view, each record keeping its round(density · size) strongest |w| (a dense network's
    graph is otherwise complete between connected populations, and its census says nothing).
    Non-2-D tensors are skipped.
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
        check_finite(w, r["name"], r["pre"], r["post"])
        on = np.abs(w) > threshold
        if density is not None:
            on = strongest(w, on, int(round(density * w.size)))
        rows, cols = np.nonzero(on)
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
    # The null-dyad matrix N = (J − I) − S (S: any synapse, symmetric) is never multiplied:
    # N N = (n−2)J + I − 1dᵀ − d1ᵀ + 2S + S S with d = S 1, and S S is a sum of the products
    # below; A Aᵀ, Aᵀ A and M M (M symmetric) are Gram matrices (BLAS syrk, half a product).
    M = (adj & adj.T).astype(np.float32)
    A = (adj & ~adj.T).astype(np.float32)
    S = M + A + A.T
    N = 1.0 - S
    np.fill_diagonal(N, 0)
    AA, AM, AtM = A @ A, A @ M, A.T @ M
    AAt, AtA, MM = _gram(A), _gram(A.T), _gram(M)
    SS = MM + AtM.T + AM.T + AM + AA + AAt + AtM + AtA + AA.T
    d = S.sum(1, dtype=np.float64)

    def s(X, Y):
        return float(np.sum(X * Y, dtype=np.float64))

    def s_nn(X):  # s(X, N N) for X with a zero diagonal
        return ((n - 2) * float(X.sum(dtype=np.float64)) - float(X.sum(0, dtype=np.float64) @ d)
                - float(X.sum(1, dtype=np.float64) @ d) + 2 * s(X, S) + s(X, SS))

    counts = {
        "003": s_nn(N) / 6, "012": s_nn(A), "102": s_nn(M) / 2,
        "021D": s(N, AtA) / 2, "021U": s(N, AAt) / 2, "021C": s(N, AA),
        "111D": s(N, AM), "111U": s(N, AtM),
        "030T": s(A, AA), "030C": s(A.T, AA) / 3,
        "201": s(N, MM) / 2, "120D": s(M, AtA) / 2, "120U": s(M, AAt) / 2, "120C": s(M, AA),
        "210": s(A, MM), "300": s(M, MM) / 6,
    }
    out = {k: int(round(v)) for k, v in counts.items()}
    total = n * (n - 1) * (n - 2) // 6
    if sum(out.values()) != total:  # a guard on the formulas, not expected to fire
        raise AssertionError(f"triad census sums to {sum(out.values())}, expected C({n},3) = {total}")
    return out


def _gram(X: np.ndarray) -> np.ndarray:
    """X Xᵀ from BLAS syrk (the upper triangle), mirrored to the full symmetric matrix."""
    from scipy.linalg import blas

    U = blas.ssyrk(1.0, np.ascontiguousarray(X))   # upper triangle; zeros below
    G = U + U.T
    G[np.diag_indices_from(G)] = np.diagonal(U)
    return G


# --------------------------------------------------------------------------- the null model
def pair_null(adj, rng: np.random.Generator, candidates=None, groups=None) -> np.ndarray:
    """One random graph with the same numbers of bidirectional and unidirectional pairs as
    ``adj``.

    ``groups``: a list of (first row, size), one per population: the null is stratified, each
    pair of populations (and each population with itself) keeping its own numbers of
    bidirectional pairs and of unidirectional pairs in each direction, placed uniformly over its
    own cell pairs. Otherwise the pairs are placed uniformly over all cell pairs (or the pairs
    where the symmetric boolean matrix ``candidates`` is True), unidirectional ones in a random
    direction.
    """
    adj = _as_adjacency(adj)
    n = adj.shape[0]
    out = np.zeros((n, n), dtype=bool)
    if groups is None:
        _place_within(adj, out, np.arange(n), rng, candidates)
        return out
    for gi, (p0, pn) in enumerate(groups):
        rows = np.arange(p0, p0 + pn)
        _place_within(adj, out, rows, rng, None)
        for q0, qn in groups[gi + 1:]:
            _place_between(adj, out, slice(p0, p0 + pn), slice(q0, q0 + qn), rng)
    return out


def _place_within(adj, out, cells: np.ndarray, rng, candidates) -> None:
    """Redistribute the pairs among ``cells`` (one population, or all cells)."""
    sub = adj[np.ix_(cells, cells)]
    k_bi = int(np.triu(sub & sub.T, 1).sum())
    k_uni = int((sub & ~sub.T).sum())
    if k_bi + k_uni == 0:
        return
    iu, ju = np.triu_indices(cells.size, 1)
    if candidates is not None:
        cand = np.asarray(candidates, dtype=bool)[np.ix_(cells, cells)]
        keep = cand[iu, ju]
        iu, ju = iu[keep], ju[keep]
    if k_bi + k_uni > iu.size:
        raise ValueError(f"{k_bi + k_uni} connected pairs do not fit in {iu.size} candidate pairs")
    pick = rng.choice(iu.size, size=k_bi + k_uni, replace=False)
    a, b = cells[iu[pick]], cells[ju[pick]]
    out[a[:k_bi], b[:k_bi]] = True
    out[b[:k_bi], a[:k_bi]] = True
    ua, ub = a[k_bi:], b[k_bi:]
    flip = rng.random(ua.size) < 0.5
    out[np.where(flip, ub, ua), np.where(flip, ua, ub)] = True


def _place_between(adj, out, P: slice, Q: slice, rng) -> None:
    """Redistribute the pairs between populations P and Q, keeping the numbers of bidirectional
    pairs, of P → Q-only and of Q → P-only pairs."""
    fwd, bwd = adj[P, Q], adj[Q, P].T            # both P × Q
    k_bi = int((fwd & bwd).sum())
    k_pq = int((fwd & ~bwd).sum())
    k_qp = int((bwd & ~fwd).sum())
    k = k_bi + k_pq + k_qp
    if k == 0:
        return
    n_q = fwd.shape[1]
    pick = rng.choice(fwd.size, size=k, replace=False)
    i, j = np.divmod(pick, n_q)
    i, j = i + P.start, j + Q.start
    out[i[:k_bi + k_pq], j[:k_bi + k_pq]] = True                       # P → Q
    out[j[:k_bi], i[:k_bi]] = True                                     # and back
    out[j[k_bi + k_pq:], i[k_bi + k_pq:]] = True                       # Q → P only


@dataclass
class MotifCensus:
    """Observed triad counts beside the pair-keeping null: per type, ``observed``,
    ``null_mean``, ``null_sd``, ``ratio`` (observed / null mean) and ``z``."""

    observed: dict[str, int]
    null_mean: dict[str, float]
    null_sd: dict[str, float]
    repeats: int
    seed: int
    null: str = "all"

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
        """A Markdown table of the 16 types, each with what it is."""
        lines = ["| triad | what it is | observed | null mean ± sd | observed / null | z |",
                 "|---|---|---|---|---|---|"]
        ratio, z = self.ratio, self.z
        for k in TRIAD_TYPES:
            r, zk = ratio[k], z[k]
            rs = "–" if math.isnan(r) else ("∞" if math.isinf(r) else f"{r:.2f}")
            zs = "–" if math.isnan(zk) else ("±∞" if math.isinf(zk) else f"{zk:+.1f}")
            lines.append(f"| {k} | {TRIAD_DESCRIPTIONS[k]} | {self.observed[k]} | "
                         f"{self.null_mean[k]:.1f} ± {self.null_sd[k]:.1f} | {rs} | {zs} |")
        return "\n".join(lines)


def motif_census(graph, *, repeats: int = 10, seed: int = 0, candidates=None, null: str | None = None,
                 progress: bool = False) -> MotifCensus:
    """Triad census of ``graph`` (adjacency or :class:`CellGraph`) and of ``repeats`` seeded
    draws of :func:`pair_null` (mean and sd, ddof=1 when repeats > 1).

    ``null``: ``"feasible"`` (the default for a CellGraph: stratified by population pair, so
    only pairs the architecture allows hold synapses) or ``"all"`` (every cell pair, or
    ``candidates``; the default for a bare adjacency matrix). ``progress``: a tqdm bar over the
    draws."""
    if null is None:
        null = "feasible" if isinstance(graph, CellGraph) and graph.offsets else "all"
    if null not in ("feasible", "all"):
        raise ValueError(f"null must be 'feasible' or 'all', got {null!r}")
    if null == "feasible" and not (isinstance(graph, CellGraph) and graph.offsets):
        raise ValueError("the feasible-pair null needs a CellGraph (populations); pass null='all' for a bare matrix")
    groups = graph.groups() if null == "feasible" else None
    adj = _as_adjacency(graph)
    observed = triad_census(adj)
    rng = np.random.default_rng(seed)
    draws = range(repeats)
    if progress:
        from tqdm.auto import tqdm

        draws = tqdm(draws, desc=f"motif null ({adj.shape[0]} cells)", leave=False)
    rows = [[c[k] for k in TRIAD_TYPES] for c in
            (triad_census(pair_null(adj, rng, candidates, groups)) for _ in draws)]
    draws = np.array(rows, dtype=np.float64).reshape(repeats, len(TRIAD_TYPES))
    mean = draws.mean(0) if repeats else np.full(len(TRIAD_TYPES), np.nan)
    sd = draws.std(0, ddof=1) if repeats > 1 else np.zeros(len(TRIAD_TYPES))
    return MotifCensus(observed, dict(zip(TRIAD_TYPES, mean.tolist())), dict(zip(TRIAD_TYPES, sd.tolist())),
                       repeats, seed, null)
