"""Sparse forward projections: ``connect(pre, post, geometry, connector=FixedProbability(p))``.

W (post × pre [× kH × kW]) carries a fixed boolean mask ``mask_W``; absent synapses hold zero
and never get weight, on the plain autograd path (pre is an input) and through every rule.
"""
import pytest
import torch

from circuits import Circuit, CircuitError, Training
from circuits.train import make_optimizer
from connectomes import AllToAll, Conv2d, Dense, Flatten, FixedProbability, Identity, MaxPool2d, export_sonata
from plasticity import BP, FA, KP, PFA, set_epoch_weight_decay
from populations import Input, Layer, Readout
from test_rules import check, reference, run_compiled

SIZES = (20, 60, 50, 10)


def sparse_mlp(rule, sizes=SIZES, p=0.3, seed=None, circuit_seed=0, activation="tanh"):
    """x0 → h1 → h2 → out, Dense, every projection thinned with FixedProbability(p, seed)."""
    c = Circuit("sparse", seed=circuit_seed)
    pops = [c.add(Input("x0", sizes[0]))]
    for i, n in enumerate(sizes[1:-1], start=1):
        pops.append(c.add(Layer(f"h{i}", n, activation=activation)))
    pops.append(c.add(Readout("out", sizes[-1])))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense(), connector=FixedProbability(p, seed=seed))
    if rule is not None:
        c.feedback(rule)
    return c


def sgd_steps(model, n=30, batch=16, shape=(SIZES[0],), n_out=SIZES[-1]):
    """SGD with momentum 0.9 and weight decay (first-epoch decay too), as training runs it."""
    g = torch.Generator().manual_seed(1)
    opt = make_optimizer(model, Training(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.03))
    model.attach_optimizer(opt)
    set_epoch_weight_decay(opt, 0)
    dtype = next(model.parameters()).dtype
    for _ in range(n):
        x = torch.randn(batch, *shape, generator=g, dtype=dtype)
        y = torch.randint(0, n_out, (batch,), generator=g)
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("rule", [BP, FA, KP, lambda: PFA(expansion=3)], ids=["bp", "fa", "kp", "pfa"])
def test_masked_synapses_stay_absent_through_training(rule):
    model = sparse_mlp(rule()).compile(implicit_feedback=True).double()
    masks = {n: p.mask_W.clone() for n, p in model.projections.items()}
    before = {n: p.weight.detach().clone() for n, p in model.projections.items()}
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == model.projections[name].weight.shape
        assert abs(m.double().mean().item() - 0.3) < 0.05, name  # ≥ 500 draws: σ < 0.021
        assert (model.projections[name].weight[~m] == 0).all()
        assert not model.projections[name].implicit  # a sparse W keeps plastic feedback explicit
    opt = sgd_steps(model)
    for name, p in model.projections.items():  # x0->h1: plain autograd; the others: the rule
        m = masks[name]
        assert torch.equal(p.mask_W, m), name  # the mask never changes
        assert torch.equal(p.weight[~m], torch.zeros_like(p.weight[~m])), name  # exactly zero
        assert (p.weight[m] != before[name][m]).all(), name  # the existing synapses learned
        assert (opt.state[p.weight]["momentum_buffer"][~m] == 0).all(), name


def test_sparse_kp_keeps_its_local_feedback_rule():
    """KP's ΔB = x δᵀ is local to the feedback synapse: B learns also where W has no synapse."""
    model = sparse_mlp(KP()).compile().double()
    p = model.projections["h1->h2"]
    B0 = p.B.detach().clone()
    sgd_steps(model, n=5)
    assert p.weight.grad is not None
    changed = (p.B - B0) != 0
    assert changed[~p.mask_W.t()].any() and (p.weight[~p.mask_W] == 0).all()


def test_a_masked_synapse_carries_no_error():
    """BP's e_in = (mask ⊙ W)ᵀ δ and ΔW = mask ⊙ δ xᵀ, against the closed form (float64)."""
    model = sparse_mlp(BP(), sizes=(6, 9, 7, 4), p=0.5).compile().double()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ (p.mask_W * p.weight))
    check(model, {n: g * model.projections[n].mask_W for n, g in grads.items()}, bias_grads)
    for p in model.projections.values():
        assert (p.weight.grad[~p.mask_W] == 0).all() and (~p.mask_W).any()


def test_fa_gradient_is_masked_and_error_is_unchanged():
    model = sparse_mlp(FA(), sizes=(6, 9, 7, 4), p=0.5).compile().double()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    run_compiled(model, x, y)
    grads, bias_grads, _, _ = reference(model, x, y, lambda n, p, d, e: d @ p.B.t())
    check(model, {n: g * model.projections[n].mask_W for n, g in grads.items()}, bias_grads)


