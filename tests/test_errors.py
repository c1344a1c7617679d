"""A malformed circuit, file, setting or data set stops with an error that names the culprit."""
import os
import textwrap

import pytest

from circuits import Circuit, CircuitError, ConfigError, DataError, Training
from circuits.data import load
from circuits.run import main
from connectomes import Dense, Identity
from helpers import small_mlp
from plasticity import DFA, FA, PFA
from populations import Input, Layer, Readout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base():
    c = Circuit("bad")
    x, h, y = c.add(Input("x", 4)), c.add(Layer("h", 5)), c.add(Readout("y", 3))
    return c, x, h, y


def test_unknown_population():
    c, x, h, y = base()
    with pytest.raises(CircuitError, match="unknown population 'h9'"):
        c.connect("h9", y)
    with pytest.raises(CircuitError, match="unknown population 'ghost'"):
        c.connect(x, Layer("ghost", 3))


def test_size_mismatch_names_projection():
    c, x, h, y = base()
    with pytest.raises(CircuitError, match=r"projection 'skip'.*same size.*'x' \(4,\).*'h' \(5,\)"):
        c.connect(x, h, Identity(), name="skip")
    with pytest.raises(CircuitError, match="projection 'x->img'.*vector post population"):
        c.connect(x, c.add(Layer("img", (1, 2, 2))), Dense())


def test_cycle_names_the_path():
    c, x, h, y = base()
    h2 = c.add(Layer("h2", 5))
    c.connect(x, h), c.connect(h, h2)
    with pytest.raises(CircuitError, match=r"'h2->h' closes a cycle: h -> h2 -> h"):
        c.connect(h2, h)
    with pytest.raises(CircuitError, match="'h->h' closes a cycle"):
        c.connect(h, h)


def test_rule_on_projection_that_cannot_carry_it():
    c, x, h, y = base()
    h2 = c.add(Layer("h2", 5))
    c.connect(x, h), c.connect(h, h2), c.connect(h2, y)
    c.connect(h, h2, Identity(), name="skip")
    with pytest.raises(CircuitError, match="projection 'skip' has no plastic weights.*'fa'"):
        c.feedback(FA(), projections=["skip"])
    with pytest.raises(CircuitError, match="unknown projection 'h->y'"):
        c.feedback(FA(), projections=["h->y"])
    y2 = c.add(Readout("y2", 2))
    c.connect(h2, y2)
    with pytest.raises(CircuitError, match="projection 'x->h': dfa needs exactly one readout"):
        c.feedback(DFA())


def test_forward_rules_and_structure():
    c, x, h, y = base()
    c.connect(x, h)
    with pytest.raises(CircuitError, match="population 'h' projects nowhere"):
        c.compile()
    c.connect(h, y)
    with pytest.raises(CircuitError, match="projection 'x->h' has no feedback rule"):
        c.compile()
    with pytest.raises(CircuitError, match="post population 'x' is a input"):
        c.connect(h, x)
    with pytest.raises(CircuitError, match="a population named 'h' exists already"):
        c.add(Layer("h", 3))
    with pytest.raises(ValueError, match="population name 'a b' is not valid"):
        Layer("a b", 3)
    with pytest.raises(ValueError, match="population 'q': unknown activation 'relux'"):
        Layer("q", 3, activation="relux")
    with pytest.raises(ValueError, match="B_init='identity' needs expansion=1"):
        PFA(expansion=10, B_init="identity")


def test_feedback_graph_pfa_has_no_reciprocal_pair():
    c = small_mlp(PFA(expansion=2))
    g = c.graph
    for name, d in c.projections("feedback").items():
        assert d["pre"] != d["post"]
    fwd = {(d["pre"], d["post"]) for d in c.projections().values()}
    fb = {(d["pre"], d["post"]) for d in c.projections("feedback").values()}
    assert not {(b, a) for a, b in fwd} & fb  # no population sends errors straight back
    assert "h1->h2:ebar" in g and g.nodes["h1->h2:ebar"]["population"].size == 10
    c.feedback(FA())  # switching rule removes PFA's populations and edges
    assert "h1->h2:ebar" not in c.graph
    assert {d["tensor"] for d in c.projections("feedback").values()} == {"B"}


def write(tmp_path, text, name="exp.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_file_without_circuit(tmp_path, capsys):
    path = write(tmp_path, "from circuits import Training\ntraining = Training()\n")
    assert main([path, "--no-progress"]) == 2
    assert "defines no `circuit`" in capsys.readouterr().err


def test_file_with_a_bug_names_the_file(tmp_path, capsys):
    path = write(tmp_path, "circuit = undefined_name\n")
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert "exp.py" in err and "NameError" in err


def test_missing_dataset_says_where_and_how(tmp_path, capsys):
    with pytest.raises(DataError, match=r"MNIST not found: looked in .*empty.*MNIST/raw.*download=True"):
        load("mnist", str(tmp_path / "empty"))
    mnist = os.path.join(REPO, "experiments", "mnist_mlp.py")
    out = tmp_path / "run"
    assert main([mnist, "--data-root", str(tmp_path / "empty"), "--out", str(out), "--no-progress"]) == 2
    assert "MNIST not found" in capsys.readouterr().err


def test_unknown_rule_and_bad_set(tmp_path, capsys):
    mnist = os.path.join(REPO, "experiments", "mnist_mlp.py")
    assert main([mnist, "--rule", "xyz"]) == 2
    assert "unknown rule 'xyz'" in capsys.readouterr().err
    assert main([mnist, "--set", "lr=fast"]) == 2
    assert "lr='fast' is not a valid float" in capsys.readouterr().err
    assert main([mnist, "--set", "learning_rate=0.1"]) == 2
    assert "unknown training setting 'learning_rate'" in capsys.readouterr().err


def test_bad_device(capsys):
    mnist = os.path.join(REPO, "experiments", "mnist_mlp.py")
    assert main([mnist, "--device", "tpu9"]) == 2
    assert "is not a device" in capsys.readouterr().err
    import torch
    if not torch.cuda.is_available():
        assert main([mnist, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


def test_training_settings():
    t = Training(lr=0.1, per_rule={"pfa": {"first_epoch_weight_decay": 0.03}})
    assert t.resolve("pfa").first_epoch_weight_decay == 0.03
    assert t.resolve("bp").first_epoch_weight_decay is None
    t2 = t.with_values({"lr_milestones": "20,30", "nesterov": "true", "feedback_lr": "none", "epochs": "3"})
    assert t2.lr_milestones == [20, 30] and t2.nesterov is True and t2.feedback_lr is None and t2.epochs == 3
    with pytest.raises(ConfigError, match="per_rule\\['pfa'\\]: unknown training setting 'wd'"):
        Training(per_rule={"pfa": {"wd": 1}}).resolve("pfa")


def test_summary_and_schedule_are_printable():
    c = small_mlp(PFA(expansion=2))
    text = c.summary()
    assert "h1->h2:R" in text and "plastic" in text and "intermediate" in text
    sched = c.compile().schedule_summary()
    assert "step 0: x0" in sched and "rule pfa" in sched and "ΔW only" in sched
    assert "(none)" not in text
    bare = small_mlp(None).summary()  # no rule yet: no feedback projection, said so
    assert bare.endswith("feedback projections (errors):\n  (none)") and "rule NONE" in bare
