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


def feedback_sign_bound(W: torch.Tensor, F: torch.Tensor, pre_signs: torch.Tensor,
                        sender_signs: torch.Tensor) -> dict:
    """How much of Wᵀ a Daleian direct feedback tensor can hold, and how much of it F holds.

    W: post × pre, its columns with the pre cells' signs, so Wᵀ[i, j] has the sign of pre cell i;
    F: pre × post (feedback layout), its columns with the sending (post) cells' signs
    ``sender_signs``. F[i, j] can share Wᵀ[i, j]'s sign only where cells i and j are of one type
    (E→E, I→I); on the mixed pairs the best F has zeros. With P = Wᵀ on the same-type pairs and 0
    elsewhere (the sign-feasible F closest to Wᵀ), returns, all in float64:

    - ``bound_deg``: ∠(Wᵀ, P), the smallest angle any Daleian F can make with Wᵀ;
    - ``alignment_deg``: ∠(Wᵀ, F) (the weight alignment, as the metrics report it);
    - ``to_bound_deg``: ∠(P, F);
    - ``rms_same``, ``rms_mixed``: the root mean square of F on the same-type and mixed pairs
      (a mirror of W keeps the mixed ones near zero);
    - ``same_fraction``: the share of ‖Wᵀ‖² on the same-type pairs, cos² of the bound.
    """
    import math

    Wt, F = W.detach().double().t(), F.detach().double()
    same = pre_signs.double()[:, None] == sender_signs.double()[None, :]
    P = torch.where(same, Wt, torch.zeros_like(Wt))

    def angle(a, b):
        denominator = float(a.norm() * b.norm())
        return float("nan") if denominator == 0 else math.degrees(math.acos(max(-1.0, min(1.0, float((a * b).sum()) / denominator))))

    def rms(mask):
        return float(F[mask].pow(2).mean().sqrt()) if bool(mask.any()) else float("nan")
    total = float(Wt.pow(2).sum())
    return {"bound_deg": angle(Wt, P), "alignment_deg": angle(Wt, F), "to_bound_deg": angle(P, F),
            "rms_same": rms(same), "rms_mixed": rms(~same),
            "same_fraction": float(P.pow(2).sum()) / total if total else float("nan")}
