"""Learning rules: one file per rule, each a small ``Rule`` subclass.

Use them by their paper names in a DSL file (``circuit.feedback(pfa(expansion=10))``) or by
string (``make_rule("pfa-o")``).
"""
from plasticity.base import FeedbackEdge, Projection, ReadoutTap, Rule, RuleFunction
from plasticity.bp import BP
from plasticity.brsf import BRSF
from plasticity.dfa import DFA
from plasticity.fa import FA
from plasticity.frsf import FRSF
from plasticity.ifa import IFA
from plasticity.kp import KP
from plasticity.mixed import Mixed
from plasticity.pfa import PFA
from plasticity.pal import PAL
from plasticity.pfa_o import PFAo, PFAoSquare
from plasticity.schedules import set_epoch_weight_decay
from plasticity.usf import USF
from plasticity.wm import WM

RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (BP, FA, DFA, USF, BRSF, FRSF, KP, WM, PAL, PFA, PFAo, PFAoSquare, IFA, Mixed)
}

# Lower-case names for DSL files: ``c.feedback(pfa(expansion=10))``.
bp, fa, dfa, usf, brsf, frsf, kp, pfa, pfa_o, pfa_o_square, ifa = BP, FA, DFA, USF, BRSF, FRSF, KP, PFA, PFAo, PFAoSquare, IFA
wm, pal = WM, PAL
mixed = Mixed


def make_rule(name: str, **options) -> Rule:
    """A rule by its name (``bp``, ``fa``, ``dfa``, ``usf``, ``brsf``, ``frsf``, ``kp``, ``wm``,
    ``pal``, ``pfa``, ``pfa-o``, ``pfa-o-square``, ``ifa``, ``mixed``)."""
    key = name.lower().replace("_", "-")
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULES)}")
    return RULES[key](**options)


__all__ = [
    "BP", "BRSF", "DFA", "FA", "FRSF", "IFA", "KP", "Mixed", "PAL", "PFA", "PFAo", "PFAoSquare", "RULES", "USF", "WM", "ReadoutTap",
    "FeedbackEdge", "Projection", "Rule", "RuleFunction", "bp", "brsf", "dfa", "fa", "frsf",
    "ifa", "kp", "make_rule", "mixed", "pal", "pfa", "pfa_o", "pfa_o_square", "set_epoch_weight_decay", "usf", "wm",
]
