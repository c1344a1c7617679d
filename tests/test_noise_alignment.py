"""WM and PAL: feedback B that learns Wᵀ from injected noise. Closed-form changes for a given
noise draw, and convergence towards Wᵀ's direction on a fixed W (dense and conv)."""
import pytest
import torch

from connectomes import FixedProbability
from connectomes.analysis import alignment_deg, norm_ratio
from helpers import small_mlp
from plasticity import PAL, WM, make_rule
from test_conv_rules import conv_circuit
from test_rules import check, reference, run_compiled, setup


class KnownNoise:
    """Make a rule draw ``xi`` (one fixed tensor per projection) instead of fresh noise."""

    def __init__(self, rule, xis):
        self.xis = xis
        rule.noise = lambda proj, x: self.xis[proj.name]


def mirror_reference(W, B, xi, sigma, rate, decay):
    """rate · (decay·B − Σ_n ξ_n (W ξ_n)ᵀ / (n σ²)) for a Dense projection."""
    C = xi.t() @ (xi @ W.t()) / (xi.shape[0] * sigma ** 2)
    return rate * (decay * B - C)


def pal_with_known_noise(sigma):
    """(model, x, y, its h1->h2 projection, ξ per projection): the small float64 MLP under PAL
    whose pre cells carry the given noise draws (σ ``sigma``) instead of fresh ones."""
    rule = PAL(noise_std=sigma)
    model, x, y = setup(rule)
    xi = {name: sigma * torch.randn(x.shape[0], q.weight.shape[1], dtype=torch.float64)
          for name, q in model.projections.items()}
    KnownNoise(rule, xi)
    return model, x, y, model.projections["h1->h2"], xi


@pytest.mark.parametrize("cls", [WM, PAL])
def test_error_and_feedback_change_closed_form(cls):
    rule = WM(noise_std=0.3, rate=0.7, decay=0.5) if cls is WM else PAL(0.3, 0.7, 0.5, noisy_forward=False)
    model, x, y = setup(rule)
    g = torch.Generator().manual_seed(3)
    n = 11 if cls is WM else x.shape[0]  # WM's mirror batch is its own; PAL's is the task batch
    if cls is WM:
        rule.options["mirror_batch"] = n
    xis = {name: 0.3 * torch.randn(n, p.weight.shape[1], generator=g, dtype=torch.float64)
           for name, p in model.projections.items()}
    KnownNoise(rule, xis)
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda name, p, d, e: d @ p.B.detach().t())
    check(model, grads, bias_grads)  # e_in = B δ, ΔW = δ xᵀ
    for name, p in model.projections.items():
        if p.sends_error:
            want = mirror_reference(p.weight.detach(), p.B.detach(), xis[name], 0.3, 0.7, 0.5)
            torch.testing.assert_close(p.B.grad, want, rtol=1e-10, atol=1e-12)


