"""Connectome files: the native ``connectome.h5``, a SONATA export, and population-graph exports.

``connectome.h5`` layout (h5py, one group per synaptic tensor under ``/projections``)::

    /                        attrs: format="circuits-connectome", version=1, + the caller's attrs
    /projections/<name>      one group per record; '/' in a name becomes '|' (attr "name" keeps it)
        weight               dataset, post × pre (as the record's tensor; kernels keep their dims)
        mask                 optional bool dataset, same shape
        attrs                name, index (record order), orientation="post x pre", kind, pre, post,
                             rule, plastic, transported, forward (feedback only), + any other
                             scalar fields of the record

SONATA export (:func:`export_sonata`, dense 2-D tensors only; uncompressed; spec v0.1 layout):
one node population per circuit population (PFA's ē populations included), in ``nodes.h5``
with ``node_types.csv`` (one node type per population); one edge population per record, in
``edges.h5`` with ``edge_types.csv`` (one edge type per record). An edge is one nonzero entry
``weight[r, c]``: source node c of the record's ``pre`` population, target node r of its
``post``, ``syn_weight`` = the weight, stored in edge group "0"; edges are sorted by target,
then source, and both index directions are written. SONATA population names cannot hold '/';
the names otherwise match the circuit's (e.g. "h1->h2:ebar").
"""
from __future__ import annotations

import csv
import json
import os
import tempfile

import numpy as np
import torch

FORMAT = "circuits-connectome"
VERSION = 1
ORIENTATION = "post x pre"
_TENSORS = ("weight", "mask", "pre_sign", "post_sign")  # (older readers skip datasets they do not know)


class ConnectomeFileError(ValueError):
    """A file that is not a readable connectome (corrupt, not HDF5, or missing groups)."""


# --------------------------------------------------------------------------- connectome.h5
def _group_name(name: str) -> str:
    return name.replace("/", "|")


def _attr_value(v):
    """A record field as an HDF5 attribute (None, dicts and lists as JSON strings)."""
    if isinstance(v, (bool, int, float, str, np.generic)):
        return v
    return json.dumps(v)


