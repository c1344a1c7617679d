"""The mixed rule: KP, FA and PFA groups of synapses within one projection, in float64 closed form."""
import pytest
import torch

from circuits import Circuit, Training
from circuits.errors import CircuitError
from circuits.train import make_optimizer
from connectomes import Conv2d, Dense
from connectomes.reciprocity import circuit_reciprocity, feedback_routes
from helpers import TEACHER_SIZES, small_mlp, train_alike
from plasticity import FA, KP, PFA, Projection, make_rule, mixed
from plasticity.mixed import GROUPS
from populations import Input, Layer, Readout

SIZES = (6, 9, 8, 5)


def projection(rule, n_in=9, n_out=8, seed=0):
    return Projection("a->b", Dense(), (n_in,), (n_out,), rule, sends_error=True, seed=seed).double()


def pass_through(proj, batch, seed=1):
    """One forward/backward of ``proj`` on random x with a random δ: returns (x, δ, e_in)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, proj.weight.shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    delta = torch.randn(batch, proj.weight.shape[0], generator=g, dtype=torch.float64)
    proj(x).backward(delta)
    return x.detach(), delta, x.grad


def masks(proj):
    return {g: getattr(proj, f"mask_{g}") for g in GROUPS}


@pytest.mark.parametrize("batch", [3, 400])  # both orders of the ē route: R (B δ) and (R B) δ
def test_error_and_changes_of_each_group(batch):
    proj = projection(mixed({"kp": 0.3, "fa": 0.3, "pfa": 0.3, "none": 0.1}, expansion=3))
    x, delta, e_in = pass_through(proj, batch)
    m = {g: t.double() for g, t in masks(proj).items()}
    dW = delta.t() @ x
    # e_in = (mask_kp ⊙ B_kp + mask_fa ⊙ B_fa) δ + R (B δ)
    expected = delta @ (m["kp"] * proj.B_kp + m["fa"] * proj.B_fa).t() + (delta @ proj.B.t()) @ proj.R.t()
    torch.testing.assert_close(e_in, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(proj.weight.grad, dW, rtol=1e-12, atol=0)
    torch.testing.assert_close(proj.B_kp.grad, m["kp"] * dW.t(), rtol=1e-12, atol=0)   # KP on its synapses
    assert (proj.B_kp.grad[~masks(proj)["kp"]] == 0).all()
    torch.testing.assert_close(proj.R.grad, (m["pfa"] * dW.t()) @ proj.B.t(), rtol=1e-10, atol=1e-12)
    assert proj.B.shape == (24, 8) and proj.R.shape == (9, 24)
    assert not proj.B_fa.requires_grad and not proj.B.requires_grad


def test_masks_partition_every_pair_with_the_requested_densities():
    fractions = {"kp": 0.1, "fa": 0.21, "pfa": 0.59, "none": 0.1}
    proj = projection(mixed(fractions, expansion=1), n_in=300, n_out=200)
    m = masks(proj)
    assert all(t.dtype == torch.bool and t.shape == (300, 200) for t in m.values())
    counts = sum(t.long() for t in m.values())
    assert (counts == 1).all()  # disjoint and covering
    n = 300 * 200
    for g, p in fractions.items():
        assert abs(m[g].double().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5, g
    assert (proj.B_kp[~m["kp"]] == 0).all() and (proj.B_kp[m["kp"]] != 0).all()
    assert (proj.B_fa[~m["fa"]] == 0).all() and (proj.B_fa[m["fa"]] != 0).all()
    # a fixed seed fixes the partition; without one it follows the circuit seed
    same = projection(mixed(fractions, seed=5), n_in=300, n_out=200, seed=1)
    again = projection(mixed(fractions, seed=5), n_in=300, n_out=200, seed=2)
    assert torch.equal(same.mask_kp, again.mask_kp) and not torch.equal(same.mask_kp, proj.mask_kp)
    assert not torch.equal(projection(mixed(fractions), 300, 200, seed=1).mask_kp, proj.mask_kp)


def test_masked_out_synapses_carry_no_error_and_no_weight():
    proj = projection(mixed({"kp": 0.4, "fa": 0.3, "pfa": 0.3}, expansion=2))
    _, _, e_in = pass_through(proj, 4)
    with torch.no_grad():  # garbage outside each group's mask changes nothing
        proj.B_kp[~proj.mask_kp] = 7.0
        proj.B_fa[~proj.mask_fa] = -3.0
    proj.zero_grad()
    _, _, e_again = pass_through(proj, 4)
    torch.testing.assert_close(e_again, e_in, rtol=1e-12, atol=1e-14)
    assert (proj.B_kp.grad[~proj.mask_kp] == 0).all()


def train_steps(model, steps=20, seed=3, batch=16):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(SIZES[-1], SIZES[0], generator=g, dtype=torch.float64)
    opt = make_optimizer(model, Training(lr=0.05, momentum=0.9, weight_decay=0.01))
    losses = []
    for _ in range(steps):
        x = torch.randn(batch, SIZES[0], generator=g, dtype=torch.float64)
        opt.zero_grad()
        loss = model.loss(model(x), (x @ teacher.t()).argmax(1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_keeps_masks_and_fixed_feedback():
    model = small_mlp(mixed({"kp": 0.3, "fa": 0.3, "pfa": 0.4}, expansion=2), SIZES).compile().double()
    p = model.projections["h1->h2"]
    before = {k: v.clone() for k, v in p.named_buffers()}
    B_kp0, R0 = p.B_kp.detach().clone(), p.R.detach().clone()
    assert {id(t) for t in model.feedback_parameters()} >= {id(p.B_kp), id(p.R)}
    train_steps(model, steps=5)
    for k in ("mask_kp", "mask_fa", "mask_pfa", "mask_none", "B_fa", "B"):
        assert torch.equal(getattr(p, k), before[k]), k
    assert not torch.equal(p.B_kp, B_kp0) and not torch.equal(p.R, R0)   # the plastic ones learn
    assert (p.B_kp[~p.mask_kp] == 0).all()                               # also under decay and momentum


def copy_into(dst, src, names):
    with torch.no_grad():
        for d, s in names.items():
            getattr(dst, d).copy_(getattr(src, s))


@pytest.mark.parametrize("group, reference, tensors", [
    ("pfa", PFA(expansion=3, route="explicit"), {"B": "B", "R": "R"}),
    ("kp", KP(), {"B_kp": "B"}),
    ("fa", FA(), {"B_fa": "B"}),
])
def test_one_group_is_its_rule(group, reference, tensors):
    """{"pfa": 1} is PFA's explicit ē route, {"kp": 1} KP, {"fa": 1} FA, given the same tensors."""
    ours = small_mlp(mixed({group: 1}, expansion=3), SIZES).compile().double()
    theirs = small_mlp(reference, SIZES).compile().double()
    for name, p in ours.projections.items():
        if p.sends_error:
            assert masks(p)[group].all()
            copy_into(p, theirs.projections[name], tensors)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, SIZES[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, SIZES[-1], (7,), generator=g)
    for m in (ours, theirs):
        m.loss(m(x), y).backward()
    for name, p in ours.projections.items():
        q = theirs.projections[name]
        torch.testing.assert_close(p.weight.grad, q.weight.grad, rtol=1e-10, atol=1e-14)  # e_in upstream
        for d, s in (tensors.items() if p.sends_error else ()):
            mine, ref = getattr(p, d), getattr(q, s)
            assert (mine.grad is None) == (ref.grad is None)
            if ref.grad is not None:
                torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-10, atol=1e-14)
    assert sorted(e["tensor"] for e in ours.circuit.projections("feedback").values()) == sorted(list(tensors) * 2)


