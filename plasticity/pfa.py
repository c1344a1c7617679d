"""PFA (Li & Benna 2024): errors reach the pre cells through an intermediate population ē.

    ē = B δ            B fixed, N̄ × N_out, N̄ = expansion · N_out
    e_in = R ē         R plastic, N_in × N̄
    ΔR = Σ_batch x ēᵀ  (= ΔWᵀ Bᵀ exactly), with the same weight decay as W

No cell pair is connected both ways: the forward synapse runs pre → post, the feedback runs
post → ē → pre. ``B_init``: "xavier" (i.i.d., variance 1/N̄: Glorot with gain
sqrt((1 + 1/expansion)/2)), "orthogonal" (semi-orthogonal, BᵀB = I: PFA-o) or "identity"
(N̄ = N_out, B = I: then PFA is KP with R in KP's B's place).

Convolutions (W: C_out × C_in/g × k × k, g = groups): B is a 1×1 convolution C_out → N̄ =
expansion · C_out channels, stored as the matrix N̄ × C_out/g; R is a k×k kernel N̄ → C_in with
W's stride, padding, dilation and groups, stored in feedback layout (C_in/g, N̄, k, k) like any
feedback kernel. ē is a feature map (N̄, H_out, W_out). With groups > 1, B is grouped too
(block-diagonal: ē's channel group j hears only δ's group j, through B_j = B[j·N̄/g:(j+1)·N̄/g]),
so that ΔR = ΔWᵀBᵀ holds group by group and R B has Wᵀ's block structure; each B_j is drawn
like a whole B of its own (variance g/N̄, or semi-orthogonal). Dense is the case k = 1, g = 1.

Every step of the feedback path is linear, so the same numbers can be computed in other orders.
``route="explicit"`` computes ē per sample (and per position), as the paper's code does;
``"factored"`` never forms ē: ΔR = ΔWᵀBᵀ (a contraction of W's kernel gradient with B over
C_out) and e_in = (RB)δ; ``"auto"`` takes, per projection and batch, the cheapest of the two for
each of e_in and ΔR.

Implicit R (``Projection.implicit``, chosen by the compiler when W and R share one plain SGD
setting; route "auto" only): since ΔR = ΔWᵀBᵀ and SGD with momentum and weight decay is linear,
the difference R − WᵀBᵀ only ever shrinks by a scalar: R_t = W_tᵀBᵀ + a_t E₀ with
E₀ = R₀ − W₀ᵀBᵀ, where a_t follows the optimizer's own recurrence (``after_step``). Then
R B = Wᵀ(BᵀB) + a_t E₀B (contracted over C_out, per group for convolutions), so e_in costs
about what BP's does and R never needs an update; R is rebuilt on demand. With a semi-orthogonal
B (PFA-o, N̄ ≥ C_out) or B = I, BᵀB = I and the product with it is skipped.
``plasticity.base.advance_decay`` gives the recurrence of a_t.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from connectomes.dale import balanced_init
from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, advance_decay, feedback_init, gain_option, start_decay

B_INITS = ("xavier", "orthogonal", "identity")
ROUTES = ("auto", "explicit", "factored")
GEOMETRIES = ("dense", "conv2d")


# -- B as a (grouped) map on the channel dim: the contractions over C_out ------------------------
def mix(B, T, groups=1):
    """B T: B (N̄ × C/g, block-diagonal over groups) on dim 0 of T (C × ...) → (N̄ × ...)."""
    n_bar = B.shape[0]
    if groups == 1:
        return (B @ T.reshape(T.shape[0], -1)).view(n_bar, *T.shape[1:])
    out = torch.bmm(B.view(groups, n_bar // groups, -1), T.reshape(groups, T.shape[0] // groups, -1))
    return out.view(n_bar, *T.shape[1:])


def unmix(B, T, groups=1):
    """Bᵀ T: dim 0 of T (N̄ × ...) back to C = groups · B.shape[1] → (C × ...)."""
    c = B.shape[1] * groups
    if groups == 1:
        return (B.t() @ T.reshape(T.shape[0], -1)).view(c, *T.shape[1:])
    Bg = B.view(groups, -1, B.shape[1]).transpose(1, 2)
    out = torch.bmm(Bg, T.reshape(groups, T.shape[0] // groups, -1))
    return out.view(c, *T.shape[1:])


def channel_map(t, M, groups=1):
    """M (rows × C/g, grouped) applied to the channel dim 1 of an activity t (batch × C [× H × W])."""
    if t.dim() == 2:
        return F.linear(t, M)
    return F.conv2d(t, M.to(t.dtype)[:, :, None, None], groups=groups)


def groups_of(geometry) -> int:
    return getattr(geometry, "groups", 1)


class PFA(Rule):
    name = "pfa"
    edges = (FeedbackEdge("B", "post", "ebar", plastic=False),
             FeedbackEdge("R", "ebar", "pre", plastic=True))
    plastic = ("R",)
    default_B_init = "xavier"

    sparse_tensors = ("B", "R")

    def __init__(self, expansion: float = 10, B_init: str | None = None, route: str = "auto", connector=None,
                 R_gain=None):
        """``R_gain``: None (Glorot-uniform R₀, the default) or g: R₀ ~ N(0, g²/N̄) (N̄ · kernel for
        a convolution), the scale of the plastic feedback's random start."""
        B_init = B_init or self.default_B_init
        if not expansion > 0:
            raise ValueError(f"{self.name}: expansion must be positive, got {expansion!r}")
        if B_init not in B_INITS:
            raise ValueError(f"{self.name}: B_init must be one of {B_INITS}, got {B_init!r}")
        if B_init == "identity" and expansion != 1:
            raise ValueError(f"{self.name}: B_init='identity' needs expansion=1, got {expansion!r}")
        if route not in ROUTES:
            raise ValueError(f"{self.name}: route must be one of {ROUTES}, got {route!r}")
        super().__init__(connector=connector, expansion=expansion, B_init=B_init, route=route,
                         **gain_option(self.name, "R_gain", R_gain))

    @property
    def supports_implicit(self):
        # "explicit"/"factored" keep R as a parameter; so does a thinned R (ΔR = mask ⊙ ΔWᵀBᵀ)
        return self.options["route"] == "auto" and self.connector is None

    def apply_connector(self, proj, seed):
        """Thin B and R with the connector; B's surviving entries are scaled by 1/√p so that its
        variance stays 1/N̄ (and BᵀB ≈ I on average)."""
        super().apply_connector(proj, seed)
        with torch.no_grad():
            proj.B.div_(self.connector.p ** 0.5)

    def n_bar(self, n_out: int, groups: int = 1) -> int:
        """N̄: expansion × N_out (channels for a convolution), a multiple of ``groups``."""
        return groups * max(1, round(self.options["expansion"] * n_out / groups))

    def intermediate_shape(self, post_shape, geometry):
        return (self.n_bar(post_shape[0], groups_of(geometry)), *post_shape[1:])

    def check(self, projection, geometry, readouts):
        if geometry.kind not in GEOMETRIES:
            raise ValueError(f"projection {projection!r}: {self.name} is implemented for Dense and Conv2d "
                             f"projections, not {geometry.kind}")

    # -- tensors -------------------------------------------------------------------------------
    def init_feedback(self, proj, generator):
        W = proj.weight.detach()
        g = groups_of(proj.geometry)
        n_out = W.shape[0]
        n_bar = self.n_bar(n_out, g)
        B = self._init_B(n_bar, n_out, g, generator)
        R = feedback_init((W.shape[1], n_bar, *W.shape[2:]), generator, self.options.get("R_gain"))  # feedback layout
        proj.register_buffer("B", B)
        if not proj.implicit:
            proj.R = nn.Parameter(R)
            return
        with torch.no_grad():
            E0 = R - mix(B, W, g).transpose(0, 1)  # R₀ − W₀ᵀBᵀ
        proj.register_buffer("E0", E0.contiguous())
        proj.register_buffer("BtB", unmix(B, B, g))  # BᵀB per group, stacked: C_out × C_out/g
        proj.register_buffer("E0B", unmix(B, E0.transpose(0, 1), g).transpose(0, 1).contiguous())
        start_decay(proj)

    def apply_dale(self, proj, generator):
        """PFA under Dale's principle. B (ē × post) has the signs of the post cells that send it;
        ē cells are both E and I, alternating (k even: E), and R (pre × ē) has the signs of the ē
        cells. Both types are needed: the entries of Wᵀ that R B learns have the sign of the
        receiving pre cell, so a pre cell hears post cell j through the ē cells of the type that
        gives W[j, i]'s sign (the others' synapses settle at zero): (R B)[i, j] =
        s_j Σ_k R[i, k] |B[k, j]| takes either sign, which a direct feedback synapse from j cannot.
        PFA-o: B must stay semi-orthogonal (BᵀB = I) with one sign per column, so its columns have
        disjoint supports: post cell j projects to its own block of about N̄/N_out ē cells, the
        block alternating E, I (at least 2 ē cells per post cell: N̄ ≥ 2 N_out), with random
        non-negative magnitudes of unit norm per column. B_init="identity" (one ē cell per post
        cell) is refused."""
        post = proj.signs.get("post")
        if post is None:
            return
        n_bar, n_out = proj.B.shape
        B_init = self.options["B_init"]
        with torch.no_grad():
            if B_init in ("orthogonal", "identity"):
                if n_bar < 2 * n_out:
                    raise ValueError(
                        f"projection {proj.name!r}: {self.name} under Dale's principle needs at least two ē cells (an "
                        f"E and an I) per post cell for a sign-constrained semi-orthogonal B; N̄ = {n_bar} for "
                        f"{n_out} post cells (use pfa or pfa-o with expansion >= 2)")
                owner = torch.arange(n_bar) * n_out // n_bar  # contiguous blocks, one per post cell
                start = torch.searchsorted(owner, owner, right=False)
                ebar = torch.where((torch.arange(n_bar) - start) % 2 == 0, 1.0, -1.0).double()
                mag = torch.randn(n_bar, generator=generator, dtype=torch.float64).abs()
                B = torch.zeros(n_bar, n_out, dtype=torch.float64)
                B[torch.arange(n_bar), owner] = mag
                B /= B.norm(dim=0, keepdim=True)
                proj.B.copy_(B * post)
            else:
                ebar = torch.where(torch.arange(n_bar) % 2 == 0, 1.0, -1.0).double()
                proj.B.copy_(balanced_init((n_bar, n_out), post, generator, proj.B.double().square().mean().item(),
                                           proj.B.dtype))
            proj.signs["ebar"] = ebar
            proj.R.copy_(balanced_init(tuple(proj.R.shape), ebar, generator, proj.R.double().square().mean().item(),
                                       proj.R.dtype))
        proj.add_dale("B", post)
        proj.add_dale("R", ebar)

    def _init_B(self, n_bar, n_out, groups, generator):
        init = self.options["B_init"]
        if init == "identity":
            return torch.eye(n_out // groups).repeat(groups, 1)
        if groups == 1 and init == "xavier":
            return xavier_uniform((n_bar, n_out), generator, gain=((1 + n_out / n_bar) / 2) ** 0.5)
        blocks = []
        for _ in range(groups):  # each group's block is a B of its own: N̄/g × C_out/g
            rows, cols = n_bar // groups, n_out // groups
            if init == "xavier":
                bound = math.sqrt(3.0 / rows)  # variance 1/(N̄/g)
                blocks.append(torch.rand(rows, cols, generator=generator).mul_(2 * bound).sub_(bound))
            else:
                block = torch.empty(rows, cols)
                torch.nn.init.orthogonal_(block, generator=generator)
                blocks.append(block)
        return torch.cat(blocks)

    def tensor(self, proj, name):
        if name == "R" and proj.implicit:
            W = proj.weight.detach()
            if W.dim() == 2:
                return torch.addmm(proj.E0, W.t(), proj.B.t(), beta=proj.state["a"])
            return torch.add(mix(proj.B, W, groups_of(proj.geometry)).transpose(0, 1), proj.E0,
                             alpha=proj.state["a"])
        return super().tensor(proj, name)

    def orthonormal(self, proj) -> bool:
        """BᵀB = I by construction (semi-orthogonal B with N̄ ≥ C_out per group, or B = I): the
        implicit route then skips the product with BᵀB (equal to it within float rounding)."""
        g = groups_of(proj.geometry)
        return self.options["B_init"] in ("orthogonal", "identity") and proj.B.shape[0] // g >= proj.B.shape[1]

    def feedback_tensor(self, proj, W):
        """R B in feedback layout (the path that replaces Wᵀ)."""
        g = groups_of(proj.geometry)
        if proj.implicit:  # R B = Wᵀ BᵀB + a E₀B
            if self.orthonormal(proj):  # R B = Wᵀ + a E₀B
                return torch.addcmul(W.transpose(0, 1), proj.E0B, proj.a_t)
            if W.dim() == 2:
                return torch.addcmul(W.t() @ proj.BtB, proj.E0B, proj.a_t)
            BtB_W = mix(proj.BtB, W, g)  # (BᵀB) W, group by group (each block is symmetric)
            return torch.addcmul(BtB_W.transpose(0, 1), proj.E0B, proj.a_t)
        if W.dim() == 2:
            return proj.R @ proj.B
        return unmix(proj.B, proj.R.transpose(0, 1), g).transpose(0, 1)

    # -- learning ------------------------------------------------------------------------------
    def backward(self, proj, x, W, delta, plastic, need_e):
        if proj.implicit:
            return self._backward_implicit(proj, x, W, delta, need_e)
        (R,) = plastic
        geo, B, g = proj.geometry, proj.B, groups_of(proj.geometry)
        dense = W.dim() == 2
        grad_W = geo.weight_grad(x, delta)
        e_route, r_route = self._routes(delta.numel() // delta.shape[1], W.shape[0], W.shape[1] * g, B.shape[0],
                                        need_e, kernel=math.prod(W.shape[2:]), groups=g)
        ebar = channel_map(delta, B, g) if "explicit" in (e_route, r_route) else None  # ē = B δ
        if r_route == "explicit":  # Σ x ēᵀ
            grad_R = x.flatten(1).t().mm(ebar) if dense else geo.weight_grad(x, ebar).transpose(0, 1)
        else:  # ΔWᵀ Bᵀ
            grad_R = grad_W.t().mm(B.t()) if dense else mix(B, grad_W, g).transpose(0, 1)
        e_in = None
        if need_e:
            if e_route == "explicit":
                e_in = geo.feedback(ebar, R, x.shape)
            else:
                e_in = geo.feedback(delta, R @ B if dense else unmix(B, R.transpose(0, 1), g).transpose(0, 1), x.shape)
        return e_in, grad_W, [grad_R]

    def _backward_implicit(self, proj, x, W, delta, need_e):
        grad_W = proj.geometry.weight_grad(x, delta)
        e_in = None
        if need_e and W.dim() == 2:
            n, (n_out, n_in) = delta.shape[0], W.shape
            if n * (n_out + n_in) <= n_in * n_out:  # per sample: (δ BᵀB) W + a δ (E₀B)ᵀ
                delta_BtB = delta if self.orthonormal(proj) else delta @ proj.BtB
                e_in = torch.addmm(delta_BtB @ W, delta * proj.a_t, proj.E0B.t())
            else:  # once per step: δ (Wᵀ BᵀB + a E₀B)ᵀ
                e_in = F.linear(delta, self.feedback_tensor(proj, W))
            e_in = e_in.view(x.shape)
        elif need_e:  # a kernel: R B once per step (C_out·C_out/g·C_in/g·k² multiply-adds), then as BP
            e_in = proj.geometry.feedback(delta, self.feedback_tensor(proj, W), x.shape)
        return e_in, grad_W, []

    def after_step(self, proj, group):
        advance_decay(proj, group)

    def _routes(self, n, n_out, n_in, n_bar, need_e, kernel=1, groups=1):
        """(route for e_in, route for ΔR), the cheapest by multiply-add count.

        ``n``: batch × output positions; ``n_out``/``n_in``: post/pre channels (cells for Dense);
        ``kernel``: k·k; ``groups``: the convolution's groups.
        """
        if self.options["route"] == "explicit":
            return "explicit", "explicit"
        if self.options["route"] == "factored":
            return ("product" if need_e else None), "factored"
        g, K = groups, kernel
        ebar = n * n_bar * (n_out // g)
        costs = {}
        for e in (("explicit", "product") if need_e else (None,)):
            for r in ("explicit", "factored"):
                c = n_bar * (n_out // g) * (n_in // g) * K if r == "factored" else n * (n_in // g) * K * n_bar
                if e == "explicit":
                    c += n * n_bar * (n_in // g) * K
                elif e == "product":
                    c += (n_in // g) * K * n_bar * (n_out // g) + n * n_out * (n_in // g) * K
                if "explicit" in (e, r):
                    c += ebar
                costs[(e, r)] = c
        return min(costs, key=costs.get)
