"""The DSL: a circuit is a networkx MultiDiGraph of populations joined by projections.

Nodes are population names (attribute ``population``). Edges are projections, keyed by their
name, with attribute ``kind`` = "forward" (pre.x → post.x, carrying W) or "feedback" (an error
route added by ``feedback(rule)``: e.g. post.e → pre.e, or post.e → ē → pre.e for PFA).
Weightless forward projections (identity skips, pooling, option-A shortcuts, exact-BP blocks)
pass errors back exactly; residual additions are two projections into one population.
"""
from __future__ import annotations

import copy
from typing import Iterable

import networkx as nx

from circuits.errors import CircuitError
import torch

from connectomes.geometry import Dense, Geometry
from plasticity import Rule
from populations import Input, Intermediate, Population, Readout


class Circuit:
    """A named circuit with a seed for every initial tensor.

    >>> c = Circuit("mlp", seed=0)
    >>> x = c.add(Input("pixels", 784)); y = c.add(Readout("digits", 10))
    >>> c.connect(x, y, Dense())
    'pixels->digits'
    """

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.seed = seed
        self.graph = nx.MultiDiGraph(name=name)

    # -- building --------------------------------------------------------------------------------
    def add(self, population: Population) -> Population:
        """Add a population; returns it (so ``h = c.add(Layer(...))`` reads well)."""
        if not isinstance(population, Population):
            raise CircuitError(f"circuit {self.name!r}: add() takes a population, got {population!r}")
        if population.name in self.graph:
            raise CircuitError(f"circuit {self.name!r}: a population named {population.name!r} exists already")
        self.graph.add_node(population.name, population=population)
        return population

    def population(self, name_or_pop) -> Population:
        name = name_or_pop.name if isinstance(name_or_pop, Population) else name_or_pop
        if name not in self.graph:
            known = ", ".join(self.graph.nodes) or "none"
            raise CircuitError(f"circuit {self.name!r}: unknown population {name!r} (populations: {known})")
        return self.graph.nodes[name]["population"]

    def connect(self, pre, post, geometry: Geometry | None = None, *, name: str | None = None,
                plastic: bool = True, weight: torch.Tensor | None = None, connector=None) -> str:
        """Add a forward projection pre.x → post.x; returns its name (default "pre->post").

        ``weight``: the initial W (post × pre, e.g. taken from a torch model) instead of the
        seeded Glorot draw. ``connector`` (e.g. ``FixedProbability(0.3, seed=1)``): sparse
        forward synapses, a fixed mask of W's shape (see ``plasticity.Projection``); p = 1 or
        ``AllToAll()`` is dense. Weightless geometries take no connector."""
        pre, post = self.population(pre), self.population(post)
        geometry = geometry or Dense()
        name = name or f"{pre.name}->{post.name}"
        where = f"projection {name!r}"
        if name in self.projections():
            raise CircuitError(f"{where}: a projection with this name exists already")
        if isinstance(post, (Input, Intermediate)):
            raise CircuitError(f"{where}: post population {post.name!r} is a {post.kind} and cannot receive a forward projection")
        if isinstance(pre, (Readout, Intermediate)):
            raise CircuitError(f"{where}: pre population {pre.name!r} is a {pre.kind} and cannot send a forward projection")
        problem = geometry.check(pre.shape, post.shape)
        if problem:
            raise CircuitError(f"{where}: {problem} (pre {pre.name!r} {pre.shape}, post {post.name!r} {post.shape})")
        forward = self.forward_graph()
        if pre.name == post.name or (post.name in forward and pre.name in forward
                                     and nx.has_path(forward, post.name, pre.name)):
            path = [pre.name] if pre.name == post.name else nx.shortest_path(forward, post.name, pre.name)
            raise CircuitError(f"{where} closes a cycle: {' -> '.join(path + [post.name])}")
        if connector is not None:
            if not (callable(getattr(connector, "mask", None)) and hasattr(connector, "p")):
                raise CircuitError(f"{where}: connector must be a connector such as FixedProbability(0.3), got {connector!r}")
            if geometry.weightless:
                raise CircuitError(f"{where} is weightless ({geometry.kind}): it has no synapses and takes no "
                                   f"connector (got {connector!r})")
            connector = connector if connector.p < 1 else None  # p = 1, AllToAll: dense
        if weight is not None:
            shape = tuple(geometry.weight_shape(pre.shape, post.shape))
            if geometry.weightless or tuple(weight.shape) != shape:
                raise CircuitError(f"{where}: initial weight of shape {tuple(weight.shape)} does not fit W {shape or '(none)'}")
        self.graph.add_edge(pre.name, post.name, key=name, kind="forward", geometry=geometry,
                            plastic=plastic and not geometry.weightless, rule=None, weight=weight,
                            connector=connector)
        return name

    def set_initial(self, population, bias: torch.Tensor | None = None, norm: dict | None = None) -> None:
        """Initial values of a population's bias (shaped like the compiled bias) and of its norm
        (a ``BatchNorm`` state_dict), used by ``compile()`` instead of zeros and defaults."""
        pop = self.population(population)
        self.graph.nodes[pop.name]["initial"] = {"bias": bias, "norm": norm}

    @classmethod
    def from_torch(cls, module, feedback=None, input_shape=(3, 224, 224), **options) -> "Circuit":
        """A circuit equivalent to a torch ``module`` (see ``circuits.convert.from_torch``)."""
        from circuits.convert import from_torch
        return from_torch(module, feedback=feedback, input_shape=input_shape, **options)

    def feedback(self, rule: Rule, projections: Iterable[str] | None = None) -> "Circuit":
        """Give forward projections (all plastic ones, or those named) a feedback rule, adding the
        explicit feedback projections and intermediate populations the rule needs."""
        if not isinstance(rule, Rule):
            raise CircuitError(f"circuit {self.name!r}: feedback() takes a rule such as pfa(), got {rule!r}")
        known = self.projections()
        names = list(projections) if projections is not None else [
            n for n, d in known.items() if d["plastic"]]
        readouts = [p.name for p in self.populations() if isinstance(p, Readout)]
        for name in names:
            if name not in known:
                raise CircuitError(f"circuit {self.name!r}: unknown projection {name!r} in feedback() "
                                   f"(projections: {', '.join(known) or 'none'})")
            data = known[name]
            if not data["plastic"]:
                raise CircuitError(f"projection {name!r} has no plastic weights and cannot carry the feedback rule {rule.name!r}")
            try:
                rule.check(name, data["geometry"], readouts)
            except ValueError as err:
                raise CircuitError(str(err)) from None
        for name in names:
            self._remove_feedback(name)
            pre, post, data = known[name]["pre"], known[name]["post"], known[name]
            self.graph.edges[pre, post, name]["rule"] = rule
            if isinstance(self.population(pre), Input):
                continue  # the first layer sends no error to the input: no feedback path at all
            roles = {"pre": pre, "post": post, "readout": readouts[0] if readouts else None}
            shape = rule.intermediate_shape(self.population(post).shape, data["geometry"])
            if shape is not None:
                roles["ebar"] = f"{name}:ebar"
                self.graph.add_node(roles["ebar"], population=Intermediate(roles["ebar"], shape),
                                    forward=name)
            for edge in rule.edges:
                self.graph.add_edge(roles[edge.source], roles[edge.target], key=f"{name}:{edge.tensor}",
                                    kind="feedback", forward=name, tensor=edge.tensor, rule=rule.name,
                                    plastic=edge.plastic, transported=edge.transported)
        return self

    def with_rule(self, rule: Rule) -> "Circuit":
        """A copy in which every plastic forward projection learns with ``rule``."""
        other = copy.deepcopy(self)
        other.feedback(rule)
        return other

    def _remove_feedback(self, forward: str) -> None:
        drop = [(u, v, k) for u, v, k, d in self.graph.edges(keys=True, data=True)
                if d["kind"] == "feedback" and d["forward"] == forward]
        self.graph.remove_edges_from(drop)
        self.graph.remove_nodes_from([n for n, d in list(self.graph.nodes(data=True)) if d.get("forward") == forward])

    # -- reading -------------------------------------------------------------------------------
    def populations(self) -> list[Population]:
        return [d["population"] for _, d in self.graph.nodes(data=True)]

    def projections(self, kind: str = "forward") -> dict[str, dict]:
        """{name: edge data + pre/post} for projections of ``kind`` ("forward" or "feedback")."""
        return {k: {**d, "pre": u, "post": v} for u, v, k, d in self.graph.edges(keys=True, data=True)
                if d["kind"] == kind}

    def forward_graph(self) -> nx.MultiDiGraph:
        """The populations with forward projections only (a DAG)."""
        g = nx.MultiDiGraph()
        g.add_nodes_from(n for n, d in self.graph.nodes(data=True) if not isinstance(d["population"], Intermediate))
        g.add_edges_from((u, v, k) for u, v, k, d in self.graph.edges(keys=True, data=True) if d["kind"] == "forward")
        return g

    def validate(self) -> None:
        """Raise CircuitError naming what is wrong; ``compile()`` calls this first."""
        pops = self.populations()
        forward = self.forward_graph()
        inputs = [p for p in pops if isinstance(p, Input)]
        readouts = [p for p in pops if isinstance(p, Readout)]
        if not inputs:
            raise CircuitError(f"circuit {self.name!r} has no Input population")
        if not readouts:
            raise CircuitError(f"circuit {self.name!r} has no Readout population")
        for p in pops:
            if isinstance(p, (Input, Intermediate)):
                continue
            if forward.in_degree(p.name) == 0:
                raise CircuitError(f"population {p.name!r} receives no forward projection")
            if not isinstance(p, Readout) and forward.out_degree(p.name) == 0:
                raise CircuitError(f"population {p.name!r} projects nowhere: its activity cannot reach a readout")
        for p in inputs:
            if forward.out_degree(p.name) == 0:
                raise CircuitError(f"input population {p.name!r} projects nowhere")
        for name, d in self.projections().items():
            if d["plastic"] and d["rule"] is None:
                raise CircuitError(f"projection {name!r} has no feedback rule: call circuit.feedback(rule)")

    # -- printing ------------------------------------------------------------------------------
    def summary(self) -> str:
        """Populations, forward projections and the feedback routes, as text."""
        lines = [f"Circuit {self.name!r} (seed {self.seed})", "", "populations:"]
        for p in self.populations():
            extra = ""
            if hasattr(p, "activation") and p.kind == "layer":
                extra = f" {p.activation}" + (f" norm={p.norm}" if p.norm else "")
            if isinstance(p, Readout):
                extra = f" loss={p.loss}"
            comps = "+".join(p.compartments)
            shape = "" if len(p.shape) == 1 else " " + "×".join(map(str, p.shape))
            lines.append(f"  {p.kind:<12} {p.name:<22} {p.size:>8} cells  [{comps}]{extra}{shape}")
        lines += ["", "forward projections (pre.x -> post.x):"]
        for name, d in self.projections().items():
            pre, post = self.population(d["pre"]), self.population(d["post"])
            geometry = d["geometry"]
            shape = "×".join(map(str, geometry.weight_shape(pre.shape, post.shape))) or "-"
            if geometry.weightless:
                rule = "- (weightless, exact BP)" if geometry.kind != "block" else "- (exact-BP block)"
            else:
                rule = d["rule"].name if d["rule"] is not None else ("NONE" if d["plastic"] else "- (fixed W, exact)")
            sparse = f"  {d['connector']!r}" if d.get("connector") is not None else ""
            lines.append(f"  {name:<24} {geometry.kind:<9} W {shape:<12} rule {rule}{sparse}")
        blocks = self.exact_blocks()
        if blocks:
            lines += ["", f"exact-BP blocks ({len(blocks)}; not circuit elements, trained by plain autograd):"]
            for b in blocks:
                lines.append(f"  {b['name']:<24} {b['module']:<20} {b['parameters']:>9} parameters")
        fb = self.projections("feedback")
        lines += ["", "feedback projections (errors):"]
        if not fb:
            lines.append("  (none)")
        for name, d in fb.items():
            what = "transported" if d["transported"] else ("plastic" if d["plastic"] else "fixed")
            lines.append(f"  {name:<24} {d['pre'] + '.e':>18} -> {d['post'] + '.e':<18} {what}")
        return "\n".join(lines)

    def describe(self) -> dict:
        """JSON-ready description (written to config.json)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "populations": [p.describe() for p in self.populations()],
            "projections": [
                {"name": n, "pre": d["pre"], "post": d["post"], "geometry": d["geometry"].describe(),
                 "plastic": d["plastic"], "rule": d["rule"].describe() if d["rule"] else None,
                 **({"connector": d["connector"].describe()} if d.get("connector") is not None else {})}
                for n, d in self.projections().items()
            ],
            "feedback": [
                {"name": n, "source": d["pre"], "target": d["post"], "forward": d["forward"],
                 "tensor": d["tensor"], "plastic": d["plastic"], "transported": d["transported"]}
                for n, d in self.projections("feedback").items()
            ],
        }

    def exact_blocks(self) -> list[dict]:
        """The exact-BP blocks (``connectomes.Block``: operations the circuit cannot express, run
        as plain PyTorch and trained by autograd): name, pre, post, module, parameters."""
        return [{"name": n, "pre": d["pre"], "post": d["post"], "module": d["geometry"].label,
                 "parameters": d["geometry"].parameter_count()}
                for n, d in self.projections().items() if d["geometry"].kind == "block"]

    def rules(self) -> set[str]:
        return {d["rule"].name for d in self.projections().values() if d["rule"] is not None}

    def compile(self, **kwargs):
        """Validate and lower to a ``CompiledCircuit`` (a torch.nn.Module)."""
        from circuits.compile import CompiledCircuit
        return CompiledCircuit(self, **kwargs)

    def __repr__(self) -> str:
        return f"Circuit({self.name!r}, {self.graph.number_of_nodes()} populations, {len(self.projections())} projections)"
