"""Dale's principle: cell types, the balanced draw, every rule's step in float64 under the
constraint, no synapse changing sign through training, refusals, and the description round trip."""
import pytest
import torch

from circuits import Circuit, Training
from circuits.rebuild import rebuild
from circuits.train import make_optimizer
from connectomes import Conv2d, Dense
from connectomes.dale import balanced_init, project_signs_, sign_violations
from helpers import TEACHER_SIZES, small_mlp, teacher_batches
from plasticity import make_rule
from populations import Input, Layer, Readout, cell_signs
from test_rules import check, reference, run_compiled

EI = {"E": 0.8, "I": 0.2}
RULES = ("bp", "fa", "dfa", "kp", "wm", "pal", "pfa", "pfa-o")


def dale_mlp(rule, sizes=(6, 10, 5, 4), activation="tanh", cells=EI, seed=0, input_cells=None):
    """small_mlp with cell types on every hidden layer and the readout."""
    c = Circuit("dale", seed=seed)
    pops = [c.add(Input("x0", sizes[0], cells=input_cells))]
    for i, n in enumerate(sizes[1:-1], start=1):
        pops.append(c.add(Layer(f"h{i}", n, activation=activation, cells=cells)))
    pops.append(c.add(Readout("out", sizes[-1], cells=cells)))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense())
    if rule is not None:
        c.feedback(rule)
    return c


def constrained(model):
    """[(projection, tensor name, tensor, its sender signs)] of every Dale-constrained tensor."""
    return [(n, t, getattr(p, t), getattr(p, b)) for n, p in model.projections.items() for t, b in p.dale.items()]


# -- cell types ------------------------------------------------------------------------------------
def test_cell_types_are_ordered_e_first_and_described_only_when_given():
    h = Layer("h", 10, cells={"I": 0.2, "E": 0.8})
    assert h.signs().tolist() == [1.0] * 8 + [-1.0] * 2
    assert h.describe()["cells"] == {"E": 0.8, "I": 0.2} and list(h.describe()["cells"]) == ["E", "I"]
    plain = Layer("h", 10)
    assert plain.signs() is None and "cells" not in plain.describe()
    assert Input("x", 5).describe() == {"kind": "input", "name": "x", "shape": [5]}
    assert cell_signs({"E": 1.0}, 3).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("cells, message", [({"E": 0.8, "X": 0.2}, "cells must be a dict"),
                                            ({"E": 0.7, "I": 0.2}, "sum to 1"),
                                            ({"E": 1.5}, "in \\[0, 1\\]"), ("E", "cells must be a dict")])
def test_bad_cell_types_are_refused_naming_the_population(cells, message):
    with pytest.raises(ValueError, match=f"population 'h'.*{message}"):
        Layer("h", 10, cells=cells)


def test_feature_maps_and_convolutions_are_refused():
    with pytest.raises(ValueError, match="population 'h': cell types are implemented for vector populations"):
        Layer("h", (2, 4, 4), cells=EI)
    c = Circuit("conv")
    x = c.add(Input("x", (1, 4, 4), cells={"E": 1.0}))
    h = c.add(Layer("h", (2, 4, 4)))
    y = c.add(Readout("y", 3))
    c.connect(x, h, Conv2d(3, padding=1))
    c.connect(h, y, Dense())
    c.feedback(make_rule("fa"))
    with pytest.raises(ValueError, match="projection 'x->h': Dale's principle .* Dense projections, not conv2d"):
        c.compile()


