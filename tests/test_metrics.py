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


def test_update_alignment_against_bp():
    """BP's ΔW is BP's: 0°; FA's last layer ΔW is exact, its earlier ones are not; the batch-norm
    statistics and .grad are left as they were."""
    import torch.nn.functional as F
    from plasticity import KP
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 4, (16,))
    bp_model = small_mlp(BP()).compile().double()
    assert all(v < 1e-5 for v in bp_model.update_alignment(x, y).values())
    fa_model = small_mlp(FA()).compile().double()
    angles = fa_model.update_alignment(x, y)
    assert angles["h2->out"] < 1e-5 and angles["h1->h2"] > 1 and angles["x0->h1"] > 1
    # direct check of one angle: FA's ΔW for h1->h2 against autograd on the same weights
    Ws = [p.weight for p in fa_model.projections.values()]
    h = x
    for i, (p, (pop, *_)) in enumerate(zip(fa_model.projections.values(), fa_model._plan)):
        h = F.linear(h, p.weight) + fa_model.biases[pop.name]
        h = torch.tanh(h) if i < 2 else h
    bp_grad = torch.autograd.grad(F.cross_entropy(h, y), Ws)[1]
    fa_grad = torch.autograd.grad(fa_model.loss(fa_model(x), y), Ws)[1]
    assert angles["h1->h2"] == pytest.approx(direct(fa_grad.t(), bp_grad)[0], abs=1e-6)
    assert all(p.grad is None for p in fa_model.parameters())
    kp = small_mlp(KP()).compile()
    m = kp.alignment()["h1->h2"]
    p = kp.projections["h1->h2"]
    assert m["sign_concordance"] == pytest.approx(((p.weight.t().sign() == p.B.sign()).double().mean()).item())
