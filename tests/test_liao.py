"""Liao, Leibo & Poggio (2016): partial sign concordance of the sign rules, the raw uSF, Batch
Manhattan's variants, batch norm on dense circuits and the per-population error norm, each
against a closed form in float64 (the style of tests/test_rules.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

import test_conv_rules as conv
from circuits import Training, zoo
from circuits.errors import ConfigError
from circuits.rebuild import rebuild
from circuits.train import make_optimizer
from connectomes import FixedProbability, sign_concordance
from helpers import small_mlp
from plasticity import BRSF, FRSF, USF, make_rule
from plasticity.brsf import draw_unit_magnitudes
from plasticity.optim import BatchManhattanSGD
from test_rules import check, reference, run_compiled, setup

SIGN_RULES = {"usf": USF, "brsf": BRSF, "frsf": FRSF}


def flipped_signs(p):
    """C ⊙ sign(W) in W's layout (C = 1 without the buffer)."""
    s = p.weight.detach().sign()
    return s * p.C if hasattr(p, "C") else s


# -- 1. concordance -----------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0.0, 0.3, 0.75])
def test_usf_and_frsf_concordance_closed_form(q):
    """e_in = s (C ⊙ sign W)ᵀ δ (uSF), (|M| ⊙ C ⊙ sign W)ᵀ δ (frSF), C = ±1 with round((1−q)n) −1."""
    for rule, fb in [(USF(scale="none", concordance=q), lambda n, p, d, e: d @ flipped_signs(p)),
                     (USF(concordance=q), lambda n, p, d, e: d @ (p.sign_scale * flipped_signs(p))),
                     (FRSF(concordance=q), lambda n, p, d, e: d @ (p.Mt * flipped_signs(p)))]:
        model, x, y = setup(rule)
        run_compiled(model, x, y)
        grads, bias_grads, _, _ = reference(model, x, y, fb)
        check(model, grads, bias_grads)
        for p in model.projections.values():
            if p.sends_error:
                n = p.weight.numel()
                assert p.C.dtype == torch.float64 and int((p.C == -1).sum()) == round((1 - q) * n)
                assert set(p.C.unique().tolist()) <= {-1.0, 1.0}


def test_brsf_concordance_closed_form():
    model, x, y = setup(BRSF(concordance=0.4))
    torch.manual_seed(11)
    run_compiled(model, x, y)
    torch.manual_seed(11)  # replay the draws: backward visits h2->out first
    draws = {n: draw_unit_magnitudes(model.projections[n].weight) for n in ["h2->out", "h1->h2"]}
    grads, bias_grads, _, _ = reference(
        model, x, y, lambda n, p, d, e: d @ (draws[n] * p.magnitude_bound * flipped_signs(p)))
    check(model, grads, bias_grads)


@pytest.mark.parametrize("rule", ["usf", "frsf", "brsf"])
def test_concordance_on_a_convolution(rule):
    """A conv synapse is one kernel entry: C has the kernel's shape and flips whole taps."""
    torch.manual_seed(3)
    model, x, y = conv.setup(make_rule(rule, concordance=0.5), "strided_padded")
    p = model.projections["h1->h2"]
    assert p.C.shape == p.weight.shape and int((p.C == -1).sum()) == round(0.5 * p.weight.numel())
    torch.manual_seed(3)
    model, x, y = conv.setup(make_rule(rule, concordance=0.5), "strided_padded")
    torch.manual_seed(3)
    draws = {n: draw_unit_magnitudes(model.projections[n].weight) for n in ["h2->out", "h1->h2"]}

    def B_of(p):
        s = flipped_signs(p)
        if rule == "usf":
            return (p.sign_scale * s).transpose(0, 1)
        if rule == "frsf":
            return (p.Mt * s).transpose(0, 1)
        return (draws[p.name] * p.magnitude_bound * s).transpose(0, 1)
    grads, bias, _ = conv.reference(model, x, y, conv.fb_conv(B_of), conv.fb_dense(B_of))
    conv.check(model, grads, bias)


