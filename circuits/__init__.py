"""Circuits: the DSL, the compiler, data, training and the ``run`` command, the zoo of standard
circuits (``circuits.zoo``) and ``Circuit.from_torch`` (``circuits.convert``)."""
from circuits.circuit import Circuit
from circuits.compile import CompiledCircuit
from circuits.errors import CircuitError, ConfigError, DataError
from circuits.training import Training
from circuits import zoo  # noqa: E402  (the zoo builds on Circuit)

__all__ = ["Circuit", "CircuitError", "CompiledCircuit", "ConfigError", "DataError", "Training", "zoo"]
