"""Every rule's errors and weight changes against a closed-form float64 reference."""
import pytest
import torch
import torch.nn.functional as F

from helpers import small_mlp
from plasticity import BP, BRSF, DFA, FA, FRSF, KP, PFA, USF, PFAo, PFAoSquare, make_rule
from plasticity.brsf import draw_unit_magnitudes

ACT = {"tanh": (torch.tanh, lambda a: 1 - torch.tanh(a) ** 2),
       "relu": (torch.relu, lambda a: (a > 0).to(a.dtype))}


def run_compiled(model, x, y):
    for p in model.parameters():
        p.grad = None
    out = model(x)
    model.loss(out, y).backward()
    return out


def reference(model, x, y, feedback, activation="tanh"):
    """Closed-form pass through the chain x0 → h1 → … → out.

    ``feedback(name, proj, delta, e_L)`` returns the error the projection sends to its pre
    population (before σ'). Returns ({projection: ΔW}, {population: bias grad}, {projection: δ},
    {projection: x_pre})."""
    act, dact = ACT[activation]
    names = list(model.projections)
    xs, pre_acts = [x.flatten(1)], []
    for i, name in enumerate(names):
        a = F.linear(xs[-1], model.projections[name].weight) + model.biases[model._plan[i][0].name]
        pre_acts.append(a)
        xs.append(act(a) if i < len(names) - 1 else a)
    out = xs[-1]
    n = out.shape[0]
    e_L = (torch.softmax(out, 1) - F.one_hot(y, out.shape[1]).to(out.dtype)) / n
    delta = e_L
    grads, bias_grads, deltas = {}, {}, {}
    for i in reversed(range(len(names))):
        name = names[i]
        proj = model.projections[name]
        deltas[name] = delta
        grads[name] = delta.t() @ xs[i]
        bias_grads[model._plan[i][0].name] = delta.sum(0)
        if i > 0:
            delta = feedback(name, proj, delta, e_L) * dact(pre_acts[i - 1])
    return grads, bias_grads, deltas, xs


def check(model, grads, bias_grads, exact=False):
    for name, g in grads.items():
        got = model.projections[name].weight.grad
        if exact:
            assert torch.equal(got, g), name
        else:
            torch.testing.assert_close(got, g, rtol=1e-10, atol=1e-12, msg=name)
    for name, g in bias_grads.items():
        torch.testing.assert_close(model.biases[name].grad, g, rtol=1e-10, atol=1e-12)


def setup(rule, activation="tanh", batch=8, sizes=(6, 7, 5, 4)):
    model = small_mlp(rule, sizes=sizes, activation=activation).compile().double()
    x = torch.randn(batch, sizes[0], dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (batch,))
    return model, x, y


def test_bp_matches_autograd_exactly():
    model, x, y = setup(BP(), activation="relu")
    run_compiled(model, x, y)
    # the same network written as plain PyTorch, with copies of the same tensors
    Ws = [model.projections[n].weight.detach().clone().requires_grad_() for n in model.projections]
    bs = [model.biases[p.name].detach().clone().requires_grad_() for p, *_ in model._plan]
    h = x
    for i, (W, b) in enumerate(zip(Ws, bs)):
        h = F.linear(h, W) + b
        if i < len(Ws) - 1:
            h = torch.relu(h)
    F.cross_entropy(h, y).backward()
    for name, W in zip(model.projections, Ws):
        assert torch.equal(model.projections[name].weight.grad, W.grad), name
    for (p, *_), b in zip(model._plan, bs):
        assert torch.equal(model.biases[p.name].grad, b.grad)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bp_closed_form(activation):
    model, x, y = setup(BP(), activation)
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.weight, activation)
    check(model, grads, bias_grads)


def test_fa():
    model, x, y = setup(FA())
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.B.t())
    check(model, grads, bias_grads)
    for p in model.projections.values():
        if p.sends_error:
            assert not p.B.requires_grad and p.B.shape == p.weight.t().shape


def test_fa_feedback_differs_from_wt():
    """FA's error is not BP's: the test above would pass for BP too if B were Wᵀ."""
    model, _, _ = setup(FA())
    p = model.projections["h1->h2"]
    assert not torch.allclose(p.B, p.weight.t())


def test_dfa_uses_readout_error():
    model, x, y = setup(DFA())
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e_L: e_L @ p.B.t())
    check(model, grads, bias_grads)
    assert model.projections["h1->h2"].B.shape == (7, 4)  # N_pre × N_readout


