"""Three-cell motifs: the matrix triad census, the pair-keeping null, a planted motif excess."""

import networkx as nx
import numpy as np
import pytest
import torch

from connectomes.motifs import (TRIAD_DESCRIPTIONS, TRIAD_TYPES, cell_graph, dyads, motif_census, pair_null,
                               triad_census)


@pytest.mark.parametrize("n,p,seed", [(25, 0.1, 0), (30, 0.35, 1), (20, 0.8, 2)])
def test_census_matches_networkx(n, p, seed):
    adj = np.random.default_rng(seed).random((n, n)) < p
    assert triad_census(adj) == triad_census(adj, method="networkx")
    g = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    assert triad_census(nx.to_numpy_array(g, nodelist=range(n)) > 0) == nx.triadic_census(g)


def test_each_triad_type_on_its_own():
    """Every one of the 16 types, as a 3-cell graph, is counted once under its own name."""
    for code in TRIAD_TYPES:
        g = nx.triad_graph(code)
        adj = nx.to_numpy_array(g, nodelist=sorted(g)) > 0
        census = triad_census(adj)
        assert census[code] == 1 and sum(census.values()) == 1, code


def test_null_keeps_pair_statistics():
    rng = np.random.default_rng(0)
    adj = rng.random((60, 60)) < 0.1
    adj |= (rng.random((60, 60)) < 0.03) & (rng.random((60, 60)) < 1)  # some extra
    null = pair_null(adj, np.random.default_rng(1))
    d, dn = dyads(adj), dyads(null)
    assert d == dn
    assert not np.diag(null).any()


def test_planted_clustered_triplets_are_over_represented():
    """Random sparse graph plus fully bidirectional triangles: 300s far above the null."""
    rng = np.random.default_rng(0)
    n = 240
    adj = rng.random((n, n)) < 0.04
    cells = rng.permutation(n)[:180].reshape(60, 3)
    for a, b, c in cells:
        for u, v in ((a, b), (b, c), (a, c)):
            adj[u, v] = adj[v, u] = True
    census = motif_census(adj, repeats=8, seed=0)
    assert census.observed["300"] >= 60
    assert census.ratio["300"] > 10 and census.z["300"] > 5
    assert census.ratio["003"] == pytest.approx(1, abs=0.02)  # the bulk is unchanged
    # and a graph drawn from the null itself shows no excess
    plain = motif_census(pair_null(adj, np.random.default_rng(5)), repeats=8, seed=1)
    assert abs(plain.z["300"]) < 4


def test_a_few_hundred_cells():
    """300 cells, 10 null draws (about 0.15 s on an idle 2-core machine: BLAS matrix products;
    timed by hand, not asserted: the test machines are noisy). Every triad is counted once."""
    adj = np.random.default_rng(0).random((300, 300)) < 0.1
    census = motif_census(adj, repeats=10, seed=0)
    assert sum(census.observed.values()) == 300 * 299 * 298 // 6
    assert "| 300 |" in census.table()
    assert set(census.to_dict()) == set(TRIAD_TYPES)


def test_cell_graph_from_records_follows_the_orientation():
    """A record's weight[r, c] is a synapse from cell c of pre to cell r of post."""
    W = torch.zeros(2, 3)
    W[1, 2] = 0.5                       # x cell 2 → h cell 1
    B = torch.zeros(3, 2)
    B[0, 1] = -0.1                      # feedback: h cell 1 → x cell 0
    recs = [{"name": "x->h", "kind": "forward", "pre": "x", "post": "h", "weight": W},
            {"name": "x->h:B", "kind": "feedback", "pre": "h", "post": "x", "weight": B, "forward": "x->h"}]
    g = cell_graph(recs)
    assert g.n == 5 and g.offsets == {"x": (0, 3), "h": (3, 2)}
    assert {(g.cells[a], g.cells[b]) for a, b in zip(*np.nonzero(g.adjacency))} == {
        (("x", 2), ("h", 1)), (("h", 1), ("x", 0))}
    assert set(g.to_networkx().edges) == {("x[2]", "h[1]"), ("h[1]", "x[0]")}
    with pytest.raises(ValueError, match="cells"):
        cell_graph(recs + [{"name": "bad", "kind": "forward", "pre": "h", "post": "y", "weight": torch.ones(1, 4)}])


