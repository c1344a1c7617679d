"""The training loop against known answers (issue 25): the order it draws each epoch, the weight
decay each epoch runs with, the route (implicit or explicit feedback) each optimizer setting gets,
and the batch-norm statistics ``update_alignment`` must leave alone.

Tiny circuits on generated data, run through ``circuits.train.train`` itself (the code a run
uses), so that a bug in the loop, not only in a helper it calls, fails here.
"""
import json
import math

import pytest
import torch

from circuits import Circuit, Training
from circuits import compile as compile_module
from circuits import train as train_module
from circuits.data import LoaderSplit, Split, batches
from circuits.errors import CircuitError
from circuits.train import make_optimizer, train
from connectomes import Dense, FixedProbability
from helpers import small_mlp
from plasticity import make_rule
from plasticity.optim import BatchManhattanSGD
from populations import Input, Layer, Readout

N, BATCH = 24, 8  # 3 steps per epoch


def indexed_splits(n=N):
    """Generated data whose first input feature is the cell's index (0..n-1), so the order the
    loop trains in can be read off what the circuit sees."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 4, generator=g)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    y = torch.arange(n) % 3
    return {"train": Split(x, y), "test": Split(x[:6].clone(), y[:6].clone())}


def tiny(rule="fa"):
    c = Circuit("loop", seed=0)
    x = c.add(Input("x", 4))
    h = c.add(Layer("h", 5, activation="tanh"))
    y = c.add(Readout("y", 3))
    c.connect(x, h, Dense())
    c.connect(h, y, Dense())
    c.feedback(make_rule(rule))
    return c


def run(tmp_path, monkeypatch, name, training, rule="fa", seed=0, splits=None):
    """Train through ``circuits.train.train``; returns (the indices of the cells of every training
    step, grouped by epoch; the optimizer's groups as each step saw them; the metrics)."""
    seen, groups = [], []
    forward = compile_module.CompiledCircuit.forward

    def recording(self, x, exact=False):
        if self.training and not exact:
            seen.append(x[:, 0].round().long().tolist())
        return forward(self, x, exact)

    attach = compile_module.CompiledCircuit.attach_optimizer

    def attaching(self, optimizer):
        optimizer.register_step_pre_hook(lambda opt, args, kw: groups.append(
            {g["name"]: (g["weight_decay"], g["lr"]) for g in opt.param_groups}))
        return attach(self, optimizer)

    monkeypatch.setattr(compile_module.CompiledCircuit, "forward", recording)
    monkeypatch.setattr(compile_module.CompiledCircuit, "attach_optimizer", attaching)
    # the per-epoch metrics run the circuit on a probe batch in training mode: not a training step
    monkeypatch.setattr(train_module, "projection_metrics", lambda model, probe: {})
    history = train(tiny(rule), training.resolve(rule), rule=rule, run_dir=str(tmp_path / name),
                    data_root="unused", seed=seed, progress=False,
                    splits=splits if splits is not None else indexed_splits())
    steps = math.ceil(N / BATCH)
    assert len(seen) == len(groups) == steps * training.epochs
    orders = [sum(seen[e * steps:(e + 1) * steps], []) for e in range(training.epochs)]
    return orders, [groups[e * steps:(e + 1) * steps] for e in range(training.epochs)], history


# -- 1. the order of each epoch ---------------------------------------------------------------
def test_each_epoch_trains_on_a_new_order_that_the_seed_repeats(tmp_path, monkeypatch):
    """Every epoch sees every cell once, in an order of its own that is not the stored one, and
    a second run with the same seed sees the very same orders (another seed: others). Planted
    bugs caught: the loop (or ``data.batches``) ignoring the epoch (every epoch in one order),
    no shuffling (the stored order), a shuffle not seeded by the run's seed."""
    training = Training(data="generated", epochs=3, batch_size=BATCH, lr=0.01)
    orders, _, _ = run(tmp_path, monkeypatch, "a", training)
    for order in orders:
        assert sorted(order) == list(range(N)) and order != list(range(N))
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    # the known draw: randperm seeded by seed · 100003 + epoch (changing it changes every recorded run)
    expected = [torch.randperm(N, generator=torch.Generator().manual_seed(0 * 100_003 + e)).tolist() for e in range(3)]
    assert orders == expected
    again, _, _ = run(tmp_path, monkeypatch, "b", training)
    assert again == orders
    other, _, _ = run(tmp_path, monkeypatch, "c", training, seed=1)
    assert other[0] != orders[0] and sorted(other[0]) == list(range(N))


def test_a_loader_split_draws_a_new_order_each_epoch_that_the_seed_repeats():
    """The DataLoader path (ImageNet-sized sets) keeps the same contract: a permutation per epoch,
    new each epoch, repeated for the same (seed, epoch), the stored order without a seed.
    Planted bug caught: ``LoaderSplit.batches`` seeding its sampler without the epoch."""
    dataset = torch.utils.data.TensorDataset(torch.arange(N).float()[:, None], torch.zeros(N, dtype=torch.long))
    split = LoaderSplit(dataset, workers=0)

    def order(**kw):
        return torch.cat([x[:, 0] for x, _ in batches(split, BATCH, **kw)]).long().tolist()

    e0, e1 = order(seed=3, epoch=0), order(seed=3, epoch=1)
    assert sorted(e0) == sorted(e1) == list(range(N)) and e0 != e1 and e0 != list(range(N))
    assert order(seed=3, epoch=0) == e0 and order(seed=4, epoch=0) != e0
    assert order() == list(range(N))


# -- 3. the weight-decay schedule ---------------------------------------------------------------
PFA_PAPER = Training(data="generated", epochs=3, batch_size=BATCH, lr=0.01, momentum=0.9, weight_decay=1e-4,
                     per_rule={"pfa": {"first_epoch_weight_decay": 0.03}})


def test_first_epoch_weight_decay_read_back_from_the_optimizer(tmp_path, monkeypatch):
    """PFA's paper schedule (per_rule first_epoch_weight_decay=0.03, then 1e-4), read from the
    optimizer at every step of a run: W's group and R's group (explicit R) take 0.03 in epoch 1
    and 1e-4 in epochs 2 and 3; metrics.jsonl records the same. A feedback_weight_decay of its
    own holds in every epoch for the feedback group only. Planted bugs caught: the special decay
    in the wrong epoch (``epoch == 1``, or the loop passing epoch + 1), the feedback group left
    out of the first-epoch decay, the decay never set back to its base."""
    training = PFA_PAPER.with_values({"implicit_feedback": False})
    _, groups, history = run(tmp_path, monkeypatch, "explicit", training, rule="pfa")
    expected = {0: 0.03, 1: 1e-4, 2: 1e-4}
    for epoch, steps in enumerate(groups):
        for step in steps:
            assert step == {"forward": (expected[epoch], 0.01), "feedback": (expected[epoch], 0.01)}
    assert [r["weight_decay"] for r in history] == [0.03, 1e-4, 1e-4]
    lines = [json.loads(s) for s in (tmp_path / "explicit" / "metrics.jsonl").read_text().splitlines()]
    assert [r["weight_decay"] for r in lines] == [0.03, 1e-4, 1e-4]

    own = training.with_values({"feedback_weight_decay": 5e-4})
    _, groups, _ = run(tmp_path, monkeypatch, "own", own, rule="pfa")
    assert [[s["forward"][0] for s in steps] for steps in groups] == [[0.03] * 3, [1e-4] * 3, [1e-4] * 3]
    assert [[s["feedback"][0] for s in steps] for steps in groups] == [[5e-4] * 3] * 3
    # a rule without per_rule settings keeps weight_decay throughout
    _, groups, _ = run(tmp_path, monkeypatch, "fa", PFA_PAPER, rule="fa")
    assert [[s["forward"][0] for s in steps] for steps in groups] == [[1e-4] * 3] * 3


def test_implicit_R_decays_with_the_first_epoch_schedule(tmp_path, monkeypatch):
    """With R held implicitly (R = WᵀBᵀ + a E₀), R's decay is the scalar a: under plain SGD
    (momentum 0) each step multiplies it by 1 − lr·wd, so after 3 steps of epoch 1 and 3 of
    epoch 2 it is exactly (1 − 0.01·0.03)³ (1 − 0.01·1e-4)³. Planted bug caught: the implicit
    route advancing a with a decay other than the epoch's (R not decayed like W)."""
    training = PFA_PAPER.with_values({"momentum": 0.0, "epochs": 2})
    _, groups, _ = run(tmp_path, monkeypatch, "implicit", training, rule="pfa")
    assert all(set(s) == {"forward"} for steps in groups for s in steps)  # no R parameter: implicit
    state = torch.load(tmp_path / "implicit" / "checkpoint.pt", weights_only=True)["model"]
    a = 1.0
    for wd in (0.03, 0.03, 0.03, 1e-4, 1e-4, 1e-4):
        a = a - 0.01 * (wd * a)
    assert state["projections.h->y._extra_state"]["a"] == a
    assert a == pytest.approx((1 - 0.01 * 0.03) ** 3 * (1 - 0.01 * 1e-4) ** 3, rel=1e-12)


# -- 4. when the implicit route is taken --------------------------------------------------------
BASE = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, first_epoch_weight_decay=0.03)
SETTINGS = {  # optimizer setting → whether W and the plastic feedback share one plain SGD step
    "plain SGD, momentum, first-epoch decay": ({}, True),
    "momentum 0": ({"momentum": 0.0}, True),
    "nesterov": ({"nesterov": True}, True),
    "no weight decay": ({"weight_decay": 0.0, "first_epoch_weight_decay": None}, True),
    "feedback lr of its own": ({"feedback_lr": 0.01}, False),
    "feedback lr 0 (frozen feedback)": ({"feedback_lr": 0.0}, False),
    "feedback weight decay of its own": ({"feedback_weight_decay": 0.0}, False),
    "batch Manhattan (sign of the gradient)": ({"batch_manhattan": True}, False),
    "implicit_feedback switched off": ({"implicit_feedback": False}, False),
}
RULES = {  # rule → whether it can hold its plastic feedback as a closed form of W
    "pfa": (lambda: make_rule("pfa", expansion=2), True),
    "pfa-o": (lambda: make_rule("pfa-o", expansion=2), True),
    "kp": (lambda: make_rule("kp"), True),
    "mixed": (lambda: make_rule("mixed", groups={"kp": 0.3, "fa": 0.3, "pfa": 0.4}), True),
    "pfa, explicit route": (lambda: make_rule("pfa", expansion=2, route="explicit"), False),
    "pfa, factored route": (lambda: make_rule("pfa", expansion=2, route="factored"), False),
    "pfa, sparse feedback": (lambda: make_rule("pfa", expansion=2, connector=FixedProbability(0.5, seed=1)), False),
    "kp, sparse feedback": (lambda: make_rule("kp", connector=FixedProbability(0.5, seed=1)), False),
    "fa": (lambda: make_rule("fa"), False),
    "pal": (lambda: make_rule("pal"), False),
    "bp": (lambda: make_rule("bp"), False),
}


