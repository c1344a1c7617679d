"""brSF (Moskovitz et al. 2018): e_in = (|M_t| ⊙ sign(Wᵀ)) δ with fresh magnitudes M_t drawn
every batch from Glorot-uniform U(−a, a) (the default torch generator of W's device).

The magnitudes |M_t| ~ U(0, a) are drawn as one random byte each: 256 evenly spaced levels
(k + ½)·a/256, k uniform in 0..255, cut from 64-bit random words. Their mean is exactly a/2 and
their variance a²/12 · (1 − 1/65536); a byte is an eighth of a word (a float per synapse from
torch's CPU generator, `torch.rand`, would cost more than the matrix product it feeds). For
metrics the feedback is reported at its expected value E|M_t| ⊙ sign(Wᵀ) = (a/2) sign(Wᵀ).
Under ``torch.compile`` the draw runs as one custom op, the same code and generator.

Liao et al. (2016)'s brSF ("batchwise random magnitude sign-concordant feedback", V = M ∘ sign(W)
with M redrawn after every update); the bound a is Glorot's, as in BioTorch (Liao et al.'s
magnitude distribution is not stated in what we could read: assumed). ``concordance`` (q in
[0, 1], default 1): a fixed random fraction 1 − q of the feedback synapses carries the opposite
sign of W (``plasticity.concordance``): (|M_t| ⊙ C ⊙ sign(W))ᵀ δ."""
import math

import torch

from plasticity.base import FeedbackEdge, Rule, fans
from plasticity.concordance import apply_concordance, check_concordance, concordance_options, draw_concordance


LEVELS = 256


def draw_levels(like: torch.Tensor) -> torch.Tensor:
    """Fresh magnitudes in units of 1/256, shaped and typed like ``like``: k + ½, k uniform in 0..255."""
    if torch.compiler.is_compiling():  # dynamo does not trace random_: the draw is one opaque op there
        return _draw_levels_op(like)
    n = like.numel()
    # random_ from int64's minimum with no upper end: all 64 bits of every word random
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=like.device).random_(-2**63, None)
    k = words.view(torch.int8)[:n].view(like.shape)  # −128..127, one byte each
    # (a conversion, then an add in place: torch.add(k, 128.5) on int8 takes a slow
    # mixed-dtype loop, 20 times as long)
    return k.to(like.dtype).add_(LEVELS / 2 + 0.5)


@torch.library.custom_op("circuits::brsf_draw_levels", mutates_args=())
def _draw_levels_op(like: torch.Tensor) -> torch.Tensor:
    """``draw_levels`` as a custom op, run as it is inside a compiled step (the compiler's own
    random numbers, one per level, measured three times as slow)."""
    return draw_levels(like)


@_draw_levels_op.register_fake
def _(like):
    return torch.empty_like(like)


def draw_unit_magnitudes(like: torch.Tensor) -> torch.Tensor:
    """Fresh uniform values in (0, 1) shaped like ``like``: (k + ½)/256, k uniform in 0..255."""
    return draw_levels(like).mul_(1 / LEVELS)


class BRSF(Rule):
    name = "brsf"
    edges = (FeedbackEdge("Mt_sign_Wt", "post", "pre", plastic=False, transported=True),)

    sparse_tensors = ("S",)

    def __init__(self, connector=None, concordance=1.0):
        q = check_concordance(self.name, concordance)
        super().__init__(connector=connector, **concordance_options(q))
        self.concordance = q

    def init_feedback(self, proj, generator):
        fan_in, fan_out = fans(tuple(proj.weight.shape))
        proj.magnitude_bound = math.sqrt(6.0 / (fan_in + fan_out))
        if self.connector is not None:  # S: which feedback synapses exist (1/0), W's layout
            proj.register_buffer("S", torch.ones(proj.weight.shape))
        draw_concordance(proj, self.concordance, generator)

    def signs(self, proj, W):
        """C ⊙ sign(W), thinned by the connector's synapses if any (W's layout)."""
        sign = apply_concordance(proj, W.sign())
        return sign.mul_(proj.S) if self.connector is not None else sign

    def backward(self, proj, x, W, delta, plastic, need_e):
        e_in = None
        if need_e:
            # |M_t| ⊙ sign(W) in W's layout, in units of a/256 (the scale goes on the smaller δ)
            Bt = draw_levels(W).mul_(self.signs(proj, W))
            e_in = proj.geometry.feedback(delta * (proj.magnitude_bound / LEVELS), Bt.transpose(0, 1), x.shape)
        return e_in, proj.geometry.weight_grad(x, delta), []

    def feedback_tensor(self, proj, W):
        return self.signs(proj, W).mul_(proj.magnitude_bound / 2).transpose(0, 1)
