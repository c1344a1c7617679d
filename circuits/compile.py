"""Lowering a Circuit to a torch.nn.Module.

Each forward projection becomes a leaf ``plasticity.Projection`` module (its W, its rule's
feedback tensors); each Layer/Readout gets a bias (one per channel for a (C, H, W) population)
and, with ``norm="batch"``, a BatchNorm module. The forward pass visits populations in
topological order: sum the incoming projections, add the bias (fused into the first
projection's op, as ``nn.Linear`` does), normalise, apply the activation.
Backward is plain autograd through populations and weightless projections, and each rule's
Function through plastic projections, so a stock ``torch.optim`` optimizer, AMP and DDP work as
for any model. Exact-BP blocks (``connectomes.Block``) run a copy of their module.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import networkx as nx
import torch
from torch import nn

from circuits.errors import CircuitError
from connectomes.analysis import alignment_deg, angle_deg, norm_ratio, sign_concordance
from connectomes.geometry import Geometry
from plasticity import BP, Projection, ReadoutTap
from populations import ACTIVATIONS, Input, Layer, Readout


def _cell_signs(pre, post) -> dict:
    """``pre_sign``/``post_sign`` (int8 ±1) of a connectome record, for the sides with cell types."""
    out = {}
    for key, signs in (("pre_sign", pre), ("post_sign", post)):
        if signs is not None:
            out[key] = signs.to(torch.int8).cpu()
    return out


class PlanStep(NamedTuple):
    """One population of the forward pass: its incoming projections as (name, pre population,
    geometry, carries the population's bias), and whether the bias is added on its own."""

    population: Layer
    incoming: list[tuple[str, str, Geometry, bool]]
    add_bias: bool


class CompiledCircuit(nn.Module):
    """The runnable circuit. ``forward(x)`` returns the readout activity (batch × N_readout)."""

    def __init__(self, circuit, seed: int | None = None, implicit_feedback: bool = False,
                 input_feedback: bool = False):
        """``implicit_feedback``: rules that can (PFA) hold their plastic feedback as a closed
        form of W, exact when one plain SGD setting drives W and the feedback alike; the
        optimizer must then be attached with ``attach_optimizer``. ``input_feedback``: give the
        projections out of an input population their rule's feedback tensors too (plastic ones
        learn by the rule), to measure their alignment as the PFA paper's Fig. 2 does; no error
        reaches an input, so W's updates are the same as without it (off: those projections are
        plain autograd ops with no feedback tensors at all)."""
        super().__init__()
        circuit.validate()
        self.circuit = circuit
        self.seed = circuit.seed if seed is None else seed
        forward = circuit.forward_graph()
        self.generations = [sorted(g) for g in nx.topological_generations(forward)]
        readouts = [p for p in circuit.populations() if isinstance(p, Readout)]
        self.inputs = [p for p in circuit.populations() if isinstance(p, Input)]
        self.readout = readouts[0]
        if len(readouts) > 1:
            raise CircuitError(f"circuit {circuit.name!r}: more than one readout ({', '.join(p.name for p in readouts)}) is not supported yet")

        self.projections = nn.ModuleDict()
        self.biases = nn.ParameterDict()
        self.norms = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        self._plan: list[PlanStep] = []  # populations in topological order
        projections = circuit.projections()
        for gen in self.generations:
            for name in gen:
                pop = circuit.population(name)
                if isinstance(pop, Input):
                    continue
                incoming = [(pn, d) for pn, d in projections.items() if d["post"] == name]
                for pn, d in incoming:
                    pre = circuit.population(d["pre"])
                    if d["geometry"].kind == "block":
                        self.blocks[pn] = copy.deepcopy(d["geometry"].module)
                    if d["geometry"].weightless:
                        continue
                    rule = d["rule"]
                    if rule is None:  # fixed (non-plastic) weights: errors pass by Wᵀ
                        rule = BP()
                    proj = Projection(pn, d["geometry"], pre.shape, pop.shape, rule,
                                      sends_error=input_feedback or not isinstance(pre, Input), seed=self.seed,
                                      post_is_readout=isinstance(pop, Readout),
                                      readout_size=self.readout.size, implicit=implicit_feedback,
                                      weight=d.get("weight"), connector=d.get("connector"),
                                      signs={"pre": pre.signs(), "post": pop.signs(), "readout": self.readout.signs()})
                    if not d["plastic"]:
                        proj.weight.requires_grad_(False)
                    self.projections[pn] = proj
                self._add_transfer(pop, circuit.graph.nodes[name].get("initial") or {})
                # the bias rides on the first projection with synapses (one fused op, as in
                # nn.Linear); a population fed only by weightless maps adds it on its own
                carrier = next((pn for pn, d in incoming if not d["geometry"].weightless), None)
                carrier = carrier if pop.name in self.biases else None
                self._plan.append(PlanStep(pop, [(pn, d["pre"], d["geometry"], pn == carrier) for pn, d in incoming],
                                           pop.name in self.biases and carrier is None))

        # after plan step i, the activities no later step reads are dropped (as plain PyTorch frees
        # an intermediate no op saved for backward: e.g. a ResNet block's BN output before the sum)
        last_read = {pre: i for i, step in enumerate(self._plan) for _, pre, _, _ in step.incoming}
        self._release = [tuple(n for n, i in last_read.items() if i == j and n != self.readout.name)
                         for j in range(len(self._plan))]
        # projections whose pre population gets its error from the readout's (DFA)
        self._readout_fed = frozenset(n for n, p in self.projections.items()
                                      if p.sends_error and p.rule.needs_readout_error)

    def _add_transfer(self, pop, initial: dict) -> None:
        """The population's bias (one per channel: shape (C, 1, 1) for (C, H, W)) and norm."""
        if getattr(pop, "bias", False):
            bias = torch.zeros(pop.shape[0], *[1] * (len(pop.shape) - 1))
            if initial.get("bias") is not None:
                bias = initial["bias"].detach().reshape(bias.shape).clone()
            self.biases[pop.name] = nn.Parameter(bias)
        if getattr(pop, "norm", None) == "batch":
            norm = (nn.BatchNorm1d if len(pop.shape) == 1 else nn.BatchNorm2d)(pop.shape[0])
            if initial.get("norm") is not None:
                norm.to(initial["norm"].get("weight", torch.empty(0)).dtype).load_state_dict(initial["norm"])
            self.norms[pop.name] = norm

    # -- running -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor | dict[str, torch.Tensor], exact: bool = False) -> torch.Tensor:
        """Readout activity for input ``x``. ``exact=True`` runs every projection as plain
        autograd (errors by Wᵀ): the true BP gradient of the same weights, for comparisons."""
        return self.run(x, exact)

    def run(self, x: torch.Tensor | dict[str, torch.Tensor], exact: bool = False,
            record: dict | None = None) -> torch.Tensor:
        """``forward``, and with ``record`` (a dict) each non-input population's activity (batch ×
        shape) put in it by population name (``error_norms`` differentiates the loss with respect
        to them). Diagnostics call this, not ``forward``, so hooks on a training step's forward
        do not see them."""
        if not isinstance(x, dict):
            if len(self.inputs) != 1:
                raise CircuitError(f"circuit {self.circuit.name!r} has several inputs: pass a dict {{name: tensor}}")
            x = {self.inputs[0].name: x}
        acts = {}
        for p in self.inputs:
            if p.name not in x:
                raise CircuitError(f"no data for input population {p.name!r}")
            t = x[p.name]
            if t.shape[1:] != p.shape:
                if t.shape[1:].numel() != p.size:
                    raise CircuitError(f"input population {p.name!r} has shape {p.shape}; the data has "
                                       f"{tuple(t.shape[1:])} per sample")
                t = t.reshape(t.shape[0], *p.shape)
            acts[p.name] = t
        # (the containers are read once: this loop runs every step, and each nn.Module
        # attribute lookup costs about a microsecond)
        projections, biases, norms, blocks = self.projections, self.biases, self.norms, self.blocks
        readout_fed, taps = self._readout_fed, None
        tap_readout = bool(readout_fed) and not exact and torch.is_grad_enabled()
        release = self._release if record is None else [()] * len(self._plan)
        for (pop, incoming, add_bias), done in zip(self._plan, release):
            total = None
            for pn, pre, geometry, carries_bias in incoming:
                if geometry.weightless:  # identity, pooling, shortcuts, exact-BP blocks: plain autograd
                    out = blocks[pn](acts[pre]) if pn in blocks else geometry.forward(acts[pre], None, pop.shape)
                    out = out.reshape(out.shape[0], *pop.shape)
                else:  # W x (+ bias) in one op, shaped like the post population by its geometry
                    proj = projections[pn]
                    bias = biases[pop.name].flatten() if carries_bias else None
                    out = (proj.geometry.forward(acts[pre], proj.masked_weight(), bias) if exact
                           else proj(acts[pre], bias))
                    if tap_readout and pn in readout_fed:  # DFA: e_L to the pre cells, made here (see ReadoutTap)
                        tap = ReadoutTap.apply(acts[pre], proj, self.readout.shape)
                        taps = tap if taps is None else taps + tap
                total = out if total is None else total + out
            if add_bias:
                total = total + biases[pop.name]
            if pop.name in norms:
                total = norms[pop.name](total)
            acts[pop.name] = ACTIVATIONS[pop.activation](total)
            for name in done:
                del acts[name]
        if record is not None:
            record.update((pop.name, acts[pop.name]) for pop, _, _ in self._plan)
        out = acts[self.readout.name]
        if taps is not None:
            out = out + taps.to(out.dtype)  # adds zeros: the taps only carry e_L back
        return out

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The readout's loss (e.g. cross-entropy of the readout activity against labels)."""
        return self.readout.loss_fn(out, target)

    # -- optimisation --------------------------------------------------------------------------
    def forward_parameters(self) -> list[nn.Parameter]:
        """W of every plastic projection, every population bias and norm, and the parameters of
        exact-BP blocks."""
        ws = [p.weight for p in self.projections.values() if p.weight.requires_grad]
        rest = [q for m in (self.norms, self.blocks) for q in m.parameters() if q.requires_grad]
        return ws + list(self.biases.values()) + rest

    def forward_state(self) -> dict[str, torch.Tensor]:
        """The forward map's state besides the projections' W: population biases, norm parameters
        and running statistics, exact-BP blocks (their ``state_dict`` entries, CPU copies)."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()
                if k.split(".")[0] in ("biases", "norms", "blocks")}

    def feedback_parameters(self) -> list[nn.Parameter]:
        """Plastic feedback tensors (KP's B, PFA's R): their own optimizer group."""
        return [t for p in self.projections.values() for t in p.feedback_parameters()]

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Let projections with implicit feedback follow ``optimizer``'s steps (a step post-hook
        that advances their scalar state with the settings of W's parameter group), and keep
        Dale's principle: after each step every sign-constrained tensor (W, plastic feedback) is
        projected (``Projection.enforce_dale``: a synapse whose sign flipped is set to zero)."""
        dale = [p for p in self.projections.values() if p.dale]
        if dale:
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self.enforce_dale())
        implicit = [p for p in self.projections.values() if p.implicit]
        if not implicit:
            return
        if type(optimizer) is not torch.optim.SGD:
            raise CircuitError(f"implicit feedback ({', '.join(p.name for p in implicit)}) is exact only "
                               f"under torch.optim.SGD, not {type(optimizer).__name__}; compile with implicit_feedback=False")
        groups = {}  # group index, not the dict: load_state_dict replaces the group dicts
        for p in implicit:
            found = [i for i, g in enumerate(optimizer.param_groups) if any(q is p.weight for q in g["params"])]
            if len(found) != 1:
                raise CircuitError(f"projection {p.name!r}: its weight is not in the optimizer")
            group = optimizer.param_groups[found[0]]
            if group.get("maximize") or group.get("sign_update"):
                raise CircuitError(f"projection {p.name!r}: implicit feedback needs a plain SGD step")
            groups[p.name] = found[0]
            p.attached = True

        def advance(opt, args, kwargs):
            for p in implicit:
                if p.weight.grad is not None:
                    p.rule.after_step(p, opt.param_groups[groups[p.name]])

        optimizer.register_step_post_hook(advance)

    def enforce_dale(self) -> None:
        """Project every sign-constrained tensor onto Dale's principle (``attach_optimizer``
        does it after each optimizer step; call it yourself after a hand-written update)."""
        for p in self.projections.values():
            if p.dale:
                p.enforce_dale()

    # -- metrics -------------------------------------------------------------------------------
    def alignment(self) -> dict[str, dict[str, float]]:
        """Per projection that sends errors: angle between Wᵀ and its effective feedback (path
        RB for PFA) in degrees, their norm ratio, and the fraction of sign-concordant pairs."""
        result = {}
        for name, p in self.projections.items():
            B = p.effective_feedback()
            if B is None:
                continue
            result[name] = {"alignment_deg": alignment_deg(p.weight, B), "norm_ratio": norm_ratio(p.weight, B),
                            "sign_concordance": sign_concordance(p.weight, B)}
        return result

    def connectome(self) -> list[dict]:
        """Every synaptic tensor of the circuit as records for the connectome files and analysis.

        Each record: ``name``, ``kind`` ("forward"/"feedback"), ``pre``, ``post`` (population
        names; for feedback the error compartments), ``weight`` (a CPU tensor oriented post × pre
        of that projection: W for forward, B (pre_fwd × post_fwd) for FA-like feedback, PFA's B
        (N̄ × N_out) and R (N_in × N̄)), ``rule``, ``plastic``, ``transported`` (the tensor is a
        function of W, as BP's Wᵀ or SF's signs), and for feedback ``forward`` (the forward
        projection it serves). A sparse forward projection (``connect(..., connector=...)``) keeps
        zeros where no synapse exists and adds ``mask`` (bool, W's shape: True = synapse).
        Under Dale's principle a record adds ``pre_sign`` / ``post_sign`` (int8, ±1: E/I) for its
        pre (sending) and post (receiving) populations where these have cell types (ē's are set
        by its rule); records of circuits without cell types are as before.
        """
        records = []
        fwd = self.circuit.projections()
        feedback = self.circuit.projections("feedback")
        for name, p in self.projections.items():
            d = fwd[name]
            records.append({"name": name, "kind": "forward", "pre": d["pre"], "post": d["post"],
                            "weight": p.weight.detach().cpu(), "rule": p.rule.name,
                            "plastic": bool(d["plastic"]), "transported": False,
                            **_cell_signs(p.signs.get("pre"), p.signs.get("post"))})
            if p.mask_W is not None:
                records[-1]["mask"] = p.mask_W.detach().cpu()
            if not p.sends_error:
                continue
            for fname, f in feedback.items():
                if f["forward"] != name:
                    continue
                tensor = p.rule.tensor(p, f["tensor"])
                if tensor is None:  # transported (BP's Wᵀ, SF's signs): the effective feedback
                    tensor = p.effective_feedback()
                if tensor is None:
                    continue
                roles = {d["pre"]: "pre", d["post"]: "post", self.readout.name: "readout"}
                records.append({"name": fname, "kind": "feedback", "pre": f["pre"], "post": f["post"],
                                "weight": tensor.detach().cpu(), "rule": p.rule.name,
                                "plastic": bool(f["plastic"]), "transported": bool(f["transported"]),
                                "forward": name,
                                **_cell_signs(p.signs.get(roles.get(f["pre"], "ebar")),
                                              p.signs.get(roles.get(f["post"], "ebar")))})
        return records

    def update_alignment(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Per plastic projection: the angle in degrees between the rule's ΔW and the true BP
        gradient on the batch (x, y). Leaves ``.grad`` and batch-norm statistics as they were."""
        names = [n for n, p in self.projections.items() if p.weight.requires_grad]
        weights = [self.projections[n].weight for n in names]
        stats = {k: v.clone() for k, v in self.state_dict().items()
                 if k.startswith("norms.") and not k.endswith(("weight", "bias"))}
        with torch.enable_grad():
            rule = torch.autograd.grad(self.loss(self(x), y), weights)
            bp = torch.autograd.grad(self.loss(self(x, exact=True), y), weights)
        self.load_state_dict(stats, strict=False)
        return {n: angle_deg(a, b) for n, a, b in zip(names, rule, bp)}

    def error_norms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Per non-input population P: ‖e_P‖, the mean over the batch of the L2 norm of the error
        arriving at P's activity (after its activation; the error the rule's feedback delivers,
        before P multiplies it by its own σ' and norm), in units of one sample's loss:

            ‖e_P‖ = (1/n) Σ_i ‖∂(Σ_j loss_j)/∂a_P,i‖₂ ,   a_P,i: P's activity for sample i (all its cells)

        (n × the gradient of the mean loss, so the value does not depend on the batch size). For
        the readout it is ‖softmax − onehot‖ averaged over the batch (cross-entropy). Measured with
        the rules' own backward (one forward and one backward on (x, y), in the current train/eval
        mode); parameters' ``.grad`` and batch-norm statistics are left as they were. Random draws
        (brSF's magnitudes, WM/PAL noise) do consume the random stream: callers that must not
        shift it fork it (``torch.random.fork_rng``), as the training loop does."""
        stats = {k: v.clone() for k, v in self.state_dict().items()
                 if k.startswith("norms.") and not k.endswith(("weight", "bias"))}
        acts: dict[str, torch.Tensor] = {}
        with torch.enable_grad():
            loss = self.loss(self.run(x, record=acts), y) * len(y)
            names = [n for n, a in acts.items() if a.requires_grad]
            grads = torch.autograd.grad(loss, [acts[n] for n in names], allow_unused=True)
        self.load_state_dict(stats, strict=False)
        return {n: float("nan") if g is None else g.detach().flatten(1).norm(dim=1).mean().item()
                for n, g in zip(names, grads)}

    def schedule_summary(self) -> str:
        """The order of computation: forward by topological generation, then the error routes
        in reverse (as Brian2's ``scheduling_summary``)."""
        lines = [f"Schedule of {self.circuit.name!r}", "forward (x):"]
        for i, gen in enumerate(self.generations):
            lines.append(f"  step {i}: {', '.join(gen)}")
            for pop, incoming, _ in self._plan:
                if pop.name in gen:
                    for pn, pre, geometry, _ in incoming:
                        proj = self.projections[pn] if pn in self.projections else None
                        how = f"weightless {geometry.kind}" if proj is None else f"W{tuple(proj.weight.shape)}"
                        if proj is not None and proj.mask_W is not None:
                            how += f" sparse ({proj.mask_W.float().mean().item():.2f} of synapses)"
                        lines.append(f"      {pn:<26} {pre}.x -> {pop.name}.x  {how}")
        lines.append("backward (e), readout first:")
        lines.append(f"  {self.readout.name}.e = ∂{self.readout.loss}/∂{self.readout.name}")
        for pop, incoming, _ in reversed(self._plan):
            for pn, pre, geometry, _ in incoming:
                proj = self.projections[pn] if pn in self.projections else None
                if proj is None:
                    how = "exact-BP block" if geometry.kind == "block" else "exact (weightless)"
                    lines.append(f"      {pn:<26} {pop.name}.e -> {pre}.e  {how}")
                elif not proj.sends_error:
                    lines.append(f"      {pn:<26} ΔW only ({pre} is an input)  rule {proj.rule.name}")
                else:
                    plastic = ", ".join(proj.rule.plastic) or "none"
                    lines.append(f"      {pn:<26} {pop.name}.e -> {pre}.e  rule {proj.rule.name} (plastic feedback: {plastic})")
        return "\n".join(lines)
