"""PFA on convolutions through real SGD: B = I is KP, and its three routes (explicit ē,
factored ΔR = ΔWᵀBᵀ, implicit R = WᵀBᵀ + a E₀) train identically. Also mixed precision."""
import pytest
import torch

from circuits import Training
from circuits.train import make_optimizer
from plasticity import KP, PFA, PFAo, make_rule, set_epoch_weight_decay
from test_conv_rules import conv_circuit


def teacher_batches(n_steps, batch=8, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, 2 * 8 * 8, generator=g, dtype=dtype)
    for _ in range(n_steps):
        x = torch.randn(batch, 2, 8, 8, generator=g, dtype=dtype)
        yield x, (x.flatten(1) @ teacher.t()).argmax(1)


def train(model, training, steps_per_epoch=15, epochs=2):
    """SGD over ``epochs`` short epochs, the first with its own weight decay, lr halved after it."""
    opt = make_optimizer(model, training)
    model.attach_optimizer(opt)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.5)
    for epoch in range(epochs):
        set_epoch_weight_decay(opt, epoch)
        for x, y in teacher_batches(steps_per_epoch, seed=10 + epoch):
            opt.zero_grad()
            model.loss(model(x), y).backward()
            opt.step()
        sched.step()
    return model


TRAINING = Training(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.02)


@pytest.mark.parametrize("variant", ["strided_padded", "grouped"])
def test_pfa_conv_with_identity_B_is_kp(variant):
    kp = conv_circuit(KP(), variant).compile().double()
    pfa = conv_circuit(PFA(expansion=1, B_init="identity"), variant).compile().double()
    pfa.load_state_dict({k[:-2] + ".R" if k.endswith(".B") else k: v for k, v in kp.state_dict().items()}, strict=False)
    for name, p in pfa.projections.items():
        if p.sends_error:
            assert torch.equal(p.R, kp.projections[name].B)
    train(kp, TRAINING)
    train(pfa, TRAINING)
    for name, p in pfa.projections.items():
        torch.testing.assert_close(p.weight, kp.projections[name].weight, rtol=1e-9, atol=1e-12, msg=name)
        if p.sends_error:
            torch.testing.assert_close(p.R, kp.projections[name].B, rtol=1e-9, atol=1e-12, msg=name)
    p = pfa.projections["h1->h2"]
    assert not torch.allclose(p.R, p.weight.transpose(0, 1))  # KP's B has not reached Wᵀ yet


@pytest.mark.parametrize("cls", [PFA, PFAo])
@pytest.mark.parametrize("variant", ["strided_padded", "grouped"])
def test_pfa_conv_routes_train_identically(cls, variant):
    """explicit (ē at every position, ΔR = Σ x ēᵀ) == factored (ΔR = ΔWᵀBᵀ contracted over C_out,
    e_in = (RB) δ) == implicit (R = WᵀBᵀ + a_t E₀, RB = WᵀBᵀB + a_t E₀B)."""
    torch.set_default_dtype(torch.float64)  # E₀ = R₀ − W₀ᵀBᵀ made in float64, as the other routes' R₀
    try:
        models = {
            "explicit": conv_circuit(cls(expansion=2, route="explicit"), variant).compile(),
            "factored": conv_circuit(cls(expansion=2, route="factored"), variant).compile(),
            "implicit": conv_circuit(cls(expansion=2), variant).compile(implicit_feedback=True),
        }
    finally:
        torch.set_default_dtype(torch.float32)
    implicit = models["implicit"]
    assert all(p.implicit for p in implicit.projections.values() if p.sends_error)
    assert not implicit.feedback_parameters()
    for name, p in implicit.projections.items():  # the same start
        if p.sends_error:
            torch.testing.assert_close(p.rule.tensor(p, "R"), models["explicit"].projections[name].R, rtol=1e-12, atol=1e-12)
    R0 = models["explicit"].projections["h1->h2"].R.detach().clone()
    for m in models.values():
        train(m, TRAINING)
    ref = models["explicit"].projections
    for route in ("factored", "implicit"):
        for name, p in models[route].projections.items():
            torch.testing.assert_close(p.weight, ref[name].weight, rtol=1e-9, atol=1e-11, msg=f"{route} {name}")
            if p.sends_error:
                torch.testing.assert_close(p.rule.tensor(p, "R"), ref[name].R, rtol=1e-9, atol=1e-11,
                                           msg=f"{route} {name}")
                torch.testing.assert_close(p.effective_feedback(), ref[name].effective_feedback(), rtol=1e-9, atol=1e-11)
    p = implicit.projections["h1->h2"]
    assert p.state["steps"] == 30 and 0 < p.state["a"] < 0.9
    assert (ref["h1->h2"].R - R0).norm() > 0.1 * R0.norm()  # R did learn


