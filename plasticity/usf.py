"""uSF (Liao et al. 2016; Xiao et al. 2018): e_in = s · sign(Wᵀ) δ, recomputed from W each step.

``scale``: "xavier" (s = sqrt(2/(fan_in+fan_out)), BioTorch's choice), "he" (sqrt(2/fan_in),
Xiao et al.'s) or a number. ``last_layer_bp``: the projection into the readout uses Wᵀ itself
(Xiao et al.'s setting)."""
import math

import torch

from plasticity.base import FeedbackEdge, Rule, fans


def sign_scale(scale, weight_shape) -> float:
    fan_in, fan_out = fans(tuple(weight_shape))
    if scale == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scale == "he":
        return math.sqrt(2.0 / fan_in)
    if isinstance(scale, (int, float)) and scale > 0:
        return float(scale)
    raise ValueError(f"sign-concordant scale must be 'xavier', 'he' or a positive number, got {scale!r}")


class USF(Rule):
    name = "usf"
    edges = (FeedbackEdge("sign_Wt", "post", "pre", plastic=False, transported=True),)

    def __init__(self, scale="xavier", last_layer_bp=False, connector=None):
        super().__init__(connector=connector, scale=scale, last_layer_bp=last_layer_bp)
        sign_scale(scale, (1, 1))  # validate early

    sparse_tensors = ("S",)

    def init_feedback(self, proj, generator):
        proj.sign_scale = sign_scale(self.options["scale"], proj.weight.shape)
        if self.connector is not None:  # S: which feedback synapses exist (1/0), W's layout
            proj.register_buffer("S", torch.ones(proj.weight.shape))

    def signs(self, proj, W):
        """sign(W), thinned by the connector's synapses if any (W's layout)."""
        sign = W.sign()
        return sign.mul_(proj.S) if self.connector is not None else sign

    def exact(self, proj) -> bool:
        return self.options["last_layer_bp"] and proj.post_is_readout

    def feedback_tensor(self, proj, W):
        if self.exact(proj):
            return W.transpose(0, 1)
        return self.signs(proj, W).mul_(proj.sign_scale).transpose(0, 1)

    def backward(self, proj, x, W, delta, plastic, need_e):
        if not need_e or self.exact(proj):
            return super().backward(proj, x, W, delta, plastic, need_e)
        # s · sign(Wᵀ) δ = sign(Wᵀ) (s δ): the scale goes on the (smaller) error, not on W
        e_in = proj.geometry.feedback(delta * proj.sign_scale, self.signs(proj, W).transpose(0, 1), x.shape)
        return e_in, proj.geometry.weight_grad(x, delta), []