def routes(circuit, training):
    """The route of each projection as the trainer compiles it (``_Trainer.setup``)."""
    model = circuit.compile(seed=0, implicit_feedback=training.implicit_feedback_ok())
    return model, {n: p.implicit for n, p in model.projections.items()}


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_route_of_each_optimizer_setting(setting):
    """For every (optimizer setting, rule) of the tables, the projections that send errors take the
    implicit route exactly when both tables say yes; the input projection (no error) never does;
    the optimizer the run makes then attaches. Planted bugs caught: any condition of
    ``Training.implicit_feedback_ok`` or ``PFA/KP.supports_implicit`` dropped (implicit under a
    feedback lr or decay of its own, under batch Manhattan, with sparse feedback, on a route
    other than "auto")."""
    values, shared = SETTINGS[setting]
    training = Training(**{**BASE, **values})
    for rule, (make, closed_form) in RULES.items():
        model, route = routes(small_mlp(make()), training)
        expected = shared and closed_form
        assert route == {"x0->h1": False, "h1->h2": expected, "h2->out": expected}, (setting, rule)
        optimizer = make_optimizer(model, training)
        assert type(optimizer) is (BatchManhattanSGD if training.batch_manhattan else torch.optim.SGD)
        model.attach_optimizer(optimizer)  # (refused for an implicit route under anything but SGD)
        assert all(p.attached == p.implicit for p in model.projections.values())