def _py(v):
    """An HDF5 attribute back as a plain Python value."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _atomic_h5(path: str, write) -> None:
    import h5py

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give the file the usual mode
    try:
        with h5py.File(tmp, "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_connectome(path: str, records: list[dict], attrs: dict | None = None, *,
                     compression: str | None = None) -> str:
    """Write connectome ``records`` (as ``CompiledCircuit.connectome()`` returns them) to
    ``path`` atomically (a temporary file in the same folder, then ``os.replace``).

    ``attrs``: extra file attributes (e.g. rule, seed, epoch); non-scalars are stored as JSON.
    Weights are stored in their own dtype (bfloat16/float16 as float32). Returns ``path``.
    """
    seen = set()
    for r in records:
        for key in ("name", "weight"):
            if key not in r:
                raise ValueError(f"connectome record {r.get('name', r)!r} has no {key!r}")
        g = _group_name(r["name"])
        if g in seen:
            raise ValueError(f"two connectome records are named {r['name']!r}")
        seen.add(g)

    def write(f):
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        for k, v in (attrs or {}).items():
            f.attrs[k] = _attr_value(v)
        root = f.create_group("projections", track_order=True)
        for index, r in enumerate(records):
            g = root.create_group(_group_name(r["name"]))
            for key in _TENSORS:
                if r.get(key) is None:
                    continue
                t = r[key].detach().cpu()
                if t.dtype in (torch.bfloat16, torch.float16):
                    t = t.float()
                g.create_dataset(key, data=t.numpy(), compression=compression)
            g.attrs["index"] = index
            g.attrs["orientation"] = ORIENTATION
            for k, v in r.items():
                if k in _TENSORS or v is None:
                    continue
                g.attrs[k] = _attr_value(v)

    _atomic_h5(path, write)
    return path


def _open_h5(path: str):
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"connectome file {path!r} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ConnectomeFileError(f"{path}: not a readable HDF5 connectome file ({err})") from None


def read_connectome(path: str) -> list[dict]:
    """The records written by :func:`write_connectome`, in their original order, weights (and
    masks) as torch tensors; ``orientation`` and ``index`` are file bookkeeping, not returned."""
    with _open_h5(path) as f:
        if f.attrs.get("format") != FORMAT or "projections" not in f:
            raise ConnectomeFileError(
                f"{path}: an HDF5 file but not a connectome (no format={FORMAT!r} attribute or "
                "no 'projections' group)")
        records = []
        try:
            for group in f["projections"].values():
                rec = {k: _py(v) for k, v in group.attrs.items() if k not in ("index", "orientation")}
                for key in _TENSORS:
                    if key in group:
                        rec[key] = torch.from_numpy(np.array(group[key][()]))
                if "weight" not in rec:
                    raise ConnectomeFileError(f"{path}: projection {group.name!r} has no 'weight' dataset")
                records.append((group.attrs.get("index", len(records)), rec))
        except (OSError, KeyError, RuntimeError) as err:
            raise ConnectomeFileError(f"{path}: corrupt connectome file ({err})") from None
    return [rec for _, rec in sorted(records, key=lambda x: x[0])]


def read_connectome_attrs(path: str) -> dict:
    """The file-level attributes of a connectome file (format, version and the caller's)."""
    with _open_h5(path) as f:
        return {k: _py(v) for k, v in f.attrs.items()}


# --------------------------------------------------------------------------- SONATA
def _population_sizes(records: list[dict], sizes: dict | None) -> dict[str, int]:
    out = dict(sizes or {})
    for r in records:
        w = r["weight"]
        if w.dim() != 2:
            raise ValueError(f"SONATA export needs dense 2-D tensors; {r['name']!r} has shape "
                             f"{tuple(w.shape)} (use skip_nondense=True to leave such tensors out)")
        for pop, n in ((r["pre"], w.shape[1]), (r["post"], w.shape[0])):
            if out.setdefault(pop, n) != n:
                raise ValueError(f"population {pop!r} has {out[pop]} cells, but {r['name']!r} gives {n}")
    return out


def _index(ids: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """SONATA node → edge index for one direction: node_id_to_ranges (n_nodes × 2) into
    range_to_edge_id (ranges × 2); each range is a run of consecutive edges with the same node."""
    if ids.size == 0:
        return np.zeros((n_nodes, 2), np.uint64), np.zeros((0, 2), np.uint64)
    ids = ids.astype(np.int64)
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [ids.size]])
    run_node = ids[starts]
    order = np.argsort(run_node, kind="stable")
    ranges = np.stack([starts[order], ends[order]], 1).astype(np.uint64)
    counts = np.bincount(run_node, minlength=n_nodes)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    node_ranges = np.stack([first, first + counts], 1)  # a node without edges: an empty slice
    return node_ranges.astype(np.uint64), ranges


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=" ", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def export_sonata(records: list[dict], out_dir: str, *, sizes: dict | None = None,
                  threshold: float = 0.0, skip_nondense: bool = False,
                  model_types: dict | None = None) -> dict[str, str]:
    """Write a dense circuit's records as SONATA: ``nodes.h5``, ``node_types.csv``,
    ``edges.h5``, ``edge_types.csv`` and ``circuit_config.json`` in ``out_dir``.

    Node populations are the circuit's populations (sizes from the tensors, or ``sizes``);
    edge populations are the records (entries with |w| > threshold; a sparse projection holds
    zeros where it has no synapse, so absent synapses are not edges). ``model_types`` maps a
    population to its SONATA model_type (default "point_neuron"; "virtual" for pure inputs,
    i.e. populations that are never a record's post). Returns the written paths by role.
    """
    if skip_nondense:
        records = [r for r in records if r["weight"].dim() == 2]
    pops = _population_sizes(records, sizes)
    for r in records:
        for name in (r["name"], r["pre"], r["post"]):
            if "/" in name:
                raise ValueError(f"SONATA population names cannot contain '/': {name!r}")
    posts = {r["post"] for r in records}
    model_types = {p: (model_types or {}).get(p, "point_neuron" if p in posts else "virtual") for p in pops}
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f) for k, f in (("nodes", "nodes.h5"), ("node_types", "node_types.csv"),
                                                       ("edges", "edges.h5"), ("edge_types", "edge_types.csv"),
                                                       ("config", "circuit_config.json"))}

    def header(f):
        f.attrs["version"] = np.array([0, 1], dtype=np.uint32)
        f.attrs["magic"] = np.uint32(0x0A7A)

    node_type = {p: 100 + k for k, p in enumerate(pops)}

    def write_nodes(f):
        header(f)
        nodes = f.create_group("nodes")
        for p, n in pops.items():
            g = nodes.create_group(p)
            g.create_dataset("node_id", data=np.arange(n, dtype=np.uint64))
            g.create_dataset("node_type_id", data=np.full(n, node_type[p], dtype=np.int64))
            g.create_dataset("node_group_id", data=np.zeros(n, dtype=np.uint32))
            g.create_dataset("node_group_index", data=np.arange(n, dtype=np.uint64))
            grp = g.create_group("0")
            grp.create_dataset("cell_index", data=np.arange(n, dtype=np.uint64))

    edge_type = {r["name"]: 100 + k for k, r in enumerate(records)}

    def write_edges(f):
        header(f)
        edges = f.create_group("edges")
        for r in records:
            w = r["weight"].detach().cpu().double().numpy()
            post_ids, pre_ids = np.nonzero(np.abs(w) > threshold)  # row-major: sorted by target, source
            g = edges.create_group(r["name"])
            src = g.create_dataset("source_node_id", data=pre_ids.astype(np.uint64))
            src.attrs["node_population"] = r["pre"]
            tgt = g.create_dataset("target_node_id", data=post_ids.astype(np.uint64))
            tgt.attrs["node_population"] = r["post"]
            m = pre_ids.size
            g.create_dataset("edge_type_id", data=np.full(m, edge_type[r["name"]], dtype=np.int64))
            g.create_dataset("edge_group_id", data=np.zeros(m, dtype=np.uint32))
            g.create_dataset("edge_group_index", data=np.arange(m, dtype=np.uint64))
            g.create_group("0").create_dataset("syn_weight", data=w[post_ids, pre_ids].astype(np.float32))
            for direction, ids, n in (("source_to_target", pre_ids, pops[r["pre"]]),
                                      ("target_to_source", post_ids, pops[r["post"]])):
                node_ranges, ranges = _index(ids, n)
                ix = g.require_group("indices").create_group(direction)
                ix.create_dataset("node_id_to_ranges", data=node_ranges)
                ix.create_dataset("range_to_edge_id", data=ranges)

    _atomic_h5(paths["nodes"], write_nodes)
    _atomic_h5(paths["edges"], write_edges)
    _write_csv(paths["node_types"], ["node_type_id", "population", "model_type", "model_template", "cells"],
               [[node_type[p], p, model_types[p], "NULL", n] for p, n in pops.items()])
    _write_csv(paths["edge_types"],
               ["edge_type_id", "population", "kind", "rule", "plastic", "transported", "forward",
                "orientation", "model_template"],
               [[edge_type[r["name"]], r["name"], r.get("kind", ""), r.get("rule", ""),
                 int(bool(r.get("plastic", False))), int(bool(r.get("transported", False))),
                 r.get("forward", "") or "NULL", "source=pre,target=post", "NULL"] for r in records])
    config = {"manifest": {"$NETWORK_DIR": "./"},
              "networks": {"nodes": [{"nodes_file": "$NETWORK_DIR/nodes.h5",
                                      "node_types_file": "$NETWORK_DIR/node_types.csv",
                                      "populations": {p: {"type": model_types[p]} for p in pops}}],
                           "edges": [{"edges_file": "$NETWORK_DIR/edges.h5",
                                      "edge_types_file": "$NETWORK_DIR/edge_types.csv",
                                      "populations": {r["name"]: {"type": "chemical"} for r in records}}]}}
    with open(paths["config"], "w") as f:
        json.dump(config, f, indent=2)
    return paths


