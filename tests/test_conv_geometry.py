"""Conv2d and the weightless geometries against autograd, and their shape checks."""
import pytest
import torch
import torch.nn.functional as F

from circuits import Circuit, CircuitError
from connectomes import (AdaptiveAvgPool2d, AvgPool2d, Block, Conv2d, Dense, Flatten, GlobalAvgPool, Identity,
                         MaxPool2d, ShortcutA)
from populations import Input, Layer, Readout

# (pre shape, C_out, Conv2d options): odd sizes make the transposed convolution need output padding
CASES = {
    "plain": ((3, 7, 7), 4, dict(kernel_size=3)),
    "strided_padded": ((3, 9, 8), 4, dict(kernel_size=3, stride=2, padding=1)),
    "dilated": ((2, 10, 9), 3, dict(kernel_size=3, dilation=2, padding=2)),
    "grouped": ((4, 8, 7), 6, dict(kernel_size=(3, 2), stride=(2, 1), padding=1, groups=2)),
    "depthwise": ((4, 6, 6), 4, dict(kernel_size=3, stride=2, groups=4)),
}


def conv_case(name, batch=3):
    pre, c_out, opts = CASES[name]
    geo = Conv2d(**opts)
    post = (c_out, *geo.output_hw(*pre[1:]))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *pre, generator=g, dtype=torch.float64)
    W = torch.randn(geo.weight_shape(pre, post), generator=g, dtype=torch.float64)
    return geo, pre, post, x, W


@pytest.mark.parametrize("name", list(CASES))
def test_conv_maps_match_autograd(name):
    geo, pre, post, x, W = conv_case(name)
    assert geo.check(pre, post) is None
    x.requires_grad_()
    Wg = W.clone().requires_grad_()
    y = F.conv2d(x, Wg, None, geo.stride, geo.padding, geo.dilation, geo.groups)
    torch.testing.assert_close(geo.forward(x, W), y)
    delta = torch.randn_like(y)
    y.backward(delta)
    # BP's feedback is Wᵀ in feedback layout: the transposed convolution gives back x's shape exactly
    torch.testing.assert_close(geo.feedback(delta, W.transpose(0, 1), x.shape), x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(geo.weight_grad(x.detach(), delta), Wg.grad, rtol=1e-12, atol=1e-12)
    # any B in feedback layout: the adjoint of the convolution with kernel B.transpose(0, 1)
    B = torch.randn(W.transpose(0, 1).shape, dtype=torch.float64)
    x2 = x.detach().clone().requires_grad_()
    F.conv2d(x2, B.transpose(0, 1), None, geo.stride, geo.padding, geo.dilation, geo.groups).backward(delta)
    torch.testing.assert_close(geo.feedback(delta, B, x.shape), x2.grad, rtol=1e-12, atol=1e-12)


def test_conv_shape_checks_name_the_projection():
    c = Circuit("bad")
    x = c.add(Input("img", (3, 8, 8)))
    h = c.add(Layer("h", (4, 8, 8)))
    with pytest.raises(CircuitError, match=r"projection 'img->h': Conv2d\(kernel_size=\[3, 3\].*6×6.*\(4, 6, 6\)"):
        c.connect(x, h, Conv2d(3))
    with pytest.raises(CircuitError, match="projection 'img->h': groups=2 must divide.*3 and 4"):
        c.connect(x, h, Conv2d(3, padding=1, groups=2))
    v = c.add(Layer("v", 10))
    with pytest.raises(CircuitError, match=r"projection 'img->v': a Conv2d projection needs \(C, H, W\)"):
        c.connect(x, v, Conv2d(3))
    with pytest.raises(ValueError, match="Conv2d stride must be"):
        Conv2d(3, stride=0)
    c.connect(x, h, Conv2d(3, padding=1))
    assert "conv2d" in c.summary()


def test_weightless_maps_and_checks():
    x = torch.randn(2, 4, 9, 9)
    assert MaxPool2d(3, 2, 1).check((4, 9, 9), (4, 5, 5)) is None
    torch.testing.assert_close(MaxPool2d(3, 2, 1).forward(x), F.max_pool2d(x, 3, 2, 1))
    assert "maps (4, 9, 9) to (4, 4, 4)" in AvgPool2d(2).check((4, 9, 9), (4, 5, 5))
    torch.testing.assert_close(AvgPool2d(2).forward(x), F.avg_pool2d(x, 2))
    assert GlobalAvgPool().check((4, 9, 9), (4,)) is None and GlobalAvgPool().check((4, 9, 9), (4, 1, 1)) is None
    assert AdaptiveAvgPool2d((3, 3)).check((4, 9, 9), (4,)) is not None
    torch.testing.assert_close(GlobalAvgPool().forward(x).flatten(1), x.mean((2, 3)))
    assert Flatten().check((4, 9, 9), (324,)) is None and Flatten().check((4, 9, 9), (4, 81)) is not None
    # option A: every second cell, channels zero-padded on both sides (He et al.'s CIFAR ResNet)
    sa = ShortcutA(2)
    assert sa.check((4, 9, 9), (8, 5, 5)) is None and sa.check((4, 9, 9), (7, 5, 5)) is not None
    out = sa.forward(x, None, (8, 5, 5))
    torch.testing.assert_close(out, F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2)))
    assert all(g.weightless for g in (sa, Identity(), Flatten(), MaxPool2d(2), GlobalAvgPool(), Block(torch.nn.ReLU())))


