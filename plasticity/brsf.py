"""brSF (Moskovitz et al. 2018): e_in = (|M_t| ⊙ sign(Wᵀ)) δ with fresh magnitudes M_t drawn
every batch from Glorot-uniform U(−a, a) (the default torch generator of W's device).

For metrics the feedback is reported at its expected value E|M_t| ⊙ sign(Wᵀ) = (a/2) sign(Wᵀ)."""
import math

import torch

from plasticity.base import FeedbackEdge, Rule, fans


class BRSF(Rule):
    name = "brsf"
    edges = (FeedbackEdge("Mt_sign_Wt", "post", "pre", plastic=False, transported=True),)

    def init_feedback(self, proj, generator):
        fan_in, fan_out = fans(tuple(proj.weight.shape))
        proj.magnitude_bound = math.sqrt(6.0 / (fan_in + fan_out))

    def backward(self, proj, x, W, delta, plastic, need_e):
        e_in = None
        if need_e:
            Bt = torch.rand_like(W).mul_(proj.magnitude_bound).mul_(W.sign())  # |M_t| ⊙ sign(W)
            e_in = proj.geometry.feedback(delta, Bt.transpose(0, 1), x.shape)
        return e_in, proj.geometry.weight_grad(x, delta), []

    def feedback_tensor(self, proj, W):
        return W.sign().transpose(0, 1).mul(proj.magnitude_bound / 2)
