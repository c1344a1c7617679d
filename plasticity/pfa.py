"""PFA (Li & Benna 2024): errors reach the pre cells through an intermediate population ē.

    ē = B δ            B fixed, N̄ × N_out, N̄ = expansion · N_out
    e_in = R ē         R plastic, N_in × N̄
    ΔR = Σ_batch x ēᵀ  (= ΔWᵀ Bᵀ exactly), with the same weight decay as W

No cell pair is connected both ways: the forward synapse runs pre → post, the feedback runs
post → ē → pre. ``B_init``: "xavier" (i.i.d., variance 1/N̄: Glorot with gain
sqrt((1 + 1/expansion)/2)), "orthogonal" (semi-orthogonal, BᵀB = I: PFA-o) or "identity"
(N̄ = N_out, B = I: then PFA is KP with R in KP's B's place).

Every step of the feedback path is linear, so the same numbers can be computed in other orders.
``route="explicit"`` computes ē per sample, as the paper's code does; ``"auto"`` takes, per
projection and batch size, the cheapest of e_in = R(Bδ) or (RB)δ, and ΔR = x ēᵀ or ΔWᵀBᵀ.

Implicit R (``Projection.implicit``, chosen by the compiler when W and R share one plain SGD
setting): since ΔR = ΔWᵀBᵀ and SGD with momentum and weight decay is linear, the difference
R − WᵀBᵀ only ever shrinks by a scalar: R_t = W_tᵀBᵀ + a_t E₀ with E₀ = R₀ − W₀ᵀBᵀ, where
a_t follows the optimizer's own recurrence (``after_step``). Then R B = Wᵀ(BᵀB) + a_t E₀B, so
e_in costs about what BP's does and R never needs an update; R is rebuilt on demand.
``plasticity.base.advance_decay`` gives the recurrence of a_t.
"""
import torch
import torch.nn.functional as F
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, advance_decay, initial_decay_state

B_INITS = ("xavier", "orthogonal", "identity")
ROUTES = ("auto", "explicit")


class PFA(Rule):
    name = "pfa"
    edges = (FeedbackEdge("B", "post", "ebar", plastic=False),
             FeedbackEdge("R", "ebar", "pre", plastic=True))
    plastic = ("R",)
    default_B_init = "xavier"

    def __init__(self, expansion: float = 10, B_init: str | None = None, route: str = "auto"):
        B_init = B_init or self.default_B_init
        if not expansion > 0:
            raise ValueError(f"{self.name}: expansion must be positive, got {expansion!r}")
        if B_init not in B_INITS:
            raise ValueError(f"{self.name}: B_init must be one of {B_INITS}, got {B_init!r}")
        if B_init == "identity" and expansion != 1:
            raise ValueError(f"{self.name}: B_init='identity' needs expansion=1, got {expansion!r}")
        if route not in ROUTES:
            raise ValueError(f"{self.name}: route must be one of {ROUTES}, got {route!r}")
        super().__init__(expansion=expansion, B_init=B_init, route=route)

    @property
    def supports_implicit(self):
        return self.options["route"] == "auto"  # "explicit" is the reference, step by step

    def intermediate_size(self, post_size):
        return max(1, round(self.options["expansion"] * post_size))

    def check(self, projection, geometry, readouts):
        if geometry.kind != "dense":
            raise ValueError(f"projection {projection!r}: {self.name} is implemented for Dense "
                             f"projections only, not {geometry.kind}")

    # -- tensors -------------------------------------------------------------------------------
    def init_feedback(self, proj, generator):
        n_out, n_in = proj.weight.shape
        n_bar = self.intermediate_size(n_out)
        init = self.options["B_init"]
        if init == "xavier":
            B = xavier_uniform((n_bar, n_out), generator, gain=((1 + n_out / n_bar) / 2) ** 0.5)
        elif init == "orthogonal":
            B = torch.empty(n_bar, n_out)
            torch.nn.init.orthogonal_(B, generator=generator)
        else:
            B = torch.eye(n_out)
        R = xavier_uniform((n_in, n_bar), generator)
        proj.register_buffer("B", B)
        if not proj.implicit:
            proj.R = nn.Parameter(R)
            return
        with torch.no_grad():
            E0 = R - proj.weight.t() @ B.t()  # R₀ − W₀ᵀBᵀ
        proj.register_buffer("E0", E0)
        proj.register_buffer("BtB", B.t() @ B)
        proj.register_buffer("E0B", E0 @ B)
        proj.state = initial_decay_state()

    def tensor(self, proj, name):
        if name == "R" and proj.implicit:
            W = proj.weight.detach()
            return torch.addmm(proj.E0, W.t(), proj.B.t(), beta=proj.state["a"])
        return super().tensor(proj, name)

    def feedback_tensor(self, proj, W):
        if proj.implicit:  # R B = Wᵀ BᵀB + a E₀B
            return torch.addmm(proj.E0B, W.t(), proj.BtB, beta=proj.state["a"])
        return proj.R @ proj.B

    # -- learning ------------------------------------------------------------------------------
    def backward(self, proj, x, W, delta, plastic, need_e):
        if proj.implicit:
            return self._backward_implicit(proj, x, W, delta, need_e)
        (R,) = plastic
        B = proj.B
        xf = x.flatten(1)
        grad_W = delta.t().mm(xf)
        e_route, r_route = self._routes(delta.shape[0], *W.shape, B.shape[0], need_e)
        ebar = F.linear(delta, B) if "explicit" in (e_route, r_route) else None  # ē = B δ
        if r_route == "explicit":
            grad_R = xf.t().mm(ebar)  # Σ x ēᵀ
        else:
            grad_R = grad_W.t().mm(B.t())  # ΔWᵀ Bᵀ
        e_in = None
        if need_e:
            e_in = F.linear(ebar, R) if e_route == "explicit" else F.linear(delta, R @ B)
            e_in = e_in.view(x.shape)
        return e_in, grad_W, [grad_R]

    def _backward_implicit(self, proj, x, W, delta, need_e):
        grad_W = delta.t().mm(x.flatten(1))
        e_in = None
        if need_e:
            a = proj.state["a"]
            n, (n_out, n_in) = delta.shape[0], W.shape
            if n * (n_out + n_in) <= n_in * n_out:  # per sample: (δ BᵀB) W + a δ (E₀B)ᵀ
                e_in = torch.addmm((delta @ proj.BtB) @ W, delta, proj.E0B.t(), alpha=a)
            else:  # once per step: δ (Wᵀ BᵀB + a E₀B)ᵀ
                e_in = F.linear(delta, torch.addmm(proj.E0B, W.t(), proj.BtB, beta=a))
            e_in = e_in.view(x.shape)
        return e_in, grad_W, []

    def after_step(self, proj, group):
        advance_decay(proj.state, group)

    def _routes(self, n, n_out, n_in, n_bar, need_e):
        """(route for e_in, route for ΔR), the cheapest by multiply-add count."""
        if self.options["route"] == "explicit":
            return "explicit", "explicit"
        ebar = n * n_out * n_bar
        costs = {}
        for e in (("explicit", "product") if need_e else (None,)):
            for r in ("explicit", "factored"):
                c = n_bar * n_out * n_in if r == "factored" else n * n_in * n_bar
                if e == "explicit":
                    c += n * n_bar * n_in
                elif e == "product":
                    c += n_in * n_bar * n_out + n * n_out * n_in
                if "explicit" in (e, r):
                    c += ebar
                costs[(e, r)] = c
        return min(costs, key=costs.get)