def test_initial_scale_keeps_the_input_variance():
    dense = sparse_mlp(FA(), sizes=(400, 300, 10), p=1.0).compile()
    sparse = sparse_mlp(FA(), sizes=(400, 300, 10), p=0.25).compile()
    assert dense.projections["x0->h1"].mask_W is None  # p = 1 is dense
    W, Wd = sparse.projections["x0->h1"].weight, dense.projections["x0->h1"].weight
    m = sparse.projections["x0->h1"].mask_W
    assert abs(W.pow(2).mean().item() / Wd.pow(2).mean().item() - 1) < 0.05  # Σ_i W_ji² kept
    assert abs(W[m].pow(2).mean().item() * 0.25 / Wd.pow(2).mean().item() - 1) < 0.05
    # an explicit initial weight is only masked, not rescaled
    c = Circuit("w", seed=0)
    c.add(Input("x0", 5)), c.add(Readout("out", 3))
    w0 = torch.randn(3, 5)
    c.connect("x0", "out", Dense(), weight=w0, connector=FixedProbability(0.5, seed=2))
    c.feedback(BP())
    p = c.compile().projections["x0->out"]
    torch.testing.assert_close(p.weight.detach(), w0 * p.mask_W, rtol=0, atol=0)


def test_seeds():
    def mask(seed=None, circuit_seed=0, name="h1->h2"):
        return sparse_mlp(FA(), seed=seed, circuit_seed=circuit_seed).compile().projections[name].mask_W

    assert torch.equal(mask(seed=1), mask(seed=1))
    assert torch.equal(mask(seed=1, circuit_seed=0), mask(seed=1, circuit_seed=5))  # its own seed
    assert not torch.equal(mask(seed=1), mask(seed=2))
    assert torch.equal(mask(), mask())  # no seed of its own: the circuit's
    assert not torch.equal(mask(circuit_seed=0), mask(circuit_seed=1))


def test_state_dict_round_trip_keeps_the_mask():
    model = sparse_mlp(PFA(expansion=2), seed=1).compile().double()
    sgd_steps(model, n=3)
    other = sparse_mlp(PFA(expansion=2), seed=7).compile().double()  # another mask
    assert not torch.equal(other.projections["h1->h2"].mask_W, model.projections["h1->h2"].mask_W)
    other.load_state_dict(model.state_dict())
    for name, p in model.projections.items():
        q = other.projections[name]
        assert torch.equal(q.mask_W, p.mask_W) and torch.equal(q.weight, p.weight)
    assert "projections.h1->h2.mask_W" in model.state_dict()
    sgd_steps(other, n=3)  # the loaded mask is the one that masks gradients
    for q in other.projections.values():
        assert (q.weight[~q.mask_W] == 0).all()


def test_conv_mask_has_the_kernel_shape():
    c = Circuit("conv", seed=0)
    x = c.add(Input("x0", (2, 8, 8)))
    h1 = c.add(Layer("h1", (4, 8, 8), activation="tanh"))
    h2 = c.add(Layer("h2", (6, 8, 8), activation="tanh"))
    y = c.add(Readout("out", 4))
    c.connect(x, h1, Conv2d(3, padding=1), connector=FixedProbability(0.5, seed=3))
    c.connect(h1, h2, Conv2d(3, padding=1, groups=2), connector=FixedProbability(0.4, seed=3))
    c.connect(h2, y, Dense())
    c.feedback(PFA(expansion=2))
    model = c.compile().double()
    p = model.projections["h1->h2"]
    assert p.mask_W.shape == p.weight.shape == (6, 2, 3, 3)
    assert model.projections["h2->out"].mask_W is None
    masks = {n: q.mask_W.clone() for n, q in model.projections.items() if q.mask_W is not None}
    sgd_steps(model, n=10, batch=5, shape=(2, 8, 8), n_out=4)
    for n, m in masks.items():
        q = model.projections[n]
        assert torch.equal(q.mask_W, m) and (q.weight[~m] == 0).all() and (q.weight[m] != 0).all(), n
    # the error through BP's Wᵀ on a sparse kernel: autograd's adjoint of the masked conv
    c.feedback(BP())
    model = c.compile().double()
    xin = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    h = model.projections["x0->h1"](xin).detach().tanh().requires_grad_()
    q = model.projections["h1->h2"]
    out = q(h)
    g = torch.randn_like(out)
    out.backward(g)
    hh, W = h.detach().requires_grad_(), (q.weight * q.mask_W).detach().requires_grad_()
    ref = torch.nn.functional.conv2d(hh, W, padding=1, groups=2)
    e_ref, gW = torch.autograd.grad(ref, [hh, W], g)
    torch.testing.assert_close(h.grad, e_ref)
    torch.testing.assert_close(q.weight.grad, gW * q.mask_W)


