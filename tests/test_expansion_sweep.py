"""The PFA paper's Fig. 3: simulated path alignment after decay against Proposition 3."""
import os
import runpy

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sweep_module = runpy.run_path(os.path.join(REPO, "experiments", "expansion_sweep.py"))


@pytest.mark.parametrize("expansion", [5, 10, 20, 50])
def test_path_alignment_matches_theory(expansion):
    result = sweep_module["sweep"](expansions=[expansion], n=256, seeds=1)
    row = result["rows"][0]
    assert abs(row["pfa_mean_deg"] - row["theory_deg"]) < 1.0, row
    assert row["pfa_o_mean_deg"] < 0.01


def test_theory_values():
    theory = sweep_module["theory_deg"]
    assert theory(1) == pytest.approx(45.0) and theory(10) == pytest.approx(17.55, abs=0.01)