@pytest.mark.parametrize("rule", list(SIGN_RULES))
def test_measured_concordance_is_q_and_stays_fixed_through_training(rule):
    """On 200 × 100 synapses the measured sign concordance of the effective feedback (the metric
    the runs record, and the connectome's feedback record) is q to 1/n, and C is the same buffer
    after 20 SGD steps (W's signs move; the feedback's concordance with them does not)."""
    sizes = (30, 200, 100, 10)
    for q in (0.0, 0.25, 0.5, 0.9):
        model = zoo.mlp(sizes, feedback=make_rule(rule, concordance=q)).compile()
        p = model.projections["h1->h2"]
        C0, signs0 = p.C.clone(), p.weight.detach().sign().clone()
        assert sign_concordance(p.weight, p.effective_feedback()) == pytest.approx(q, abs=1 / p.weight.numel())
        opt = make_optimizer(model, Training(lr=0.5, momentum=0.9))
        g = torch.Generator().manual_seed(0)
        for _ in range(20):
            x = torch.randn(32, sizes[0], generator=g)
            opt.zero_grad()
            model.loss(model(x), (x[:, 0] > 0).long()).backward()
            opt.step()
        assert not torch.equal(p.weight.detach().sign(), signs0)  # W's signs did move
        assert torch.equal(p.C, C0)
        measured = model.alignment()["h1->h2"]["sign_concordance"]
        assert measured == pytest.approx(q, abs=1 / p.weight.numel())
        record = next(r for r in model.connectome() if r["kind"] == "feedback" and r["forward"] == "h1->h2")
        assert torch.equal(record["weight"], p.effective_feedback())
        assert sign_concordance(p.weight, record["weight"]) == measured


@pytest.mark.parametrize("rule", list(SIGN_RULES))
def test_concordance_one_is_the_plain_rule_bit_for_bit(rule):
    a = small_mlp(make_rule(rule)).compile().double()
    b = small_mlp(make_rule(rule, concordance=1.0)).compile().double()
    assert a.state_dict().keys() == b.state_dict().keys()  # no C buffer at q = 1
    assert make_rule(rule, concordance=1).describe() == make_rule(rule).describe()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 4, (8,))
    for m in (a, b):
        torch.manual_seed(4)  # brSF's draws
        run_compiled(m, x, y)
    for name in a.projections:
        assert torch.equal(a.projections[name].weight.grad, b.projections[name].weight.grad), name


@pytest.mark.parametrize("rule", list(SIGN_RULES))
@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan"), "half", True])
def test_bad_concordance_names_the_rule(rule, q):
    with pytest.raises(ValueError, match=f"{rule}: concordance must be a number in \\[0, 1\\]"):
        make_rule(rule, concordance=q)


def test_concordance_is_saved_and_rebuilt():
    """C is a buffer (state_dict, checkpoints); describe() records q, and the circuit rebuilt from
    the description draws the same C from the same seed."""
    c = zoo.mlp((20, 30, 20, 5), seed=3, feedback=USF(scale="none", concordance=0.25))
    assert c.describe()["projections"][1]["rule"] == {"rule": "usf", "scale": "none", "last_layer_bp": False,
                                                      "concordance": 0.25}
    model = c.compile()
    assert "projections.h1->h2.C" in model.state_dict()
    again = rebuild(c.describe())
    assert again.describe() == c.describe()
    torch.testing.assert_close(again.compile().state_dict()["projections.h1->h2.C"], model.state_dict()["projections.h1->h2.C"])
    other = zoo.mlp((20, 30, 20, 5), seed=3, feedback=USF(scale="none", concordance=0.25)).compile()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.projections["h1->h2"].C, model.projections["h1->h2"].C)
    # frSF: M is the plain rule's draw (C is drawn after it from the same generator)
    plain = zoo.mlp((20, 30, 20, 5), seed=3, feedback=FRSF()).compile()
    mixed = zoo.mlp((20, 30, 20, 5), seed=3, feedback=FRSF(concordance=0.5)).compile()
    assert torch.equal(plain.projections["h1->h2"].Mt, mixed.projections["h1->h2"].Mt)


def test_concordance_with_sparse_feedback():
    model, x, y = setup(USF(connector=FixedProbability(0.5), concordance=0.5))
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ (p.sign_scale * flipped_signs(p) * p.S))
    check(model, grads, bias_grads)


