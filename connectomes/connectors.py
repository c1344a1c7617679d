"""Connectors: small seeded objects that say which potential synapses of a projection exist
(PyNN's vocabulary). A connector returns a boolean mask of a tensor's shape; True = synapse.
They thin a rule's feedback tensors (``pfa(connector=...)``) or a forward W
(``Circuit.connect(pre, post, Dense(), connector=...)``)."""
from __future__ import annotations

import torch


class AllToAll:
    """Every potential synapse exists (the default)."""

    p = 1.0

    def mask(self, shape: tuple, generator: torch.Generator) -> torch.Tensor:
        return torch.ones(shape, dtype=torch.bool)

    def describe(self) -> dict:
        return {"connector": "all_to_all"}

    def __repr__(self) -> str:
        return "AllToAll()"


class FixedProbability:
    """Each potential synapse exists independently with probability ``p``.

    ``seed`` (optional) fixes the masks independently of the circuit's seed; each tensor still
    gets its own mask (the seed is mixed with the projection and tensor names).
    """

    def __init__(self, p: float, seed: int | None = None):
        if not 0 < p <= 1:
            raise ValueError(f"FixedProbability: p must be in (0, 1], got {p!r}")
        self.p = float(p)
        self.seed = seed

    def mask(self, shape: tuple, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator) < self.p

    def describe(self) -> dict:
        return {"connector": "fixed_probability", "p": self.p, "seed": self.seed}

    def __repr__(self) -> str:
        return f"FixedProbability(p={self.p}" + (f", seed={self.seed})" if self.seed is not None else ")")
