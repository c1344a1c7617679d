"""Synaptic geometry, weight initialisation and connectome analysis.

Everything here reads tensors (or graphs, or files) handed to it; nothing imports ``circuits``.
Orientation convention: a projection's tensor is stored post × pre, like ``nn.Linear.weight``.
A feedback tensor that carries errors from ``post.e`` back to ``pre.e`` is therefore stored
pre × post (the "feedback layout"): for BP it is Wᵀ.

Modules: ``geometry`` (Dense, Conv2d; weightless Identity, Flatten, pooling, ShortcutA, Block;
init), ``analysis`` (alignment, norm ratio, update angle, sign concordance),
``reciprocity`` (cell-pair statistics as the cortical references define them, the matched-density
view, bootstrap intervals), ``motifs`` (triad census against a null over feasible pairs),
``reference`` (published cortex numbers with sources), ``files`` (connectome.h5, SONATA, graph exports) and
``report`` (``python -m connectomes.report RUN_DIR ... --out DIR``; not imported here).
"""
from connectomes.analysis import alignment_deg, angle_deg, norm_ratio, sign_concordance
from connectomes.connectors import AllToAll, FixedProbability
from connectomes.files import (ConnectomeFileError, export_sonata, read_connectome, write_connectome,
                               write_graph)
from connectomes.geometry import (AdaptiveAvgPool2d, AvgPool2d, Block, Conv2d, Dense, Flatten, Geometry,
                                  GlobalAvgPool, Identity, MaxPool2d, ShortcutA, xavier_uniform)
from connectomes.motifs import cell_graph, motif_census, triad_census
from connectomes.reciprocity import (NonFiniteWeightError, bootstrap_intervals, cell_type_reciprocity,
                                     circuit_reciprocity, density_sweep,
                                     pair_statistics, print_reciprocity, reciprocity_table)
from connectomes.reference import RAT_CORTEX, REFERENCES, references_for

__all__ = [
    "AllToAll", "FixedProbability", "AdaptiveAvgPool2d", "AvgPool2d", "Block", "Conv2d", "Flatten", "GlobalAvgPool", "MaxPool2d", "ShortcutA",
    "ConnectomeFileError", "Dense", "Geometry", "Identity", "NonFiniteWeightError", "RAT_CORTEX", "REFERENCES", "alignment_deg", "angle_deg", "cell_graph",
    "bootstrap_intervals", "cell_type_reciprocity", "circuit_reciprocity", "density_sweep", "export_sonata", "motif_census", "norm_ratio", "pair_statistics",
    "print_reciprocity", "read_connectome", "reciprocity_table", "references_for", "sign_concordance", "triad_census", "write_connectome",
    "write_graph", "xavier_uniform",
]