def layered_records(seed=0, sizes=(("x", 120), ("h1", 100), ("h2", 100), ("y", 30)), p_fwd=0.3, p_bwd=0.2):
    """A structureless layered circuit: each forward and feedback tensor Erdős–Rényi, nothing
    within a population, no feedback onto the input."""
    rng = np.random.default_rng(seed)
    recs = []
    for (a, na), (b, nb) in zip(sizes, sizes[1:]):
        W = torch.tensor(np.where(rng.random((nb, na)) < p_fwd, rng.normal(size=(nb, na)), 0.0))
        recs.append({"name": f"{a}->{b}", "kind": "forward", "pre": a, "post": b, "weight": W})
        if a != "x":
            F = torch.tensor(np.where(rng.random((na, nb)) < p_bwd, rng.normal(size=(na, nb)), 0.0))
            recs.append({"name": f"{a}->{b}:B", "kind": "feedback", "pre": b, "post": a, "weight": F,
                         "forward": f"{a}->{b}"})
    return recs


def test_feasible_pair_null_finds_no_structure_in_a_structureless_layered_circuit():
    """Over all cell pairs the null puts synapses inside populations and between unconnected
    layers, and the random layered circuit looks hugely structured (|z| in the hundreds); over
    the pairs the architecture allows, |z| stays small for every triad type."""
    g = cell_graph(layered_records())
    feasible = motif_census(g, repeats=10, seed=0)
    assert feasible.null == "feasible"
    assert max(abs(z) for z in feasible.z.values() if np.isfinite(z)) < 3.5
    naive = motif_census(g, repeats=10, seed=0, null="all")
    assert max(abs(z) for z in naive.z.values() if np.isfinite(z)) > 30


def test_feasible_null_keeps_each_population_pairs_counts_and_directions():
    g = cell_graph(layered_records(seed=1))
    null = pair_null(g.adjacency, np.random.default_rng(2), groups=g.groups())
    for p, (p0, pn) in g.offsets.items():
        for q, (q0, qn) in g.offsets.items():
            block, nblock = g.adjacency[p0:p0 + pn, q0:q0 + qn], null[p0:p0 + pn, q0:q0 + qn]
            assert block.sum() == nblock.sum(), (p, q)          # each direction keeps its count
            back = g.adjacency[q0:q0 + qn, p0:p0 + pn].T
            nback = null[q0:q0 + qn, p0:p0 + pn].T
            assert (block & back).sum() == (nblock & nback).sum(), (p, q)
    assert not null[:120, :120].any()                            # nothing inside the input


def test_triad_table_explains_every_code():
    census = motif_census(np.random.default_rng(0).random((40, 40)) < 0.2, repeats=3)
    text = census.table()
    for code, what in TRIAD_DESCRIPTIONS.items():
        assert f"| {code} | {what} |" in text
    g = nx.triad_graph("030T")
    assert set(g.edges) == {("a", "b"), ("c", "b"), ("a", "c")}   # the description's edges


def test_nan_weight_is_an_error_in_the_cell_graph():
    recs = layered_records()
    recs[1]["weight"][3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"h1->h2\[3, 4\] = nan"):
        cell_graph(recs)


def test_matched_density_cell_graph_keeps_each_tensors_strongest_synapses():
    """A dense tensor's graph is complete; at density p each record keeps round(p·size) edges,
    the strongest |w|."""
    W = torch.arange(1.0, 13.0).reshape(3, 4)            # 3 post × 4 pre, all distinct
    recs = [{"name": "x->h", "kind": "forward", "pre": "x", "post": "h", "weight": W}]
    assert cell_graph(recs).adjacency.sum() == 12
    g = cell_graph(recs, density=0.25)
    edges = {(g.cells[a], g.cells[b]) for a, b in zip(*np.nonzero(g.adjacency))}
    assert edges == {(("x", 3), ("h", 2)), (("x", 2), ("h", 2)), (("x", 1), ("h", 2))}   # 12, 11, 10


def test_dyads_count_every_unordered_pair_once():
    """4 cells: 0↔1 mutual, 0→2 and 3→1 asymmetric: 1 mutual, 2 asymmetric, 6 − 3 = 3 null."""
    adj = np.zeros((4, 4), dtype=bool)
    adj[0, 1] = adj[1, 0] = adj[0, 2] = adj[3, 1] = True
    assert dyads(adj) == {"mutual": 1, "asymmetric": 2, "null": 3}
    assert dyads(np.zeros((5, 5), dtype=bool)) == {"mutual": 0, "asymmetric": 0, "null": 10}
