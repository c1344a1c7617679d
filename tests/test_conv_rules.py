"""Every rule on convolutions against a closed-form float64 reference (BP against autograd).

The circuit: x0 (2, 8, 8) -conv3×3-> h1 (4, 8, 8) -[variant conv]-> h2 -dense-> out (4), tanh.
The variant (plain, strided + padded, dilated, grouped, depthwise) is the projection that sends
errors back through the rule's feedback; the reference computes each error with autograd's own
convolution adjoint applied to the rule's feedback kernel, independently of the geometry code.
"""
import pytest
import torch
import torch.nn.functional as F

from circuits import Circuit
from connectomes import Conv2d, Dense
from plasticity import BP, BRSF, DFA, PFA, PFAo, make_rule
from plasticity.brsf import draw_unit_magnitudes
from populations import Input, Layer, Readout

VARIANTS = {
    "plain": (4, dict(kernel_size=3)),
    "strided_padded": (4, dict(kernel_size=3, stride=2, padding=1)),  # 8 → 4: output padding 1
    "dilated": (3, dict(kernel_size=3, dilation=2, padding=1)),
    "grouped": (6, dict(kernel_size=3, padding=1, groups=2)),
    "depthwise": (4, dict(kernel_size=3, stride=2, groups=4)),
}


def conv_circuit(rule, variant="plain", seed=0):
    c_out, opts = VARIANTS[variant]
    c = Circuit("conv", seed=seed)
    x = c.add(Input("x0", (2, 8, 8)))
    h1 = c.add(Layer("h1", (4, 8, 8), activation="tanh"))
    geo = Conv2d(**opts)
    h2 = c.add(Layer("h2", (c_out, *geo.output_hw(8, 8)), activation="tanh"))
    y = c.add(Readout("out", 4))
    c.connect(x, h1, Conv2d(3, padding=1))
    c.connect(h1, h2, geo)
    c.connect(h2, y, Dense())
    if rule is not None:
        c.feedback(rule)
    return c


def setup(rule, variant, batch=5, **compile_options):
    model = conv_circuit(rule, variant).compile(**compile_options).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 2, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (batch,), generator=g)
    for p in model.parameters():
        p.grad = None
    model.loss(model(x), y).backward()
    return model, x, y


def conv_of(geo, x, kernel):
    return F.conv2d(x, kernel, None, geo.stride, geo.padding, geo.dilation, geo.groups)


def adjoint(geo, B_fb, delta, x):
    """The error x receives through a feedback kernel in feedback layout: autograd's adjoint of
    the convolution with kernel B_fb.transpose(0, 1)."""
    xr = x.detach().clone().requires_grad_()
    (conv_of(geo, xr, B_fb.transpose(0, 1)) * delta).sum().backward()
    return xr.grad


def kernel_grad(geo, x, delta, shape):
    """Σ δ ⋆ x: autograd's gradient of the convolution with respect to its kernel."""
    k = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    (conv_of(geo, x.detach(), k) * delta).sum().backward()
    return k.grad


def reference(model, x, y, conv_feedback, dense_feedback):
    """Closed-form pass; ``*_feedback(proj, delta, e_L, x_pre)`` give the errors sent back."""
    P = model.projections
    g1, g2 = P["x0->h1"].geometry, P["h1->h2"].geometry
    W1, W2, W3 = (P[n].weight.detach() for n in ["x0->h1", "h1->h2", "h2->out"])
    b = {n: model.biases[n].detach() for n in ["h1", "h2", "out"]}
    a1 = conv_of(g1, x, W1) + b["h1"]
    h1 = torch.tanh(a1)
    a2 = conv_of(g2, h1, W2) + b["h2"]
    h2 = torch.tanh(a2)
    out = F.linear(h2.flatten(1), W3) + b["out"]
    e_L = (torch.softmax(out, 1) - F.one_hot(y, 4).to(out.dtype)) / len(y)
    d3 = e_L
    d2 = dense_feedback(P["h2->out"], d3, e_L, h2).reshape(h2.shape) * (1 - h2 ** 2)
    d1 = conv_feedback(P["h1->h2"], d2, e_L, h1) * (1 - h1 ** 2)
    grads = {"h2->out": d3.t() @ h2.flatten(1), "h1->h2": kernel_grad(g2, h1, d2, W2.shape),
             "x0->h1": kernel_grad(g1, x, d1, W1.shape)}
    bias = {"out": d3.sum(0), "h2": d2.sum((0, 2, 3)).view(-1, 1, 1), "h1": d1.sum((0, 2, 3)).view(-1, 1, 1)}
    return grads, bias, {"h2->out": (d3, h2), "h1->h2": (d2, h1)}


