"""connectome.h5 round trip, corrupt files, the SONATA export read back by libsonata, graph exports."""
import json
import os

import h5py
import networkx as nx
import numpy as np
import pytest
import torch

from connectomes.files import (ConnectomeFileError, export_sonata, plain_graph, read_connectome,
                               read_connectome_attrs, write_connectome, write_graph)


def pfa_records():
    g = torch.Generator().manual_seed(0)
    return [
        {"name": "x0->h1", "kind": "forward", "pre": "x0", "post": "h1", "weight": torch.randn(7, 6, generator=g),
         "rule": "pfa", "plastic": True, "transported": False},
        {"name": "h1->out", "kind": "forward", "pre": "h1", "post": "out",
         "weight": torch.randn(4, 7, generator=g, dtype=torch.float64), "rule": "pfa", "plastic": True,
         "transported": False},
        {"name": "h1->out:B", "kind": "feedback", "pre": "out", "post": "h1->out:ebar",
         "weight": torch.randn(8, 4, generator=g), "rule": "pfa", "plastic": False, "transported": False,
         "forward": "h1->out", "mask": torch.rand(8, 4, generator=g) < 0.5},
        {"name": "h1->out:R", "kind": "feedback", "pre": "h1->out:ebar", "post": "h1",
         "weight": torch.randn(7, 8, generator=g), "rule": "pfa", "plastic": True, "transported": False,
         "forward": "h1->out"},
        {"name": "conv/odd", "kind": "forward", "pre": "a", "post": "b", "weight": torch.randn(3, 2, 3, 3, generator=g),
         "rule": "fa", "plastic": True, "transported": False},
    ]


def test_h5_round_trip_is_exact(tmp_path):
    recs = pfa_records()
    path = write_connectome(str(tmp_path / "connectome.h5"), recs, {"rule": "pfa", "seed": 3, "sizes": [6, 7]})
    back = read_connectome(path)
    assert [r["name"] for r in back] == [r["name"] for r in recs]
    for a, b in zip(recs, back):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                assert b[k].dtype == v.dtype and torch.equal(b[k], v), k
            else:
                assert b[k] == v and type(b[k]) is type(v), k
    assert read_connectome_attrs(path) == {"format": "circuits-connectome", "version": 1, "rule": "pfa",
                                           "seed": 3, "sizes": "[6, 7]"}
    with h5py.File(path) as f:
        g = f["projections/conv|odd"]
        assert g.attrs["orientation"] == "post x pre" and g.attrs["name"] == "conv/odd"
        assert g["weight"].compression is None
    assert os.listdir(tmp_path) == ["connectome.h5"]  # no temporary file left behind


def test_real_compiled_records_round_trip(tmp_path):
    from helpers import small_mlp
    from plasticity import FA

    recs = small_mlp(FA()).compile().connectome()
    back = read_connectome(write_connectome(str(tmp_path / "c.h5"), recs))
    assert len(back) == len(recs)
    for a, b in zip(recs, back):
        assert torch.equal(a["weight"], b["weight"]) and {k: v for k, v in a.items() if k != "weight"} == \
            {k: v for k, v in b.items() if k != "weight"}


def test_rewrite_replaces_atomically(tmp_path):
    path = str(tmp_path / "c.h5")
    write_connectome(path, pfa_records()[:1])
    write_connectome(path, pfa_records()[:2])
    assert len(read_connectome(path)) == 2


def test_corrupt_or_foreign_files_give_a_clear_error(tmp_path):
    bad = tmp_path / "connectome.h5"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    with pytest.raises(ConnectomeFileError, match=str(bad)):
        read_connectome(str(bad))
    good = tmp_path / "good.h5"
    write_connectome(str(good), pfa_records())
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ConnectomeFileError, match="truncated.h5"):
        read_connectome(str(truncated))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ConnectomeFileError, match="not a connectome"):
        read_connectome(str(other))
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_connectome(str(tmp_path / "missing.h5"))