def test_weightless_projections_pass_errors_exactly_and_show_in_summary():
    """A residual circuit of conv + BN + option-A shortcut + pooling under BP equals autograd on
    the same plain PyTorch computation."""
    from plasticity import BP
    c = Circuit("res", seed=3)
    x = c.add(Input("img", (2, 8, 8)))
    a = c.add(Layer("a", (4, 8, 8), norm="batch"))
    b = c.add(Layer("b", (4, 4, 4), activation="identity", norm="batch"))
    s = c.add(Layer("s", (4, 4, 4), activation="relu", bias=False))
    p = c.add(Layer("p", 4, activation="identity", bias=False))
    y = c.add(Readout("y", 3))
    c.connect(x, a, Conv2d(3, padding=1))
    c.connect(a, b, Conv2d(3, stride=2, padding=1))
    c.connect(b, s, Identity())
    c.connect(a, s, ShortcutA(2), name="skip")
    c.connect(s, p, GlobalAvgPool())
    c.connect(p, y, Dense())
    c.feedback(BP())
    text = c.summary()
    assert "skip" in text and "shortcut_a" in text and "weightless, exact BP" in text and "norm=batch" in text
    m = c.compile().double()
    assert "exact (weightless)" in m.schedule_summary()
    xin = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 3, (5,))
    m.loss(m(xin), target).backward()
    W1, W2, W3 = (m.projections[n].weight.detach().clone().requires_grad_() for n in ["img->a", "a->b", "p->y"])
    bn_a, bn_b = (m.norms[n] for n in "ab")
    ga, gb = (torch.ones(4, dtype=torch.float64, requires_grad=True) for _ in "ab")
    za, zb = (torch.zeros(4, dtype=torch.float64, requires_grad=True) for _ in "ab")
    h = torch.relu(F.batch_norm(F.conv2d(xin, W1, padding=1), None, None, ga, za, training=True))
    hb = F.batch_norm(F.conv2d(h, W2, stride=2, padding=1), None, None, gb, zb, training=True)
    out = torch.relu(hb + F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, 0, 0)))
    logits = F.linear(out.mean((2, 3)), W3) + m.biases["y"]
    F.cross_entropy(logits, target).backward()
    for name, ref in zip(["img->a", "a->b", "p->y"], [W1, W2, W3]):
        torch.testing.assert_close(m.projections[name].weight.grad, ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn_a.weight.grad, ga.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn_b.bias.grad, zb.grad, rtol=1e-10, atol=1e-12)
    assert "a" not in m.biases  # a BatchNorm population has no bias of its own by default


def test_per_channel_bias():
    c = Circuit("bias")
    x = c.add(Input("img", (1, 5, 5)))
    h = c.add(Layer("h", (3, 5, 5)))
    y = c.add(Readout("y", 2))
    c.connect(x, h, Conv2d(3, padding=1))
    c.connect(h, y)
    from plasticity import FA
    c.feedback(FA())
    m = c.compile()
    assert m.biases["h"].shape == (3, 1, 1)
    m.loss(m(torch.randn(4, 1, 5, 5)), torch.tensor([0, 1, 0, 1])).backward()
    assert m.biases["h"].grad.shape == (3, 1, 1)


def test_batch_norm_populations_and_initial_values():
    from plasticity import BP
    with pytest.raises(ValueError, match="population 'q': unknown norm 'layer'"):
        Layer("q", 3, norm="layer")
    with pytest.raises(ValueError, match="norm='batch' needs a vector or a"):
        Layer("q", (3, 4), norm="batch")
    assert Layer("q", 3, norm="batch").bias is False and Layer("q", 3).bias is True
    c = Circuit("bn")
    x = c.add(Input("x", 5))
    h = c.add(Layer("h", 4, norm="batch", bias=True))
    y = c.add(Readout("y", 2))
    W = torch.randn(4, 5)
    with pytest.raises(CircuitError, match=r"projection 'x->h': initial weight of shape \(5, 4\) does not fit W \(4, 5\)"):
        c.connect(x, h, Dense(), weight=W.t())
    c.connect(x, h, Dense(), weight=W)
    c.connect(h, y)
    c.set_initial("h", bias=torch.arange(4.0), norm={**torch.nn.BatchNorm1d(4).state_dict(),
                                                     "weight": torch.full((4,), 2.0)})
    m = c.with_rule(BP()).compile()
    assert torch.equal(m.projections["x->h"].weight, W) and m.projections["x->h"].weight is not W
    assert torch.equal(m.biases["h"], torch.arange(4.0)) and torch.equal(m.norms["h"].weight, torch.full((4,), 2.0))
    assert isinstance(m.norms["h"], torch.nn.BatchNorm1d)
    assert {id(p) for p in m.norms.parameters()} <= {id(p) for p in m.forward_parameters()}
    xin = torch.randn(8, 5)
    a = xin @ W.t() + torch.arange(4.0)
    ref = torch.relu(2 * (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5))
    m.train()
    torch.testing.assert_close(m(xin), ref @ m.projections["h->y"].weight.t() + m.biases["y"])
    with pytest.raises(CircuitError, match=r"input population 'x' has shape \(5,\); the data has \(6,\)"):
        m(torch.randn(2, 6))