def check(model, grads, bias):
    for name, g in grads.items():
        torch.testing.assert_close(model.projections[name].weight.grad, g, rtol=1e-10, atol=1e-12, msg=name)
    for name, g in bias.items():
        torch.testing.assert_close(model.biases[name].grad, g, rtol=1e-10, atol=1e-12, msg=name)


def fb_dense(B_of):
    return lambda p, d, e, h: d @ B_of(p).t()


def fb_conv(B_of):
    return lambda p, d, e, h: adjoint(p.geometry, B_of(p), d, h)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bp_conv_equals_autograd(variant):
    model, x, y = setup(BP(), variant)
    P = model.projections
    Ws = [P[n].weight.detach().clone().requires_grad_() for n in ["x0->h1", "h1->h2", "h2->out"]]
    bs = [model.biases[n].detach().clone().requires_grad_() for n in ["h1", "h2", "out"]]
    h = torch.tanh(conv_of(P["x0->h1"].geometry, x, Ws[0]) + bs[0])
    h = torch.tanh(conv_of(P["h1->h2"].geometry, h, Ws[1]) + bs[1])
    F.cross_entropy(F.linear(h.flatten(1), Ws[2]) + bs[2], y).backward()
    for n, W in zip(["x0->h1", "h1->h2", "h2->out"], Ws):
        torch.testing.assert_close(P[n].weight.grad, W.grad, rtol=1e-12, atol=1e-14, msg=n)
    for n, bb in zip(["h1", "h2", "out"], bs):
        torch.testing.assert_close(model.biases[n].grad, bb.grad, rtol=1e-12, atol=1e-14, msg=n)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("rule", ["fa", "kp", "frsf", "usf", "ifa"])
