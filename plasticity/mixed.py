"""Mixed feedback (the PFA paper's Discussion): the synapses of one projection split into groups,
each learned by its own rule, as a brain-like mixture of full, partial and no reciprocity.

Every forward synapse W[j, i] (pre cell i → post cell j) belongs to exactly one group, fixed
for good by one seeded uniform draw per cell pair, cut at the cumulative fractions in the
order kp, fa, pfa, none. The boolean buffers ``mask_kp``, ``mask_fa``, ``mask_pfa``,
``mask_none`` (feedback layout, pre × post = N_in × N_out) are disjoint and cover every pair.

    kp    B_kp  N_in × N_out, plastic, zero outside mask_kp: ΔB_kp = mask_kp ⊙ ΔWᵀ (KP)
    fa    B_fa  N_in × N_out, fixed Xavier, zero outside mask_fa (FA)
    pfa   no direct synapse: ē = B δ, B fixed N̄ × N_out (variance 1/N̄, N̄ = expansion · N_out),
          R plastic N_in × N̄, ΔR = (mask_pfa ⊙ ΔWᵀ) Bᵀ, so that R B learns the pfa part of Wᵀ
    none  no feedback

    e_in = (mask_kp ⊙ B_kp + mask_fa ⊙ B_fa) δ + R (B δ)

B_kp and R are in the optimizer's feedback group (the same weight decay as W, so their random
starts decay). Dense projections only. A group of fraction 0 gets no tensors:
``mixed({"kp": 1})`` is KP, ``{"fa": 1}`` FA and ``{"pfa": 1}`` PFA's explicit route.

Implicit route (``Projection.implicit``, when W, B_kp and R share one SGD setting): both plastic
tensors change by fixed linear maps of ΔW, so, as for KP and PFA,

    B_kp = mask_kp ⊙ Wᵀ + a E₀_kp,    R = (mask_pfa ⊙ Wᵀ) Bᵀ + a E₀_R

with a from ``advance_decay``, and e_in = (mask_kp ⊙ Wᵀ + B_fa + a (E₀_kp + E₀_R B)) δ +
(mask_pfa ⊙ Wᵀ)(BᵀB δ): no ΔR of N_in·N_out·N̄ per step, no R update at all.
"""
import torch
import torch.nn.functional as F
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import (FeedbackEdge, Rule, advance_decay, feedback_shape, seeded_generator,
                             start_decay)

GROUPS = ("kp", "fa", "pfa", "none")