def test_the_implicit_route_refuses_every_other_optimizer_and_sparse_forward_synapses():
    """An implicit route is exact only under torch.optim.SGD itself: Adam and the batch-Manhattan
    subclass are refused; a projection with sparse forward synapses keeps its feedback explicit.
    Planted bugs caught: ``attach_optimizer`` accepting a subclass of SGD; a sparse W taking the
    implicit route."""
    for optimizer in (lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
                      lambda m: BatchManhattanSGD(m.parameters(), lr=0.01)):
        model = small_mlp(make_rule("pfa", expansion=2)).compile(implicit_feedback=True)
        with pytest.raises(CircuitError, match="exact only under torch.optim.SGD"):
            model.attach_optimizer(optimizer(model))
    c = Circuit("sparse", seed=0)
    x, h, y = c.add(Input("x0", 6)), c.add(Layer("h1", 7)), c.add(Readout("out", 4))
    c.connect(x, h, Dense())
    c.connect(h, y, Dense(), connector=FixedProbability(0.5, seed=1))
    c.feedback(make_rule("pfa", expansion=2))
    _, route = routes(c, Training(**BASE))
    assert route == {"x0->h1": False, "h1->out": False}


# -- 7. update_alignment leaves batch-norm statistics alone -------------------------------------
def test_update_alignment_restores_batch_norm_running_statistics():
    """A circuit with ``Layer(..., norm="batch")`` in training mode: ``update_alignment`` runs two
    forward passes (the rule's and the exact one), which update BatchNorm's running mean,
    variance and batch count; afterwards they are exactly as before. Planted bug caught: the
    statistics not restored (or restored only in part)."""
    c = Circuit("bn", seed=0)
    x = c.add(Input("x0", 6))
    h = c.add(Layer("h1", 7, activation="tanh", norm="batch"))
    y = c.add(Readout("out", 4))
    c.connect(x, h, Dense())
    c.connect(h, y, Dense())
    c.feedback(make_rule("fa"))
    model = c.compile().train()
    g = torch.Generator().manual_seed(2)
    x, labels = torch.randn(16, 6, generator=g) * 3 + 1, torch.randint(0, 4, (16,), generator=g)
    model(x)  # running statistics away from their initial 0 and 1
    norm = model.norms["h1"]
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    assert int(before["num_batches_tracked"]) == 1 and before["running_mean"].abs().max() > 0.01
    angles = model.update_alignment(x, labels)
    assert set(angles) == {"x0->h1", "h1->out"} and angles["h1->out"] < 1e-4
    after = norm.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert model.training and all(p.grad is None for p in model.parameters())
    model(x)  # the module itself still updates them: the check above is not of a frozen norm
    assert int(norm.num_batches_tracked) == 2 and not torch.equal(norm.running_mean, before["running_mean"])