def test_pfa_conv_r_forgets_its_start():
    """With shared decay, R − WᵀBᵀ shrinks every step: R → WᵀBᵀ (contracted over C_out)."""
    from plasticity.pfa import mix
    model = conv_circuit(PFA(expansion=2, route="factored"), "grouped").compile().double()
    train(model, Training(lr=0.05, momentum=0.9, weight_decay=0.1), steps_per_epoch=100, epochs=1)
    p = model.projections["h1->h2"]
    limit = mix(p.B, p.weight, p.geometry.groups).transpose(0, 1)
    assert ((p.R - limit).norm() / limit.norm()).item() < 0.02


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "pfa", "pfa-o", "ifa"])
def test_mixed_precision_backward(rule, monkeypatch):
    """The AMP path, not the rule (each rule's arithmetic is held to its float64 closed form in
    test_rules.py and above): under autocast (bf16 on CPU; the same path serves CUDA AMP) the
    forward runs in bf16, the rule's backward receives δ in bf16 and computes in it, and the
    gradients come back in float32 within bfloat16's rounding of the float32 step: relative
    error under 0.03, about 8 units of bf16's 2⁻⁸ (measured 0.002 to 0.014). Planted bug
    caught: a backward that casts δ up and runs the rule in float32 (no AMP saving)."""
    model = conv_circuit(make_rule(rule), "grouped").compile(implicit_feedback=True)
    model.attach_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = next(teacher_batches(1, dtype=torch.float32))
    torch.manual_seed(3)
    model.loss(model(x), y).backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(3)
    seen, deltas = [], []
    proj = model.projections["h1->h2"]
    proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    backward = proj.rule.backward
    monkeypatch.setattr(proj.rule, "backward", lambda p, x, W, delta, *a: (
        deltas.append((p.name, delta.dtype, W.dtype)), backward(p, x, W, delta, *a))[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(model(x), y)
    loss.backward()
    assert seen == [torch.bfloat16]
    if rule != "bp":  # (BP runs as plain autograd: no rule backward)
        assert ("h1->h2", torch.bfloat16, torch.bfloat16) in deltas, deltas
    for name, g in full.items():
        p = dict(model.named_parameters())[name]
        assert p.grad.dtype == torch.float32, name
        rel = ((p.grad - g).norm() / g.norm()).item()
        assert rel < 0.03, (name, rel)


def test_kp_conv_implicit_equals_explicit():
    torch.set_default_dtype(torch.float64)
    try:
        explicit = conv_circuit(KP(), "grouped").compile()
        implicit = conv_circuit(KP(), "grouped").compile(implicit_feedback=True)
    finally:
        torch.set_default_dtype(torch.float32)
    assert not implicit.feedback_parameters()
    train(explicit, TRAINING)
    train(implicit, TRAINING)
    for name, p in implicit.projections.items():
        torch.testing.assert_close(p.weight, explicit.projections[name].weight, rtol=1e-9, atol=1e-11)
        if p.sends_error:
            torch.testing.assert_close(p.rule.tensor(p, "B"), explicit.projections[name].B, rtol=1e-9, atol=1e-11)
