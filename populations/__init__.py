"""Neuron populations: the nodes of a circuit.

A population is a group of cells. ``Layer`` and ``Readout`` cells have two compartments, the
activation x (basal) and the error e (apical); an ``Input`` has only x; an ``Intermediate`` (ē,
PFA's extra population) has only an error compartment. A population sums what its incoming
projections send it, adds its bias, and applies its own transfer function (an optional batch
norm, then the activation).
"""
from populations.population import (
    ACTIVATIONS,
    NORMS,
    Input,
    Intermediate,
    Layer,
    Population,
    Readout,
)

__all__ = ["ACTIVATIONS", "NORMS", "Input", "Intermediate", "Layer", "Population", "Readout"]
