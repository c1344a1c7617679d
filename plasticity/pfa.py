"""PFA (Li & Benna 2024): errors reach the pre cells through an intermediate population ē.

    ē = B δ            B fixed, N̄ × N_out, N̄ = expansion · N_out
    e_in = R ē         R plastic, N_in × N̄
    ΔR = Σ_batch x ēᵀ  (= ΔWᵀ Bᵀ exactly), with the same weight decay as W

No cell pair is connected both ways: the forward synapse runs pre → post, the feedback runs
post → ē → pre. ``B_init``: "xavier" (i.i.d., variance 1/N̄: Glorot with gain
sqrt((1 + 1/expansion)/2)), "orthogonal" (semi-orthogonal, BᵀB = I: PFA-o) or "identity"
(N̄ = N_out, B = I: then PFA is KP with R in KP's B's place).

``route`` picks the order of the (linear) feedback arithmetic; all orders give the same numbers:
"explicit" computes ē per sample, as the paper's code does; "auto" takes, per projection and
batch size, the cheapest of e_in = R(Bδ) or (RB)δ, and ΔR = x ēᵀ or ΔWᵀBᵀ.
"""
from torch import nn

import torch
import torch.nn.functional as F

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule

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

    def intermediate_size(self, post_size):
        return max(1, round(self.options["expansion"] * post_size))

    def check(self, projection, geometry, readouts):
        if geometry.kind != "dense":
            raise ValueError(f"projection {projection!r}: {self.name} is implemented for Dense "
                             f"projections only, not {geometry.kind}")

    def init_feedback(self, proj, generator):
        n_out, n_in = proj.weight.shape
        n_bar = self.intermediate_size(n_out)
        B = torch.empty(n_bar, n_out)
        init = self.options["B_init"]
        if init == "xavier":
            gain = ((1 + n_out / n_bar) / 2) ** 0.5
            B = xavier_uniform((n_bar, n_out), generator, gain=gain)
        elif init == "orthogonal":
            torch.nn.init.orthogonal_(B, generator=generator)
        else:
            B = torch.eye(n_out)
        proj.register_buffer("B", B)
        proj.R = nn.Parameter(xavier_uniform((n_in, n_bar), generator))

    def feedback_tensor(self, proj, W):
        return proj.R @ proj.B  # the path R B that replaces Wᵀ

    def backward(self, proj, x, W, delta, plastic, need_e):
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
