"""What the connectome records hold, against known values (issue 25): the feedback tensor that
``CompiledCircuit.connectome()`` records for each rule (its orientation, its sign, its values:
Wᵀ, s·sign(Wᵀ), |M|⊙sign(Wᵀ), B...), and the raw datasets of a run's ``connectome.h5`` read with
h5py (not through ``read_connectome``) against the checkpoint's tensors, so that a writer and a
reader that both transpose, or a record that holds Wᵀ where W belongs, fail.

Sizes are all different (x0 6, h1 7, h2 5, out 4), so a transposed tensor never has the right shape.
"""
import math

import h5py
import numpy as np
import pytest
import torch

from circuits import Circuit, Training
from circuits.data import Split
from circuits.train import load_checkpoint, make_optimizer, train
from connectomes import Dense
from connectomes.geometry import xavier_uniform
from helpers import small_mlp
from plasticity import make_rule
from plasticity.base import seeded_generator
from populations import Input, Layer, Readout

SIZES = {"x0": 6, "h1": 7, "h2": 5, "out": 4}
FEEDBACK = ("h1->h2", "h2->out")  # the projections that send errors (x0 is an input)


def trained(rule, implicit=False, steps=5):
    """small_mlp(rule) after a few SGD steps (momentum, weight decay), so W, its signs and any
    plastic feedback have moved from their initial draws."""
    model = small_mlp(make_rule(rule)).compile(implicit_feedback=implicit)
    opt = make_optimizer(model, Training(lr=0.1, momentum=0.9, weight_decay=1e-2))
    model.attach_optimizer(opt)
    g = torch.Generator().manual_seed(4)
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
    return model


def feedback_records(model):
    """{forward projection: {tensor name: record}} of the feedback records."""
    out = {}
    for r in model.connectome():
        if r["kind"] == "feedback":
            out.setdefault(r["forward"], {})[r["name"].split(":")[1]] = r
    return out


def initial_feedback(name, shape):
    """The seeded Glorot draw a rule makes for projection ``name`` (circuit seed 0)."""
    return xavier_uniform(shape, seeded_generator(0, name, "feedback"))


def check_direct(record, fwd):
    """A feedback record from fwd's post.e to its pre.e: post × pre of the feedback projection,
    i.e. N_pre(fwd) × N_post(fwd), like Wᵀ."""
    pre, post = fwd.split("->")
    assert (record["pre"], record["post"]) == (post, pre)
    assert tuple(record["weight"].shape) == (SIZES[pre], SIZES[post])


@pytest.mark.parametrize("rule", ["bp", "usf", "frsf", "brsf"])
def test_transported_feedback_is_recorded_as_its_function_of_W(rule):
    """BP: Wᵀ; uSF: sign(Wᵀ)·√(2/(fan_in+fan_out)); frSF: |M|⊙sign(Wᵀ) with |M| the fixed
    Glorot draw; brSF: its expected value (a/2)·sign(Wᵀ), a = √(6/(fan_in+fan_out)); each exact,
    oriented pre × post of W, marked transported. Planted bugs caught: a record holding W instead
    of Wᵀ (or a transposed record), a sign flipped in a rule's ``feedback_tensor``, the scale or
    |M| not applied."""
    model = trained(rule)
    records = feedback_records(model)
    assert set(records) == set(FEEDBACK)
    for fwd in FEEDBACK:
        (record,) = records[fwd].values()
        check_direct(record, fwd)
        assert record["transported"] and not record["plastic"] and record["rule"] == rule
        W = model.projections[fwd].weight.detach()
        fan_in, fan_out = W.shape[1], W.shape[0]
        signs = torch.sign(W.t())
        expected = {
            "bp": W.t(),
            "usf": signs * math.sqrt(2 / (fan_in + fan_out)),
            "frsf": initial_feedback(fwd, tuple(W.shape)).abs().t() * signs,
            "brsf": signs * (math.sqrt(6 / (fan_in + fan_out)) / 2),
        }[rule]
        assert torch.equal(record["weight"], expected), fwd
        assert (torch.sign(record["weight"]) == signs).all()  # every synapse of the sign of Wᵀ


@pytest.mark.parametrize("rule", ["fa", "kp", "dfa"])
def test_stored_feedback_is_recorded_as_B(rule):
    """FA: the fixed B as drawn at the start (seeded Glorot, pre × post of W); KP: the plastic B
    (the parameter, moved by training: B − Wᵀ = B₀ − W₀ᵀ shrunk by the weight decay); DFA: B from
    the readout (N_pre × N_readout). Planted bugs caught: a transposed record, a record of the
    initial B in place of the trained one (KP), a record of B's transpose (DFA)."""
    model = trained(rule)
    records = feedback_records(model)
    for fwd in FEEDBACK:
        (record,) = records[fwd].values()
        p = model.projections[fwd]
        pre, post = fwd.split("->")
        if rule == "dfa":
            assert (record["pre"], record["post"]) == ("out", pre)
            assert tuple(record["weight"].shape) == (SIZES[pre], SIZES["out"])
            assert torch.equal(record["weight"], initial_feedback(fwd, (SIZES[pre], SIZES["out"])))
            continue
        check_direct(record, fwd)
        assert not record["transported"] and record["plastic"] == (rule == "kp")
        B0 = initial_feedback(fwd, (SIZES[pre], SIZES[post]))
        if rule == "fa":
            assert torch.equal(record["weight"], B0)
        else:
            assert torch.equal(record["weight"], p.B.detach())
            assert not torch.equal(record["weight"], B0)  # it learned
            W = p.weight.detach()
            # with one SGD setting, B − Wᵀ moves only by the decay: it is a multiple of B₀ − W₀ᵀ
            W0 = xavier_uniform(tuple(W.shape), seeded_generator(0, fwd, "W"))
            E0, E = B0 - W0.t(), record["weight"] - W.t()
            a = (E * E0).sum() / (E0 * E0).sum()
            assert 0.5 < a < 1 and torch.allclose(E, a * E0, atol=1e-5)


