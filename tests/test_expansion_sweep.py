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


@pytest.mark.parametrize("expansion", [2, 10])
def test_eigenvalues_of_BtB_follow_marchenko_pastur(expansion):
    """Fig. 3a: B as PFA draws it, BᵀB's eigenvalues have mean 1, sd √λ and lie in the support
    [(1 − √λ)², (1 + √λ)²] (λ = 1/expansion), to finite-size accuracy at N_out = 256."""
    row = sweep_module["eigenvalue_rows"](expansions=[expansion], n=256, seeds=1)[0]
    assert row["mean"] == pytest.approx(1, abs=0.02)
    assert row["sd"] == pytest.approx(row["theory_sd"], rel=0.05)
    assert row["min"] == pytest.approx(row["theory_min"], abs=0.05)
    assert row["max"] == pytest.approx(row["theory_max"], abs=0.1)
    assert row["theory_sd"] == pytest.approx((1 / expansion) ** 0.5)
