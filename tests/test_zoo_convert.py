"""``Circuit.from_torch``: torchvision models as circuits, and proof that conversion and
compilation never fall back to BP silently (the gradient-parity test)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from circuits import Circuit, CircuitError
from plasticity import FA, PFA


def converted(module, rule, shape, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = Circuit.from_torch(module, feedback=rule, input_shape=shape, **kw)
    return c, [str(w.message) for w in caught]


def fa_reference_grads(module, model, x, y):
    """Closed-form FA on the original module: every Linear/Conv2d sends its pre population
    B δ (the circuit's fixed B, in feedback layout) instead of Wᵀ δ, and changes W by δ xᵀ.
    Written with autograd on a copy: y = W x̄ + (Bᵀ x − Bᵀ x̄), x̄ = x detached, so the value is
    W x and the error to x is the adjoint of Bᵀ."""
    import copy

    ref = copy.deepcopy(module)
    for qual, m in ref.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        proj = model.projections[qual.replace(".", "_")]
        op = (lambda inp, w, m=m: F.linear(inp, w)) if isinstance(m, nn.Linear) else \
            (lambda inp, w, m=m: F.conv2d(inp, w, None, m.stride, m.padding, m.dilation, m.groups))

        def forward(inp, m=m, op=op, proj=proj):
            out = op(inp.detach(), m.weight)
            if proj.sends_error:
                kernel = proj.B.transpose(0, 1).to(inp.dtype)
                out = out + op(inp, kernel) - op(inp, kernel).detach()
            return out if m.bias is None else out + (m.bias if out.dim() == 2 else m.bias.view(-1, 1, 1))
        m.forward = forward
    F.cross_entropy(ref(x), y).backward()
    return {q: m.weight.grad for q, m in ref.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_fa_on_converted_resnet18_is_fa_not_bp():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10).double()
    c, warned = converted(tv, FA(), (3, 32, 32))
    assert c.exact_blocks() == [] and not warned  # everything became circuit elements
    model = c.compile().double()
    assert all(model.projections[n].rule.name == "fa" for n in model.projections)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    tv.train(), model.train()
    out = model(x)
    torch.testing.assert_close(out, tv(x), rtol=1e-10, atol=1e-10)  # the same forward computation
    model.loss(out, y).backward()
    F.cross_entropy(tv(x), y).backward()  # autograd (BP) on the original model
    fa = fa_reference_grads(tv, model, x, y)
    first = model.projections["conv1"].weight.grad
    assert not torch.allclose(first, tv.conv1.weight.grad, rtol=1e-3, atol=1e-6)  # not BP
    torch.testing.assert_close(first, fa["conv1"], rtol=1e-8, atol=1e-12)  # but FA, exactly
    for qual, g in fa.items():
        torch.testing.assert_close(model.projections[qual.replace(".", "_")].weight.grad, g,
                                   rtol=1e-8, atol=1e-12, msg=qual)
    # the last layer's change is δ xᵀ with the true readout error: the same for every rule
    torch.testing.assert_close(model.projections["fc"].weight.grad, tv.fc.weight.grad, rtol=1e-10, atol=1e-12)


def test_bp_on_converted_models_equals_autograd():
    torch.manual_seed(0)
    for name, shape in [("mobilenet_v2", (3, 32, 32)), ("vgg11", (3, 32, 32))]:
        tv = getattr(torchvision.models, name)(num_classes=10).double()
        c, warned = converted(tv, "bp", shape)
        blocks = c.exact_blocks()
        assert {b["module"] for b in blocks} == {"Dropout"}, blocks  # listed, never silent
        assert len(warned) == 1 and "exact-BP blocks" in warned[0] and "Dropout" in warned[0]
        assert "exact-BP blocks" in c.summary()
        model = c.compile().double()
        tv.eval(), model.eval()
        x, y = torch.randn(2, *shape, dtype=torch.float64), torch.randint(0, 10, (2,))
        out = model(x)
        torch.testing.assert_close(out, tv(x), rtol=1e-9, atol=1e-10)
        model.loss(out, y).backward()
        F.cross_entropy(tv(x), y).backward()
        first = next(m for m in tv.modules() if isinstance(m, nn.Conv2d))
        (proj,) = [p for p in model.projections.values() if not p.sends_error]
        torch.testing.assert_close(proj.weight.grad, first.weight.grad, rtol=1e-7, atol=1e-10)
        del tv, model, c


def test_pfa_on_converted_mobilenet_runs_grouped_convolutions():
    tv = torchvision.models.mobilenet_v2(num_classes=5)
    c, _ = converted(tv, PFA(expansion=2), (3, 32, 32))
    model = c.compile(implicit_feedback=True)
    model.attach_optimizer(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    depthwise = [p for p in model.projections.values() if getattr(p.geometry, "groups", 1) > 1]
    assert depthwise and all(p.implicit for p in depthwise)
    model.loss(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 3])).backward()
    assert all(torch.isfinite(p.weight.grad).all() for p in model.projections.values())
    align = model.alignment()
    assert set(align) == {n for n, p in model.projections.items() if p.sends_error}


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.norm = nn.LayerNorm([4, 6, 6])
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = self.norm(h) * 2.0
        return self.fc(h.view(h.size(0), -1))


def test_unexpressible_operations_become_listed_blocks():
    m = Odd()
    c, warned = converted(m, FA(), (3, 6, 6))
    names = {b["module"] for b in c.exact_blocks()}
    assert names == {"LayerNorm", "mul"}, c.exact_blocks()
    assert [b["parameters"] for b in c.exact_blocks() if b["module"] == "LayerNorm"] == [288]
    assert "LayerNorm" in warned[0]
    model = c.compile()
    m.train(), model.train()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(model(x), m(x))
    assert any(p is not None for p in model.blocks.parameters())
    assert set(map(id, model.blocks.parameters())) <= set(map(id, model.forward_parameters()))

    class Cat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x * 2], 1).flatten(1)
    with pytest.raises(CircuitError, match="cannot convert node 'cat'.*combines 2 tensors"):
        Circuit.from_torch(Cat(), input_shape=(2,))


def test_tensor_methods_become_exact_blocks():
    """A method called on the tensor (``h.clamp(min=0.1)``: a call_method node, the tensor its
    first argument) is kept as an exact-BP block named by the method, as a function call is
    (``mul``); the circuit computes the module's function, and its errors pass the blocks as
    autograd's do."""
    class Methods(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).sigmoid().clamp(min=0.1) * 3)
    m = Methods()
    c, _ = converted(m, FA(), (3,))
    assert [(b["module"], b["pre"], b["post"]) for b in c.exact_blocks()] == [("clamp", "sigmoid", "clamp"),
                                                                                ("mul", "clamp", "mul")]
    model = c.compile()
    x = torch.randn(5, 3)
    torch.testing.assert_close(model(x), m(x))


def test_shared_weights_and_doubling_are_handled():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))
    with pytest.raises(CircuitError, match="module 'fc' is called twice; shared weights"):
        Circuit.from_torch(Twice(), input_shape=(3,))

    class Double(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h + h)
    m = Double()
    c, _ = converted(m, FA(), (3,))
    model = c.compile()
    x = torch.randn(5, 3)
    torch.testing.assert_close(model(x), m(x))
