"""Rat cortex reference statistics to compare a learned connectome with.

Song, Sjöström, Reigl, Nelson & Chklovskii 2005 (PLoS Biol 3:e68): paired recordings of
layer-5 pyramidal neurons in rat visual cortex; and the PFA paper's appendix estimate
(Li & Benna 2024) of the forward/feedback correlation over all connected pairs.

Each quantity is a :class:`Reference` (value, source, note). ``RAT_CORTEX`` maps the names used
by :mod:`connectomes.reciprocity` (``connection_probability``, ``bidirectional_fraction``, ...)
to those references, so a table can put a measured value beside the rat's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SONG_2005 = "Song et al. 2005, PLoS Biol 3:e68 (rat visual cortex, L5 pyramidal pairs)"
PFA_APPENDIX = "Li & Benna 2024 (PFA), appendix estimate from Song et al. 2005"


@dataclass(frozen=True)
class Reference:
    """One reference quantity: ``value`` (a number, or a word for qualitative findings),
    where it comes from, and a short note."""

    value: float | int | str
    source: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if isinstance(self.value, float):
            return f"{self.value:g}"
        return str(self.value)


RAT_CORTEX: dict[str, Reference] = {
    "connection_probability": Reference(
        0.116, SONG_2005, "probability that one cell connects to another (ordered pairs)"),
    "connected_pairs": Reference(713, SONG_2005, "connected pairs recorded"),
    "bidirectional_pairs": Reference(218, SONG_2005, "of the 713 connected pairs"),
    "bidirectional_fraction": Reference(
        0.31, SONG_2005, "218 of 713 connected pairs are bidirectional; 69% unidirectional"),
    "reciprocity_ratio": Reference(
        4.0, SONG_2005, "bidirectional pairs ≈ 4× chance: P(i↔j) / P(i→j)²"),
    "pearson_bidirectional": Reference(
        0.36, SONG_2005, "correlation of the two EPSP strengths within bidirectional pairs"),
    "pearson_connected": Reference(
        0.2, PFA_APPENDIX, "over all connected pairs, an absent synapse counted as 0"),
    "alignment_deg": Reference(
        78.0, PFA_APPENDIX, "angle between forward and feedback strengths, ≈ arccos(0.2)"),
    "lognormal_mu": Reference(
        -0.702, SONG_2005, "mean of ln(EPSP / mV); depends on units"),
    "lognormal_sigma": Reference(
        0.9355, SONG_2005, "sd of ln(EPSP / mV); unit-free, the number to compare"),
    "epsp_mean_mv": Reference(0.77, SONG_2005, "mean EPSP amplitude (mV)"),
    "epsp_median_mv": Reference(0.50, SONG_2005, "median EPSP amplitude (mV)"),
    "triplet_motifs": Reference(
        "over-represented", SONG_2005,
        "highly clustered three-cell motifs over-represented relative to a null that keeps "
        "the pair statistics"),
}


def reference(name: str) -> Reference:
    """The rat cortex reference called ``name`` (a key of ``RAT_CORTEX``)."""
    try:
        return RAT_CORTEX[name]
    except KeyError:
        raise KeyError(f"no rat cortex reference {name!r}; known: {', '.join(RAT_CORTEX)}") from None


def lognormal_epsp_median_mv() -> float:
    """Median EPSP implied by the lognormal fit, exp(mu) (≈ 0.50 mV)."""
    return math.exp(RAT_CORTEX["lognormal_mu"].value)


def lognormal_epsp_mean_mv() -> float:
    """Mean EPSP implied by the lognormal fit, exp(mu + sigma²/2) (≈ 0.77 mV)."""
    mu, sigma = RAT_CORTEX["lognormal_mu"].value, RAT_CORTEX["lognormal_sigma"].value
    return math.exp(mu + sigma ** 2 / 2)
