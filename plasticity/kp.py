"""KP (Kolen & Pollack 1994; Akrout et al. 2019): e_in = B δ, and B changes exactly as Wᵀ does,
ΔB = Σ_batch x δᵀ = ΔWᵀ, with the same weight decay, so B − Wᵀ decays to zero."""
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, feedback_shape


class KP(Rule):
    name = "kp"
    edges = (FeedbackEdge("B", "post", "pre", plastic=True),)
    plastic = ("B",)

    def init_feedback(self, proj, generator):
        proj.B = nn.Parameter(xavier_uniform(feedback_shape(proj.weight.shape), generator))

    def feedback_tensor(self, proj, W):
        return proj.B

    def feedback_grads(self, proj, x, delta, grad_W):
        return [grad_W.transpose(0, 1)]
