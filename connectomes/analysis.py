"""Alignment between a forward tensor and the feedback that replaces its transpose.

W is stored post × pre; B in feedback layout pre × post (dims 0 and 1 swapped; any further
dims, such as a kernel's, are compared as they are). BP's feedback is Wᵀ itself: 0° and ratio 1.
"""
from __future__ import annotations

import math

import torch


def _flat_pair(W: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    Wt = W.detach().transpose(0, 1)
    if Wt.shape != B.shape:
        raise ValueError(f"feedback of shape {tuple(B.shape)} does not match Wᵀ of shape {tuple(Wt.shape)}")
    return Wt.reshape(-1).double(), B.detach().reshape(-1).double()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between vec(a) and vec(b) (same shape), e.g. a rule's ΔW and BP's."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    denom = x.norm() * y.norm()
    if denom == 0:
        return float("nan")
    return math.degrees(math.acos(torch.clamp(torch.dot(x, y) / denom, -1.0, 1.0).item()))


def alignment_deg(W: torch.Tensor, B: torch.Tensor) -> float:
    """Angle in degrees between vec(Wᵀ) and vec(B) (the paper's weight or path alignment)."""
    w, b = _flat_pair(W, B)
    return angle_deg(w, b)


def sign_concordance(W: torch.Tensor, B: torch.Tensor) -> float:
    """Fraction of synapse pairs whose feedback B has the sign of Wᵀ (over entries nonzero in both)."""
    w, b = _flat_pair(W, B)
    both = (w != 0) & (b != 0)
    n = int(both.sum())
    return float((w[both].sign() == b[both].sign()).sum()) / n if n else float("nan")


def norm_ratio(W: torch.Tensor, B: torch.Tensor) -> float:
    """‖B‖_F / ‖W‖_F (the paper's weight or path norm ratio)."""
    w, b = _flat_pair(W, B)
    wn = w.norm().item()
    return b.norm().item() / wn if wn > 0 else float("nan")
