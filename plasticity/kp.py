"""KP (Kolen & Pollack 1994; Akrout et al. 2019): e_in = B δ, and B changes exactly as Wᵀ does,
ΔB = Σ_batch x δᵀ = ΔWᵀ, with the same weight decay, so B − Wᵀ decays to zero.

Implicit B (``Projection.implicit``, chosen by the compiler when W and B share one SGD
setting): B_t = W_tᵀ + a_t E₀ with E₀ = B₀ − W₀ᵀ and a_t from ``advance_decay``: the same
numbers without B's gradient or optimizer update. E₀ is kept in W's layout (``E0t`` = E₀ᵀ) so
that B is formed by one contiguous pass over W; the feedback is its transpose (a view).
"""
import torch
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, advance_decay, feedback_shape, start_decay


class KP(Rule):
    name = "kp"
    edges = (FeedbackEdge("B", "post", "pre", plastic=True),)
    sparse_tensors = ("B",)
    plastic = ("B",)

    @property
    def supports_implicit(self):
        return self.connector is None  # a thinned B changes by mask ⊙ ΔWᵀ: no closed form kept

    def init_feedback(self, proj, generator):
        B = xavier_uniform(feedback_shape(proj.weight.shape), generator)
        if not proj.implicit:
            proj.B = nn.Parameter(B)
            return
        # contiguous like W (B.transpose(0, 1) − W would keep Bᵀ's strides, and W + a·E0t
        # would then read two layouts: several times slower than one contiguous pass)
        proj.register_buffer("E0t", (B.transpose(0, 1) - proj.weight.detach()).contiguous())
        start_decay(proj)

    def tensor(self, proj, name):
        if name == "B" and proj.implicit:
            return self.feedback_tensor(proj, proj.weight.detach())
        return super().tensor(proj, name)

    def feedback_tensor(self, proj, W):
        if proj.implicit:
            return torch.addcmul(W, proj.E0t, proj.a_t).transpose(0, 1)
        return proj.B

    def feedback_grads(self, proj, x, delta, grad_W):
        return [] if proj.implicit else [grad_W.transpose(0, 1)]

    def after_step(self, proj, group):
        advance_decay(proj, group)