# -- 6. the record at initialisation (epoch 0) --------------------------------------------------
def test_initial_record_is_the_untrained_circuit_and_leaves_the_random_stream_alone(tmp_path, monkeypatch):
    """initial.json holds epoch 0: the metrics of the circuit as compiled from the seed, before any
    step (its alignment equals a fresh compile's; its test accuracy that of the untrained circuit);
    and a rule that draws noise every step (brSF) trains to the same weights whether or not the
    record is written, because the record leaves the random state as it found it."""
    splits = indexed_splits()
    training = Training(data="generated", epochs=1, batch_size=BATCH, lr=0.05)
    history = train(tiny("fa"), training, rule="fa", run_dir=str(tmp_path / "fa"), data_root="unused", seed=3,
                    progress=False, splits=splits)
    initial = json.loads((tmp_path / "fa" / "initial.json").read_text())
    fresh = tiny("fa").compile(seed=3)
    assert initial["epoch"] == 0
    for name, m in fresh.alignment().items():
        assert initial["projections"][name]["alignment_deg"] == pytest.approx(m["alignment_deg"], abs=1e-9)
    assert initial["projections"] != history[0]["projections"]  # one epoch later, another state
    out = fresh(splits["test"].x)
    assert initial["test_acc"] == pytest.approx((out.argmax(1) == splits["test"].y).float().mean().item())

    def final_weights(name, record):
        if not record:
            monkeypatch.setattr(train_module._Trainer, "record_initial", lambda self: None)
        train(tiny("brsf"), training, rule="brsf", run_dir=str(tmp_path / name), data_root="unused", seed=3,
              progress=False, splits=splits)
        monkeypatch.undo()
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model"]
        assert (tmp_path / name / "initial.json").exists() == record
        return state

    with_record, without = final_weights("with", True), final_weights("without", False)
    tensors = {k: v for k, v in with_record.items() if torch.is_tensor(v)}
    assert tensors and tensors.keys() == {k for k, v in without.items() if torch.is_tensor(v)}
    for key, value in tensors.items():
        assert torch.equal(value, without[key]), key