# -- 2. Liao et al.'s raw uSF -----------------------------------------------------------------------
def test_raw_usf_is_scale_none_and_scale_one():
    model, x, y = setup(USF(scale="none"))
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.weight.sign())
    check(model, grads, bias_grads)
    one, _, _ = setup(USF(scale=1))
    run_compiled(one, x, y)
    for name, p in model.projections.items():
        assert torch.equal(p.weight.grad, one.projections[name].weight.grad)
    with pytest.raises(ValueError, match="'none' \\(1: Liao et al.'s raw sign\\)"):
        USF(scale="raw")


# -- 3. Batch Manhattan -----------------------------------------------------------------------------
def manhattan_reference(params, grads, state, sign, lr, mu, wd):
    """One closed-form BM step of each parameter (float64, in place of the copies in ``params``)."""
    for i, (w, g) in enumerate(zip(params, grads)):
        if sign == "gradient":
            d = torch.sign(g) + wd * w
        elif sign == "decayed":
            d = torch.sign(g + wd * w)
        else:
            d = g + wd * w
        if mu:
            state[i] = d.clone() if i not in state else mu * state[i] + d
            d = state[i]
        w -= lr * (torch.sign(d) if sign == "step" else d)


@pytest.mark.parametrize("sign", ["gradient", "decayed", "step"])
@pytest.mark.parametrize("mu,wd", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "pfa", "ifa"])
def test_batch_manhattan_closed_form(rule, sign, mu, wd):
    """Three float64 steps of every rule with Batch Manhattan against w ← w − lr·(BM step) written
    out; W, biases and plastic feedback (KP's B, PFA's R) alike, through the training setting."""
    model = small_mlp(make_rule(rule, **({"expansion": 2} if rule == "pfa" else {}))).compile().double()
    training = Training(lr=0.05, momentum=mu, weight_decay=wd).with_values(
        {"batch_manhattan": "true", "manhattan_sign": sign})
    opt = make_optimizer(model, training)
    assert type(opt) is BatchManhattanSGD and opt.sign == sign
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len(model.forward_parameters()) + len(model.feedback_parameters())
    ref, state = [p.detach().clone() for p in params], {}
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        model.loss(model(x), y).backward()
        grads = [p.grad.clone() for p in params]
        manhattan_reference(ref, grads, state, sign, 0.05, mu, wd)
        opt.step()
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-15)
    if rule in ("kp", "pfa"):  # the plastic feedback moved by BM steps of exactly lr per synapse
        assert model.feedback_parameters()
        first = model.feedback_parameters()[0]
        assert first.grad is not None and (first.grad != 0).any()


def test_batch_manhattan_settings_are_checked():
    with pytest.raises(ConfigError, match="manhattan_sign='x' must be one of gradient, decayed, step"):
        Training(manhattan_sign="x").check()
    with pytest.raises(ValueError, match="Batch Manhattan: sign='x'"):
        BatchManhattanSGD([torch.nn.Parameter(torch.zeros(1))], sign="x", lr=0.1)


