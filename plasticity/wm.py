"""WM, weight mirror (Akrout et al. 2019): e_in = B δ through a feedback tensor B (pre × post)
that learns Wᵀ in *mirror mode*: zero-mean noise ξ ~ N(0, σ²) is injected at the pre layer,
one layer at a time, the post layer answers y = W ξ, and

    ΔB ∝ ξ yᵀ / σ² − λ B,        E[ξ yᵀ] = σ² Wᵀ,

so B settles at Wᵀ / λ (decay λ keeps it bounded; λ = 1 gives ‖B‖ ≈ ‖W‖).

Runtime: every ``mirror_every``-th backward pass each projection draws ``mirror_batch`` noise
samples shaped like its pre population (default: as many as the task batch), independently of
the task, and hands B the descent direction ``rate · (λ B − Ĉ)`` as ``.grad``, with
Ĉ = Σ_n ξ_n y_nᵀ / (n σ² P) the mirror estimate of Wᵀ (P: output positions of a convolution,
over which the correlation is summed; 1 for Dense). Between mirror passes B.grad is zero. The
optimizer's feedback group applies it (lr, momentum, decay of that group on top of λ).
Noise comes from the default generator of W's device, whose state checkpoints keep (under
``torch.compile`` too: the draw is one custom op there, the same draws as eager).
The default rate 0.5 (with lr 0.01 and momentum 0.9: B moves 5% of the way to Ĉ per step)
lets B follow W within about 20 steps; a slower B (rate 0.05: ~200 steps) lags W early in
training and the lag, not the noise, slows learning (MNIST, first 600 steps: mean loss 0.30
against 0.19 at rate 0.5 and 0.14 for BP). B's time constant is 1 / (10 · lr · rate) steps, so
W moves about as far within it at any lr. On LeNet that lag is enough to stall and then blow
up training at lr 0.01 to 0.001, with B within 2–8° of Wᵀ; B = Wᵀ plus fresh noise trains like
BP (``experiments/lenet_feedback_probe.py``; docs/results/mnist_lenet/README.md).
"""
import torch
from torch import nn

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, feedback_shape


def mirror_grad(geometry, W: torch.Tensor, B: torch.Tensor, xi: torch.Tensor, noise_std: float, rate: float,
                decay: float) -> torch.Tensor:
    """B's descent direction rate · (decay · B − Ĉ), which moves B towards Ĉ / decay, with the
    mirror estimate Ĉ = Σ_n ξ_n (W ξ_n)ᵀ / (n σ² P) in feedback layout (pre × post [× kernel]);
    E[Ĉ] = Wᵀ (up to zero-padding borders of a convolution). ``xi``: (n, *pre_shape).
    Fused: Dense is one addmm into a new tensor of B's layout (no Ĉ, no extra passes over it);
    a convolution writes decay·B once and adds its correlation in place."""
    y = geometry.forward(xi, W)
    scale = 1.0 / (xi.shape[0] * noise_std ** 2 * y[0, 0].numel())
    if geometry.kind == "dense":
        return torch.addmm(B, xi.flatten(1).t(), y, beta=rate * decay, alpha=-rate * scale)
    C = geometry.weight_grad(xi, y)  # Σ y ξᵀ, W's layout (post × pre × k)
    return torch.mul(B, rate * decay).add_(C.transpose(0, 1), alpha=-rate * scale)


def draw_noise(like: torch.Tensor, n: int, noise_std: float) -> torch.Tensor:
    """ξ: n samples of i.i.d. N(0, σ²) noise shaped like one sample of ``like``."""
    if torch.compiler.is_compiling():  # one opaque op: the eager draw, not the compiler's own
        return _draw_noise_op(like.detach(), n, noise_std)
    return torch.empty((n, *like.shape[1:]), dtype=like.dtype, device=like.device).normal_(0.0, noise_std)


@torch.library.custom_op("circuits::normal_noise", mutates_args=())
def _draw_noise_op(like: torch.Tensor, n: int, noise_std: float) -> torch.Tensor:
    """``draw_noise`` as a custom op inside a compiled step: the same draws from the same
    generator as eager. (With the compiler's own normal numbers, made element by element,
    compiled WM on the CPU's ResNet-20 took 3.3 plain BP steps, with the op 2.1: the recorded
    runs in benchmarks/results, at bf7f70e and 8a0ada2.)"""
    return draw_noise(like, n, noise_std)


@_draw_noise_op.register_fake
def _(like, n, noise_std):
    return like.new_empty((n, *like.shape[1:]))


class WM(Rule):
    name = "wm"
    edges = (FeedbackEdge("B", "post", "pre", plastic=True),)
    sparse_tensors = ("B",)
    plastic = ("B",)

    def __init__(self, noise_std: float = 0.1, mirror_every: int = 1, mirror_batch: int | None = None,
                 rate: float = 0.5, decay: float = 1.0, connector=None):
        if noise_std <= 0:
            raise ValueError(f"wm: noise_std must be positive, got {noise_std!r}")
        if not (isinstance(mirror_every, int) and mirror_every >= 1):
            raise ValueError(f"wm: mirror_every must be a positive int, got {mirror_every!r}")
        if mirror_batch is not None and not (isinstance(mirror_batch, int) and mirror_batch >= 1):
            raise ValueError(f"wm: mirror_batch must be a positive int or None, got {mirror_batch!r}")
        if rate < 0 or decay < 0:
            raise ValueError(f"wm: rate and decay must be non-negative, got {rate!r} and {decay!r}")
        super().__init__(connector=connector, noise_std=noise_std, mirror_every=mirror_every,
                         mirror_batch=mirror_batch, rate=rate, decay=decay)

    def init_feedback(self, proj, generator):
        proj.B = nn.Parameter(xavier_uniform(feedback_shape(proj.weight.shape), generator))
        proj.state = {"backward_passes": 0}

    def feedback_tensor(self, proj, W):
        return proj.B

    def noise(self, proj, x: torch.Tensor) -> torch.Tensor:
        """The mirror-mode noise ξ for one pass, shaped (mirror_batch, *pre_shape)."""
        o = self.options
        return draw_noise(x, o["mirror_batch"] or x.shape[0], o["noise_std"])

    def feedback_grads(self, proj, x, delta, grad_W):
        o = self.options
        B = proj.B.detach().to(delta.dtype)
        if o["mirror_every"] > 1:  # count passes only when some skip (a Python side effect torch.compile breaks on)
            passes = proj.state.get("backward_passes", 0)
            proj.state["backward_passes"] = passes + 1
            if passes % o["mirror_every"]:
                return [torch.zeros_like(B)]
        W = proj.weight.detach().to(delta.dtype)
        return [mirror_grad(proj.geometry, W, B, self.noise(proj, x).to(delta.dtype), o["noise_std"], o["rate"],
                            o["decay"])]