def test_pal_pre_cells_are_noisy_during_training_only():
    """PAL's task pass sees x + ξ: post input W (x + ξ) and ΔW = δ (x + ξ)ᵀ; eval is clean."""
    model, x, y, p, xi = pal_with_known_noise(0.5)
    seen = {}

    def hook(module, inputs, out):
        seen["x"], seen["out"] = inputs[0].detach(), out
        if out.requires_grad:
            out.register_hook(lambda g: seen.__setitem__("delta", g))

    p.register_forward_hook(hook)
    run_compiled(model, x, y)
    noisy = seen["x"] + xi[p.name]
    torch.testing.assert_close(seen["out"].detach(), noisy @ p.weight.detach().t(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.weight.grad, seen["delta"].t() @ noisy, rtol=1e-10, atol=1e-12)
    model.eval()
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(seen["out"], seen["x"] @ p.weight.detach().t(), rtol=1e-12, atol=1e-12)


def test_pal_saves_the_clean_rates_and_the_noise_not_their_sum():
    """PAL's step holds x (the pre cells' clean rates, the tensor its ReLU keeps anyway) and ξ
    from the forward to the backward, never x + ξ: that sum would be a third activation-sized
    tensor per projection (benchmarks/results/memory.md, ResNet-20)."""
    model, x, y, p, xi = pal_with_known_noise(0.5)
    seen = {}
    p.register_forward_hook(lambda module, inputs, out: seen.update(x=inputs[0], out=out))
    model.train()
    model(x)
    saved = seen["out"].grad_fn.saved_tensors  # (x, W, B, ξ)
    assert len(saved) == 4
    assert saved[0].data_ptr() == seen["x"].data_ptr()  # the pre population's own tensor, not a copy
    assert saved[3] is xi[p.name] or saved[3].data_ptr() == xi[p.name].data_ptr()
    assert saved[1].data_ptr() == p.weight.data_ptr() and saved[2].data_ptr() == p.B.data_ptr()


def test_wm_mirrors_every_kth_pass_only():
    model, x, y = setup(WM(mirror_every=3))
    p = model.projections["h1->h2"]
    nonzero = []
    for _ in range(7):
        run_compiled(model, x, y)
        nonzero.append(bool(p.B.grad.abs().sum() > 0))
    assert nonzero == [True, False, False, True, False, False, True]
    assert p.state["backward_passes"] == 7
    assert "backward_passes" in str(model.state_dict()[f"projections.{p.name}._extra_state"])


def test_wm_and_pal_conv_change_closed_form():
    """Conv: Ĉ = grad_W-style correlation of ξ with W ⋆ ξ over positions, in feedback layout."""
    rule = PAL(noise_std=1.0, rate=1.0, decay=0.0)
    model = conv_circuit(rule, "strided_padded").compile().double()
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    p = model.projections["h1->h2"]
    xi = torch.randn(5, 4, 8, 8, dtype=torch.float64)
    KnownNoise(rule, {name: xi if name == p.name else torch.randn(5, *q.pre_shape, dtype=torch.float64)
                      for name, q in model.projections.items()})
    run_compiled(model, x, y)
    W = p.weight.detach().clone().requires_grad_()
    out = torch.nn.functional.conv2d(xi, W, stride=2, padding=1)
    # Σ ξ (W⋆ξ)ᵀ = ∂/∂W of ½‖W⋆ξ‖², divided by n·σ²·positions
    (0.5 * out.pow(2).sum()).backward()
    want = -(W.grad / (5 * out[0, 0].numel())).transpose(0, 1)
    torch.testing.assert_close(p.B.grad, want, rtol=1e-10, atol=1e-12)


def train_feedback_only(model, make_batch, steps, lr):
    """SGD on the plastic feedback alone (W fixed), driven by the rule's own noise."""
    opt = torch.optim.SGD(model.feedback_parameters(), lr=lr)
    for _ in range(steps):
        x, y = make_batch()
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("cls", [WM, PAL])
def test_dense_feedback_converges_to_wt_direction(cls):
    torch.manual_seed(0)
    model = small_mlp(cls(rate=0.1), sizes=(20, 48, 32, 10), activation="relu").compile()
    p = model.projections["h1->h2"]
    start = alignment_deg(p.weight.detach(), p.B.detach())
    train_feedback_only(model, lambda: (torch.randn(32, 20), torch.randint(0, 10, (32,))), 600, lr=0.1)
    for q in (p, model.projections["h2->out"]):
        W, B = q.weight.detach(), q.B.detach()
        assert alignment_deg(W, B) < 10, (q.name, start, alignment_deg(W, B))
        assert 0.8 < norm_ratio(W, B) < 1.2  # decay 1: B settles at Wᵀ, not a multiple of it
    assert start > 80  # it started as FA's random B


@pytest.mark.parametrize("cls", [WM, PAL])
def test_conv_feedback_converges_to_wt_direction(cls):
    torch.manual_seed(0)
    model = conv_circuit(cls(rate=0.1), "plain").compile()
    p = model.projections["h1->h2"]
    train_feedback_only(model, lambda: (torch.randn(8, 2, 8, 8), torch.randint(0, 4, (8,))), 300, lr=0.1)
    assert alignment_deg(p.weight.detach(), p.B.detach()) < 10


def test_sparse_wm_keeps_absent_synapses_empty():
    torch.manual_seed(0)
    model = small_mlp(WM(connector=FixedProbability(0.3, seed=4)), sizes=(20, 48, 32, 10)).compile()
    p = model.projections["h1->h2"]
    mask = p.mask_B.clone()
    train_feedback_only(model, lambda: (torch.randn(32, 20), torch.randint(0, 10, (32,))), 50, lr=0.1)
    assert torch.equal(p.mask_B, mask)
    assert torch.all(p.B.detach()[~mask] == 0)
    assert abs(mask.float().mean().item() - 0.3) < 0.03


def test_options_are_checked():
    assert make_rule("wm").name == "wm" and make_rule("pal").name == "pal"
    with pytest.raises(ValueError, match="wm: mirror_every"):
        WM(mirror_every=0)
    with pytest.raises(ValueError, match="pal: noise_std"):
        PAL(noise_std=0)


@pytest.mark.parametrize("rule", ["wm", "pal"])
@pytest.mark.parametrize("rate,decay", [(-0.1, 1.0), (0.5, -1.0)])
def test_a_negative_rate_or_decay_is_refused_each_alone(rule, rate, decay):
    with pytest.raises(ValueError, match=f"{rule}: rate and decay must be non-negative"):
        make_rule(rule, rate=rate, decay=decay)
