"""The curvature of a trained circuit's loss with respect to its forward weights.

The loss is the readout's loss through the *exact* forward map (``model(x, exact=True)``: every
projection a plain autograd op), so a rule's feedback plays no part in it: the Hessian is that of
the function the circuit computes, whichever rule trained it. The parameters are the forward
weights W of the plastic projections (biases and feedback tensors held fixed), in the circuit's
projection order. Evaluation mode (batch-norm running statistics, no dropout).

The linear algebra is curvlinops' (Dangel et al.): ``HessianLinearOperator`` multiplies the
Hessian of the mean loss over the given batches onto vectors (exact Hessian-vector products by
forward-over-reverse differentiation), ``lanczos_approximate_spectrum`` estimates its eigenvalue
density (stochastic Lanczos quadrature,
Papyan 2020); the top eigenpairs come from scipy's ``eigsh`` (ARPACK's implicitly restarted
Lanczos) on the operator. The trace is Hutchinson's estimator with Rademacher vectors, as
curvlinops' ``hutchinson_trace``, written out here so that it also reports its standard error.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn


class ExactForward(nn.Module):
    """The circuit's exact forward map as a module: x → readout activity (batch × N_readout)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, exact=True)


def readout_loss(model) -> nn.Module:
    """The readout's loss (mean over the batch) as the torch module curvlinops needs."""
    kind = model.readout.loss
    if kind != "cross_entropy":
        raise ValueError(f"readout {model.readout.name!r}: curvature probes support the cross-entropy "
                         f"loss, not {kind!r}")
    return nn.CrossEntropyLoss(reduction="mean")


def forward_weights(model) -> list[nn.Parameter]:
    """The W of every plastic projection (post × pre [× kH × kW]), in projection order."""
    weights = [p.weight for p in model.projections.values() if p.weight.requires_grad]
    if not weights:
        raise ValueError(f"circuit {model.circuit.name!r} has no plastic forward weights to probe")
    return weights


def hessian_operator(model, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """curvlinops' ``HessianLinearOperator`` of the mean readout loss over ``batches`` with respect
    to the forward weights (``forward_weights``), through the exact forward map. The model is put
    in evaluation mode."""
    from curvlinops import HessianLinearOperator

    model.eval()
    return HessianLinearOperator(ExactForward(model), readout_loss(model), forward_weights(model), batches,
                                 check_deterministic=False)


def _flat(op, vectors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in vectors])


def hessian_trace(op, num_matvecs: int = 100, seed: int = 0) -> dict:
    """Hutchinson's estimate of tr(H) with ``num_matvecs`` Rademacher vectors: {"trace",
    "stderr" (sd of the per-vector values / √n), "num_matvecs"}."""
    torch.manual_seed(seed)
    dim = op.shape[0]
    values = []
    for _ in range(num_matvecs):
        v = (torch.randint(0, 2, (dim,), dtype=op.dtype) * 2 - 1).to(op.device)
        values.append(float(v @ (op @ v)))
    values = np.array(values)
    return {"trace": float(values.mean()), "stderr": float(values.std(ddof=1) / math.sqrt(num_matvecs)),
            "num_matvecs": num_matvecs}


def top_eigenpairs(op, k: int = 2, tol: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest (algebraic) eigenvalues of H, descending, and their unit eigenvectors
    (dim × k, flattened in ``forward_weights`` order), by ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``)."""
    from scipy.sparse.linalg import eigsh

    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    values, vectors = eigsh(op.to_scipy(), k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def spectral_density(op, ncv: int = 64, num_repeats: int = 1, num_points: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density) of H's eigenvalues by stochastic Lanczos quadrature (curvlinops'
    ``lanczos_approximate_spectrum``, Papyan 2020's algorithm 2): the density integrates to 1."""
    from curvlinops import lanczos_approximate_spectrum

    grid, density = lanczos_approximate_spectrum(op, ncv, num_points=num_points, num_repeats=num_repeats)
    return np.asarray(grid, dtype=float), np.asarray(density, dtype=float)


def unflatten(model, vector) -> list[torch.Tensor]:
    """A flat vector (``forward_weights`` order) as one tensor per forward weight."""
    vector = torch.as_tensor(np.asarray(vector))
    out, i = [], 0
    for w in forward_weights(model):
        out.append(vector[i:i + w.numel()].view_as(w).to(w.dtype))
        i += w.numel()
    return out


def over_training(model, kept: list[tuple[int, dict, dict | None]], batches, num_matvecs: int = 30,
                  k: int = 1, where: str = "") -> dict:
    """The Hessian at every kept epoch (``probes.trajectory.kept_states``): the model's forward
    map set to that epoch's W, biases and norms, then the trace (Hutchinson, ``num_matvecs``
    vectors, the same seed at every epoch) and the top ``k`` eigenvalues, on the same ``batches``.
    {"epochs", "trace", "stderr", "top_eigenvalues" (epochs × k), "weight_norm" (‖W‖ over all
    forward weights)}. The model's own state is restored afterwards."""
    from probes.trajectory import load_kept

    saved = copy.deepcopy(model.state_dict())
    result = {"epochs": [], "trace": [], "stderr": [], "top_eigenvalues": [], "weight_norm": [],
              "num_matvecs": num_matvecs}
    try:
        for epoch, weights, state in kept:
            load_kept(model, weights, state, where=f"{where} epoch {epoch}")
            op = hessian_operator(model, batches)
            trace = hessian_trace(op, num_matvecs)
            values, _ = top_eigenpairs(op, k=k)
            result["epochs"].append(epoch)
            result["trace"].append(trace["trace"])
            result["stderr"].append(trace["stderr"])
            result["top_eigenvalues"].append([float(v) for v in values])
            result["weight_norm"].append(float(torch.sqrt(sum(w.detach().double().pow(2).sum()
                                                              for w in forward_weights(model)))))
    finally:
        model.load_state_dict(saved)
    return result