# -- the balanced draw -------------------------------------------------------------------------------
def test_balanced_init_cancels_each_cells_mean_input_and_keeps_glorots_variance():
    n_out, n_in = 300, 400
    signs = cell_signs(EI, n_in)
    W = balanced_init((n_out, n_in), signs, torch.Generator().manual_seed(0), 2 / (n_in + n_out), torch.float64)
    assert sign_violations(W, signs) == 0 and bool((W[:, :320] > 0).all()) and bool((W[:, 320:] < 0).all())
    # every post cell: inhibition cancels excitation exactly, so a constant input gives zero
    torch.testing.assert_close(W @ torch.full((n_in,), 0.7, dtype=torch.float64), torch.zeros(n_out, dtype=torch.float64),
                               rtol=0, atol=1e-13)
    # Glorot's second moment: Var(Σ_j W_rj x_j) = Σ_j W_rj² for zero-mean unit-variance x, on average fan_in · 2/(fan_in + fan_out)
    assert W.square().mean().item() == pytest.approx(2 / (n_in + n_out), rel=1e-12)
    # a non-negative rate (ReLU of a Gaussian): mean input near zero next to its spread, not as for an all-E draw
    x = torch.relu(torch.randn(2000, n_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    a = x @ W.t()
    assert a.mean(0).abs().max() < 0.15 * a.std(0).min()
    all_e = balanced_init((n_out, n_in), torch.ones(n_in), torch.Generator().manual_seed(0), 2 / (n_in + n_out),
                          torch.float64)
    assert (x @ all_e.t()).mean(0).min() > 5 * (x @ all_e.t()).std(0).max()
    # I synapses are N_E/N_I = 4 times as strong as E synapses on average (equal summed magnitudes)
    assert W[:, 320:].abs().mean() / W[:, :320].mean() == pytest.approx(4.0, rel=1e-12)


def test_forward_weights_are_drawn_balanced_in_a_compiled_circuit():
    model = dale_mlp(make_rule("fa"), sizes=(6, 50, 40, 10)).compile()
    for name in ("h1->h2", "h2->out"):
        p = model.projections[name]
        assert sign_violations(p.weight, p.sign_W) == 0
        torch.testing.assert_close(p.weight.sum(1), torch.zeros(p.weight.shape[0]), rtol=0, atol=1e-6)
        assert p.weight.double().square().mean().item() == pytest.approx(2 / sum(p.weight.shape), rel=1e-5)
    assert not model.projections["x0->h1"].dale  # the input has no cell types: signed afferents


# -- every rule's step in float64 under the constraint -----------------------------------------------
def setup(rule, activation="tanh"):
    model = dale_mlp(rule, activation=activation).compile().double()
    g = torch.Generator().manual_seed(3)
    return model, torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (8,), generator=g)


FEEDBACK = {  # e_in before σ', closed form: δ (batch × post) → batch × pre
    "bp": lambda n, p, d, e: d @ p.weight,
    "fa": lambda n, p, d, e: d @ p.B.t(),
    "dfa": lambda n, p, d, e_L: e_L @ p.B.t(),
    "kp": lambda n, p, d, e: d @ p.B.t(),
    "wm": lambda n, p, d, e: d @ p.B.t(),
    "pfa": lambda n, p, d, e: (d @ p.B.t()) @ p.R.t(),  # ē = B δ, e_in = R ē
    "pfa-o": lambda n, p, d, e: (d @ p.B.t()) @ p.R.t(),
}


@pytest.mark.parametrize("rule", list(FEEDBACK) + ["pal"])
def test_each_rules_step_is_its_closed_form_under_dale(rule):
    """The constraint changes the tensors' draws, not the rules' arithmetic: ΔW, Δbias, e_in and
    the plastic feedback's change are the closed forms of the unconstrained rule."""
    r = make_rule(rule, noisy_forward=False) if rule == "pal" else make_rule(rule)
    model, x, y = setup(r)
    if rule == "pal":
        model.eval()  # no noise: e_in = B δ exactly, B unchanged
    run_compiled(model, x, y)
    grads, bias_grads, deltas, xs = reference(model, x, y, FEEDBACK.get(rule, FEEDBACK["fa"]))
    check(model, grads, bias_grads)
    for name, p in model.projections.items():
        if rule == "kp" and p.sends_error:
            torch.testing.assert_close(p.B.grad, grads[name].t(), rtol=1e-10, atol=1e-12)
        if rule in ("pfa", "pfa-o") and p.sends_error:
            torch.testing.assert_close(p.R.grad, grads[name].t() @ p.B.t(), rtol=1e-10, atol=1e-12)  # ΔR = ΔWᵀBᵀ


@pytest.mark.parametrize("rule", RULES)
def test_every_synapse_has_its_senders_sign(rule):
    model = dale_mlp(make_rule(rule), sizes=(6, 10, 8, 4)).compile()
    out_signs, h2_signs = cell_signs(EI, 4), cell_signs(EI, 8)
    names = {(n, t) for n, t, _, _ in constrained(model)}
    assert ("h1->h2", "weight") in names and ("h2->out", "weight") in names
    for n, t, tensor, signs in constrained(model):
        assert sign_violations(tensor, signs) == 0, (n, t)
        if not (rule == "pfa-o" and t == "B"):  # (PFA-o's B: one nonzero per ē cell, below)
            assert bool((tensor != 0).all()), (n, t)  # drawn with signs, not clipped into shape
    p = model.projections["h1->h2"]
    assert torch.equal(p.sign_W, cell_signs(EI, 10).float())
    if rule in ("fa", "kp", "wm", "pal"):  # B (pre × post) from the post cells
        assert torch.equal(p.sign_B, h2_signs.float()) and bool((torch.sign(p.B) == h2_signs.float()).all())
    if rule == "dfa":  # B (pre × readout) from the readout cells
        assert torch.equal(p.sign_B, out_signs.float()) and bool((torch.sign(p.B) == out_signs.float()).all())
    if rule in ("pfa", "pfa-o"):  # B (ē × post) from the post cells, R (pre × ē) from ē cells, E and I alike
        assert torch.equal(p.sign_B, h2_signs.float())
        assert sorted(set(p.sign_R.tolist())) == [-1.0, 1.0] and p.sign_R.sum() == 0
    if rule == "pfa-o":  # semi-orthogonal with one sign per column: disjoint supports, BᵀB = I
        torch.testing.assert_close(p.B.t() @ p.B, torch.eye(8), rtol=0, atol=1e-6)
        owners = (p.B != 0).int().argmax(1)
        for j in range(8):  # post cell j's ē block holds E and I cells
            assert sorted(set(p.sign_R[owners == j].tolist())) == [-1.0, 1.0]


@pytest.mark.parametrize("rule", RULES)
def test_no_synapse_changes_sign_through_training(rule):
    """50 SGD steps at a learning rate that flips many signs unconstrained (checked below): after
    every step no forward or feedback synapse has the wrong sign, and the projection did work."""
    model = dale_mlp(make_rule(rule), sizes=TEACHER_SIZES, activation="relu").compile().double()
    training = Training(data="mnist", epochs=1, batch_size=16, lr=0.5, momentum=0.9, weight_decay=1e-4)
    opt = make_optimizer(model, training)
    model.attach_optimizer(opt)
    plastic_feedback = {(n, t) for n, t, tensor, _ in constrained(model) if isinstance(tensor, torch.nn.Parameter)
                        and t != "weight"}
    zeroed = 0
    for x, y in teacher_batches(50):
        before = {(n, t): tensor.detach().clone() for n, t, tensor, _ in constrained(model)}
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
        for n, t, tensor, signs in constrained(model):
            assert sign_violations(tensor, signs) == 0, (n, t)
            zeroed += int(((tensor == 0) & (before[(n, t)] != 0)).sum())
    assert zeroed > 0  # the constraint was active: synapses that would have flipped were held at zero
    if rule in ("kp", "wm", "pal", "pfa", "pfa-o"):
        assert plastic_feedback, rule


def test_without_the_projection_signs_flip():
    """The test above can fail: the same training without ``attach_optimizer`` breaks the signs."""
    model = dale_mlp(make_rule("kp"), sizes=TEACHER_SIZES, activation="relu").compile().double()
    opt = make_optimizer(model, Training(data="mnist", epochs=1, batch_size=16, lr=0.5, momentum=0.9))
    for x, y in teacher_batches(50):
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
    assert sign_violations(model.projections["h1->h2"].weight, model.projections["h1->h2"].sign_W) > 0
    assert sign_violations(model.projections["h1->h2"].B, model.projections["h1->h2"].sign_B) > 0


def test_projection_zeroes_only_flipped_synapses():
    t = torch.tensor([[0.5, -0.2, 0.3], [-0.1, 0.4, 0.0]], dtype=torch.float64)
    project_signs_(t, torch.tensor([1.0, -1.0, -1.0]))
    assert t.tolist() == [[0.5, -0.2, 0.0], [0.0, 0.0, 0.0]]


# -- refusals, defaults, description ----------------------------------------------------------------
@pytest.mark.parametrize("rule, why", [("usf", "transported from W"), ("brsf", "transported from W"),
                                       ("frsf", "transported from W"), ("ifa", "exact angle"),
                                       ("mixed", "not implemented under Dale"),
                                       ("pfa-o-square", "at least two ē cells")])
def test_rules_without_a_dale_form_are_refused_by_name(rule, why):
    with pytest.raises(ValueError, match=f"projection 'h1->h2': {rule}.*{why}"):
        dale_mlp(make_rule(rule)).compile()


def test_circuits_without_cell_types_are_as_before():
    plain = small_mlp(make_rule("kp"), sizes=(6, 10, 5, 4)).compile(implicit_feedback=True)
    assert not any(k.split(".")[-1].startswith("sign_") for k in plain.state_dict())
    assert all(not p.dale for p in plain.projections.values())
    assert plain.projections["h1->h2"].implicit  # Dale turns implicit feedback off, nothing else does here
    dale = dale_mlp(make_rule("kp"), sizes=(6, 10, 5, 4)).compile(implicit_feedback=True)
    assert not dale.projections["h1->h2"].implicit
    rec = {r["name"]: r for r in plain.connectome()}
    assert "pre_sign" not in rec["h1->h2"] and "post_sign" not in rec["h1->h2:B"]


def test_cell_types_round_trip_through_the_description():
    c = dale_mlp(make_rule("pfa"), input_cells={"E": 1.0})
    again = rebuild(c.describe())
    assert again.describe() == c.describe()
    a, b = c.compile(), again.compile()
    theirs = b.state_dict()
    assert set(theirs) == set(a.state_dict())
    for k, v in a.state_dict().items():
        assert (torch.equal(v, theirs[k]) if isinstance(v, torch.Tensor) else v == theirs[k]), k


def test_connectome_records_and_files_carry_cell_types(tmp_path):
    from connectomes import read_connectome, write_connectome

    model = dale_mlp(make_rule("pfa"), sizes=(6, 10, 5, 4)).compile()
    recs = {r["name"]: r for r in model.connectome()}
    assert recs["h1->h2"]["pre_sign"].tolist() == cell_signs(EI, 10).tolist()
    assert recs["h1->h2"]["post_sign"].tolist() == cell_signs(EI, 5).tolist()
    assert "pre_sign" not in recs["x0->h1"]  # signed input
    assert recs["h1->h2:R"]["pre_sign"].tolist() == model.projections["h1->h2"].sign_R.tolist()  # from ē
    assert recs["h1->h2:B"]["pre_sign"].tolist() == cell_signs(EI, 5).tolist()  # from h2
    back = {r["name"]: r for r in read_connectome(write_connectome(str(tmp_path / "c.h5"), list(recs.values())))}
    assert torch.equal(back["h1->h2"]["post_sign"], recs["h1->h2"]["post_sign"])


def test_pfa_o_under_dale_needs_two_e_bar_cells_per_post_cell():
    """PFA-o's sign-constrained semi-orthogonal B needs N̄ ≥ 2·N_out: 1.5 ē cells per post cell is
    refused, 2 is built."""
    with pytest.raises(ValueError, match="at least two ē cells"):
        dale_mlp(make_rule("pfa-o", expansion=1.5), sizes=(6, 10, 8, 4)).compile()
    dale_mlp(make_rule("pfa-o", expansion=2), sizes=(6, 10, 8, 4)).compile()
