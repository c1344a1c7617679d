"""Neuron populations: the nodes of a circuit.

A population is a group of cells. ``Layer`` and ``Readout`` cells have two compartments, the
activation x (basal) and the error e (apical); an ``Input`` has only x; an ``Intermediate`` (ē,
PFA's extra population) has only an error compartment. A population sums what its incoming
projections send it, adds its bias, and applies its own transfer function (an optional batch
norm, then the activation).
"""
from populations.population import (
    ACTIVATIONS,
    CELL_TYPES,
    NORMS,
    Input,
    Intermediate,
    Layer,
    Population,
    Readout,
    cell_signs,
    check_cells,
)

__all__ = ["ACTIVATIONS", "CELL_TYPES", "cell_signs", "check_cells", "NORMS", "Input", "Intermediate", "Layer", "Population", "Readout"]