def test_dfa_sends_each_layers_error_when_autograd_reaches_that_layer(monkeypatch):
    """B e_L for a layer is made just before that layer's backward (ReadoutTap), not for every
    layer at the top of the backward pass: one layer's error held at a time. Order of the calls
    in one backward pass, deepest layer first."""
    model, x, y = setup(DFA())
    calls = []
    real_feedback, real_backward = DFA.readout_feedback, DFA.backward
    monkeypatch.setattr(DFA, "readout_feedback", lambda self, proj, e, shape: (
        calls.append(("B e_L", proj.name)), real_feedback(self, proj, e, shape))[1])
    monkeypatch.setattr(DFA, "backward", lambda self, proj, *a: (
        calls.append(("ΔW", proj.name)), real_backward(self, proj, *a))[1])
    model.loss(model(x), y).backward()
    assert calls == [("B e_L", "h2->out"), ("ΔW", "h2->out"), ("B e_L", "h1->h2"), ("ΔW", "h1->h2")], calls


@pytest.mark.parametrize("scale", ["xavier", "he", 0.3])
def test_usf(scale):
    model, x, y = setup(USF(scale=scale))
    run_compiled(model, x, y)

    def fb(name, p, d, e):
        n_out, n_in = p.weight.shape
        s = {"xavier": (2 / (n_in + n_out)) ** 0.5, "he": (2 / n_in) ** 0.5}.get(scale, scale)
        return d @ (s * p.weight.sign())
    grads, bias_grads, _, _ = reference(model, x, y, fb)
    check(model, grads, bias_grads)


def test_usf_last_layer_bp():
    model, x, y = setup(USF(last_layer_bp=True))
    run_compiled(model, x, y)

    def fb(name, p, d, e):
        if name == "h2->out":
            return d @ p.weight
        n_out, n_in = p.weight.shape
        return d @ ((2 / (n_in + n_out)) ** 0.5 * p.weight.sign())
    grads, bias_grads, _, _ = reference(model, x, y, fb)
    check(model, grads, bias_grads)


def test_frsf():
    model, x, y = setup(FRSF())
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ (p.Mt * p.weight.sign()))
    check(model, grads, bias_grads)
    assert all((p.Mt >= 0).all() for p in model.projections.values() if p.sends_error)


def test_brsf_draws_fresh_magnitudes_every_batch():
    model, x, y = setup(BRSF())
    torch.manual_seed(123)
    run_compiled(model, x, y)
    # replay the draws: backward visits h2->out first, then h1->h2
    torch.manual_seed(123)
    draws = {n: draw_unit_magnitudes(model.projections[n].weight) for n in ["h2->out", "h1->h2"]}

    def fb(name, p, d, e):
        return d @ (draws[name] * p.magnitude_bound * p.weight.sign())
    grads, bias_grads, _, _ = reference(model, x, y, fb)
    check(model, grads, bias_grads)
    # a second batch draws new magnitudes: the first layer's change differs from the first batch's
    first = model.projections["x0->h1"].weight.grad.clone()
    torch.manual_seed(7)
    run_compiled(model, x, y)
    assert not torch.allclose(first, model.projections["x0->h1"].weight.grad)