# -- 4. batch norm on dense circuits ------------------------------------------------------------------
def bn_mlp(rule, activation="tanh", sizes=(6, 7, 5, 4)):
    model = zoo.mlp(sizes, activation=activation, norm="batch", feedback=rule).compile().double()
    with torch.no_grad():  # a non-trivial affine map and running statistics
        for bn in model.norms.values():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def bn_reference(model, x, y, feedback, train, activation="tanh"):
    """Closed-form pass through x → BN(W x) → σ → … → out with the rule's ``feedback(proj, δ)``
    (the error sent to the pre population) and BN's exact backward (autograd of F.batch_norm
    alone). Returns {projection: ΔW}, {norm: (Δγ, Δβ)}."""
    act, dact = {"tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
                             "relu": (torch.relu, lambda z: (z > 0).double())}[activation]
    names = list(model.projections)
    xs, zs, bns = [x], [], []
    for i, name in enumerate(names):
        pop = model._plan[i].population.name
        a = F.linear(xs[-1], model.projections[name].weight.detach())
        if pop in model.norms:
            bn = model.norms[pop]
            a = a.detach().requires_grad_()
            gamma, beta = bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_()
            z = F.batch_norm(a, bn.running_mean.clone(), bn.running_var.clone(), gamma, beta, training=train, eps=bn.eps)
            bns.append((pop, a, z, gamma, beta))
            zs.append(z.detach())
            xs.append(act(z.detach()))
        else:
            xs.append(a + model.biases[pop].detach())
    e_L = (torch.softmax(xs[-1], 1) - F.one_hot(y, xs[-1].shape[1]).double()) / len(y)
    delta, grads, norm_grads = e_L, {}, {}
    for i in reversed(range(len(names))):
        grads[names[i]] = delta.t() @ xs[i]
        if i > 0:
            g = feedback(model.projections[names[i]], delta) * dact(zs[i - 1])
            pop, a, z, gamma, beta = bns[i - 1]
            delta, dgamma, dbeta = torch.autograd.grad(z, (a, gamma, beta), g)
            norm_grads[pop] = (dgamma, dbeta)
    return grads, norm_grads


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bp_through_dense_batch_norm_equals_autograd(train, activation):
    """For BP the compiled circuit's ΔW (and Δγ, Δβ) equal plain PyTorch's on the same network
    written with nn.BatchNorm1d, in train and eval mode."""
    torch.manual_seed(1)
    model = bn_mlp(make_rule("bp"), activation)
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 4, (9,))
    plain = torch.nn.ModuleList(torch.nn.Linear(a, b, bias=False).double() for a, b in [(6, 7), (7, 5), (5, 4)])
    norms = [torch.nn.BatchNorm1d(n).double() for n in (7, 5)]
    with torch.no_grad():
        for lin, name in zip(plain, model.projections):
            lin.weight.copy_(model.projections[name].weight)
        for bn, name in zip(norms, ["h1", "h2"]):
            bn.load_state_dict(model.norms[name].state_dict())
    model.train(train)
    for m in (*plain, *norms):
        m.train(train)
    run_compiled(model, x, y)
    act = torch.tanh if activation == "tanh" else torch.relu
    h = act(norms[0](plain[0](x)))
    h = act(norms[1](plain[1](h)))
    F.cross_entropy(plain[2](h) + model.biases["classes"].detach(), y).backward()
    for lin, name in zip(plain, model.projections):
        torch.testing.assert_close(model.projections[name].weight.grad, lin.weight.grad, rtol=1e-12, atol=1e-14)
    for bn, name in zip(norms, ["h1", "h2"]):
        torch.testing.assert_close(model.norms[name].weight.grad, bn.weight.grad, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(model.norms[name].bias.grad, bn.bias.grad, rtol=1e-12, atol=1e-14)
        if train:  # the running statistics moved the same way
            torch.testing.assert_close(model.norms[name].running_mean, bn.running_mean)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "kp", "pfa"])
