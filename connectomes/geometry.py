"""Synaptic geometry: how a projection's tensor maps activity of the pre cells onto the post cells.

A geometry is a small stateless object. It knows the tensor's shape, the forward map, the
transposed map that carries errors back, and the local weight change ΔW = δ xᵀ.

Plastic geometries: ``Dense`` (W: N_post × N_pre) and ``Conv2d`` (W: C_out × C_in/groups × k × k,
post × pre × kernel). Weightless ones (``weightless = True``: nothing to learn; errors pass back
exactly, by plain autograd): ``Identity``, ``Flatten``, ``MaxPool2d``, ``AvgPool2d``,
``AdaptiveAvgPool2d`` (``GlobalAvgPool``), ``ShortcutA`` (He et al.'s option-A shortcut) and
``Block`` (any module the circuit cannot express, kept as an exact-BP block).
Feature-map populations have the shape (C, H, W); activity tensors carry a batch dim first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pair(value, what: str, minimum: int = 1) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ValueError(f"{what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair


def _spatial(name: str, shape: tuple) -> str | None:
    if len(shape) != 3:
        return f"{name} needs (C, H, W) populations, got shape {tuple(shape)}"
    return None


class Geometry:
    """Base class. Subclasses define shapes and the three maps below."""

    kind = "geometry"
    weightless = False

    def weight_shape(self, pre_shape: tuple, post_shape: tuple) -> tuple:
        """Shape of the forward tensor W (post × pre)."""
        raise NotImplementedError

    def check(self, pre_shape: tuple, post_shape: tuple) -> str | None:
        """A reason why pre/post shapes do not fit this geometry, or None."""
        return None

    def forward(self, x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The post cells' input W x (+ the post population's bias, one per cell or channel,
        fused into the same op as ``nn.Linear``/``nn.Conv2d`` do)."""
        raise NotImplementedError

    def feedback(self, delta: torch.Tensor, B: torch.Tensor, pre_shape: torch.Size) -> torch.Tensor:
        """Error sent to the pre cells through B in feedback layout (pre × post): e_pre = B δ."""
        raise NotImplementedError

    def weight_grad(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ΔW = Σ_batch δ xᵀ, shaped like W (post × pre)."""
        raise NotImplementedError

    def bias_grad(self, delta: torch.Tensor) -> torch.Tensor:
        """Δbias = Σ δ over the batch (and positions): one per post cell or channel."""
        return delta.sum(0) if delta.dim() == 2 else delta.sum((0, *range(2, delta.dim())))

    init_gain: float | None = None  # None: Glorot-uniform; g: N(0, g²/fan_in)

    def init_weight(self, shape: tuple, generator: torch.Generator) -> torch.Tensor:
        """Initial W: Glorot-uniform with gain 1 (the PFA paper's choice for every W), or with
        ``init_gain`` g set, Gaussian with variance g²/fan_in (g = 1: LeCun, g = √2: He)."""
        if self.init_gain is not None:
            return fan_in_normal(shape, generator, self.init_gain)
        return xavier_uniform(shape, generator)

    def init_mean_square(self, shape: tuple) -> float:
        """E[W²] of ``init_weight``'s draw: 2/(fan_in + fan_out) (Glorot, gain 1) or g²/fan_in;
        Dale's principle's balanced draw keeps it (``connectomes.dale.balanced_init``)."""
        fan_in = shape[1] * math.prod(shape[2:])
        if self.init_gain is not None:
            return self.init_gain ** 2 / fan_in
        return 2.0 / (fan_in + shape[0] * math.prod(shape[2:]))

    def _init_description(self) -> dict:
        return {} if self.init_gain is None else {"init_gain": self.init_gain}

    def describe(self) -> dict:
        return {"kind": self.kind, **self._init_description()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "kind")
        return f"{type(self).__name__}({args})"


class Dense(Geometry):
    """All-to-all synapses between two vectors of cells: y = W x, W of shape (N_post, N_pre).

    A pre population with a shape (e.g. an image 1×28×28) is flattened to N_pre cells.
    """

    kind = "dense"
    groups = 1

    def __init__(self, init_gain=None):
        """``init_gain``: None, Glorot-uniform W (the default); g, W ~ N(0, g²/N_pre)."""
        self.init_gain = check_gain(init_gain, "Dense init_gain")

    def weight_shape(self, pre_shape, post_shape):
        return (math.prod(post_shape), math.prod(pre_shape))

    def check(self, pre_shape, post_shape):
        if len(post_shape) != 1:
            return f"a Dense projection needs a vector post population, got shape {tuple(post_shape)}"
        return None

    def forward(self, x, W, bias=None):
        return F.linear(x.flatten(1), W, bias)

    # (the dtype and shape checks skip no-op calls: this runs in every backward pass)
    def feedback(self, delta, B, pre_shape):
        e = F.linear(delta, B if B.dtype == delta.dtype else B.to(delta.dtype))
        return e if len(pre_shape) == 2 else e.view(pre_shape)

    def weight_grad(self, x, delta):
        x = x if x.dim() == 2 else x.flatten(1)
        return torch.mm(delta.t(), x if x.dtype == delta.dtype else x.to(delta.dtype))


class Conv2d(Geometry):
    """A convolution between two feature maps (C, H, W): y = W ⋆ x, as ``torch.nn.Conv2d``.

    W: (C_out, C_in/groups, kH, kW), post × pre × kernel. A feedback tensor in feedback layout
    swaps dims 0 and 1 (BP's is Wᵀ = W.transpose(0, 1)): (C_in/groups, C_out, kH, kW); it
    carries errors back as the adjoint of the convolution with kernel B.transpose(0, 1) (the
    transposed convolution, with the output padding that restores the pre population's H×W).
    Zero padding only.
    """

    kind = "conv2d"

    def __init__(self, kernel_size, stride=1, padding=0, dilation=1, groups=1, init_gain=None):
        self.init_gain = check_gain(init_gain, "Conv2d init_gain")
        self.kernel_size = _pair(kernel_size, "Conv2d kernel_size")
        self.stride = _pair(stride, "Conv2d stride")
        self.padding = _pair(padding, "Conv2d padding", minimum=0)
        self.dilation = _pair(dilation, "Conv2d dilation")
        if not (isinstance(groups, int) and groups >= 1):
            raise ValueError(f"Conv2d groups must be a positive int, got {groups!r}")
        self.groups = groups

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) of the post population for an H × W pre population."""
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(
            (h, w), self.kernel_size, self.stride, self.padding, self.dilation))

    def weight_shape(self, pre_shape, post_shape):
        return (post_shape[0], pre_shape[0] // self.groups, *self.kernel_size)

    def check(self, pre_shape, post_shape):
        for shape in (pre_shape, post_shape):
            if _spatial("a Conv2d projection", shape):
                return _spatial("a Conv2d projection", shape)
        g = self.groups
        if pre_shape[0] % g or post_shape[0] % g:
            return f"groups={g} must divide the pre and post channels ({pre_shape[0]} and {post_shape[0]})"
        out = self.output_hw(*pre_shape[1:])
        if min(out) < 1:
            return f"{self!r} leaves no output from a {pre_shape[1]}×{pre_shape[2]} map"
        if tuple(post_shape[1:]) != out:
            return (f"{self!r} maps a {pre_shape[1]}×{pre_shape[2]} map to {out[0]}×{out[1]}, "
                    f"so the post population must have shape ({post_shape[0]}, {out[0]}, {out[1]})")
        return None

    def forward(self, x, W, bias=None):
        return F.conv2d(x, W, bias, self.stride, self.padding, self.dilation, self.groups)

    def output_padding(self, out_hw, pre_hw) -> tuple[int, int]:
        """What a transposed convolution must add to give back the pre population's H × W."""
        return tuple(n - ((o - 1) * s - 2 * p + d * (k - 1) + 1) for n, o, k, s, p, d in zip(
            pre_hw, out_hw, self.kernel_size, self.stride, self.padding, self.dilation))

    def feedback(self, delta, B, pre_shape):
        pad = self.output_padding(delta.shape[-2:], pre_shape[-2:])
        return F.conv_transpose2d(delta, B.transpose(0, 1).to(delta.dtype), None, self.stride, self.padding,
                                  pad, self.groups, self.dilation)

    def weight_grad(self, x, delta):
        shape = (delta.shape[1], x.shape[1] // self.groups, *self.kernel_size)
        return torch.nn.grad.conv2d_weight(x.to(delta.dtype), shape, delta, self.stride, self.padding,
                                           self.dilation, self.groups)

    def describe(self):
        return {"kind": self.kind, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "groups": self.groups,
                **self._init_description()}


# --------------------------------------------------------------------------- weightless
class Weightless(Geometry):
    """A fixed map with no synaptic tensor: errors pass back through it exactly, as in BP.

    ``forward(x, W=None, post_shape=None)``: ``post_shape`` is the post population's shape
    (without the batch dim), for maps that need it (``ShortcutA``).
    """

    weightless = True

    def weight_shape(self, pre_shape, post_shape):
        return ()


class Identity(Weightless):
    """One-to-one, weightless: post cell i receives pre cell i (a skip connection). Errors pass
    back unchanged, exactly as in BP; there is nothing to learn."""

    kind = "identity"

    def check(self, pre_shape, post_shape):
        if math.prod(pre_shape) != math.prod(post_shape):
            return "an Identity projection needs pre and post of the same size"
        return None

    def forward(self, x, W=None, post_shape=None):
        return x


class Flatten(Identity):
    """A feature map (C, H, W) read as a vector of C·H·W cells (the same cells, in C-major order)."""

    kind = "flatten"

    def check(self, pre_shape, post_shape):
        if len(post_shape) != 1 or math.prod(pre_shape) != post_shape[0]:
            return f"a Flatten projection needs a vector post population of {math.prod(pre_shape)} cells"
        return None

    def forward(self, x, W=None, post_shape=None):
        return x.flatten(1)


class _Pool2d(Weightless):
    op = None

    def __init__(self, kernel_size, stride=None, padding=0):
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, f"{name} kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, f"{name} stride")
        self.padding = _pair(padding, f"{name} padding", minimum=0)

    def output_hw(self, h, w):
        return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip((h, w), self.kernel_size, self.stride, self.padding))

    def check(self, pre_shape, post_shape):
        what = f"a {type(self).__name__} projection"
        if _spatial(what, pre_shape) or _spatial(what, post_shape):
            return _spatial(what, pre_shape) or _spatial(what, post_shape)
        out = (pre_shape[0], *self.output_hw(*pre_shape[1:]))
        if tuple(post_shape) != out:
            return f"{self!r} maps {tuple(pre_shape)} to {out}, not {tuple(post_shape)}"
        return None

    def forward(self, x, W=None, post_shape=None):
        return type(self).op(x, self.kernel_size, self.stride, self.padding)

    def describe(self):
        return {"kind": self.kind, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


class MaxPool2d(_Pool2d):
    """Max pooling (weightless; the error goes to the cell that won, as in BP)."""

    kind = "maxpool2d"
    op = F.max_pool2d


class AvgPool2d(_Pool2d):
    """Average pooling (weightless; zero padding counts in the average, as ``nn.AvgPool2d``)."""

    kind = "avgpool2d"
    op = F.avg_pool2d


class AdaptiveAvgPool2d(Weightless):
    """Average pooling to a fixed ``output_size`` (H', W'). The post population is (C, H', W'),
    or for a 1×1 output also a vector of C cells (global average pooling)."""

    kind = "adaptive_avgpool2d"

    def __init__(self, output_size=1):
        self.output_size = _pair(output_size, "AdaptiveAvgPool2d output_size")

    def check(self, pre_shape, post_shape):
        if _spatial("an AdaptiveAvgPool2d projection", pre_shape):
            return _spatial("an AdaptiveAvgPool2d projection", pre_shape)
        out = (pre_shape[0], *self.output_size)
        ok = tuple(post_shape) == out or (self.output_size == (1, 1) and tuple(post_shape) == out[:1])
        if not ok:
            return f"{self!r} maps {tuple(pre_shape)} to {out}, not {tuple(post_shape)}"
        return None

    def forward(self, x, W=None, post_shape=None):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def describe(self):
        return {"kind": self.kind, "output_size": list(self.output_size)}


def GlobalAvgPool() -> AdaptiveAvgPool2d:
    """Global average pooling: (C, H, W) → C cells."""
    return AdaptiveAvgPool2d(1)


class ShortcutA(Weightless):
    """He et al. (2016)'s option-A shortcut of the CIFAR ResNets: keep every ``stride``-th cell in
    H and W, and pad the channels with zeros on both sides up to the post population's C_out
    ((C_out − C_in)/2 each side). Parameter-free; errors pass back exactly."""

    kind = "shortcut_a"

    def __init__(self, stride=2):
        self.stride = _pair(stride, "ShortcutA stride")

    def check(self, pre_shape, post_shape):
        what = "a ShortcutA projection"
        if _spatial(what, pre_shape) or _spatial(what, post_shape):
            return _spatial(what, pre_shape) or _spatial(what, post_shape)
        hw = tuple(-(-n // s) for n, s in zip(pre_shape[1:], self.stride))
        extra = post_shape[0] - pre_shape[0]
        if tuple(post_shape[1:]) != hw or extra < 0 or extra % 2:
            return (f"{self!r} maps {tuple(pre_shape)} to (C_out, {hw[0]}, {hw[1]}) with C_out − "
                    f"{pre_shape[0]} even and ≥ 0, not {tuple(post_shape)}")
        return None

    def forward(self, x, W=None, post_shape=None):
        sh, sw = self.stride
        x = x[:, :, ::sh, ::sw]
        pad = (post_shape[0] - x.shape[1]) // 2
        return F.pad(x, (0, 0, 0, 0, pad, pad)) if pad else x

    def describe(self):
        return {"kind": self.kind, "stride": list(self.stride)}


class Block(Weightless):
    """An operation the circuit cannot express, kept as an exact-BP block: ``module`` runs as
    plain PyTorch (its parameters, if any, are trained by autograd) and errors pass back through
    it by BP. The compiled circuit holds its own copy of the module; ``Circuit.exact_blocks()``
    and the summary list every block, so no fallback to BP goes unnoticed."""

    kind = "block"

    def __init__(self, module: torch.nn.Module, label: str | None = None):
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"Block needs a torch.nn.Module, got {module!r}")
        self.module = module
        self.label = label or type(module).__name__

    def check(self, pre_shape, post_shape):
        return None

    def forward(self, x, W=None, post_shape=None):
        return self.module(x)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def describe(self):
        return {"kind": self.kind, "module": self.label, "parameters": self.parameter_count()}


def check_gain(gain, what: str) -> float | None:
    """None, or ``gain`` as a positive float (ValueError naming ``what`` otherwise)."""
    if gain is None:
        return None
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
        raise ValueError(f"{what} must be a positive number (the init's sd is gain/√fan_in), got {gain!r}")
    return float(gain)


def fan_in_normal(shape: tuple, generator: torch.Generator, gain: float) -> torch.Tensor:
    """Gaussian tensor with variance gain²/fan_in, fan_in = shape[1] · prod(shape[2:]) (dim 0 is
    the receiving side: post for W, pre for a feedback tensor in feedback layout)."""
    fan_in = shape[1] * math.prod(shape[2:])
    return torch.randn(shape, generator=generator) * (gain / math.sqrt(fan_in))


def xavier_uniform(shape: tuple, generator: torch.Generator, gain: float = 1.0) -> torch.Tensor:
    """Glorot-uniform tensor of ``shape`` (dims 0/1 are fan_out/fan_in, as in ``torch.nn.init``)."""
    t = torch.empty(shape)
    torch.nn.init.xavier_uniform_(t, gain=gain, generator=generator)
    return t
