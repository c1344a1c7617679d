"""Errors a user can act on: each names the population, projection, file or setting at fault."""


class CircuitError(ValueError):
    """A malformed circuit (unknown population, shape mismatch, cycle, unusable rule...)."""


class DataError(RuntimeError):
    """A data set that is missing or laid out wrongly."""


class ConfigError(ValueError):
    """A bad experiment file, command-line option or ``--set`` value."""
