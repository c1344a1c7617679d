"""Synaptic geometry: how a projection's tensor maps activity of the pre cells onto the post cells.

A geometry is a small stateless object. It knows the tensor's shape, the forward map, the
transposed map that carries errors back, and the local weight change ΔW = δ xᵀ.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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

    def forward(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feedback(self, delta: torch.Tensor, B: torch.Tensor, pre_shape: torch.Size) -> torch.Tensor:
        """Error sent to the pre cells through B in feedback layout (pre × post): e_pre = B δ."""
        raise NotImplementedError

    def weight_grad(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ΔW = Σ_batch δ xᵀ, shaped like W (post × pre)."""
        raise NotImplementedError

    def init_weight(self, shape: tuple, generator: torch.Generator) -> torch.Tensor:
        """Initial W: Glorot-uniform with gain 1 (the PFA paper's choice for every W)."""
        return xavier_uniform(shape, generator)

    def describe(self) -> dict:
        return {"kind": self.kind}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dense(Geometry):
    """All-to-all synapses between two vectors of cells: y = W x, W of shape (N_post, N_pre).

    A pre population with a shape (e.g. an image 1×28×28) is flattened to N_pre cells.
    """

    kind = "dense"

    def weight_shape(self, pre_shape, post_shape):
        return (math.prod(post_shape), math.prod(pre_shape))

    def check(self, pre_shape, post_shape):
        if len(post_shape) != 1:
            return f"a Dense projection needs a vector post population, got shape {tuple(post_shape)}"
        return None

    def forward(self, x, W):
        return F.linear(x.flatten(1), W)

    def feedback(self, delta, B, pre_shape):
        return F.linear(delta, B).view(pre_shape)

    def weight_grad(self, x, delta):
        return delta.t().mm(x.flatten(1))


class Identity(Geometry):
    """One-to-one, weightless: post cell i receives pre cell i (a skip connection). Errors pass
    back unchanged, exactly as in BP; there is nothing to learn."""

    kind = "identity"
    weightless = True

    def weight_shape(self, pre_shape, post_shape):
        return ()

    def check(self, pre_shape, post_shape):
        if math.prod(pre_shape) != math.prod(post_shape):
            return "an Identity projection needs pre and post of the same size"
        return None

    def forward(self, x, W=None):
        return x


def xavier_uniform(shape: tuple, generator: torch.Generator, gain: float = 1.0) -> torch.Tensor:
    """Glorot-uniform tensor of ``shape`` (dims 0/1 are fan_out/fan_in, as in ``torch.nn.init``)."""
    t = torch.empty(shape)
    torch.nn.init.xavier_uniform_(t, gain=gain, generator=generator)
    return t
