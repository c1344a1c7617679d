"""What every rule shares: the rule interface, the runtime projection module, and the one
autograd Function through which custom rules send errors back.

Orientation: W is post × pre (like ``nn.Linear.weight``); a feedback tensor that carries errors
from ``post.e`` to ``pre.e`` is pre × post ("feedback layout"); δ is ∂loss/∂(post input) and
e_in the error handed to the pre population before it multiplies by its own σ'.
Every rule changes W by ΔW = Σ_batch δ xᵀ, written as ``W.grad`` for a stock optimizer;
rules differ in e_in and in how their feedback tensors change.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
from torch import nn

from connectomes.dale import balanced_init, project_signs_
from connectomes.geometry import Geometry


@dataclass(frozen=True)
class FeedbackEdge:
    """One feedback projection a rule adds to the circuit graph.

    ``source``/``target`` are roles resolved by the circuit: "post" (the forward projection's
    post population, its e compartment), "pre" (pre.e), "readout" (the readout's e), "ebar" (the
    rule's intermediate population ē). ``tensor`` is the name of the runtime tensor.
    """

    tensor: str
    source: str
    target: str
    plastic: bool
    transported: bool = False


def seeded_generator(seed: int, *names: str) -> torch.Generator:
    """A CPU generator whose seed depends on the circuit seed and a stable name (crc32), so one
    projection's initial tensors do not shift when another projection is added."""
    key = zlib.crc32("/".join(names).encode())
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + key) % (2**63))


def fans(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) of a post × pre (× kernel) tensor, as ``torch.nn.init`` computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def gain_option(rule: str, name: str, gain) -> dict:
    """{name: gain} for a rule's options when a feedback init gain is given (nothing when None,
    so a rule without one describes itself as before); ValueError naming the rule otherwise."""
    from connectomes.geometry import check_gain

    gain = check_gain(gain, f"{rule}: {name}")
    return {} if gain is None else {name: gain}


def feedback_init(shape: tuple, generator: torch.Generator, gain: float | None) -> torch.Tensor:
    """A fixed feedback tensor in feedback layout (pre × post [× kernel]): Glorot-uniform
    (gain None, the default), or N(0, gain²/fan_in) with fan_in = post · kernel, the number of
    errors each pre cell sums (gain 1: LeCun, √2: He)."""
    from connectomes.geometry import fan_in_normal, xavier_uniform

    return xavier_uniform(shape, generator) if gain is None else fan_in_normal(shape, generator, gain)


def feedback_shape(weight_shape: tuple) -> tuple:
    """Shape of Wᵀ in feedback layout (pre × post × kernel)."""
    return (weight_shape[1], weight_shape[0], *weight_shape[2:])


