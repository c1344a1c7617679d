"""uSF (Liao et al. 2016; Xiao et al. 2018): e_in = s · sign(Wᵀ) δ, recomputed from W each step.

``scale`` (s): "none" or 1 (Liao et al.'s uSF: unit-magnitude sign feedback, "uniform sign-
concordant feedback", V = sign(W)), "xavier" (s = sqrt(2/(fan_in+fan_out)), BioTorch's choice),
"he" (sqrt(2/fan_in), Xiao et al.'s) or any positive number. ``scale="none"`` and ``scale=1``
give the same step bit for bit ("none" is the name for the reader; checked in
tests/test_liao.py). ``last_layer_bp``: the projection into the readout uses Wᵀ itself (Xiao et
al.'s setting). ``concordance`` (q in [0, 1], default 1): a fixed random fraction 1 − q of the
feedback synapses carries the opposite sign of W (Liao et al.'s partial sign concordance; see
``plasticity.concordance``): e_in = s · (C ⊙ sign(W))ᵀ δ with C = ±1 fixed.

Liao et al.'s names ↔ this project (docs/liao.md): uSF = ``usf(scale="none")``; brSF
(batchwise random magnitude) = ``brsf``; frSF (fixed random magnitude) = ``frsf``; the scaled
uSF of BioTorch = ``usf()`` (xavier), Xiao et al.'s = ``usf(scale="he", last_layer_bp=True)``."""
import math

import torch

from plasticity.base import FeedbackEdge, Rule, fans
from plasticity.concordance import apply_concordance, check_concordance, concordance_options, draw_concordance


def sign_scale(scale, weight_shape) -> float:
    fan_in, fan_out = fans(tuple(weight_shape))
    if scale == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scale == "he":
        return math.sqrt(2.0 / fan_in)
    if scale == "none":
        return 1.0
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return float(scale)
    raise ValueError(f"sign-concordant scale must be 'none' (1: Liao et al.'s raw sign), 'xavier', 'he' or a "
                     f"positive number, got {scale!r}")


class USF(Rule):
    name = "usf"
    edges = (FeedbackEdge("sign_Wt", "post", "pre", plastic=False, transported=True),)

    def __init__(self, scale="xavier", last_layer_bp=False, connector=None, concordance=1.0):
        q = check_concordance(self.name, concordance)
        super().__init__(connector=connector, scale=scale, last_layer_bp=last_layer_bp, **concordance_options(q))
        self.concordance = q
        sign_scale(scale, (1, 1))  # validate early

    sparse_tensors = ("S",)

    def init_feedback(self, proj, generator):
        proj.sign_scale = sign_scale(self.options["scale"], proj.weight.shape)
        if self.connector is not None:  # S: which feedback synapses exist (1/0), W's layout
            proj.register_buffer("S", torch.ones(proj.weight.shape))
        draw_concordance(proj, self.concordance, generator)

    def signs(self, proj, W):
        """C ⊙ sign(W), thinned by the connector's synapses if any (W's layout)."""
        sign = apply_concordance(proj, W.sign())
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
