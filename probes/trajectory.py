"""The path of the forward weights through training, in its own principal components.

From the weights a run kept every ``keep_every`` epochs (``Training(keep_every=k)``:
RUN/trajectory/epoch-NNNN.pt, epoch 0 included), as Li, Xu, Taylor, Studer & Goldstein (2018)
plot it: the matrix of W_t − W_final (one row per kept epoch, all forward weights flattened in
projection order), its principal directions by SVD, the share of the path's variance each
explains, and each kept epoch's coordinates on the first two.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import torch


def _kept(run_dir: str) -> list[dict]:
    """Every RUN/trajectory/epoch-NNNN.pt as saved ({"epoch", "weights"[, "state"]}), by epoch."""
    paths = glob.glob(os.path.join(run_dir, "trajectory", "epoch-*.pt"))
    return sorted((torch.load(p, map_location="cpu", weights_only=True) for p in paths), key=lambda k: k["epoch"])


def kept_weights(run_dir: str) -> list[tuple[int, dict]]:
    """[(epoch, {projection: W})] of RUN/trajectory/, by epoch; ValueError naming the folder
    when fewer than three epochs were kept."""
    kept = _kept(run_dir)
    if len(kept) < 3:
        raise ValueError(f"{run_dir}/trajectory holds {len(kept)} kept epochs; the trajectory probe needs at "
                         "least 3: train with --set keep_every=K")
    return [(k["epoch"], k["weights"]) for k in kept]


def kept_states(run_dir: str) -> list[tuple[int, dict, dict | None]]:
    """[(epoch, {projection: W}, forward state or None)] of RUN/trajectory/, by epoch: the state
    is ``CompiledCircuit.forward_state()`` at that epoch (biases, norms), None in files kept
    before it was saved. ValueError naming the folder when nothing was kept."""
    kept = _kept(run_dir)
    if not kept:
        raise ValueError(f"{run_dir}/trajectory holds no kept epochs: train with --set keep_every=K")
    return [(k["epoch"], k["weights"], k.get("state")) for k in kept]


def load_kept(model, weights: dict, state: dict | None, where: str = "") -> None:
    """Set ``model``'s forward map to a kept epoch's: each projection's W, then the biases and
    norms. ValueError (naming ``where``) when the file lacks a state the model has, or names a
    projection or state entry the model does not have."""
    unknown = [n for n in weights if n not in model.projections]
    if unknown:
        raise ValueError(f"{where}: kept weights of unknown projection(s) {', '.join(unknown)}")
    if state is None and model.forward_state():
        raise ValueError(f"{where}: holds the weights W only (kept before biases and norms were kept too); "
                         "the circuit has biases or norms, so this epoch's forward map cannot be rebuilt: retrain "
                         "with --set keep_every=K")
    with torch.no_grad():
        for name, w in weights.items():
            model.projections[name].weight.copy_(w)
    if state:
        _, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{where}: kept state entries the circuit does not have: {', '.join(unexpected)}")


def trajectory_pca(run_dir: str) -> dict:
    """{"epochs", "explained_variance_ratio" (all components), "coords" (epochs × 2: each kept
    epoch's W_t − W_final on the first two principal directions), "distance_to_final" (‖W_t − W_final‖)}."""
    kept = kept_weights(run_dir)
    names = list(kept[-1][1])
    flat = np.stack([torch.cat([w[n].double().reshape(-1) for n in names]).numpy() for _, w in kept])
    diffs = flat - flat[-1]
    _, s, vt = np.linalg.svd(diffs, full_matrices=False)
    var = s ** 2
    return {"epochs": [e for e, _ in kept], "projections": names,
            "explained_variance_ratio": (var / var.sum()).tolist(),
            "coords": (diffs @ vt[:2].T).tolist(),
            "distance_to_final": np.linalg.norm(diffs, axis=1).tolist()}
