"""Sparse feedback: fixed random masks on feedback tensors, kept through training."""
import pytest
import torch

from circuits import Training
from circuits.train import make_optimizer
from connectomes import FixedProbability
from helpers import small_mlp
from plasticity import BRSF, DFA, FA, FRSF, IFA, KP, PFA, USF, set_epoch_weight_decay
from test_rules import check, reference, run_compiled, setup

SIZES = (20, 60, 50, 10)


def train_steps(model, n=40):
    g = torch.Generator().manual_seed(1)
    opt = make_optimizer(model, Training(lr=0.05, momentum=0.9, weight_decay=1e-3))
    model.attach_optimizer(opt)
    set_epoch_weight_decay(opt, 0)
    for _ in range(n):
        x = torch.randn(16, SIZES[0], generator=g)
        y = torch.randint(0, SIZES[-1], (16,), generator=g)
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("rule,tensors", [(FA, ["B"]), (DFA, ["B"]), (IFA, ["B"]), (FRSF, ["Mt"]),
                                          (KP, ["B"]), (PFA, ["B", "R"]), (USF, ["S"]), (BRSF, ["S"])])
def test_masks_keep_their_density_and_masked_synapses_stay_silent(rule, tensors):
    model = small_mlp(rule(connector=FixedProbability(0.3)), SIZES).compile(implicit_feedback=True)
    p = model.projections["h1->h2"]
    assert not p.implicit  # a thinned plastic tensor is updated explicitly
    masks = {n: getattr(p, f"mask_{n}").clone() for n in tensors}
    for n, m in masks.items():
        assert m.dtype == torch.bool and abs(m.float().mean().item() - 0.3) < 0.05, n
        assert (getattr(p, n)[~m] == 0).all(), n
    train_steps(model)
    for n, m in masks.items():
        assert torch.equal(getattr(p, f"mask_{n}"), m), n  # masks never change
        assert (getattr(p, n)[~m] == 0).all(), n  # a masked synapse carries no weight
        assert (getattr(p, n)[m] != 0).all(), n


def test_sparse_rules_match_the_closed_form():
    """The errors follow the masked tensors exactly (float64)."""
    for rule in (FA(connector=FixedProbability(0.5)), KP(connector=FixedProbability(0.5))):
        model, x, y = setup(rule)
        run_compiled(model, x, y)
        grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.B.t())
        check(model, grads, bias_grads)
    model, x, y = setup(PFA(expansion=3, connector=FixedProbability(0.5)))
    run_compiled(model, x, y)
    grads, bias_grads, deltas, xs = reference(model, x, y, lambda n, p, d, e: (d @ p.B.t()) @ p.R.t())
    check(model, grads, bias_grads)
    p = model.projections["h1->h2"]
    full = xs[1].t() @ (deltas["h1->h2"] @ p.B.t())
    torch.testing.assert_close(p.R.grad, full * p.mask_R, rtol=1e-10, atol=1e-12)


def test_pfa_sparse_B_keeps_its_variance():
    model = small_mlp(PFA(expansion=10, connector=FixedProbability(0.25)), (50, 200, 100, 10)).compile()
    B = model.projections["h1->h2"].B
    assert abs(B.var().item() * B.shape[0] - 1) < 0.1  # variance 1/N̄ over all entries, zeros included


def test_sparse_sign_concordant_feedback():
    """uSF's (and brSF's) feedback is the sign of W on the synapses that exist, zero elsewhere."""
    model, x, y = setup(USF(connector=FixedProbability(0.5)))
    run_compiled(model, x, y)

    def fb(name, p, d, e):
        n_out, n_in = p.weight.shape
        return d @ ((2 / (n_in + n_out)) ** 0.5 * p.weight.sign() * p.S)
    grads, bias_grads, _, _ = reference(model, x, y, fb)
    check(model, grads, bias_grads)
    B = model.projections["h1->h2"].effective_feedback()
    assert torch.equal(B == 0, ~model.projections["h1->h2"].mask_S.t())


def test_connector_errors():
    from plasticity import BP
    with pytest.raises(ValueError, match="sparse feedback is not implemented"):
        BP(connector=FixedProbability(0.5))
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        FixedProbability(0)
    assert FA(connector=FixedProbability(1.0)).connector is None
    assert FA(connector=FixedProbability(0.2, seed=3)).describe()["connector"] == {
        "connector": "fixed_probability", "p": 0.2, "seed": 3}
