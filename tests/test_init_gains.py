"""Init gains for trainability maps (issue 22): W ~ N(0, g²/fan_in) through ``Dense(init_gain=g)``
or ``Conv2d(..., init_gain=g)``, and the feedback's own scale (FA's and DFA's ``B_gain``, IFA's
``B_gain`` at an exact angle, PFA's ``R_gain``); the defaults draw exactly what they drew before."""
import math

import pytest
import torch

from circuits import Circuit
from circuits.rebuild import rebuild
from connectomes import Conv2d, Dense, alignment_deg
from connectomes.geometry import xavier_uniform
from plasticity import DFA, FA, IFA, PFA, make_rule
from plasticity.base import seeded_generator
from populations import Input, Layer, Readout


def mlp(rule, gain=None, sizes=(400, 300, 200, 10)):
    c = Circuit("gains", seed=0)
    pops = [c.add(Input("x", sizes[0]))] + [c.add(Layer(f"h{i}", n)) for i, n in enumerate(sizes[1:-1], 1)]
    pops.append(c.add(Readout("y", sizes[-1])))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense(init_gain=gain))
    c.feedback(rule)
    return c


@pytest.mark.parametrize("gain", [0.5, 1.0, 2 ** 0.5, 3.0])
def test_forward_init_gain_sets_the_variance_per_fan_in(gain):
    model = mlp(make_rule("bp"), gain).compile(seed=0)
    for p in model.projections.values():
        var = p.weight.detach().var().item() * p.weight.shape[1]
        assert var == pytest.approx(gain ** 2, rel=0.05), p.name
        assert abs(p.weight.detach().mean().item()) < 3 * gain / math.sqrt(p.weight.shape[1] * p.weight.numel())
    conv = Conv2d(3, padding=1, init_gain=gain)
    w = conv.init_weight((64, 32, 3, 3), torch.Generator().manual_seed(0))
    assert w.var().item() * 32 * 9 == pytest.approx(gain ** 2, rel=0.05)


def test_the_default_init_is_the_glorot_draw_it_always_was():
    model = mlp(make_rule("fa")).compile(seed=0)
    p = model.projections["h1->h2"]
    expected = xavier_uniform(tuple(p.weight.shape), seeded_generator(0, "h1->h2", "W"))
    assert torch.equal(p.weight.detach(), expected)
    assert "init_gain" not in Dense().describe() and FA().describe() == {"rule": "fa"}
    assert torch.equal(p.B, xavier_uniform((300, 200), seeded_generator(0, "h1->h2", "feedback")))


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_feedback_gains_of_fa_dfa_pfa(gain):
    fa = mlp(FA(B_gain=gain)).compile(seed=0).projections["h1->h2"]
    assert fa.B.var().item() * fa.B.shape[1] == pytest.approx(gain ** 2, rel=0.05)  # B: pre × post, fan_in = N_post
    dfa = mlp(DFA(B_gain=gain)).compile(seed=0).projections["h1->h2"]
    assert dfa.B.var().item() * 10 == pytest.approx(gain ** 2, rel=0.05)  # B: N_pre × N_readout
    pfa = mlp(PFA(expansion=2, R_gain=gain)).compile(seed=0, implicit_feedback=False).projections["h1->h2"]
    assert pfa.R.detach().var().item() * pfa.R.shape[1] == pytest.approx(gain ** 2, rel=0.05)  # R: N_in × N̄


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0])
def test_ifa_feedback_gain_keeps_the_angle_and_sets_the_norm(angle):
    p = mlp(IFA(angle=angle, B_gain=2.0)).compile(seed=0).projections["h1->h2"]
    assert alignment_deg(p.weight, p.B) == pytest.approx(angle, abs=1e-3)
    assert p.B.norm().item() == pytest.approx(2.0 * math.sqrt(p.B.numel() / p.B.shape[1]), rel=1e-5)
    default = mlp(IFA(angle=angle)).compile(seed=0).projections["h1->h2"]
    assert default.B.norm().item() == pytest.approx(default.weight.norm().item(), rel=1e-5)


def test_gains_survive_describe_and_rebuild_and_bad_gains_are_refused():
    c = mlp(IFA(angle=30.0, B_gain=0.5), gain=2.0)
    again = rebuild(c.describe())
    assert again.describe() == c.describe()
    first, second = c.compile(seed=1).state_dict(), again.compile(seed=1).state_dict()
    tensors = [k for k, v in first.items() if torch.is_tensor(v)]
    assert tensors and all(torch.equal(first[k], second[k]) for k in tensors)
    for make, match in [(lambda: FA(B_gain=0), "fa: B_gain"), (lambda: PFA(R_gain=-1), "pfa: R_gain"),
                        (lambda: Dense(init_gain="he"), "Dense init_gain"),
                        (lambda: IFA(B_gain=float("nan")), "ifa: B_gain")]:
        with pytest.raises(ValueError, match=match):
            make()


@pytest.mark.parametrize("gain", [None, 0.5, 2.0])
def test_init_mean_square_is_the_draws(gain):
    """Geometry.init_mean_square (which Dale's balanced init keeps) equals E[W²] of init_weight's
    draw: Glorot's 2/(fan_in + fan_out), or g²/fan_in; for dense and conv shapes."""
    for geometry, shape in [(Dense(init_gain=gain), (300, 400)), (Conv2d(3, init_gain=gain), (64, 32, 3, 3))]:
        w = geometry.init_weight(shape, torch.Generator().manual_seed(0))
        assert (w ** 2).mean().item() == pytest.approx(geometry.init_mean_square(shape), rel=0.03)
