"""PFA-o (Li & Benna 2024): PFA with a semi-orthogonal B (BᵀB = I), so R B → Wᵀ exactly.

Two settings of the intermediate population, both with BᵀB = I:

- ``pfa-o`` (``pfa_o()``): N̄ = 10 · N_out, as the paper's text states for PFA (expansion 10);
  B is N̄ × N_out with orthonormal columns.
- ``pfa-o-square`` (``pfa_o_square()``): N̄ = N_out and B square orthogonal, as the paper's
  official code builds PFA-o. Same rule, one tenth of the ē cells.
"""
from plasticity.pfa import PFA


class PFAo(PFA):
    name = "pfa-o"
    default_B_init = "orthogonal"


class PFAoSquare(PFAo):
    """PFA-o with N̄ = N_out: B square orthogonal (the official code's PFA-o)."""
    name = "pfa-o-square"

    def __init__(self, route: str = "auto", connector=None, expansion: float = 1, B_init: str | None = None,
                 R_gain=None):
        if expansion != 1 or B_init not in (None, "orthogonal"):
            raise ValueError(f"{self.name}: N̄ = N_out with an orthogonal B by definition (expansion=1, "
                             f"B_init='orthogonal'); got expansion={expansion!r}, B_init={B_init!r}; "
                             "use pfa_o(expansion=...) for other sizes")
        super().__init__(expansion=1, B_init="orthogonal", route=route, connector=connector, R_gain=R_gain)