def test_kp_feedback_changes_like_wt():
    model, x, y = setup(KP())
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.B.t())
    check(model, grads, bias_grads)
    for name, p in model.projections.items():
        if p.sends_error:
            torch.testing.assert_close(p.B.grad, grads[name].t(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [PFA, PFAo])
@pytest.mark.parametrize("route", ["explicit", "auto"])
@pytest.mark.parametrize("batch", [2, 300])
def test_pfa_explicit_ebar(cls, route, batch):
    """e_in = R (B δ) and ΔR = Σ x ēᵀ, step by step as in the paper, for every route."""
    model, x, y = setup(cls(expansion=3, route=route), batch=batch)
    run_compiled(model, x, y)
    grads, bias_grads, deltas, xs = reference(model, x, y, lambda n, p, d, e: (d @ p.B.t()) @ p.R.t())
    check(model, grads, bias_grads)
    for i, (name, p) in enumerate(model.projections.items()):
        if p.sends_error:
            ebar = deltas[name] @ p.B.t()
            torch.testing.assert_close(p.R.grad, xs[i].t() @ ebar, rtol=1e-10, atol=1e-12)
            assert p.B.shape == (3 * p.weight.shape[0], p.weight.shape[0])
            assert p.R.shape == (p.weight.shape[1], 3 * p.weight.shape[0])


def test_pfa_auto_route_takes_both_orders():
    rule = PFA(expansion=10)
    assert rule._routes(64, 512, 512, 5120, True) == ("explicit", "explicit")
    assert rule._routes(100_000, 64, 64, 640, True) == ("product", "factored")
    assert rule._routes(100_000, 64, 64, 640, False)[1] == "factored"


def test_pfa_initialisation():
    model = small_mlp(PFA(expansion=10), sizes=(50, 200, 100, 10)).compile()
    p = model.projections["h1->h2"]
    n_bar = p.B.shape[0]
    assert abs(p.B.var().item() * n_bar - 1) < 0.05  # variance 1/N̄
    BtB = p.B.t() @ p.B
    assert (BtB.diagonal() - 1).abs().mean() < 0.1
    o = small_mlp(PFAo(expansion=10), sizes=(50, 200, 100, 10)).compile().projections["h1->h2"]
    torch.testing.assert_close(o.B.t() @ o.B, torch.eye(100), atol=1e-5, rtol=0)


def test_pfa_o_square_is_the_official_codes_pfa_o():
    """pfa-o-square: N̄ = N_out, B square orthogonal (BᵀB = BBᵀ = I); its float64 step is
    pfa_o(expansion=1)'s, tensor for tensor, against the closed form e_in = R (B δ)."""
    model, x, y = setup(PFAoSquare(route="explicit"), batch=5)
    run_compiled(model, x, y)
    grads, bias_grads, deltas, xs = reference(model, x, y, lambda n, p, d, e: (d @ p.B.t()) @ p.R.t())
    check(model, grads, bias_grads)
    for i, (name, p) in enumerate(model.projections.items()):
        if p.sends_error:
            n_out = p.weight.shape[0]
            assert p.B.shape == (n_out, n_out)
            eye = torch.eye(n_out, dtype=p.B.dtype)
            torch.testing.assert_close(p.B.t() @ p.B, eye, rtol=0, atol=1e-6)  # drawn in float32
            torch.testing.assert_close(p.B @ p.B.t(), eye, rtol=0, atol=1e-6)
            torch.testing.assert_close(p.R.grad, xs[i].t() @ (deltas[name] @ p.B.t()), rtol=1e-10, atol=1e-12)
    same, _, _ = setup(PFAo(expansion=1, route="explicit"), batch=5)
    for (name, p), (_, q) in zip(model.projections.items(), same.projections.items()):
        if p.sends_error:
            assert torch.equal(p.B, q.B) and torch.equal(p.R.detach(), q.R.detach()), name
    assert make_rule("pfa-o-square").options["expansion"] == 1
    with pytest.raises(ValueError, match="pfa-o-square: N̄ = N_out"):
        PFAoSquare(expansion=10)


def test_first_projection_has_no_feedback():
    model = small_mlp(PFA(expansion=2)).compile()
    first = model.projections["x0->h1"]
    assert not first.sends_error and not hasattr(first, "R") and not hasattr(first, "B")


def test_make_rule_names():
    for name in ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "pfa", "pfa-o", "PFA_O"]:
        assert make_rule(name).name == name.lower().replace("_", "-")
    with pytest.raises(ValueError, match="unknown rule 'xyz'"):
        make_rule("xyz")


def test_ifa_at_90_degrees_is_fa_in_scale_and_angle():
    """The 90° anomaly of the 3-epoch sweep (issue 22) is not in the construction: on the MNIST
    circuit, IFA(90°)'s B has FA's Frobenius norm (both ≈ ‖W₀‖: IFA sets it, FA's Glorot draw
    gives it within 1%), the same per-synapse sd, and FA's angle to W₀ᵀ (90° exactly, FA within
    a few 57°/√n). What differs is the draw itself: IFA's B is Gaussian, FA's uniform."""
    from circuits import zoo
    from connectomes import alignment_deg
    from plasticity import IFA

    for seed in range(2):
        fa = zoo.mlp((784, 512, 512, 10), seed=seed, feedback=FA()).compile()
        ifa = zoo.mlp((784, 512, 512, 10), seed=seed, feedback=IFA(angle=90)).compile()
        for name, p in fa.projections.items():
            if not p.sends_error:
                continue
            q = ifa.projections[name]
            torch.testing.assert_close(p.weight, q.weight)  # the same W₀
            assert q.B.norm().item() == pytest.approx(q.weight.norm().item(), rel=1e-5)
            assert p.B.norm().item() == pytest.approx(q.B.norm().item(), rel=0.01)
            assert p.B.std().item() == pytest.approx(q.B.std().item(), rel=0.01)
            assert alignment_deg(q.weight, q.B) == pytest.approx(90, abs=1e-3)
            assert abs(alignment_deg(p.weight, p.B) - 90) < 3 * 57.3 / p.weight.numel() ** 0.5


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 135.0])
def test_ifa_initial_angle_is_exact(angle):
    from connectomes import alignment_deg, norm_ratio
    from plasticity import IFA
    model = small_mlp(IFA(angle=angle), sizes=(20, 30, 25, 10)).compile()
    for name, p in model.projections.items():
        if p.sends_error:
            assert abs(alignment_deg(p.weight, p.B) - angle) < 0.1, name
            assert norm_ratio(p.weight, p.B) == pytest.approx(1, rel=1e-5)
    model64, x, y = setup(IFA(angle=60.0))
    run_compiled(model64, x, y)
    grads, bias_grads, _, _ = reference(model64, x, y, lambda n, p, d, e: d @ p.B.t())
    check(model64, grads, bias_grads)
    with pytest.raises(ValueError, match="angle must be between 0 and 180"):
        IFA(angle=200)