class Rule:
    """A learning rule for one forward projection and its feedback route.

    Subclasses set ``name``, ``edges`` (the feedback projections they add), ``plastic``
    (names of their plastic feedback tensors) and implement ``init_feedback`` and either
    ``feedback_tensor`` (rules whose error is e_in = B δ for one tensor B) or ``backward``.
    """

    name = "rule"
    edges: tuple[FeedbackEdge, ...] = ()
    plastic: tuple[str, ...] = ()
    needs_readout_error = False  # True: e_in comes from ``readout_feedback``, not ``backward``
    sparse_tensors: tuple[str, ...] = ()  # stored feedback tensors a connector may thin out

    def __init__(self, connector=None, **options):
        """``connector`` (e.g. ``connectomes.connectors.FixedProbability(0.3)``) thins the rule's
        feedback tensors with fixed random masks."""
        if connector is not None and getattr(connector, "p", 1.0) < 1 and not self.sparse_tensors:
            raise ValueError(f"{self.name}: sparse feedback is not implemented for this rule")
        self.connector = connector if connector is not None and connector.p < 1 else None
        self.options = options

    # -- the circuit graph ---------------------------------------------------------------------
    def intermediate_shape(self, post_shape: tuple, geometry: Geometry) -> tuple | None:
        """Shape of the intermediate population ē this rule adds (None: it adds none)."""
        return None

    def check(self, projection: str, geometry: Geometry, readouts: list) -> None:
        """Raise ValueError naming ``projection`` if this rule cannot serve it."""

    def describe(self) -> dict:
        extra = {"connector": self.connector.describe()} if self.connector is not None else {}
        return {"rule": self.name, **self.options, **extra}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})"

    # -- the runtime ---------------------------------------------------------------------------
    supports_implicit = False  # can keep its plastic feedback as a closed form of W (see PFA)

    def init_feedback(self, proj: "Projection", generator: torch.Generator) -> None:
        """Create the feedback tensors on ``proj`` (buffers if fixed, parameters if plastic)."""

    def apply_connector(self, proj: "Projection", seed: int) -> None:
        """Thin each of ``sparse_tensors`` with the connector: a fixed boolean buffer
        ``mask_<name>`` of the tensor's shape, the tensor zeroed where it is False, and for a
        plastic tensor its gradient too, so a masked synapse never carries error or weight."""
        c = self.connector
        base = c.seed if getattr(c, "seed", None) is not None else seed
        for name in self.sparse_tensors:
            t = getattr(proj, name)
            mask = c.mask(tuple(t.shape), seeded_generator(base, proj.name, "mask", name))
            proj.register_buffer(f"mask_{name}", mask)
            with torch.no_grad():
                t.mul_(mask.to(t.dtype))
            if isinstance(t, nn.Parameter):
                t.register_hook(lambda g, proj=proj, name=name: g * getattr(proj, f"mask_{name}").to(g.dtype))

    def plastic_tensors(self, proj: "Projection") -> tuple[str, ...]:
        """Names of the plastic feedback parameters on ``proj`` (none when held implicitly)."""
        return () if proj.implicit else self.plastic

    def tensor(self, proj: "Projection", name: str) -> torch.Tensor | None:
        """A feedback tensor by name (``B``, ``R``...), also when the rule holds it implicitly."""
        return getattr(proj, name, None)

    def after_step(self, proj: "Projection", group: dict) -> None:
        """Called after each optimizer step with W's parameter group (implicit rules only)."""

    # -- Dale's principle ----------------------------------------------------------------------
    def sender_signs(self, proj: "Projection", role: str) -> torch.Tensor | None:
        """The signs of the cells at the source role of a feedback edge ("post", "readout",
        "ebar"), None when they have no cell type."""
        return proj.signs.get(role)

    def apply_dale(self, proj: "Projection", generator: torch.Generator) -> None:
        """Put the rule's feedback tensors under Dale's principle: each feedback synapse has the
        sign of the cell that sends it (the source of its ``FeedbackEdge``: the post cell for FA,
        KP, WM and PAL's B; the readout cell for DFA's B). Each tensor whose sender has a cell
        type is redrawn by ``balanced_init`` with the mean square of the rule's own draw (so gain
        options carry over) and gets a buffer ``sign_<tensor>`` (its column signs, the senders');
        plastic ones are projected after every optimizer step (``Projection.enforce_dale``).
        A transported feedback (the sign of W, i.e. of the *receiving* cell) cannot obey it:
        ValueError naming the rule and projection."""
        for edge in self.edges:
            signs = self.sender_signs(proj, edge.source)
            if signs is None:
                continue
            if edge.transported:
                raise ValueError(
                    f"projection {proj.name!r}: {self.name} cannot run under Dale's principle: its feedback "
                    f"{edge.tensor} is transported from W, so a synapse from {edge.source} cell j to pre cell i has "
                    "the sign of W[j, i], the sign of the receiving pre cell i, not of the sending cell j")
            t = getattr(proj, edge.tensor)
            with torch.no_grad():
                t.copy_(balanced_init(tuple(t.shape), signs, generator, t.double().square().mean().item(), t.dtype))
            proj.add_dale(edge.tensor, signs)

    def forward(self, proj: "Projection", x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The post cells' input W x (+ ``bias``, the post population's, fused into the op)."""
        plastic = [getattr(proj, n) for n in self.plastic_tensors(proj)]
        return RuleFunction.apply(x, proj.weight, bias, proj, *plastic)

    def feedback_tensor(self, proj: "Projection", W: torch.Tensor) -> torch.Tensor | None:
        """The effective feedback in feedback layout (pre × post), e_in = B δ; None if the rule
        has no single such tensor (then metrics skip it)."""
        return None

    def feedback_grads(self, proj, x, delta, grad_W) -> list[torch.Tensor]:
        """Gradients (descent direction) of the plastic feedback tensors, in ``plastic`` order."""
        return []

    def backward(self, proj, x, W, delta, plastic, need_e):
        """Return (e_in or None, ΔW, [Δ plastic feedback]) for one batch. ``plastic``: the extra
        tensors the rule's ``forward`` handed to ``RuleFunction`` (its plastic feedback first;
        tensors after those get no gradient)."""
        geometry = proj.geometry
        e_in = geometry.feedback(delta, self.feedback_tensor(proj, W), x.shape) if need_e else None
        grad_W = geometry.weight_grad(x, delta)
        return e_in, grad_W, self.feedback_grads(proj, x, delta, grad_W)

    def readout_feedback(self, proj, e_readout: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """For rules with ``needs_readout_error``: e_in (shaped ``x_shape``) from the readout's
        error (batch × readout), sent by ``ReadoutTap`` instead of by ``backward``."""
        raise NotImplementedError(f"{self.name}: needs_readout_error without readout_feedback")


class RuleFunction(torch.autograd.Function):
    """y = geometry(x, W) + bias; backward asks the projection's rule for e_in and the local
    changes (Δbias = Σ δ, the same for every rule).

    ``apply(x, W, bias, proj, *plastic)``: ``bias`` is the post population's bias (one per
    post cell or channel, 1-D) or None; ``plastic`` the rule's extra tensors (its plastic
    feedback first, then tensors that get no gradient, such as PAL's noise).
    AMP-safe: under autocast the forward map runs in the autocast precision, and the rule's
    backward runs in δ's precision, as autograd's own backward does, with the fixed feedback
    buffers cast by autocast (the backward re-enters autocast in δ's dtype on any device).
    Gradients come back in the parameters' dtype. No autocast context is entered when δ and W
    share a dtype (a plain float32 step pays nothing for AMP support).
    """

    @staticmethod
    def forward(ctx, x, W, bias, proj, *plastic):
        ctx.proj = proj
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, W, *plastic)
        return proj.geometry.forward(x, W, bias)

    @staticmethod
    def backward(ctx, delta):
        x, W, *plastic = ctx.saved_tensors
        proj = ctx.proj
        if proj.implicit and not proj.attached:
            raise RuntimeError(f"projection {proj.name!r} holds its plastic feedback ({proj.rule.name}) implicitly "
                               "and needs an optimizer: call CompiledCircuit.attach_optimizer(optimizer) before training")
        need_e = ctx.needs_input_grad[0]
        if delta.dtype == W.dtype:
            e_in, grad_W, grads = proj.rule.backward(proj, x, W, delta, plastic, need_e)
        else:  # mixed precision: the rule computes in δ's dtype
            full, low = W.dtype, delta.dtype
            x, W, plastic = x.to(low), W.to(low), [t.to(low) for t in plastic]
            with torch.autocast(delta.device.type, dtype=low):
                e_in, grad_W, grads = proj.rule.backward(proj, x, W, delta, plastic, need_e)
            grad_W, grads = grad_W.to(full), [g.to(full) for g in grads]
        if proj.mask_W is not None:  # absent forward synapses never change (the rule's own ΔB/ΔR stay local)
            grad_W = grad_W * proj.mask_W.to(grad_W.dtype)
        grad_bias = None
        if ctx.needs_input_grad[2]:
            grad_bias = proj.geometry.bias_grad(delta)
            if grad_bias.dtype != ctx.bias_dtype:
                grad_bias = grad_bias.to(ctx.bias_dtype)
        return (e_in, grad_W, grad_bias, None, *grads, *[None] * (len(plastic) - len(grads)))


def start_decay(proj: "Projection") -> None:
    """Hold the scalar a_t of an implicit feedback tensor F_t = L(W_t) + a_t E₀, starting at 1.

    The recurrence runs on Python floats in ``proj.state`` (exact; saved as the projection's
    extra state). The training step reads their copy ``proj.a_t``, a 0-d buffer of W's dtype
    and device written in place after each step, so a compiled step (``torch.compile``, CUDA
    graphs) sees a_t change without being traced again.
    """
    proj.state = {"a": 1.0, "g": 0.0, "steps": 0}
    proj.register_buffer("a_t", torch.ones((), dtype=proj.weight.dtype, device=proj.weight.device),
                         persistent=False)


def advance_decay(proj: "Projection", group: dict) -> None:
    """Advance a_t by one optimizer step of ``group`` (see ``start_decay``).

    When the feedback's change is a fixed linear map L of ΔW (KP: L = transpose; PFA: ΔR =
    ΔWᵀBᵀ) and W and F share one SGD setting, F − L(W) = a E₀ moves exactly as torch.optim.SGD
    moves any parameter whose gradient is zero: d = wd·a; momentum g ← μ g + (1 − dampening) d
    (g ← d on the first step); a ← a − lr·(g, or d + μ g with Nesterov).
    """
    state = proj.state
    d = group["weight_decay"] * state["a"]
    mu = group["momentum"]
    step = d
    if mu:
        state["g"] = d if state["steps"] == 0 else mu * state["g"] + (1 - group["dampening"]) * d
        step = d + mu * state["g"] if group["nesterov"] else state["g"]
    state["steps"] += 1
    proj.set_a_t(state["a"] - group["lr"] * step)


class ReadoutTap(torch.autograd.Function):
    """Sends the readout's error e_L = ∂loss/∂out straight to the pre population of a projection
    whose rule needs it (DFA), as an autograd value rather than Python state, so
    ``torch.compile`` traces the route like any other.

    ``apply(x, projection, readout_shape)``: ``x`` the projection's pre activity; returns zeros
    shaped (batch, *readout_shape), which the compiled forward adds to the readout activity (its
    value unchanged). Backward receives e_L and gives x ``rule.readout_feedback(proj, e_L,
    x.shape)``. The tap is made where the forward computes the projection, so autograd, which
    runs the most recently made ready node first, computes B e_L just before that layer's own
    backward: one layer's error is held at a time, not every layer's from the top of the
    backward pass (on ResNet-20 under DFA that held 100 MB at batch 128).
    """

    @staticmethod
    def forward(ctx, x, proj, readout_shape):
        ctx.proj = proj
        ctx.shape = x.shape
        return x.new_zeros((x.shape[0], *readout_shape))

    @staticmethod
    def backward(ctx, e_L):
        return ctx.proj.rule.readout_feedback(ctx.proj, e_L, ctx.shape), None, None


class Projection(nn.Module):
    """The runtime synapses of one forward projection: W (post × pre) plus its rule's feedback.

    ``sends_error`` is False when the pre population is an input: then no feedback tensor is
    made and the projection runs as a plain autograd op (ΔW = δ xᵀ is the same for every rule).
    ``implicit``: a rule that supports it keeps its plastic feedback as a closed form of W and a
    few scalars advanced after each optimizer step (``CompiledCircuit.attach_optimizer``;
    ``start_decay``).
    ``weight``: the initial W (e.g. from a converted torch model) instead of the seeded
    Glorot draw; it is in place before the rule makes its feedback tensors.
    ``connector`` (sparse forward synapses, e.g. ``FixedProbability(0.3)``): a fixed boolean
    buffer ``mask_W`` of W's shape (post × pre [× kH × kW]); W is zero where it is False and
    W's gradient is masked on every path, so an absent synapse never gets weight (under SGD
    with momentum and weight decay zero stays zero). The seeded Glorot draw is divided by √p,
    keeping the variance of the post cells' input; an explicit ``weight`` is only masked.
    Feedback rules keep their own local updates (KP's ΔB = x δᵀ, PFA's ΔR = x ēᵀ, unmasked), so
    their implicit closed forms no longer hold: a sparse W keeps its plastic feedback explicit.
    """

    def __init__(self, name: str, geometry: Geometry, pre_shape: tuple, post_shape: tuple,
                 rule: Rule, sends_error: bool, seed: int, post_is_readout: bool = False,
                 readout_size: int | None = None, implicit: bool = False,
                 weight: torch.Tensor | None = None, connector=None, signs: dict | None = None):
        super().__init__()
        self.name = name
        self.geometry = geometry
        self.pre_shape, self.post_shape = tuple(pre_shape), tuple(post_shape)
        self.rule = rule
        self.sends_error = sends_error
        self.post_is_readout = post_is_readout
        self.readout_size = readout_size
        self.attached = False  # set when an optimizer drives the implicit state
        self.state: dict = {}  # small Python state of implicit rules (saved in the state_dict)
        # Dale's principle: sign vectors of the cells (pre, post, readout; ē set by its rule)
        self.signs = {k: v for k, v in (signs or {}).items() if v is not None}
        self.dale: dict[str, str] = {}  # constrained tensor attribute -> its column-sign buffer
        shape = geometry.weight_shape(tuple(pre_shape), tuple(post_shape))
        pre_signs = self.signs.get("pre")
        if self.signs and geometry.kind != "dense":
            raise ValueError(f"projection {name!r}: Dale's principle (cell types) is implemented for Dense "
                             f"projections, not {geometry.kind}")
        sparse = connector is not None and connector.p < 1
        if sparse and geometry.weightless:
            raise ValueError(f"projection {name!r} is weightless ({geometry.kind}): it has no synapses and "
                             f"takes no connector (got {connector!r})")
        explicit_weight = weight is not None
        if weight is None and pre_signs is not None:  # balanced E/I draw, the mean square of W's own init
            weight = balanced_init(tuple(shape), pre_signs, seeded_generator(seed, name, "W"),
                                   geometry.init_mean_square(tuple(shape)))
        elif weight is None:
            weight = geometry.init_weight(shape, seeded_generator(seed, name, "W"))
        elif tuple(weight.shape) != tuple(shape):
            raise ValueError(f"projection {name!r}: initial weight of shape {tuple(weight.shape)} does not "
                             f"match W {tuple(shape)}")
        weight = weight.detach().clone()
        if explicit_weight and pre_signs is not None and bool((weight * pre_signs.to(weight.dtype) < 0).any()):
            raise ValueError(f"projection {name!r}: the initial weight breaks Dale's principle (a synapse with the "
                             "opposite sign of its pre cell's type)")
        mask = None
        if sparse:
            base = connector.seed if getattr(connector, "seed", None) is not None else seed
            mask = connector.mask(tuple(shape), seeded_generator(base, name, "mask", "W"))
            if not explicit_weight:
                weight.div_(connector.p ** 0.5)  # keep Var(Σ_i W_ji x_i) with p·N_pre synapses
            weight.mul_(mask.to(weight.dtype))
        self.weight = nn.Parameter(weight)
        self.register_buffer("mask_W", mask)  # None (dense) is not in the state_dict
        if pre_signs is not None:
            self.add_dale("weight", pre_signs, buffer="sign_W")
        # implicit feedback is a closed form of W's unprojected SGD path: not under Dale's principle
        self.implicit = bool(implicit and sends_error and rule.supports_implicit and mask is None and not self.signs)
        if sends_error:
            generator = seeded_generator(seed, name, "feedback")
            rule.init_feedback(self, generator)
            if self.signs:  # after the rule's own draws (their scale), before any connector thins them
                rule.apply_dale(self, generator)
            if rule.connector is not None:
                rule.apply_connector(self, seed)

    def add_dale(self, tensor: str, signs: torch.Tensor, buffer: str | None = None) -> None:
        """Constrain ``tensor`` (an attribute, receiver × sender) to the column signs ``signs``:
        kept as the buffer ``sign_<tensor>`` and enforced by ``enforce_dale``."""
        buffer = buffer or f"sign_{tensor}"
        t = getattr(self, tensor)
        self.register_buffer(buffer, signs.to(t.dtype).clone())
        self.dale[tensor] = buffer

    @torch.no_grad()
    def enforce_dale(self) -> None:
        """Dale's principle after an optimizer step: every constrained tensor (W, plastic and
        fixed feedback) loses the synapses whose sign flipped (set to 0; ``project_signs_``)."""
        for tensor, buffer in self.dale.items():
            project_signs_(getattr(self, tensor), getattr(self, buffer))
    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The post cells' input W x from the pre activity x (batch × pre shape), plus ``bias``
        (the post population's, 1-D: one per cell or channel) when given: fused into the same
        op, as ``nn.Linear`` does, so the circuit runs the matmuls plain PyTorch runs."""
        if not self.sends_error:
            return self.geometry.forward(x, self.masked_weight(), bias)
        return self.rule.forward(self, x, bias)

    def masked_weight(self) -> torch.Tensor:
        """W for a plain autograd op (post × pre): W itself, or mask_W ⊙ W with a sparse W, so
        that autograd masks W's gradient (and the error Wᵀδ uses only existing synapses)."""
        return self.weight if self.mask_W is None else self.weight * self.mask_W

    def feedback_parameters(self) -> list[nn.Parameter]:
        """Plastic feedback tensors (their own optimizer parameter group)."""
        return [getattr(self, n) for n in self.rule.plastic_tensors(self)] if self.sends_error else []

    def effective_feedback(self) -> torch.Tensor | None:
        """The tensor that replaces Wᵀ (feedback layout), for alignment metrics."""
        if not self.sends_error:
            return None
        with torch.no_grad():
            return self.rule.feedback_tensor(self, self.weight)

    def get_extra_state(self):
        return dict(self.state)

    def set_extra_state(self, state) -> None:
        self.state = dict(state)
        if "a" in self.state and hasattr(self, "a_t"):  # (no a_t: explicit feedback; load_state_dict
            self.set_a_t(self.state["a"])               # then names the keys that do not fit)

    def set_a_t(self, a: float) -> None:
        """Set the scalar a_t of implicit feedback F = L(W) + a_t E₀ (``start_decay``): the exact
        value in ``state`` and its copy in the buffer the training step reads."""
        self.state["a"] = a
        self.a_t.fill_(a)

    def extra_repr(self) -> str:
        sparse = "" if self.mask_W is None else f" (sparse, {self.mask_W.float().mean().item():.3f} of synapses)"
        dale = f", Dale's principle on {', '.join(self.dale)}" if self.dale else ""
        return f"{self.name}: {self.geometry!r} W{tuple(self.weight.shape)}{sparse}, rule={self.rule!r}{dale}"
