"""Partial sign concordance for the sign-concordant family (uSF, brSF, frSF), as in Liao, Leibo
& Poggio (2016): a fixed fraction q of the feedback synapses carries the sign of their forward
synapse, the rest the opposite sign.

The choice is one fixed buffer per projection, ``C`` (W's layout, post × pre [× kH × kW], values
+1 where the feedback synapse is concordant and −1 where it is flipped), drawn once with the
projection's seeded feedback generator and saved in state_dicts and checkpoints. Exactly
round((1 − q)·n) of the n synapses are flipped (a uniform random subset: ``torch.randperm``), so
the measured concordance of the effective feedback is q up to 1/n (and up to zero weights, which
have no sign). q = 1 draws nothing and stores nothing: the rule is bit for bit the plain one.
In a convolution a synapse is one kernel entry (shared over positions), so a whole kernel tap
is flipped or kept.
"""
from __future__ import annotations

import math

import torch


def check_concordance(rule: str, q) -> float:
    """q as a float in [0, 1]; ValueError naming ``rule`` otherwise."""
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or not 0 <= q <= 1:
        raise ValueError(f"{rule}: concordance must be a number in [0, 1] (the fraction of feedback synapses "
                         f"carrying W's sign), got {q!r}")
    return float(q)


def concordance_options(q: float) -> dict:
    """The rule option to record: none at q = 1, so the plain rule describes itself as before."""
    return {} if q == 1 else {"concordance": q}


def draw_concordance(proj, q: float, generator: torch.Generator) -> None:
    """Register ``proj.C`` (±1, W's layout and dtype) with round((1 − q)·n) entries −1, chosen by
    ``generator``; nothing at q = 1."""
    if q == 1:
        return
    shape = tuple(proj.weight.shape)
    n = math.prod(shape)
    flipped = torch.randperm(n, generator=generator)[:round((1 - q) * n)]
    C = torch.ones(n, dtype=proj.weight.dtype)
    C[flipped] = -1
    proj.register_buffer("C", C.view(shape).to(proj.weight.device))


def apply_concordance(proj, signs: torch.Tensor) -> torch.Tensor:
    """``signs`` (W's layout) with the flipped synapses' signs reversed, in place."""
    C = getattr(proj, "C", None)
    return signs if C is None else signs.mul_(C)
