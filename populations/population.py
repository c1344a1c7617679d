"""Population classes (plain descriptions; the runtime reads them to build the network)."""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ACTIVATIONS = {
    "relu": torch.relu,
    "relu6": F.relu6,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
    "identity": lambda a: a,
}

NORMS = (None, "batch")

LOSSES = {
    "cross_entropy": lambda out, target: F.cross_entropy(out, target),
    "mse": lambda out, target: F.mse_loss(out, F.one_hot(target, out.shape[-1]).to(out.dtype)),
}


class Population:
    """A named group of ``size`` cells.

    ``size`` is an int (a vector of cells) or a tuple (e.g. (C, H, W) for a feature map).
    ``compartments`` names what the cells carry: "x" (activation) and/or "e" (error).
    """

    kind = "population"
    compartments: tuple[str, ...] = ("x", "e")

    def __init__(self, name: str, size, *, check_name: bool = True):
        if check_name and not (isinstance(name, str) and _NAME.match(name)):
            raise ValueError(
                f"population name {name!r} is not valid: use letters, digits and '_', "
                "starting with a letter"
            )
        shape = (size,) if isinstance(size, int) else tuple(size)
        if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"population {name!r}: size must be a positive int or a tuple of them, got {size!r}")
        self.name = name
        self.shape = shape

    @property
    def size(self) -> int:
        """Number of cells (product of the shape)."""
        return math.prod(self.shape)

    def describe(self) -> dict:
        """JSON-ready description (for config.json and the graph export)."""
        return {"kind": self.kind, "name": self.name, "shape": list(self.shape)}

    def __repr__(self) -> str:
        shape = self.shape[0] if len(self.shape) == 1 else self.shape
        return f"{type(self).__name__}({self.name!r}, {shape})"


class Input(Population):
    """Cells clamped to the data (x only; they receive no error)."""

    kind = "input"
    compartments = ("x",)


class Layer(Population):
    """Hidden cells: x = activation(norm(sum of inputs + bias)); e is the error compartment.

    ``size``: an int (a vector of cells) or (C, H, W) (a feature map; the bias is then one per
    channel). ``norm="batch"``: batch normalisation of the summed input (BatchNorm1d for a
    vector, BatchNorm2d for a feature map), before the activation; its affine parameters are
    forward parameters, trained by exact BP inside the population (local to its cells).
    ``bias`` defaults to True without a norm and False with one (the norm's shift replaces it).
    """

    kind = "layer"

    def __init__(self, name: str, size, activation: str = "relu", bias: bool | None = None,
                 norm: str | None = None):
        super().__init__(name, size)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"population {name!r}: unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})"
            )
        if norm not in NORMS:
            raise ValueError(f"population {name!r}: unknown norm {norm!r} (known: 'batch' or None)")
        if norm is not None and len(self.shape) not in (1, 3):
            raise ValueError(f"population {name!r}: norm={norm!r} needs a vector or a (C, H, W) shape, "
                             f"got {self.shape}")
        self.activation = activation
        self.norm = norm
        self.bias = (norm is None) if bias is None else bool(bias)

    def describe(self) -> dict:
        return {**super().describe(), "activation": self.activation, "bias": self.bias, "norm": self.norm}


class Readout(Layer):
    """Output cells: linear (identity transfer), compared with the target by ``loss``.

    The readout's error e_L = ∂loss/∂(readout activity) is where every error starts.
    """

    kind = "readout"

    def __init__(self, name: str, size, loss: str = "cross_entropy", bias: bool = True):
        super().__init__(name, size, activation="identity", bias=bias)
        if loss not in LOSSES:
            raise ValueError(f"population {name!r}: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.loss = loss

    def loss_fn(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss](out, target)

    def describe(self) -> dict:
        return {**super().describe(), "loss": self.loss}


class Intermediate(Population):
    """PFA's intermediate error population ē: error compartment only, linear, no bias."""

    kind = "intermediate"
    compartments = ("e",)

    def __init__(self, name: str, size):
        super().__init__(name, size, check_name=False)
