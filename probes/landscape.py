"""The loss of a trained circuit on a 2-D slice of weight space through its trained weights.

    L(α, β) = loss(W* + α d₁ + β d₂)

over the forward weights W (``curvature.forward_weights``), through the exact forward map, in
evaluation mode. Two choices of (d₁, d₂):

- ``"hessian"``: the top two eigenvectors of the loss Hessian (unit norm over all W), as in
  Cheon, Bae & Paik (2025), Fig. 5a;
- ``"random"``: filter-normalised random directions (Li, Xu, Taylor, Studer & Goldstein 2018):
  Gaussian, then each filter (a post cell's incoming weights of a dense W, an output channel's
  kernel of a convolution) rescaled to the norm of the same filter of W*, so that the plot is
  comparable across circuits whose weights differ in scale.
"""
from __future__ import annotations

import numpy as np
import torch

from probes.curvature import ExactForward, forward_weights, readout_loss, unflatten


def filter_normalised_direction(model, seed: int) -> list[torch.Tensor]:
    """One Gaussian direction per forward weight, each filter (dim 0 slice) scaled to the norm
    of W*'s filter; an all-zero filter of W* gets a zero direction."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for w in forward_weights(model):
        d = torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype)
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        wn = w.detach().flatten(1).norm(dim=1)
        out.append(d * (wn / dn).view(-1, *[1] * (w.dim() - 1)))
    return out


@torch.no_grad()
def loss_and_accuracy(model, batches) -> tuple[float, float]:
    """Mean readout loss and accuracy over ``batches`` through the exact forward map."""
    f, loss_fn = ExactForward(model), readout_loss(model)
    total, correct, n = 0.0, 0, 0
    for x, y in batches:
        out = f(x)
        total += loss_fn(out, y).item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    return total / n, correct / n


@torch.no_grad()
def surface(model, batches, d1: list[torch.Tensor], d2: list[torch.Tensor], alphas, betas) -> dict:
    """{"alphas", "betas", "loss" (len(betas) × len(alphas)), "accuracy"} of W* + α d₁ + β d₂;
    W* is restored afterwards."""
    model.eval()
    weights = forward_weights(model)
    start = [w.detach().clone() for w in weights]
    loss = np.zeros((len(betas), len(alphas)))
    acc = np.zeros_like(loss)
    try:
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                for w, w0, u, v in zip(weights, start, d1, d2):
                    w.copy_(w0 + a * u + b * v)
                loss[i, j], acc[i, j] = loss_and_accuracy(model, batches)
    finally:
        for w, w0 in zip(weights, start):
            w.copy_(w0)
    return {"alphas": list(map(float, alphas)), "betas": list(map(float, betas)),
            "loss": loss.tolist(), "accuracy": acc.tolist()}


def directions(model, kind: str, batches=None, seed: int = 0, eigenvectors=None):
    """(d₁, d₂): the top-2 Hessian eigenvectors (``kind="hessian"``; pass ``eigenvectors`` from
    ``curvature.top_eigenpairs`` to reuse them) or two filter-normalised random directions."""
    if kind == "random":
        return filter_normalised_direction(model, seed), filter_normalised_direction(model, seed + 1)
    if kind == "hessian":
        if eigenvectors is None:
            from probes.curvature import hessian_operator, top_eigenpairs
            _, eigenvectors = top_eigenpairs(hessian_operator(model, batches), k=2, seed=seed)
        return unflatten(model, eigenvectors[:, 0]), unflatten(model, eigenvectors[:, 1])
    raise ValueError(f"landscape directions must be 'hessian' or 'random', got {kind!r}")