def test_fixed_kernel_rules(rule, variant):
    """FA, KP, frSF, uSF, IFA: e_in = B δ with B a kernel in feedback layout (C_in/g, C_out, k, k)."""
    model, x, y = setup(make_rule(rule), variant)

    def B_of(p):
        if rule in ("fa", "kp", "ifa"):
            return p.B.detach()
        if rule == "frsf":
            return (p.Mt * p.weight.detach().sign()).transpose(0, 1)
        fan_in = p.weight.shape[1] * p.weight[0, 0].numel()
        fan_out = p.weight.shape[0] * p.weight[0, 0].numel()
        return (2 / (fan_in + fan_out)) ** 0.5 * p.weight.detach().sign().transpose(0, 1)
    grads, bias, _ = reference(model, x, y, fb_conv(B_of), fb_dense(B_of))
    check(model, grads, bias)
    p = model.projections["h1->h2"]
    assert p.effective_feedback().shape == p.weight.transpose(0, 1).shape
    if rule == "fa":
        assert not torch.allclose(p.B, p.weight.transpose(0, 1))
    if rule == "kp":  # ΔB = ΔWᵀ
        for name in ["h1->h2", "h2->out"]:
            q = model.projections[name]
            torch.testing.assert_close(q.B.grad, grads[name].transpose(0, 1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("variant", ["strided_padded", "grouped"])
def test_brsf_conv(variant):
    torch.manual_seed(5)
    model, x, y = setup(BRSF(), variant)
    torch.manual_seed(5)  # replay the draws: backward visits h2->out first
    draws = {n: draw_unit_magnitudes(model.projections[n].weight) for n in ["h2->out", "h1->h2"]}

    def B_of(p):
        return (draws[p.name] * p.magnitude_bound * p.weight.detach().sign()).transpose(0, 1)
    grads, bias, _ = reference(model, x, y, fb_conv(B_of), fb_dense(B_of))
    check(model, grads, bias)


@pytest.mark.parametrize("variant", ["plain", "strided_padded", "grouped"])
def test_dfa_conv_reaches_every_pre_cell(variant):
    model, x, y = setup(DFA(), variant)
    p = model.projections["h1->h2"]
    assert p.B.shape == (4 * 8 * 8, 4)  # N_pre = C·H·W cells × N_readout

    def fb(q, d, e_L, h):
        return (e_L @ q.B.t()).view(h.shape)
    grads, bias, _ = reference(model, x, y, fb, fb)
    check(model, grads, bias)


def pfa_reference(model, x, y):
    """e_in = R ē, ē = B δ (B a 1×1 grouped convolution for kernels), ΔR = Σ x ēᵀ."""
    def ebar(p, d):
        if d.dim() == 2:
            return d @ p.B.t()
        return F.conv2d(d, p.B[:, :, None, None], groups=p.geometry.groups)

    def conv_fb(p, d, e, h):
        return adjoint(p.geometry, p.R.detach(), ebar(p, d), h)

    def dense_fb(p, d, e, h):
        return ebar(p, d) @ p.R.detach().t()
    grads, bias, cache = reference(model, x, y, conv_fb, dense_fb)
    R_grads = {}
    for name, (d, h) in cache.items():
        p = model.projections[name]
        if d.dim() == 2:
            R_grads[name] = h.flatten(1).t() @ ebar(p, d)
        else:
            R_grads[name] = kernel_grad(p.geometry, h, ebar(p, d), p.R.transpose(0, 1).shape).transpose(0, 1)
    return grads, bias, R_grads


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("cls,route", [(PFA, "explicit"), (PFA, "factored"), (PFA, "auto"), (PFAo, "auto")])
def test_pfa_conv(cls, route, variant):
    model, x, y = setup(cls(expansion=2, route=route), variant)
    grads, bias, R_grads = pfa_reference(model, x, y)
    check(model, grads, bias)
    for name, g in R_grads.items():
        torch.testing.assert_close(model.projections[name].R.grad, g, rtol=1e-10, atol=1e-12, msg=name)
    p = model.projections["h1->h2"]
    c_out, groups = p.weight.shape[0], p.geometry.groups
    assert p.B.shape == (2 * c_out, c_out // groups)  # a 1×1 convolution C_out → N̄ (grouped)
    assert p.R.shape == (4 // groups, 2 * c_out, 3, 3)  # a k×k kernel N̄ → C_in, feedback layout
    assert p.effective_feedback().shape == p.weight.transpose(0, 1).shape
    assert model.circuit.population("h1->h2:ebar").shape == (2 * c_out, *p.post_shape[1:])


def test_pfa_o_conv_blocks_are_semi_orthogonal():
    p = conv_circuit(PFAo(expansion=3), "grouped").compile().projections["h1->h2"]
    for block in p.B.view(2, 9, 3):
        torch.testing.assert_close(block.t() @ block, torch.eye(3), atol=1e-5, rtol=0)
    q = conv_circuit(PFA(expansion=10), "grouped").compile().projections["h1->h2"]
    assert abs(q.B.var().item() * 30 - 1) < 0.3  # variance 1/(N̄/g) per group block


def test_pfa_conv_routes_are_cheapest_by_count():
    rule = PFA(expansion=10)
    # a 3×3 convolution over a 32×32 map, batch 128: forming R B beats ē at every position
    assert rule._routes(128 * 32 * 32, 16, 16, 160, True, kernel=9) == ("product", "factored")
    assert PFA(route="explicit")._routes(10, 4, 4, 40, True, kernel=9) == ("explicit", "explicit")
    assert PFA(route="factored")._routes(10, 4, 4, 40, False, kernel=9) == (None, "factored")