def test_rule_errors_pass_dense_batch_norm_exactly(rule, train):
    """The error a rule sends (FA: B δ) reaches W below through BN's exact backward."""
    model = bn_mlp(make_rule(rule, **({"expansion": 2, "route": "explicit"} if rule == "pfa" else {})))
    model.train(train)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(9, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (9,), generator=g)
    run_compiled(model, x, y)
    fb = {"fa": lambda p, d: d @ p.B.t(), "kp": lambda p, d: d @ p.B.detach().t(),
          "usf": lambda p, d: d @ (p.sign_scale * p.weight.detach().sign()),
          "frsf": lambda p, d: d @ (p.Mt * p.weight.detach().sign()),
          "pfa": lambda p, d: (d @ p.B.t()) @ p.R.detach().t()}[rule]
    grads, norm_grads = bn_reference(model, x, y, fb, train)
    for name, gW in grads.items():
        torch.testing.assert_close(model.projections[name].weight.grad, gW, rtol=1e-10, atol=1e-13, msg=name)
    for pop, (dgamma, dbeta) in norm_grads.items():
        torch.testing.assert_close(model.norms[pop].weight.grad, dgamma, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(model.norms[pop].bias.grad, dbeta, rtol=1e-10, atol=1e-13)


def test_zoo_mlp_norm_option():
    c = zoo.mlp((10, 8, 6, 3), norm="batch")
    assert [p.norm for p in c.populations() if p.kind == "layer"] == ["batch", "batch"]
    assert not any(p.bias for p in c.populations() if p.kind == "layer")
    assert zoo.mlp((10, 8, 3)).describe() == zoo.mlp((10, 8, 3), norm=None).describe()
    assert rebuild(c.describe()).describe() == c.describe()


# -- 5. the error norm per population -----------------------------------------------------------------
def test_error_norms_closed_form():
    """‖e_P‖ = mean over the batch of ‖n ∂(mean loss)/∂a_P,i‖₂, with the rule's own feedback."""
    model, x, y = setup(USF(scale="none"), batch=7)
    _, _, deltas, _ = reference(model, x, y, lambda n, p, d, e: d @ p.weight.sign())
    W2, W3 = (model.projections[n].weight.detach() for n in ("h1->h2", "h2->out"))
    expect = {"out": deltas["h2->out"], "h2": deltas["h2->out"] @ W3.sign(), "h1": deltas["h1->h2"] @ W2.sign()}
    got = model.error_norms(x, y)
    assert set(got) == {"h1", "h2", "out"}
    for name, e in expect.items():
        assert got[name] == pytest.approx((7 * e).norm(dim=1).mean().item(), rel=1e-12), name
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated


def deep_mlp(rule, norm=None, width=64, depth=6):
    """20 → 6 × 64 ReLU → 5, the deep circuit of the error-norm tests."""
    return zoo.mlp((20, *[width] * depth, 5), norm=norm, feedback=rule, name="deep").compile()


def teacher(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(5, 20, generator=g)
    for _ in range(n):
        x = torch.randn(64, 20, generator=g)
        yield x, (x @ T.t()).argmax(1)


def layer_norms(model, probe, depth=6):
    en = model.error_norms(*probe)
    return [en[f"h{i}"] for i in range(depth, 0, -1)]  # from the readout's side to the input's


def test_raw_sign_feedback_error_grows_layer_by_layer_and_batch_norm_bounds_it():
    """Raw uSF (unit-magnitude sign feedback) on a 6 × 64 ReLU MLP: each sign(Wᵀ) multiplies the
    error by about √64 (64 ±1 terms) and ReLU's σ' keeps half of it, so ‖e‖ grows geometrically
    towards the input, × √(64/2) = 5.66 per layer (measured 5.5 from h6 to h1; the scaled uSF
    shrinks it instead, × 0.69). Under plain SGD (lr 0.01, momentum 0.9) the oversized updates of
    the first layers make the circuit diverge within 50 steps. With batch norm the same circuit
    starts with the same growth (BN does not rescale the error at the start: it divides by the
    forward pre-activation sd, O(1) there) but after 50 steps every ‖e‖ is finite and below 100
    (recorded: 43.5 at most, from 6·10⁵ at step 0): as the early W grow, BN's backward divides by
    their grown sd, which bounds the error (and makes it vanish towards the input). Batch
    Manhattan does not change the error at all (the ratio stays > 4 per layer); it bounds the
    step instead, and the circuit trains without diverging."""
    probe = next(teacher(1, seed=9))
    plain = deep_mlp(USF(scale="none"))
    start = layer_norms(plain, probe)
    ratios = [b / a for a, b in zip(start, start[1:])]
    assert all(r > 4 for r in ratios), ratios
    assert (start[-1] / start[0]) ** (1 / 5) == pytest.approx(math.sqrt(32), rel=0.15)
    scaled = layer_norms(deep_mlp(USF()), probe)
    assert (scaled[-1] / scaled[0]) ** (1 / 5) < 1
    results = {}
    for name, norm, bm in [("plain", None, False), ("bn", "batch", False), ("bm", None, True)]:
        torch.manual_seed(0)
        model = deep_mlp(USF(scale="none"), norm=norm)
        opt = make_optimizer(model, Training(lr=0.01 if not bm else 1e-3, momentum=0.9, batch_manhattan=bm))
        initial = layer_norms(model, probe)
        for x, y in teacher(50):
            opt.zero_grad()
            model.loss(model(x), y).backward()
            opt.step()
        results[name] = (initial, layer_norms(model, probe))
    assert not all(math.isfinite(v) for v in results["plain"][1])  # diverged
    initial, trained = results["bn"]
    assert max(initial) > 1e5 and all(math.isfinite(v) and v < 100 for v in trained), trained
    initial, trained = results["bm"]
    assert all(math.isfinite(v) for v in trained)
    assert all(b / a > 4 for a, b in zip(trained, trained[1:])), trained


@pytest.mark.parametrize("norm", [None, "batch"])
def test_batch_manhattan_makes_raw_and_scaled_usf_one_update(norm):
    """Raw uSF (sign(Wᵀ)) and scaled uSF (s·sign(Wᵀ), s > 0 per projection) differ by a positive
    factor per layer in every error, so in every gradient; Batch Manhattan (sign of the gradient,
    then momentum, no weight decay: the Liao study's BM) steps by the sign alone, so the two are one
    update: identical parameters after every step, with batch norm too. Under plain SGD they
    differ (the factor is a per-layer learning rate). The Liao page uses this pair as a control."""
    def trained(rule, bm):
        torch.manual_seed(0)
        model = deep_mlp(rule, norm=norm, width=16, depth=3).double()
        opt = make_optimizer(model, Training(lr=0.01, momentum=0.9, weight_decay=0.0, batch_manhattan=bm))
        for x, y in teacher(5):
            opt.zero_grad()
            model.loss(model(x.double()), y).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for bm in (True, False):
        raw, scaled = trained(USF(scale="none"), bm), trained(USF(), bm)
        same = all(torch.equal(a, b) for a, b in zip(raw, scaled))
        assert same is bm, f"batch_manhattan={bm}: raw and scaled uSF {'differ' if bm else 'agree'}"


def test_training_records_error_norms_without_shifting_the_random_stream(tmp_path, monkeypatch):
    """metrics.jsonl and initial.json hold ‖e‖ per population (the probe batch's, equal to
    ``error_norms`` of the saved circuit at epoch 0), TensorBoard gets error_norm/POP; brSF (which
    draws every step) ends with the same weights as a run whose diagnostic draws nothing."""
    import json

    from circuits import train as train_module
    from circuits.data import Split
    from circuits.train import train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g)
    splits = {"train": Split(x, (x[:, 0] > 0).long()), "test": Split(x[:16], (x[:16, 0] > 0).long())}
    training = Training(data="generated", epochs=2, batch_size=16, lr=0.05)

    def go(name):
        train(small_mlp(BRSF(), sizes=(6, 7, 5, 2)), training, rule="brsf", run_dir=str(tmp_path / name),
              data_root="unused", seed=0, progress=False, splits=splits)
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]

    recorded = go("a")
    metrics = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert all(set(m["error_norms"]) == {"h1", "h2", "out"} for m in metrics)
    assert all(v > 0 and math.isfinite(v) for m in metrics for v in m["error_norms"].values())
    initial = json.load(open(tmp_path / "a" / "initial.json"))
    torch.manual_seed(0)
    fresh = small_mlp(BRSF(), sizes=(6, 7, 5, 2)).compile()
    probe = (x[:16], (x[:16, 0] > 0).long())
    assert initial["error_norms"]["out"] == pytest.approx(fresh.error_norms(*probe)["out"], rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "a" / "tensorboard")).Reload()
    assert {"error_norm/h1", "error_norm/h2", "error_norm/out"} <= set(events.Tags()["scalars"])

    from circuits.compile import CompiledCircuit
    monkeypatch.setattr(train_module._Trainer, "error_norms", lambda self: {})
    monkeypatch.setattr(CompiledCircuit, "error_norms", lambda self, x, y: {})
    quiet = go("b")
    tensors = [k for k, v in recorded.items() if isinstance(v, torch.Tensor)]
    assert "projections.h1->h2.weight" in tensors
    for key in tensors:
        assert torch.equal(recorded[key], quiet[key]), key


@pytest.mark.parametrize("sign", ["gradient", "decayed", "step"])
def test_batch_manhattan_dampening_follows_sgds_momentum(sign):
    """With dampening ρ the momentum buffer is v ← μ v + (1 − ρ) d after the first step (v ← d),
    as torch.optim.SGD keeps it, for every sign placement (a mutation of 1 − ρ in the
    "decayed"/"step" path survived the tests without this one)."""
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    opt = BatchManhattanSGD([w], lr=0.1, momentum=0.9, dampening=0.5, sign=sign)
    grads = [torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64), torch.tensor([-0.1, -0.4, 0.7], dtype=torch.float64)]
    expected, v = w.detach().clone(), None
    for g in grads:
        w.grad = g.clone()
        opt.step()
        d = g.clone() if sign == "step" else torch.sign(g)
        v = d.clone() if v is None else 0.9 * v + 0.5 * d
        expected -= 0.1 * (torch.sign(v) if sign == "step" else v)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)
