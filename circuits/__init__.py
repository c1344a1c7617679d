"""Circuits: the DSL, the compiler, data, training and the ``run`` command."""
from circuits.circuit import Circuit
from circuits.compile import CompiledCircuit
from circuits.errors import CircuitError, ConfigError, DataError
from circuits.training import Training

__all__ = ["Circuit", "CircuitError", "CompiledCircuit", "ConfigError", "DataError", "Training"]