def test_pfa_implicit_request_with_sparse_W_equals_the_explicit_route():
    """PFA's ΔR = x ēᵀ (= ΔWᵀBᵀ of the unmasked ΔW) is local, so R − WᵀBᵀ no longer shrinks by a
    scalar when W is sparse: ``implicit_feedback=True`` keeps R explicit, and every route of
    computing the same rule (explicit ē, factored, implicit request) gives the same training."""
    models = [sparse_mlp(PFA(expansion=3, route="explicit")).compile().double(),
              sparse_mlp(PFA(expansion=3, route="factored")).compile().double(),
              sparse_mlp(PFA(expansion=3)).compile(implicit_feedback=True).double()]
    assert not any(p.implicit for p in models[2].projections.values())
    for model in models:
        sgd_steps(model, n=20)
    ref = models[0]
    for model in models[1:]:
        for name, p in model.projections.items():
            torch.testing.assert_close(p.weight, ref.projections[name].weight, rtol=1e-9, atol=1e-12)
            if p.sends_error:
                torch.testing.assert_close(p.R, ref.projections[name].R, rtol=1e-9, atol=1e-12)
    p = ref.projections["h1->h2"]
    assert (p.weight[~p.mask_W] == 0).all()
    assert not torch.allclose(p.R - p.weight.t() @ p.B.t(), torch.zeros_like(p.R))


def test_graph_summary_and_describe():
    c = sparse_mlp(FA(), seed=1)
    summary = c.summary()
    assert "FixedProbability(p=0.3, seed=1)" in summary
    assert c.projections()["h1->h2"]["connector"].p == 0.3
    d = {p["name"]: p for p in c.describe()["projections"]}
    assert d["h1->h2"]["connector"] == {"connector": "fixed_probability", "p": 0.3, "seed": 1}
    model = c.compile()
    assert "sparse" in model.schedule_summary()
    dense = Circuit("d", seed=0)
    dense.add(Input("x0", 4)), dense.add(Readout("out", 3))
    dense.connect("x0", "out", Dense(), connector=AllToAll())
    assert dense.projections()["x0->out"]["connector"] is None  # AllToAll is dense
    assert "Fixed" not in dense.summary() and "connector" not in dense.describe()["projections"][0]


def test_connector_on_a_weightless_projection_is_an_error():
    c = Circuit("w", seed=0)
    x = c.add(Input("x0", (2, 4, 4)))
    pool = c.add(Layer("pool", (2, 2, 2), activation="identity"))
    flat = c.add(Layer("flat", 8, activation="identity"))
    c.add(Readout("out", 3))
    with pytest.raises(CircuitError, match=r"projection 'x0->pool' is weightless \(maxpool2d\): it has no synapses"):
        c.connect(x, pool, MaxPool2d(2), connector=FixedProbability(0.5))
    c.connect(x, pool, MaxPool2d(2))
    with pytest.raises(CircuitError, match=r"projection 'pool->flat' is weightless \(flatten\).*takes no connector"):
        c.connect(pool, flat, Flatten(), connector=FixedProbability(0.5))
    with pytest.raises(CircuitError, match=r"'skip' is weightless \(identity\)"):
        c.connect(pool, flat, Identity(), name="skip", connector=AllToAll())
    with pytest.raises(CircuitError, match=r"'flat->out': connector must be a connector"):
        c.connect(flat, "out", Dense(), connector=0.5)


def test_connectome_records_and_sonata(tmp_path):
    from connectomes import read_connectome, write_connectome
    import h5py

    model = sparse_mlp(FA(), sizes=(6, 9, 7, 4), p=0.5, seed=1).compile()
    records = model.connectome()
    fwd = {r["name"]: r for r in records if r["kind"] == "forward"}
    for name, p in model.projections.items():
        r = fwd[name]
        assert torch.equal(r["mask"], p.mask_W) and (r["weight"][~r["mask"]] == 0).all()
    back = {r["name"]: r for r in read_connectome(write_connectome(str(tmp_path / "c.h5"), records))}
    assert torch.equal(back["h1->h2"]["mask"], fwd["h1->h2"]["mask"])
    paths = export_sonata(records, str(tmp_path / "sonata"))
    with h5py.File(paths["edges"], "r") as f:
        for name, r in fwd.items():
            g = f["edges"][name]
            n_edges = g["source_node_id"].shape[0]
            assert n_edges == int((r["weight"] != 0).sum()) <= int(r["mask"].sum())
            post, pre = g["target_node_id"][()], g["source_node_id"][()]
            assert r["mask"][post.astype(int), pre.astype(int)].all()  # no absent synapse as an edge
