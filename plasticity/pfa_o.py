"""PFA-o (Li & Benna 2024): PFA with a semi-orthogonal B (BᵀB = I), so R B → Wᵀ exactly."""
from plasticity.pfa import PFA


class PFAo(PFA):
    name = "pfa-o"
    default_B_init = "orthogonal"