def test_implicit_kp_and_pfa_record_their_closed_forms():
    """Implicit KP records B = Wᵀ + a E₀, implicit PFA R = WᵀBᵀ + a E₀ (E₀ from the initial
    draws, a < 1 after decayed steps) and B as drawn: the same records as the explicit runs to
    float32 rounding. Planted bugs caught: an implicit record of Wᵀ alone (a E₀ dropped) or of
    the initial tensor."""
    for rule, names in (("kp", ("B",)), ("pfa", ("B", "R"))):
        implicit, explicit = trained(rule, implicit=True), trained(rule)
        a, b = feedback_records(implicit), feedback_records(explicit)
        for fwd in FEEDBACK:
            assert set(a[fwd]) == set(names)
            for name in names:
                ra, rb = a[fwd][name], b[fwd][name]
                assert (ra["pre"], ra["post"]) == (rb["pre"], rb["post"])
                torch.testing.assert_close(ra["weight"], rb["weight"], rtol=1e-5, atol=1e-6)
            p = implicit.projections[fwd]
            assert 0.5 < p.state["a"] < 1
        if rule == "pfa":
            p = implicit.projections["h2->out"]
            R = a["h2->out"]["R"]["weight"]
            assert tuple(R.shape) == (SIZES["h2"], p.B.shape[0]) and torch.equal(a["h2->out"]["B"]["weight"], p.B)
            torch.testing.assert_close(R, p.weight.detach().t() @ p.B.t() + p.state["a"] * p.E0, rtol=1e-5, atol=1e-6)


# -- the raw datasets of connectome.h5 --------------------------------------------------------
def circuit(rule):
    c = Circuit("raw", seed=0)
    pops = [c.add(Input("x0", 6)), c.add(Layer("h1", 7, activation="tanh")), c.add(Layer("h2", 5, activation="tanh")),
            c.add(Readout("out", 4))]
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense())
    c.feedback(make_rule(rule, **({"expansion": 2} if rule == "pfa" else {})))
    return c


@pytest.mark.parametrize("rule", ["pfa", "fa", "bp"])
def test_connectome_h5_datasets_are_post_by_pre_as_in_the_checkpoint(rule, tmp_path):
    """One epoch through ``circuits.train.train``; then every dataset of connectome.h5, read with
    h5py, equals the checkpoint's tensor: forward W (post × pre), FA's B and PFA's B (N̄ × N_out)
    and R (N_in × N̄) as stored, BP's transported Wᵀ; shapes are (N_post, N_pre) of the record's
    populations. Planted bug caught: a writer that stores tensors transposed and a reader that
    transposes them back (``read_connectome`` round trips stay exact)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
    training = Training(data="generated", epochs=1, batch_size=8, lr=0.1, momentum=0.9, implicit_feedback=False)
    run = tmp_path / rule
    train(circuit(rule), training, rule=rule, run_dir=str(run), data_root="unused", seed=0, progress=False,
          splits={"train": Split(x, y), "test": Split(x[:8], y[:8])})
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert (state["epoch"], state["step"]) == (1, 0)
    model = state["model"]
    n_bar = {"h1->h2": 10, "h2->out": 8}
    sizes = {**SIZES, **{f"{k}:ebar": v for k, v in n_bar.items()}}
    seen = set()
    with h5py.File(run / "connectome.h5", "r") as f:
        assert f.attrs["epoch"] == 1 and f.attrs["rule"] == rule
        for group in f["projections"].values():
            name, kind = group.attrs["name"], group.attrs["kind"]
            data = np.array(group["weight"])
            assert group.attrs["orientation"] == "post x pre"
            assert data.shape == (sizes[group.attrs["post"]], sizes[group.attrs["pre"]]), name
            if kind == "forward":
                expected = model[f"projections.{name}.weight"]
            else:
                fwd, tensor = name.split(":")
                expected = (model[f"projections.{fwd}.weight"].t() if tensor == "Wt"
                            else model[f"projections.{fwd}.{tensor}"])
            assert np.array_equal(data, expected.numpy()), name
            seen.add(name)
    forward = {"x0->h1", "h1->h2", "h2->out"}
    expected_names = forward | {f"{fwd}:{t}" for fwd in FEEDBACK
                                for t in {"pfa": ("B", "R"), "fa": ("B",), "bp": ("Wt",)}[rule]}
    assert seen == expected_names
