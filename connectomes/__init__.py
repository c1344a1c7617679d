"""Synaptic geometry, weight initialisation and connectome analysis.

Everything here reads tensors (or graphs, or files) handed to it; nothing imports ``circuits``.
Orientation convention: a projection's tensor is stored post × pre, like ``nn.Linear.weight``.
A feedback tensor that carries errors from ``post.e`` back to ``pre.e`` is therefore stored
pre × post (the "feedback layout"): for BP it is Wᵀ.
"""
from connectomes.analysis import alignment_deg, norm_ratio
from connectomes.geometry import Dense, Geometry, Identity, xavier_uniform

__all__ = ["Dense", "Geometry", "Identity", "alignment_deg", "norm_ratio", "xavier_uniform"]
