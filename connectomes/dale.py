"""Dale's principle on synaptic tensors: every synapse has the sign of the cell that sends it.

Orientation: every tensor is receiver × sender (W: post × pre; a feedback tensor in feedback
layout: pre × post, PFA's B: ē × post, R: pre × ē, DFA's B: pre × readout), so the sign
constraint is one sign per column, ``signs`` (float, ±1, one per sending cell):

    T[:, j] = signs[j] · |T[:, j]|

``balanced_init`` draws such a tensor in the balanced regime (each receiving cell's summed
input has mean zero for any input with equal means, and the second moment of a signed draw);
``project_signs_`` is the constraint enforced after each optimizer step (a synapse whose
magnitude would change sign is set to zero, as the column-constrained E/I networks of Song,
Yang & Wang (2016) in Cornford et al.'s (2021) code do: ``clamp(W_pos, min=0)`` after the step).
"""
from __future__ import annotations

import torch


def balanced_init(shape: tuple, signs: torch.Tensor, generator: torch.Generator, mean_square: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A receiver × sender tensor with column signs ``signs`` (±1, shape[1] of them) in the
    balanced regime, shape (rows, cols).

    Magnitudes are exponential (as the column-E/I layers of Cornford et al.'s DANN code draw
    them; a positive, skewed distribution). In every row the inhibitory magnitudes are then
    scaled so that they sum exactly to the excitatory ones: Σ_j T[r, j] = 0, so a receiving
    cell's mean input is zero whatever the (equal) mean rate of the senders (the balanced state,
    inhibition cancelling excitation cell by cell; DANN's "inhibition centres the excitatory
    input"). Last, the whole tensor is scaled so that mean(T²) = ``mean_square`` exactly (e.g.
    Glorot's 2/(fan_in + fan_out)): the summed input of zero-mean unit-variance senders has the
    variance of the signed draw it replaces. A row or tensor with one cell type only (e.g. an
    all-E input) cannot be balanced: its mean input is then Σ_j |T[r, j]| times the mean rate.
    """
    if len(shape) != 2:
        raise ValueError(f"Dale's principle is implemented for 2-D (Dense) tensors, got shape {tuple(shape)}")
    signs = signs.to(torch.float64)
    if signs.shape != (shape[1],):
        raise ValueError(f"{signs.numel()} sender signs for a tensor of {shape[1]} columns (shape {tuple(shape)})")
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    m = -torch.log1p(-u)  # Exp(1), strictly positive
    exc, inh = signs > 0, signs < 0
    if exc.any() and inh.any():
        ratio = m[:, exc].sum(1, keepdim=True) / m[:, inh].sum(1, keepdim=True)
        m[:, inh] *= ratio
    m *= (mean_square / m.square().mean()).sqrt()
    return (m * signs).to(dtype)


def project_signs_(tensor: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """In place: zero every entry whose sign disagrees with its column's (``signs``, ±1 per
    column of a receiver × sender tensor). Returns ``tensor``."""
    s = signs.to(tensor.dtype)
    return tensor.mul_((tensor * s >= 0).to(tensor.dtype))


def sign_violations(tensor: torch.Tensor, signs: torch.Tensor) -> int:
    """How many entries of ``tensor`` have the opposite sign of their column (0 under Dale)."""
    return int((tensor.detach() * signs.to(tensor.dtype) < 0).sum())
