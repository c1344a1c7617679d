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

CELL_TYPES = {"E": 1.0, "I": -1.0}  # Dale's principle: the sign of every synapse a cell sends


def check_cells(name: str, cells, shape: tuple, vector: bool = True) -> dict | None:
    """``cells`` as {"E": fraction, "I": fraction} (None: no cell types, signed synapses);
    ValueError naming the population otherwise. Fractions in [0, 1] summing to 1; ``vector``: on
    a vector population only (a feature map's cells are not typed yet; an input's cells, which
    Dense projections flatten, may have any shape)."""
    if cells is None:
        return None
    if not isinstance(cells, dict) or not cells or set(cells) - set(CELL_TYPES):
        raise ValueError(f"population {name!r}: cells must be a dict of cell types {{'E': fraction, 'I': fraction}}, "
                         f"got {cells!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in cells.values()):
        raise ValueError(f"population {name!r}: cell-type fractions must be numbers in [0, 1], got {cells!r}")
    if abs(sum(cells.values()) - 1) > 1e-9:
        raise ValueError(f"population {name!r}: cell-type fractions must sum to 1, got {cells!r}")
    if vector and len(shape) != 1:
        raise ValueError(f"population {name!r}: cell types are implemented for vector populations, got shape {shape}")
    return {k: cells[k] for k in CELL_TYPES if k in cells}  # E first, as the cells are laid out


def cell_signs(cells: dict | None, n: int) -> torch.Tensor | None:
    """The sign of each of ``n`` cells (float64: +1 E, −1 I), None without cell types. The first
    round(f_E · n) cells are excitatory, the rest inhibitory (a fixed, ordered assignment: the
    same cells keep their type across seeds, and a slice [:n_E] is the E population)."""
    if cells is None:
        return None
    n_e = int(round(cells.get("E", 0.0) * n))
    return torch.cat([torch.ones(n_e, dtype=torch.float64), -torch.ones(n - n_e, dtype=torch.float64)])

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
        self.cells: dict | None = None  # Dale's principle: {"E": f, "I": 1 − f}; None: signed synapses

    @property
    def size(self) -> int:
        """Number of cells (product of the shape)."""
        return math.prod(self.shape)

    def describe(self) -> dict:
        """JSON-ready description (for config.json and the graph export)."""
        out = {"kind": self.kind, "name": self.name, "shape": list(self.shape)}
        return out if self.cells is None else {**out, "cells": dict(self.cells)}

    def signs(self) -> torch.Tensor | None:
        """Each cell's sign under Dale's principle (+1 E, −1 I; float64, ``size`` long), None
        when the population has no cell types."""
        return cell_signs(self.cells, self.size)

    def __repr__(self) -> str:
        shape = self.shape[0] if len(self.shape) == 1 else self.shape
        return f"{type(self).__name__}({self.name!r}, {shape})"


class Input(Population):
    """Cells clamped to the data (x only; they receive no error).

    ``cells``: None (the default: the afferents' synapses are signed, unconstrained) or
    {"E": f, "I": 1 − f}: Dale's principle for the synapses the input cells send (e.g. {"E": 1}
    for excitatory afferents)."""

    kind = "input"
    compartments = ("x",)

    def __init__(self, name: str, size, cells: dict | None = None):
        super().__init__(name, size)
        self.cells = check_cells(name, cells, self.shape, vector=False)


class Layer(Population):
    """Hidden cells: x = activation(norm(sum of inputs + bias)); e is the error compartment.

    ``size``: an int (a vector of cells) or (C, H, W) (a feature map; the bias is then one per
    channel). ``norm="batch"``: batch normalisation of the summed input (BatchNorm1d for a
    vector, BatchNorm2d for a feature map), before the activation; its affine parameters are
    forward parameters, trained by exact BP inside the population (local to its cells).
    ``bias`` defaults to True without a norm and False with one (the norm's shift replaces it).
    ``cells``: None (signed synapses, the default) or {"E": f, "I": 1 − f}: Dale's principle,
    every synapse a cell sends (forward, and feedback it sends as a post cell) has its cell's
    sign; the first round(f · N) cells are E, the rest I (``cell_signs``).
    """

    kind = "layer"

    def __init__(self, name: str, size, activation: str = "relu", bias: bool | None = None,
                 norm: str | None = None, cells: dict | None = None):
        super().__init__(name, size)
        self.cells = check_cells(name, cells, self.shape)
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
    ``cells``: the readout cells' types under Dale's principle; they send no forward synapse, so
    their type is the sign of the feedback they send (FA's/KP's B into the last hidden layer,
    DFA's B into every layer).
    """

    kind = "readout"

    def __init__(self, name: str, size, loss: str = "cross_entropy", bias: bool = True,
                 cells: dict | None = None):
        super().__init__(name, size, activation="identity", bias=bias, cells=cells)
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
