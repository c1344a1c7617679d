"""Every rule trains alike on every device: SGD steps in float32 on the device against the same
steps in float64 on the CPU, for a dense and a convolutional circuit.

The CUDA cases run where a GPU is (they are skipped here, and run on a lent GPU machine with
``python -m pytest tests/test_devices.py``); on the CPU the same tests hold float32 to float64.
Rules that draw fresh noise every step (brSF, WM, PAL) draw it from the device's generator, so
their steps are checked for reproducibility under one seed on the device instead.
On CUDA, ``torch.compile(mode="reduce-overhead")`` replays a recorded step as a CUDA graph: the
replayed steps must follow eager ones (a_t read afresh) and the noisy rules draw anew each replay.
"""
import pytest
import torch

from circuits import Training
from circuits.train import make_optimizer
from helpers import TEACHER_SIZES, small_mlp, teacher_batches
from plasticity import make_rule
from test_conv_rules import conv_circuit

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]
DETERMINISTIC = ["bp", "fa", "dfa", "usf", "frsf", "kp", "ifa", "pfa", "pfa-o"]
STOCHASTIC = ["brsf", "wm", "pal"]
TRAINING = Training(lr=0.05, momentum=0.9, weight_decay=1e-3)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 products on CUDA (cuDNN's convolutions default to TF32, 10-bit mantissas)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def dense(rule):
    return small_mlp(make_rule(rule), TEACHER_SIZES)


def conv(rule):
    return conv_circuit(make_rule(rule), "strided_padded")


def batches(circuit_fn, steps):
    """(x, y) pairs in float64 on the CPU: a linear teacher's for the dense circuit, and for the
    conv circuit two batches of random images and labels, taken in turn (learnable by heart)."""
    if circuit_fn is dense:
        return list(teacher_batches(steps, batch=8))
    g = torch.Generator().manual_seed(3)
    two = [(torch.randn(8, 2, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (8,), generator=g))
           for _ in range(2)]
    return [two[i % 2] for i in range(steps)]


def train(model, data, device, dtype):
    """SGD steps on ``device`` in ``dtype``; returns the losses (floats)."""
    opt = make_optimizer(model, TRAINING)
    model.attach_optimizer(opt)
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = model.loss(model(x.to(device, dtype)), y.to(device))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("circuit_fn", [dense, conv], ids=["dense", "conv"])
@pytest.mark.parametrize("rule", DETERMINISTIC)
def test_float32_steps_on_the_device_follow_float64_on_the_cpu(rule, circuit_fn, device):
    data = batches(circuit_fn, 20)
    reference = circuit_fn(rule).compile(implicit_feedback=True).double()
    model = circuit_fn(rule).compile(implicit_feedback=True).to(device)
    expected = train(reference, data, "cpu", torch.float64)
    losses = train(model, data, device, torch.float32)
    assert losses == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert sum(expected[-2:]) < sum(expected[:2])  # it learned: the comparison is not between idle models
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            assert tensor.device.type == device, name
            torch.testing.assert_close(tensor.cpu().double(), theirs[name], rtol=1e-4, atol=1e-5, msg=name)
    for name, p in model.projections.items():  # R, B read on demand agree as well (implicit rules)
        ours, ref = p.effective_feedback(), reference.projections[name].effective_feedback()
        if ref is not None:
            torch.testing.assert_close(ours.cpu().double(), ref, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", STOCHASTIC)
def test_noisy_rules_repeat_under_one_seed_on_the_device(rule, device):
    data = batches(conv, 6)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # every device's generator
        model = conv(rule).compile().to(device)
        runs.append((train(model, data, device, torch.float32), model.state_dict()))
    (losses, state), (again, state_again) = runs
    # the same draws; the values agree to rounding (cuDNN may sum a kernel's gradient in any order)
    assert losses == pytest.approx(again, rel=1e-5) and all(torch.isfinite(torch.tensor(losses)))
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor):
            torch.testing.assert_close(tensor, state_again[name], rtol=1e-5, atol=1e-6, msg=name)


CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def compiled_with_cuda_graphs(model):
    """``torch.compile(model, mode="reduce-overhead")`` (CUDA graphs: one recorded step replayed),
    from a clean dynamo cache (every circuit runs ``CompiledCircuit.forward``: without a reset
    the cases would pile up graphs on one code object until dynamo's recompile limit)."""
    torch._dynamo.reset()
    return torch.compile(model, mode="reduce-overhead")


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("rule", DETERMINISTIC)
def test_steps_replayed_as_cuda_graphs_follow_eager(rule, device):
    """A training step recorded once as a CUDA graph and replayed reads what changes between
    steps where the replay sees it: W and the momentum buffers, and an implicit rule's a_t,
    which the optimizer's step hook writes in place into a buffer of fixed address. So 12
    replayed steps end where 12 eager steps do (float32, the compiler's own kernels)."""
    data = batches(dense, 12)
    models = []
    for graphs in (False, True):
        model = dense(rule).compile(implicit_feedback=True).to(device)
        opt = make_optimizer(model, TRAINING)
        model.attach_optimizer(opt)
        f = compiled_with_cuda_graphs(model) if graphs else model
        for x, y in data:
            opt.zero_grad(set_to_none=True)
            model.loss(f(x.to(device, torch.float32)), y.to(device)).backward()
            opt.step()
        models.append(model)
    eager, replayed = models
    theirs = eager.state_dict()
    for name, tensor in replayed.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            torch.testing.assert_close(tensor, theirs[name], rtol=1e-4, atol=1e-5, msg=name)
    for name, p in replayed.projections.items():
        if p.implicit:  # the replays saw a_t move: it is not stuck at its recorded value
            assert p.a_t.item() == pytest.approx(p.state["a"], rel=1e-6) and p.state["a"] < 0.999, name


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("rule", STOCHASTIC)
def test_noisy_rules_draw_afresh_on_every_cuda_graph_replay(rule, device):
    """brSF's magnitudes, WM's and PAL's noise are drawn inside the recorded graph; each replay
    must draw new values (the device generator's offset advances per replay), not repeat the
    recording's. Passes over one batch with the same weights then give different gradients."""
    x, y = (t.to(device) for t in batches(dense, 1)[0])
    model = dense(rule).compile().to(device)
    f = compiled_with_cuda_graphs(model)
    passes = []
    for _ in range(5):  # the first passes warm up and record; the later ones replay
        model.zero_grad(set_to_none=True)
        model.loss(f(x.float()), y).backward()
        passes.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert all(torch.isfinite(g).all() for g in passes)
    for a, b in zip(passes[2:], passes[3:]):  # replays: each differs from the one before
        assert (a - b).norm() > 1e-3 * a.norm()