class Mixed(Rule):
    name = "mixed"

    def __init__(self, groups: dict | None = None, expansion: float = 10, seed: int | None = None):
        """``groups``: {group: fraction of the projection's synapses}, fractions in [0, 1]
        summing to 1. ``seed``: the partition's seed (None: the circuit seed)."""
        groups = dict(groups if groups is not None else {"kp": 0.1, "fa": 0.21, "pfa": 0.69})
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"{self.name}: unknown groups {sorted(unknown)}; groups are {', '.join(GROUPS)}")
        if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in groups.values()):
            raise ValueError(f"{self.name}: group fractions must be numbers in [0, 1], got {groups}")
        if abs(sum(groups.values()) - 1) > 1e-6:
            raise ValueError(f"{self.name}: group fractions must sum to 1, got {groups} (sum {sum(groups.values()):g})")
        if not expansion > 0:
            raise ValueError(f"{self.name}: expansion must be positive, got {expansion!r}")
        super().__init__(groups=groups, expansion=expansion, seed=seed)
        self.fractions = {g: float(groups.get(g, 0.0)) for g in GROUPS}
        self.has = {g: self.fractions[g] > 0 for g in GROUPS}
        edges, plastic = [], []
        if self.has["kp"]:
            edges.append(FeedbackEdge("B_kp", "post", "pre", plastic=True))
            plastic.append("B_kp")
        if self.has["fa"]:
            edges.append(FeedbackEdge("B_fa", "post", "pre", plastic=False))
        if self.has["pfa"]:
            edges += [FeedbackEdge("B", "post", "ebar", plastic=False), FeedbackEdge("R", "ebar", "pre", plastic=True)]
            plastic.append("R")
        self.edges, self.plastic = tuple(edges), tuple(plastic)

    supports_implicit = True

    def n_bar(self, n_out: int) -> int:
        return max(1, round(self.options["expansion"] * n_out))

    def intermediate_shape(self, post_shape, geometry):
        return (self.n_bar(post_shape[0]),) if self.has["pfa"] else None

    def apply_dale(self, proj, generator):
        if proj.signs.get("post") is not None:
            raise ValueError(f"projection {proj.name!r}: mixed feedback is not implemented under Dale's principle "
                             "(use kp, fa or pfa on their own)")

    def check(self, projection, geometry, readouts):
        if geometry.kind != "dense":
            raise ValueError(f"projection {projection!r}: {self.name} is implemented for Dense projections only, "
                             f"not {geometry.kind}")

    # -- tensors -------------------------------------------------------------------------------
    def init_feedback(self, proj, generator):
        n_out, n_in = proj.weight.shape
        shape = feedback_shape(proj.weight.shape)  # N_in × N_out
        seed = self.options["seed"]
        u = torch.rand(shape, generator=generator if seed is None else seeded_generator(seed, proj.name, "groups"))
        cuts = torch.tensor([self.fractions[g] for g in GROUPS]).cumsum(0)[:-1].tolist()
        index = sum((u >= c).long() for c in cuts)
        last = max(k for k, g in enumerate(GROUPS) if self.has[g])  # float rounding of the top cut
        index = index.clamp(max=last)
        for k, g in enumerate(GROUPS):
            proj.register_buffer(f"mask_{g}", index == k)
        if self.has["kp"]:
            proj.B_kp = nn.Parameter(xavier_uniform(shape, generator) * proj.mask_kp)
        if self.has["fa"]:
            proj.register_buffer("B_fa", xavier_uniform(shape, generator) * proj.mask_fa)
        if self.has["pfa"]:
            n_bar = self.n_bar(n_out)
            proj.register_buffer("B", xavier_uniform((n_bar, n_out), generator, gain=((1 + n_out / n_bar) / 2) ** 0.5))
            proj.R = nn.Parameter(xavier_uniform((n_in, n_bar), generator))
        if proj.implicit:  # keep only what the closed forms need (see the module docstring)
            Wt = proj.weight.detach().t()
            E0 = torch.zeros(shape)
            if self.has["kp"]:
                E0 += proj.B_kp.detach() - Wt * proj.mask_kp
                del proj.B_kp
            if self.has["pfa"]:
                E0_R = proj.R.detach() - (Wt * proj.mask_pfa) @ proj.B.t()
                del proj.R
                proj.register_buffer("E0_R", E0_R)
                proj.register_buffer("BtB", proj.B.t() @ proj.B)
                E0 += E0_R @ proj.B
            proj.register_buffer("E0", E0)  # E₀_kp + E₀_R B, N_in × N_out
            start_decay(proj)

    def tensor(self, proj, name):
        if proj.implicit and name in ("B_kp", "R"):
            with torch.no_grad():
                Wt, a = proj.weight.detach().t(), proj.state["a"]
                if name == "B_kp":
                    return Wt * proj.mask_kp + a * (proj.E0 - (proj.E0_R @ proj.B if self.has["pfa"] else 0))
                return (Wt * proj.mask_pfa) @ proj.B.t() + a * proj.E0_R
        return super().tensor(proj, name)

    def after_step(self, proj, group):
        advance_decay(proj, group)

    def _direct(self, proj, B_kp):
        """mask_kp ⊙ B_kp + mask_fa ⊙ B_fa (N_in × N_out), or None without direct groups."""
        parts = ([B_kp * proj.mask_kp] if self.has["kp"] else []) + ([proj.B_fa * proj.mask_fa] if self.has["fa"] else [])
        return sum(parts[1:], parts[0]) if parts else None

    def feedback_tensor(self, proj, W):
        """The effective feedback mask_kp ⊙ B_kp + mask_fa ⊙ B_fa + R B (N_in × N_out)."""
        if proj.implicit:
            return self._implicit_feedback(proj, W)
        F_direct = self._direct(proj, getattr(proj, "B_kp", None))
        if not self.has["pfa"]:
            return F_direct
        RB = proj.R @ proj.B
        return RB if F_direct is None else F_direct + RB

    def _implicit_feedback(self, proj, W, BtB=None):
        """mask_kp ⊙ Wᵀ + B_fa + a E₀ + (mask_pfa ⊙ Wᵀ) BᵀB (N_in × N_out); without the last term
        when ``BtB`` is False (the caller applies it per sample)."""
        Wt = W.t()
        F_ = proj.E0.to(W.dtype) * proj.a_t
        if self.has["kp"]:
            F_ += Wt * proj.mask_kp
        if self.has["fa"]:
            F_ += proj.B_fa.to(W.dtype)
        if self.has["pfa"] and BtB is not False:
            F_ += (Wt * proj.mask_pfa) @ proj.BtB.to(W.dtype)
        return F_

    # -- learning ------------------------------------------------------------------------------
    def backward(self, proj, x, W, delta, plastic, need_e):
        if proj.implicit:
            e_in = None
            if need_e:
                e_in = proj.geometry.feedback(delta, self._implicit_feedback(proj, W, BtB=False), x.shape)
                if self.has["pfa"]:  # (mask_pfa ⊙ Wᵀ)(BᵀB δ), per sample
                    pfa = F.linear(F.linear(delta, proj.BtB.to(delta.dtype)), W.t() * proj.mask_pfa)
                    e_in = e_in + pfa.view(x.shape)
            return e_in, proj.geometry.weight_grad(x, delta), []
        tensors = dict(zip(self.plastic, plastic))
        geo = proj.geometry
        grad_W = geo.weight_grad(x, delta)  # N_out × N_in
        grads = []
        if self.has["kp"]:
            grads.append(grad_W.t() * proj.mask_kp)                                 # ΔB_kp = mask_kp ⊙ ΔWᵀ
        if self.has["pfa"]:
            grads.append(F.linear(grad_W.t() * proj.mask_pfa, proj.B.to(grad_W.dtype)))  # ΔR = (mask_pfa ⊙ ΔWᵀ) Bᵀ
        e_in = None
        if need_e:
            F_direct = self._direct(proj, tensors.get("B_kp"))
            if self.has["pfa"]:
                R, B = tensors["R"], proj.B.to(delta.dtype)
                (n_out, n_in), n, n_bar = W.shape, delta.shape[0], B.shape[0]
                if n * n_bar * (n_out + n_in) <= n_bar * n_out * n_in:  # per sample: R (B δ)
                    e_in = geo.feedback(F.linear(delta, B), R, x.shape)
                else:  # once per step: (R B) δ
                    F_direct = R @ B if F_direct is None else F_direct + R @ B
            if F_direct is not None:
                e_direct = geo.feedback(delta, F_direct, x.shape)
                e_in = e_direct if e_in is None else e_in + e_direct
        return e_in, grad_W, grads
