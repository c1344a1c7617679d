"""Published measurements of cortical connectivity to compare a learned connectome with.

Each number is a :class:`Reference`: the value, the statistic of :class:`connectomes.reciprocity.
PairStats` it stands beside, the study and the place in it (figure, table, text), the
definition *as that source defines it*, and how we hold it (``status``):

* ``primary``   — read in the paper itself (quoted in ``shared/references/cortex_reciprocity.md``);
* ``secondary`` — quoted by another paper (the PFA paper quoting Song et al.);
* ``derived``   — computed by us from sourced numbers (the formula is in ``note``);
* ``unverified``— carried from earlier project notes, not found in the retrievable text of the
  source: shown, marked, never used for a verdict.

``REFERENCES`` lists them all; ``references_for(statistic)`` those for one statistic;
``RAT_CORTEX`` maps statistic names to the Song et al. (2005) numbers, the report's default.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SONG_2005 = "Song et al. 2005, PLoS Biol 3:e68 (rat visual cortex, L5 pyramidal pairs)"
PFA_PAPER = "Li & Benna 2024 (PFA)"
PFA_APPENDIX = "Li & Benna 2024 (PFA), Appendix 1.2: a model built on Song et al. 2005"
CAMPAGNOLA_2022 = "Campagnola et al. 2022, Science 375:eabj5861 (mouse VISp, multipatch)"
AVERMANN_2012 = "Avermann et al. 2012, J Neurophysiol (mouse barrel cortex L2/3)"
COSSELL_2015 = "Cossell et al. 2015, Nature 518:399 (mouse V1 L2/3 pyramidal)"

CLOSE = 0.25   # "close": within ±25% of a published point (of ln(ratio) for a ratio), or inside a range

# the scale on which "close" is judged: a ratio by its effect ln(ratio), an angle by its cosine
SCALES = {"reciprocity_over_chance": "log", "strength_ratio_bidirectional": "log", "alignment_deg": "cos"}

STUDIES = {
    "song2005": SONG_2005,
    "pfa-appendix": PFA_APPENDIX,
    "campagnola2022": CAMPAGNOLA_2022,
    "avermann2012": AVERMANN_2012,
    "cossell2015": COSSELL_2015,
}


@dataclass(frozen=True)
class Reference:
    """One published number: ``value`` (a number, or a word for qualitative findings), the
    ``source`` (study and figure/table), ``note`` (its definition there), the PairStats field
    it compares with (``statistic``), the ``study`` key, a range the source gives (``low``,
    ``high``) and ``status`` (primary, secondary, derived, unverified)."""

    value: float | int | str
    source: str
    note: str = ""
    statistic: str = ""
    study: str = ""
    low: float | None = None
    high: float | None = None
    status: str = "primary"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def usable(self) -> bool:
        """A number a verdict may rest on (not ``unverified``, not a word)."""
        return self.status != "unverified" and isinstance(self.value, (int, float))

    @property
    def interval(self) -> tuple[float, float]:
        """(low, high): the source's range, or the value itself."""
        v = float(self.value)
        return (v if self.low is None else self.low, v if self.high is None else self.high)

    def meets(self, value: float, interval=None, *, close: float | None = None) -> bool:
        """Whether a measured ``value`` (or its ``interval``) is *close* to this reference: it
        meets the published range, or lies within ±``close`` (default :data:`CLOSE`) of a
        published point on the statistic's own scale (:data:`SCALES`): of the value; of its
        effect ln(ratio) for a ratio, whose null is 1; of the correlation cos(angle) for an
        angle, whose null is 90°. NaN is never close."""
        close = CLOSE if close is None else close
        a, b = interval if interval else (value, value)
        if math.isnan(a) or math.isnan(b):
            return False
        if self.low is not None:
            return a <= self.high and b >= self.low
        scale = SCALES.get(self.statistic, "linear")
        to, back = {"linear": (lambda x: x, lambda x: x), "log": (math.log, math.exp),
                    "cos": (lambda d: math.cos(math.radians(d)), lambda c: math.degrees(math.acos(max(-1, min(1, c)))))}[scale]
        if scale == "log" and a <= 0:
            return False
        v = to(float(self.value))
        lo, hi = sorted((back(v - close * abs(v)), back(v + close * abs(v))))
        return a <= hi and b >= lo

    def __str__(self) -> str:
        if isinstance(self.value, float):
            text = f"{self.value:g}"
        else:
            text = str(self.value)
        if self.low is not None and self.high is not None:
            text += f" ({self.low:g}–{self.high:g})"
        return text


_SONG_P, _SONG_BI = 0.116, 0.31


def song_reciprocity_over_chance(p: float = _SONG_P, bidirectional: float = _SONG_BI) -> float:
    """P(i↔j) / p² implied by a connection probability ``p`` (ordered pairs) and a fraction
    ``bidirectional`` of connected pairs holding both synapses: with b = P(i↔j) and u = P(one
    synapse), p = b + u/2 and b = f·(b + u), so b = 2fp/(1 + f): 4.08 for Song's numbers."""
    b = 2 * bidirectional * p / (1 + bidirectional)
    return b / p ** 2