@pytest.mark.parametrize("groups, match", [
    ({"kp": 0.5, "fa": 0.6}, "sum to 1"),
    ({"kp": 1.2, "fa": -0.2}, r"in \[0, 1\]"),
    ({"kp": 0.5, "ka": 0.5}, "unknown groups"),
])
def test_bad_fractions_raise(groups, match):
    with pytest.raises(ValueError, match=f"mixed: .*{match}"):
        mixed(groups)
    with pytest.raises(ValueError, match="mixed"):
        make_rule("mixed", groups=groups)


def test_convolutions_are_refused_by_name():
    c = Circuit("conv", seed=0)
    x = c.add(Input("x0", (2, 6, 6)))
    h1 = c.add(Layer("h1", (3, 6, 6)))
    h2 = c.add(Layer("h2", (3, 6, 6)))
    y = c.add(Readout("out", 4))
    c.connect(x, h1, Conv2d(3, padding=1))
    c.connect(h1, h2, Conv2d(3, padding=1))
    c.connect(h2, y, Dense())
    with pytest.raises(CircuitError, match="projection 'x0->h1': mixed is implemented for Dense"):
        c.feedback(mixed())


def test_a_mixed_circuit_trains_and_its_connectome_has_every_tensor():
    model = small_mlp(mixed({"kp": 0.15, "fa": 0.15, "pfa": 0.7}, expansion=2), SIZES,
                      activation="relu").compile().double()
    losses = train_steps(model, steps=300)
    assert sum(losses[-30:]) < 0.7 * sum(losses[:30])
    records = {r["name"]: r for r in model.connectome()}
    for fwd in ("h1->h2", "h2->out"):
        p = model.projections[fwd]
        for t in ("B_kp", "B_fa", "B", "R"):
            torch.testing.assert_close(records[f"{fwd}:{t}"]["weight"], getattr(p, t).detach())
        assert records[f"{fwd}:R"]["pre"] == f"{fwd}:ebar" and records[f"{fwd}:B"]["post"] == f"{fwd}:ebar"
    # the pair statistics: direct feedback F = B_kp + B_fa (the ē route is not direct)
    routes = {it["forward"]["name"]: it for it in feedback_routes(model.connectome())}
    assert sorted(r["name"] for r in routes["h1->h2"]["direct"]) == ["h1->h2:B_fa", "h1->h2:B_kp"]
    stats = circuit_reciprocity(model.connectome())
    for fwd in ("h1->h2", "h2->out"):
        p, st = model.projections[fwd], stats[fwd]
        direct = (p.mask_kp | p.mask_fa)
        assert st.route == "direct" and st.feedback_names == [f"{fwd}:B_kp", f"{fwd}:B_fa"]
        assert st.bidirectional_pairs == int(direct.sum()) and st.connected_pairs == p.weight.numel()
        F = p.B_kp.detach() + p.B_fa
        kp = p.mask_kp
        # after training with decay the kp group's feedback follows W much more than the fa group's
        corr = lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert corr(p.weight.t()[kp], F[kp]) > corr(p.weight.t()[p.mask_fa], F[p.mask_fa])
        cos = (p.weight.t() * F).sum() / (p.weight.norm() * F.norm())
        assert st.alignment_deg == pytest.approx(torch.rad2deg(torch.arccos(cos)).item(), abs=1e-6)