def test_sonata_export_reads_back_with_libsonata(tmp_path):
    libsonata = pytest.importorskip("libsonata", reason="libsonata is not installed (pip install libsonata)")
    recs = pfa_records()[:4]
    recs[0]["weight"][0, :3] = 0.0  # absent synapses are not edges
    paths = export_sonata(recs, str(tmp_path / "sonata"))
    nodes = libsonata.NodeStorage(paths["nodes"])
    assert nodes.population_names == {"x0", "h1", "out", "h1->out:ebar"}
    sizes = {"x0": 6, "h1": 7, "out": 4, "h1->out:ebar": 8}
    for name, n in sizes.items():
        assert nodes.open_population(name).size == n
    edges = libsonata.EdgeStorage(paths["edges"])
    assert edges.population_names == {r["name"] for r in recs}
    for r in recs:
        pop = edges.open_population(r["name"])
        W = r["weight"].double().numpy()
        assert (pop.source, pop.target) == (r["pre"], r["post"])
        assert pop.size == int((W != 0).sum())
        sel = pop.select_all()
        src, tgt = pop.source_nodes(sel), pop.target_nodes(sel)
        w = pop.get_attribute("syn_weight", sel)
        np.testing.assert_allclose(w, W[tgt, src].astype(np.float32))
        # the index: afferent edges of post cell 1 are exactly its nonzero row
        aff = pop.afferent_edges([1])
        assert sorted(pop.source_nodes(aff).tolist()) == np.nonzero(W[1])[0].tolist()
        eff = pop.efferent_edges([2])
        assert sorted(pop.target_nodes(eff).tolist()) == np.nonzero(W[:, 2])[0].tolist()
    with h5py.File(paths["edges"]) as f:
        g = f["edges/x0->h1"]
        assert g["source_node_id"].dtype == np.uint64 and g["target_node_id"].dtype == np.uint64
        assert all(ds.compression is None for ds in (g["source_node_id"], g["0/syn_weight"], g["edge_type_id"]))
        assert f.attrs["magic"] == 0x0A7A
    config = libsonata.CircuitConfig.from_file(paths["config"])  # the circuit config ties them together
    assert config.node_populations == set(sizes) and config.edge_populations == {r["name"] for r in recs}
    assert config.edge_population("h1->out").size == 28 and config.node_population("x0").size == 6
    types = open(paths["edge_types"]).read().splitlines()
    assert types[0].split()[0] == "edge_type_id" and len(types) == 1 + len(recs)
    assert open(paths["node_types"]).read().splitlines()[0].split()[0] == "node_type_id"


def test_sonata_index_matches_libsonata_writer(tmp_path):
    libsonata = pytest.importorskip("libsonata", reason="libsonata is not installed (pip install libsonata)")
    recs = pfa_records()[:4]
    recs[1]["weight"][2] = 0.0  # a target without edges
    paths = export_sonata(recs, str(tmp_path))
    theirs = str(tmp_path / "theirs.h5")
    with h5py.File(paths["edges"]) as src, h5py.File(theirs, "w") as dst:
        for name in src["edges"]:
            g = dst.create_group(f"edges/{name}")
            for k in src[f"edges/{name}"]:
                if k != "indices":
                    src.copy(src[f"edges/{name}/{k}"], g, k)
    for r in recs:
        n_post, n_pre = r["weight"].shape
        libsonata.EdgePopulation.write_indices(theirs, r["name"], n_pre, n_post)
    with h5py.File(paths["edges"]) as a, h5py.File(theirs) as b:
        for r in recs:
            for d in ("source_to_target", "target_to_source"):
                for ds in ("node_id_to_ranges", "range_to_edge_id"):
                    key = f"edges/{r['name']}/indices/{d}/{ds}"
                    np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)


def test_sonata_refuses_kernels():
    with pytest.raises(ValueError, match="dense 2-D"):
        export_sonata(pfa_records()[4:], "/nonexistent/never-written")


def test_population_graph_exports_as_json_and_graphml(tmp_path):
    from helpers import small_mlp
    from plasticity import PFA

    graph = small_mlp(PFA(expansion=2)).graph
    plain = plain_graph(graph)
    for _, d in plain.nodes(data=True):
        assert all(isinstance(v, (str, int, float, bool)) for v in d.values())
    j = write_graph(graph, str(tmp_path / "g.json"))
    data = json.load(open(j))
    assert {n["id"] for n in data["nodes"]} == set(graph.nodes)
    g2 = nx.node_link_graph(data, edges="edges") if "edges" in data else nx.node_link_graph(data)
    assert g2.number_of_edges() == graph.number_of_edges()
    ml = write_graph(graph, str(tmp_path / "g.graphml"))
    g3 = nx.read_graphml(ml)
    assert set(g3.nodes) == set(graph.nodes) and g3.number_of_edges() == graph.number_of_edges()
    h1 = g3.nodes["h1"]
    assert h1["population_kind"] == "layer" or "Layer" in h1["population"]
    rules = {d.get("rule") for _, _, d in g3.edges(data=True)}
    assert "pfa" in rules
    with pytest.raises(ValueError, match="unknown graph format"):
        write_graph(graph, str(tmp_path / "g.txt"))