REFERENCES: list[Reference] = [
    # ---- Song et al. 2005: rat visual cortex L5 pyramidal cells (excitatory → excitatory)
    Reference(0.36, SONG_2005 + ", Fig. 6B caption",
              "Pearson's R of the two EPSP amplitudes of bidirectionally connected pairs, in log "
              "space (\"All correlations calculated using Pearson's R method in log space\"); "
              "excitatory synapses only", "log_pearson_bidirectional", "song2005"),
    Reference(0.31, PFA_PAPER + ", Introduction, quoting Song et al. 2005",
              "connected pairs that are bidirectional (31%; 69% unidirectional)",
              "bidirectional_fraction", "song2005", status="secondary"),
    Reference(_SONG_P, SONG_2005 + " (earlier project notes)",
              "probability that a cell connects to another (ordered pairs); not found in the "
              "retrievable text of the paper", "connection_probability", "song2005", status="unverified"),
    Reference(round(song_reciprocity_over_chance(), 2), "derived from p = 0.116 and 31% bidirectional",
              "P(i↔j) / p²; rests on the unverified p = 0.116 (the paper states the excess in "
              "words: \"bidirectional connections are more common than expected in a random network\")",
              "reciprocity_over_chance", "song2005", status="unverified"),
    Reference(round(math.sqrt(0.8752), 4), SONG_2005 + ", Appendix S1 (third-party copy), Fig. 5A fit",
              "sd of ln(EPSP/mV) over all connections: σ² = 0.8752", "lognormal_sigma", "song2005",
              status="secondary"),
    Reference(-0.702, SONG_2005 + ", Appendix S1 (third-party copy), Fig. 5A fit",
              "mean of ln(EPSP/mV) over all connections; depends on units (mV)", "lognormal_mu", "song2005",
              status="secondary"),
    Reference(round(math.exp(-0.60 + 0.81), 3), "derived from " + SONG_2005 + ", Fig. 6A caption",
              "median strength of synapses in bidirectional pairs / in unidirectional pairs: "
              "exp(−0.60)/exp(−0.81), the medians of the two fitted lognormals",
              "strength_ratio_bidirectional", "song2005", status="derived"),
    Reference("over-represented", SONG_2005 + ", abstract",
              "several highly clustered three-neuron patterns over-represented against a null "
              "that keeps the pair statistics; which and by how much: not retrieved",
              "triplet_motifs", "song2005"),
    # ---- the PFA paper's appendix: a model of signed normal weights built on Song's numbers
    Reference(0.2, PFA_APPENDIX,
              "Pearson's R over all connected pairs, signed normal weights, an absent feedback "
              "synapse = 0, 31% of pairs given a partner at r = 0.36 (= 0.36·√0.31 = 0.200)",
              "signed_pearson_connected", "pfa-appendix", status="derived"),
    Reference(78.0, PFA_APPENDIX,
              "angle arccos(R) between forward and feedback strengths of that model (78.5° for "
              "R = 0.200; zero-mean weights, so the uncentred cosine equals Pearson's R)",
              "alignment_deg", "pfa-appendix", status="derived"),
    # ---- Campagnola et al. 2022: mouse V1, class-level E/I groups
    Reference(4.0, CAMPAGNOLA_2022 + ", main text and Fig. 2A (bottom row)",
              "reciprocal connections 3–5× the random expectation: the count of reciprocal pairs "
              "over its expectation p² (unordered probed pairs), pooled over E→E, E→I, I→E, I→I",
              "reciprocity_over_chance", "campagnola2022", low=3.0, high=5.0),
    Reference(0.073, CAMPAGNOLA_2022 + ", main text",
              "overall connection probability, 1731 connections of 23,620 probed (all classes)",
              "connection_probability", "campagnola2022"),
    # ---- Avermann et al. 2012: mouse barrel cortex L2/3, EXC–EXC (a counter-example)
    Reference(round(0.035 / 0.028, 2), AVERMANN_2012 + ", reciprocity table (via NeuroElectro)",
              "EXC–EXC: 3.5% of 57 pairs reciprocal against 2.8% expected at random (95% CI of "
              "the measured 0–7%): not different from chance", "reciprocity_over_chance",
              "avermann2012", low=0.0, high=round(0.07 / 0.028, 2), status="derived"),
    # ---- Cossell et al. 2015: mouse V1 L2/3 pyramidal cells
    Reference(round(0.44 / 0.16, 2), COSSELL_2015 + ", Extended Data Fig. 5",
              "median amplitude of bidirectional connections (0.44 mV, n = 22) over that of "
              "unidirectional ones (0.16 mV, n = 50)", "strength_ratio_bidirectional", "cossell2015",
              status="derived"),
]


def references_for(statistic: str, *, usable_only: bool = False) -> list[Reference]:
    """Every reference for ``statistic`` (a PairStats field name)."""
    return [r for r in REFERENCES if r.statistic == statistic and (r.usable or not usable_only)]


RAT_CORTEX: dict[str, Reference] = {r.statistic: r for r in REFERENCES
                                    if r.study in ("song2005", "pfa-appendix")}


def reference(name: str) -> Reference:
    """The Song et al. (or PFA-appendix) reference for statistic ``name``."""
    try:
        return RAT_CORTEX[name]
    except KeyError:
        raise KeyError(f"no rat cortex reference {name!r}; known: {', '.join(RAT_CORTEX)}") from None


def lognormal_epsp_median_mv() -> float:
    """Median of Song's fitted lognormal, exp(μ) (≈ 0.50 mV)."""
    return math.exp(RAT_CORTEX["lognormal_mu"].value)


def lognormal_epsp_mean_mv() -> float:
    """Mean of Song's fitted lognormal, exp(μ + σ²/2) (≈ 0.77 mV): the fit's mean, not the
    sample mean of the recorded EPSPs."""
    mu, sigma = RAT_CORTEX["lognormal_mu"].value, RAT_CORTEX["lognormal_sigma"].value
    return math.exp(mu + sigma ** 2 / 2)