@pytest.mark.parametrize("groups", [{"kp": 0.3, "fa": 0.2, "pfa": 0.5}, {"pfa": 1.0}, {"kp": 0.5, "none": 0.5}])
def test_implicit_route_trains_like_the_explicit_one(groups):
    """B_kp = mask_kp ⊙ Wᵀ + a E₀_kp and R = (mask_pfa ⊙ Wᵀ)Bᵀ + a E₀_R under one SGD setting:
    the same weights as updating B_kp and R step by step (momentum, first-epoch decay, lr drop)."""
    training = Training(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.03)
    explicit = small_mlp(mixed(groups, expansion=3, seed=5), TEACHER_SIZES, activation="relu").compile()
    implicit = small_mlp(mixed(groups, expansion=3, seed=5), TEACHER_SIZES, activation="relu").compile(implicit_feedback=True)
    assert all(p.implicit for p in implicit.projections.values() if p.sends_error)
    assert not implicit.feedback_parameters()
    train_alike(implicit, explicit, training, "R" if "pfa" in groups else "B_kp")  # W and that tensor agree
    if "kp" in groups and "pfa" in groups:
        for name, p in implicit.projections.items():
            if p.sends_error:
                torch.testing.assert_close(p.rule.tensor(p, "B_kp"), explicit.projections[name].B_kp, rtol=1e-4, atol=1e-5)
    a, b = implicit.alignment(), explicit.alignment()
    for name in a:
        assert abs(a[name]["alignment_deg"] - b[name]["alignment_deg"]) < 1e-2


def test_mixed_pfa_group_draws_b_with_variance_one_over_n_bar_and_refuses_bad_expansions():
    """The PFA group's B (N̄ × N_out) has PFA's variance 1/N̄ (Glorot with gain √((1 + 1/expansion)/2))."""
    proj = Projection("a->b", Dense(), (200,), (100,), mixed(groups={"pfa": 1.0}, expansion=4), sends_error=True,
                      seed=0)
    n_bar = proj.B.shape[0]
    assert n_bar == 400 and proj.B.var().item() * n_bar == pytest.approx(1, rel=0.05)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="expansion must be positive"):
            mixed(groups={"pfa": 1.0}, expansion=bad)