# --------------------------------------------------------------------------- graph exports
def _plain(value):
    """A graph attribute as something GraphML and JSON can hold: str, int, float or bool."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return json.dumps([_plain(v) for v in value])
    if isinstance(value, dict):
        return json.dumps({str(k): _plain(v) for k, v in value.items()})
    return repr(value)


def _flatten(attrs: dict) -> dict:
    """Object attributes expanded: a population → population=repr, population_kind, population_shape…;
    a rule → its name (rule) and its repr (rule_repr); a geometry → its kind."""
    out = {}
    for k, v in attrs.items():
        describe = getattr(v, "describe", None)
        if k == "rule" and hasattr(v, "name") and not isinstance(v, str):
            out["rule"] = str(v.name)
            out["rule_repr"] = repr(v)
        elif callable(describe) and not isinstance(v, (str, dict)):
            out[k] = repr(v)
            try:
                for dk, dv in describe().items():
                    if dk != "name":
                        out[f"{k}_{dk}"] = _plain(dv)
            except Exception:  # describe() is informative only
                pass
        else:
            out[k] = _plain(v)
    return out


def plain_graph(graph):
    """A copy of a population graph (networkx MultiDiGraph) whose attributes are plain
    strings and numbers (populations, geometries and rules converted as in ``_flatten``)."""
    import networkx as nx

    g = nx.MultiDiGraph() if graph.is_multigraph() else nx.DiGraph()
    g.graph.update(_flatten(dict(graph.graph)))
    for n, d in graph.nodes(data=True):
        g.add_node(str(n), **_flatten(d))
    if graph.is_multigraph():
        for u, v, k, d in graph.edges(keys=True, data=True):
            g.add_edge(str(u), str(v), key=str(k), name=str(k), **_flatten(d))
    else:
        for u, v, d in graph.edges(data=True):
            g.add_edge(str(u), str(v), **_flatten(d))
    return g


def write_graph(graph, path: str) -> str:
    """Write the population graph as networkx node-link JSON (``.json``) or GraphML
    (``.graphml``), after :func:`plain_graph`. Returns ``path``."""
    import networkx as nx

    g = plain_graph(graph)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".graphml":
        nx.write_graphml(g, path)
    elif ext == ".json":
        try:
            data = nx.node_link_data(g, edges="edges")
        except TypeError:  # networkx < 3.4
            data = nx.node_link_data(g)
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
    else:
        raise ValueError(f"{path}: unknown graph format {ext!r}; use .json (node-link) or .graphml")
    return path