def test_top5_accuracy_against_a_direct_count():
    """evaluate_split's top-5: the true class among the five largest outputs, counted directly;
    readouts under 100 classes report top-1 only."""
    from circuits.train import evaluate_split

    c = Circuit("wide", seed=0)
    x = c.add(Input("x", 6))
    y = c.add(Readout("y", 120))
    c.connect(x, y, Dense())
    c.feedback(make_rule("bp"))
    model = c.compile(seed=0)
    g = torch.Generator().manual_seed(1)
    data = Split(torch.randn(50, 6, generator=g), torch.randint(0, 120, (50,), generator=g))
    with torch.no_grad():
        out = model(data.x)
    ranks = (out > out.gather(1, data.y[:, None])).sum(1)  # how many classes beat the true one
    r = evaluate_split(model, data, batch_size=7)
    assert r["top5"] == pytest.approx((ranks < 5).float().mean().item())
    assert r["acc"] == pytest.approx((ranks == 0).float().mean().item()) and r["top5"] > r["acc"]
    small = tiny("fa").compile(seed=0)
    assert "top5" not in evaluate_split(small, indexed_splits()["test"], batch_size=4)


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "ifa", "pfa", "pfa-o"])
def test_input_feedback_records_the_first_layer_and_changes_no_update(rule):
    """Training(input_feedback=True): the input's projection gets its rule's feedback (alignment
    measured, plastic feedback learning), and every W follows the very same steps as without it,
    since no error reaches an input. PFA's first-layer R learns ΔR = ΔWᵀBᵀ, so its path RB
    leaves 90° towards Wᵀ (KP's, WM's and PAL's B likewise). WM and PAL learn their first-layer B
    from noise drawn every step, which shifts the random stream the other layers draw from: for
    them the updates follow the same rule with other noise, so they are not compared bit for bit."""
    from circuits.train import make_optimizer

    def trained(input_feedback):
        torch.manual_seed(0)  # the noise-drawing rules (brSF, WM, PAL) draw alike in both runs
        model = small_mlp(make_rule(rule), sizes=(6, 7, 5, 4)).compile(seed=0, implicit_feedback=True,
                                                                      input_feedback=input_feedback)
        opt = make_optimizer(model, Training(lr=0.1, momentum=0.9, weight_decay=0.1))  # R's start decays
        model.attach_optimizer(opt)
        g = torch.Generator().manual_seed(1)
        for _ in range(30):
            x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
            opt.zero_grad()
            model.loss(model(x), y).backward()
            opt.step()
        return model

    on, off = trained(True), trained(False)
    if rule not in ("wm", "pal"):  # WM/PAL draw noise for the first layer's mirror too: another random stream
        for name in off.projections:
            torch.testing.assert_close(on.projections[name].weight, off.projections[name].weight, rtol=0, atol=1e-6)
    first = on.alignment().get("x0->h1", {})
    assert "alignment_deg" not in off.alignment().get("x0->h1", {})
    if rule == "bp":
        assert first["alignment_deg"] == pytest.approx(0, abs=1e-3)
    elif rule in ("pfa", "pfa-o", "kp", "wm", "pal"):  # plastic feedback: the first layer's aligns too
        start = small_mlp(make_rule(rule), sizes=(6, 7, 5, 4)).compile(seed=0, input_feedback=True).alignment()["x0->h1"]
        assert first["alignment_deg"] < start["alignment_deg"] - 10, (start, first)
    elif rule != "dfa":  # DFA's feedback comes from the readout: nothing to align with W
        assert 0 <= first["alignment_deg"] <= 180
