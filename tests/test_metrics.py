"""Alignment and norm-ratio metrics against a direct computation."""
import math

import numpy as np
import pytest
import torch

from connectomes import alignment_deg, norm_ratio
from helpers import small_mlp
from plasticity import BP, FA, PFA


def direct(W, B):
    w = W.detach().numpy().T.ravel().astype(np.float64)
    b = B.detach().numpy().ravel().astype(np.float64)
    cos = w @ b / (np.linalg.norm(w) * np.linalg.norm(b))
    return math.degrees(math.acos(np.clip(cos, -1, 1))), np.linalg.norm(b) / np.linalg.norm(w)


def test_metrics_match_numpy():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(7, 5, generator=g)
    for B in [torch.randn(5, 7, generator=g), W.t() * 2.5, -W.t(), W.t() + 0.3 * torch.randn(5, 7, generator=g)]:
        angle, ratio = direct(W, B)
        assert alignment_deg(W, B) == pytest.approx(angle, abs=1e-4)
        assert norm_ratio(W, B) == pytest.approx(ratio, rel=1e-9)
    assert alignment_deg(W, W.t()) == pytest.approx(0, abs=1e-4)
    assert alignment_deg(W, -W.t()) == pytest.approx(180, abs=1e-4)
    with pytest.raises(ValueError, match="does not match"):
        alignment_deg(W, W)


def test_circuit_alignment_per_rule():
    bp = small_mlp(BP()).compile().alignment()
    assert set(bp) == {"h1->h2", "h2->out"}  # the first layer has no feedback path
    for v in bp.values():
        assert v["alignment_deg"] == pytest.approx(0, abs=1e-4) and v["norm_ratio"] == pytest.approx(1)
    fa_model = small_mlp(FA()).compile()
    p = fa_model.projections["h1->h2"]
    assert fa_model.alignment()["h1->h2"]["alignment_deg"] == pytest.approx(direct(p.weight, p.B)[0], abs=1e-6)
    pfa_model = small_mlp(PFA(expansion=3)).compile()
    p = pfa_model.projections["h1->h2"]
    angle, ratio = direct(p.weight, p.R @ p.B)
    got = pfa_model.alignment()["h1->h2"]
    assert got["alignment_deg"] == pytest.approx(angle, abs=1e-5)
    assert got["norm_ratio"] == pytest.approx(ratio, rel=1e-6)