def test_brsf_magnitudes_are_uniform():
    torch.manual_seed(0)
    u = draw_unit_magnitudes(torch.empty(400, 501, dtype=torch.float64))
    assert u.shape == (400, 501) and 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert (counts / u.numel() - 0.1).abs().max() < 0.005
    assert not torch.equal(u, draw_unit_magnitudes(u))
    # one byte each: the 256 levels (k + ½)/256, every one drawn about equally often
    k = u * 256 - 0.5
    assert torch.equal(k, k.round())
    level_counts = torch.bincount(k.long().flatten(), minlength=256)
    assert (level_counts / u.numel() * 256 - 1).abs().max() < 0.2


@pytest.mark.parametrize("rule", ["bp", "fa", "pfa"])
def test_population_bias_fused_or_alone_matches_a_separate_add(rule):
    """A population's bias rides on its first projection with synapses (one fused op, as in
    nn.Linear) or, fed only by weightless maps, is added on its own; both give the plain sum
    W x + Σ skips + b and Δb = Σ δ."""
    from circuits import Circuit
    from connectomes import Dense, Identity
    from populations import Input, Layer, Readout
    torch.manual_seed(0)
    c = Circuit("bias", seed=3)
    x = c.add(Input("x", 6))
    h = c.add(Layer("h", 5, activation="tanh"))
    s = c.add(Layer("s", 5, activation="tanh", bias=True))   # Identity from h, then Dense from x
    t = c.add(Layer("t", 5, activation="tanh", bias=True))   # weightless input only
    y = c.add(Readout("y", 3))
    c.connect(x, h, Dense())
    c.connect(h, s, Identity(), name="h_skip")
    c.connect(x, s, Dense())
    c.connect(s, t, Identity())
    c.connect(t, y, Dense())
    c.feedback(make_rule(rule))
    m = c.compile().double()
    assert [name for name, _, _, carries in m._plan[1].incoming if carries] == ["x->s"]
    assert m._plan[2].add_bias and not any(carries for *_, carries in m._plan[2].incoming)
    with torch.no_grad():
        for name in ("s", "t"):
            m.biases[name].uniform_(-1, 1)
    xs, ys = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    run_compiled(m, xs, ys)
    W = {n: p.weight.detach().clone().requires_grad_() for n, p in m.projections.items()}
    b = {n: p.detach().clone().requires_grad_() for n, p in m.biases.items()}
    hh = torch.tanh(F.linear(xs, W["x->h"]) + b["h"])
    ss = torch.tanh(hh + F.linear(xs, W["x->s"]) + b["s"])
    tt = torch.tanh(ss + b["t"])
    out = F.linear(tt, W["t->y"]) + b["y"]
    torch.testing.assert_close(m(xs), out)
    # closed form: the readout error reaches t through the rule's feedback of t->y (Wᵀ for BP),
    # then passes the weightless maps exactly
    e_y = (torch.softmax(out, 1) - F.one_hot(ys, 3).double()) / len(ys)
    delta_t = e_y @ m.projections["t->y"].effective_feedback().t() * (1 - tt ** 2)
    delta_s = delta_t * (1 - ss ** 2)
    delta_h = delta_s * (1 - hh ** 2)
    for name, delta in {"y": e_y, "t": delta_t, "s": delta_s, "h": delta_h}.items():
        torch.testing.assert_close(m.biases[name].grad, delta.sum(0).detach(), rtol=1e-10, atol=1e-12, msg=name)
