"""PFA's exact special cases (KP, FA) and its alignment theory, through real SGD training."""
import pytest
import torch

from circuits import CircuitError, Training
from circuits.train import make_optimizer
from connectomes import alignment_deg
from helpers import TEACHER_SIZES as SIZES, small_mlp, teacher_batches, train_alike, train_two_epochs
from plasticity import FA, KP, PFA, PFAo, set_epoch_weight_decay


def sgd_steps(model, training, n_steps, epoch=0):
    opt = make_optimizer(model, training)
    set_epoch_weight_decay(opt, epoch)
    for x, y in teacher_batches(n_steps):
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
    return model


def test_pfa_with_identity_B_is_kp():
    """B = I and N̄ = N_out: PFA's R follows exactly KP's B, step for step."""
    kp = small_mlp(KP(), SIZES, activation="relu").compile().double()
    pfa = small_mlp(PFA(expansion=1, B_init="identity"), SIZES, activation="relu").compile().double()
    pfa.load_state_dict({k.replace(".B", ".R") if k.endswith(".B") else k: v
                         for k, v in kp.state_dict().items()}, strict=False)
    for name, p in pfa.projections.items():
        if p.sends_error:
            assert torch.equal(p.B, torch.eye(p.weight.shape[0], dtype=torch.float64))
            assert torch.equal(p.R, kp.projections[name].B)
    training = Training(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.01)
    sgd_steps(kp, training, 200)
    sgd_steps(pfa, training, 200)
    for name, p in pfa.projections.items():
        torch.testing.assert_close(p.weight, kp.projections[name].weight, rtol=1e-9, atol=1e-12)
        if p.sends_error:
            torch.testing.assert_close(p.R, kp.projections[name].B, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(pfa.projections["h1->h2"].R, kp.projections["h1->h2"].weight.t())


def test_pfa_with_frozen_R_is_fa():
    """R's learning rate and decay at zero: PFA is FA with B_FA = R B."""
    pfa = small_mlp(PFA(expansion=4), SIZES, activation="relu").compile().double()
    fa = small_mlp(FA(), SIZES, activation="relu").compile().double()
    with torch.no_grad():
        for name, p in pfa.projections.items():
            fa.projections[name].weight.copy_(p.weight)
            if p.sends_error:
                fa.projections[name].B.copy_(p.R @ p.B)
    R0 = {n: p.R.detach().clone() for n, p in pfa.projections.items() if p.sends_error}
    frozen = Training(lr=0.05, momentum=0.9, weight_decay=1e-3, feedback_lr=0.0, feedback_weight_decay=0.0)
    sgd_steps(pfa, frozen, 200)
    sgd_steps(fa, Training(lr=0.05, momentum=0.9, weight_decay=1e-3), 200)
    for name, p in pfa.projections.items():
        torch.testing.assert_close(p.weight, fa.projections[name].weight, rtol=1e-9, atol=1e-12)
        if p.sends_error:
            assert torch.equal(p.R, R0[name])


def test_pfa_o_path_alignment_goes_to_zero():
    """Weight decay erases R's random start; with BᵀB = I, R B → Wᵀ (Proposition 1)."""
    torch.manual_seed(0)
    model = small_mlp(PFAo(expansion=4), SIZES, activation="relu").compile().double()
    p = model.projections["h1->h2"]
    start = alignment_deg(p.weight, p.R @ p.B)
    assert start > 60
    sgd_steps(model, Training(lr=0.05, momentum=0.9, weight_decay=0.05), 600)
    end = model.alignment()
    assert all(v["alignment_deg"] < 2.0 for v in end.values()), end
    assert all(abs(v["norm_ratio"] - 1) < 0.05 for v in end.values()), end


def test_pfa_r_forgets_its_start():
    """ΔR = ΔWᵀBᵀ with shared decay: R − WᵀBᵀ shrinks every step, so R → WᵀBᵀ (i.i.d. B)."""
    model = small_mlp(PFA(expansion=4), SIZES, activation="relu").compile().double()
    sgd_steps(model, Training(lr=0.05, momentum=0.9, weight_decay=0.05), 600)
    for name, p in model.projections.items():
        if p.sends_error:
            R_limit = p.weight.t() @ p.B.t()
            rel = (p.R - R_limit).norm() / R_limit.norm()
            assert rel < 0.02, (name, rel.item())


@pytest.mark.parametrize("cls", [PFA, PFAo])
@pytest.mark.parametrize("nesterov", [False, True])
def test_implicit_R_equals_explicit_route(cls, nesterov):
    """R held as WᵀBᵀ + a_t E₀ trains exactly like R updated step by step (the paper's route).

    tanh, not ReLU: over 300 float32 steps the two routes' rounding (~1e-6) can move a ReLU
    input lying within it of 0 across 0 (seen: one of ~300,000 at 3e-7, nesterov PFA), a
    discrete change of that cell's δ that the steps after it grow to ~1e-2. A smooth σ keeps
    the comparison at rounding; the closed form itself does not depend on σ."""
    training = Training(lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-3,
                        first_epoch_weight_decay=0.03)
    explicit = small_mlp(cls(expansion=4, route="explicit"), SIZES, activation="tanh").compile()
    implicit = small_mlp(cls(expansion=4), SIZES, activation="tanh").compile(implicit_feedback=True)
    assert all(p.implicit for p in implicit.projections.values() if p.sends_error)
    assert not implicit.feedback_parameters() and explicit.feedback_parameters()
    for name, p in implicit.projections.items():  # the same start
        torch.testing.assert_close(p.weight, explicit.projections[name].weight, rtol=0, atol=0)
        if p.sends_error:
            torch.testing.assert_close(p.rule.tensor(p, "R"), explicit.projections[name].R, rtol=1e-6, atol=1e-7)
    train_alike(implicit, explicit, training, "R")
    for p in implicit.projections.values():
        if p.sends_error:
            assert p.state["steps"] == 300 and 0 < p.state["a"] < 0.9
    a_start = implicit.alignment()
    b_start = explicit.alignment()
    for name in a_start:
        assert abs(a_start[name]["alignment_deg"] - b_start[name]["alignment_deg"]) < 1e-2


def test_implicit_state_survives_state_dict():
    training = Training(lr=0.05, momentum=0.9, weight_decay=0.01)
    model = train_two_epochs(small_mlp(PFA(expansion=2), SIZES).compile(implicit_feedback=True), training, 20)
    other = small_mlp(PFA(expansion=2), SIZES).compile(implicit_feedback=True)
    other.load_state_dict(model.state_dict())
    p, q = model.projections["h1->h2"], other.projections["h1->h2"]
    assert q.state == p.state and p.state["steps"] == 40
    assert torch.equal(q.rule.tensor(q, "R"), p.rule.tensor(p, "R"))
    assert q.a_t.item() == p.a_t.item() == pytest.approx(p.state["a"], rel=1e-6) and p.state["a"] < 0.99
    torch.testing.assert_close(q.effective_feedback(), p.effective_feedback(), rtol=0, atol=0)  # reads a_t


def test_implicit_needs_an_attached_sgd():
    model = small_mlp(PFA(expansion=2), SIZES).compile(implicit_feedback=True)
    x, y = next(teacher_batches(1))
    with pytest.raises(RuntimeError, match=r"'h2->out' holds its plastic feedback \(pfa\) implicitly.*attach_optimizer"):
        model.loss(model(x.float()), y).backward()
    with pytest.raises(CircuitError, match="exact only under torch.optim.SGD, not Adam"):
        model.attach_optimizer(torch.optim.Adam(model.parameters()))


def test_implicit_kp_equals_explicit_kp():
    training = Training(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.03)
    explicit = small_mlp(KP(), SIZES, activation="relu").compile()
    implicit = small_mlp(KP(), SIZES, activation="relu").compile(implicit_feedback=True)
    assert not implicit.feedback_parameters()
    train_alike(implicit, explicit, training, "B")


def test_batch_manhattan_steps_by_the_sign():
    model = small_mlp(PFA(expansion=2), SIZES).compile().double()
    training = Training(lr=0.01, momentum=0.0, weight_decay=0.0, batch_manhattan=True)
    assert not training.implicit_feedback_ok()
    opt = make_optimizer(model, training)
    x, y = next(teacher_batches(1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.loss(model(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.01 * grads[n].sign(), rtol=0, atol=1e-15)
    assert "projections.h1->h2.R" in grads  # plastic feedback steps by its sign too


@pytest.mark.parametrize("cls,orthonormal", [(PFA, False), (PFAo, True)])
def test_implicit_route_skips_BtB_only_when_it_is_the_identity(cls, orthonormal):
    """PFA-o's B is semi-orthogonal (BᵀB = I), so its implicit e_in skips that product; the
    shortcut gives the full formula's R B and e_in within float32 rounding."""
    model = small_mlp(cls(expansion=4), SIZES, activation="relu").compile(implicit_feedback=True)
    opt = make_optimizer(model, Training(lr=0.05, momentum=0.9, weight_decay=1e-3))
    model.attach_optimizer(opt)
    for x, y in teacher_batches(5):  # a ≠ 1 and W ≠ W₀
        opt.zero_grad()
        model.loss(model(x.float()), y).backward()
        opt.step()
    for p in model.projections.values():
        if not p.sends_error:
            continue
        assert p.rule.orthonormal(p) is orthonormal
        W = p.weight.detach()
        full = torch.addmm(p.E0B, W.t(), p.BtB, beta=p.state["a"])  # Wᵀ BᵀB + a E₀B
        torch.testing.assert_close(p.effective_feedback(), full, rtol=1e-5, atol=1e-6)
        x, delta = torch.randn(3, W.shape[1]), torch.randn(3, W.shape[0])  # a batch small enough for
        e_in, _, _ = p.rule.backward(p, x, W, delta, [], True)              # the per-sample order
        torch.testing.assert_close(e_in, delta @ full.t(), rtol=1e-5, atol=1e-6)
        if orthonormal:
            torch.testing.assert_close(p.BtB, torch.eye(p.BtB.shape[0]), rtol=0, atol=1e-5)
