"""PAL, phaseless alignment learning (Max et al. 2024): e_in = B δ through a feedback tensor B
(pre × post) that learns Wᵀ while the task is learned, with no separate phase. Every pre cell
is noisy: its rate carries its own small noise ξ ~ N(0, σ²) in every sample, so the post cells
receive W (x + ξ); their noise-driven change Δr = W ξ (the part of their response that PAL's
high-pass filtering separates from the slow task signal) and ξ give, per sample,

    ΔB = η (ξ Δrᵀ / σ² − α B),        E[ξ Δrᵀ] = σ² Wᵀ,

so B settles at Wᵀ / α.

Runtime: while training, the rule's forward pass draws one ξ per sample (shaped like the pre
population) and sends x + ξ through W (``noisy_forward=False`` keeps the task pass clean and the
noise apart); W changes by δ (x + ξ)ᵀ, the rate its synapses saw. The backward pass hands B the
descent direction ``rate · (α B − Ĉ)`` as ``.grad``, Ĉ = Σ_n ξ_n Δr_nᵀ / (n σ² P) (P: output
positions of a convolution; 1 for Dense), which the optimizer's feedback group applies in the
same step as W's change. In eval mode no noise is drawn.
The default rate 0.5 (with lr 0.01 and momentum 0.9: B moves 5% of the way to Ĉ per step)
lets B follow W within about 20 steps; a slower B (rate 0.05: ~200 steps) lags W early in
training and the lag, not the noise, slows learning (MNIST, first 600 steps: mean loss 0.30
against 0.19 at rate 0.5 and 0.14 for BP).
"""
import torch
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, RuleFunction, feedback_shape
from plasticity.wm import draw_noise, mirror_grad


class PAL(Rule):
    name = "pal"
    edges = (FeedbackEdge("B", "post", "pre", plastic=True),)
    sparse_tensors = ("B",)
    plastic = ("B",)

    def __init__(self, noise_std: float = 0.1, rate: float = 0.5, decay: float = 1.0,
                 noisy_forward: bool = True, connector=None):
        if noise_std <= 0:
            raise ValueError(f"pal: noise_std must be positive, got {noise_std!r}")
        if rate < 0 or decay < 0:
            raise ValueError(f"pal: rate and decay must be non-negative, got {rate!r} and {decay!r}")
        super().__init__(connector=connector, noise_std=noise_std, rate=rate, decay=decay,
                         noisy_forward=bool(noisy_forward))

    def init_feedback(self, proj, generator):
        proj.B = nn.Parameter(xavier_uniform(feedback_shape(proj.weight.shape), generator))

    def feedback_tensor(self, proj, W):
        return proj.B

    def noise(self, proj, x: torch.Tensor) -> torch.Tensor:
        """The pre cells' own noise in this batch: one ξ per sample, shaped like ``x``."""
        return draw_noise(x, x.shape[0], self.options["noise_std"])

    def forward(self, proj, x, bias=None):
        if not proj.training:
            return RuleFunction.apply(x, proj.weight, bias, proj, proj.B)
        xi = self.noise(proj, x)
        function = NoisyRateFunction if self.options["noisy_forward"] else RuleFunction
        return function.apply(x, proj.weight, bias, proj, proj.B, xi)

    def backward(self, proj, x, W, delta, plastic, need_e):
        """``x``: the clean rates; with a noisy forward W's change is δ (x + ξ)ᵀ, rebuilt here."""
        e_in = proj.geometry.feedback(delta, plastic[0], x.shape) if need_e else None
        if len(plastic) < 2:  # an eval-mode pass: no noise, B unchanged
            return e_in, proj.geometry.weight_grad(x, delta), [torch.zeros_like(plastic[0])]
        o = self.options
        xi = plastic[1].to(delta.dtype)
        grad_W = proj.geometry.weight_grad(x + xi if o["noisy_forward"] else x, delta)
        return e_in, grad_W, [mirror_grad(proj.geometry, W, plastic[0].to(delta.dtype), xi, o["noise_std"], o["rate"],
                                          o["decay"])]


class NoisyRateFunction(RuleFunction):
    """RuleFunction whose forward map sees the pre cells' noisy rates x + ξ (ξ: the last tensor of
    ``plastic``) while it saves the clean x, which the pre population keeps anyway (its ReLU's
    backward holds it, or it is the input batch), and ξ: the backward rebuilds x + ξ for W's
    change. Saving x + ξ instead would hold a third activation-sized tensor per projection from
    the forward to the backward (ResNet-20, batch 128: PAL's peak 1.96 × plain BP's)."""

    @staticmethod
    def forward(ctx, x, W, bias, proj, *plastic):
        ctx.proj = proj
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, W, *plastic)
        return proj.geometry.forward(x + plastic[-1], W, bias)
