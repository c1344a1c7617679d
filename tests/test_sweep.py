"""circuits.sweep: cells with their own settings and circuits, runs that diverge, sweeps shared
between processes (--shard)."""
import os

import pytest

from circuits import zoo
from plasticity import USF

TINY_EXPERIMENT = '''
from circuits import Training, zoo
from plasticity import fa
circuit = zoo.mlp((3072, 16, 10), name="tiny", feedback=fa())
training = Training(data="fake_cifar10:train=64,test=32,augment=false", epochs=1, batch_size=32, lr=0.01)
'''


def test_run_cells_takes_cells_with_settings_and_circuits_and_keeps_going_past_a_divergence(tmp_path):
    """A Cell's sets apply over the file's settings (the command line's over both) and its
    circuit replaces the file's; a plain Rule cell is as before. With keep_going a diverging
    run leaves diverged.json beside its copied records and is not trained again."""
    import json
    import os

    from circuits.sweep import Cell, diverged, run_cells
    from circuits.train import TrainingDiverged
    from plasticity import FA

    file = tmp_path / "tiny.py"
    file.write_text(TINY_EXPERIMENT)
    cells = {"plain": FA(),
             "bn-bm": Cell(FA(), sets={"batch_manhattan": True, "lr": 0.001},
                           circuit=zoo.mlp((3072, 16, 10), name="tiny-bn", norm="batch")),
             "boom": Cell(USF(scale="none"), sets={"lr": 1e30})}
    out, work = tmp_path / "out", tmp_path / "work"
    kw = dict(data_root="unused", progress=False, work=str(work), sets={"momentum": 0.5})
    got = run_cells(str(file), cells, str(out), keep_going=True, **kw)
    assert set(got) == {"plain", "bn-bm", "boom"} and len(got["plain"][0]) == 1
    config = json.load(open(out / "runs" / "bn-bm-s0" / "config.json"))
    assert config["training"]["batch_manhattan"] and config["training"]["lr"] == 0.001
    assert config["training"]["momentum"] == 0.5 and config["invocation"]["cell_sets"] == {"batch_manhattan": True, "lr": 0.001}
    assert [p["norm"] for p in config["circuit"]["populations"] if p["kind"] == "layer"] == ["batch"]
    plain = json.load(open(out / "runs" / "plain-s0" / "config.json"))
    assert plain["training"]["lr"] == 0.01 and not plain["training"]["batch_manhattan"]
    assert "cell_sets" not in plain["invocation"]
    record = diverged(str(out / "runs" / "boom-s0"))
    assert record is not None and "training diverged" in record["error"] and record["epochs"] == 0
    assert diverged(str(out / "runs" / "plain-s0")) is None
    stamp = os.path.getmtime(work / "boom-s0" / "checkpoint.pt")
    again = run_cells(str(file), cells, str(out), keep_going=True, **kw)  # nothing trains again
    assert again == got and os.path.getmtime(work / "boom-s0" / "checkpoint.pt") == stamp
    with pytest.raises(TrainingDiverged):
        run_cells(str(file), {"boom": cells["boom"]}, str(tmp_path / "strict"), **{**kw, "work": None})


def test_sharded_sweep_trains_each_run_once_and_equals_one_process(tmp_path):
    """Two shards (--shard 0/2 and 1/2) train disjoint halves of the seed × cell order, each
    reads the other's finished runs from their copies, and together they give one process's
    results; a bad shard is refused."""
    import json

    from circuits.sweep import Cell, run_cells, shard_of
    from plasticity import FA

    file = tmp_path / "tiny.py"
    file.write_text(TINY_EXPERIMENT)
    cells = {"a": FA(), "b": Cell(FA(), sets={"lr": 0.02}), "c": Cell(FA(), sets={"lr": 0.005})}
    kw = dict(data_root="unused", progress=False, seeds=(0, 1))
    whole = run_cells(str(file), cells, str(tmp_path / "whole"), **kw)
    out = str(tmp_path / "sharded")
    first = run_cells(str(file), cells, out, shard=(0, 2), **kw)
    assert {(c, s) for c, runs in first.items() for s in runs} == {("a", 0), ("c", 0), ("b", 1)}
    second = run_cells(str(file), cells, out, shard=(1, 2), **kw)  # trains its half, reads the first's
    untimed = lambda got: {c: {s: [{k: v for k, v in m.items() if k not in ("seconds", "eval_seconds")} for m in h]
                               for s, h in runs.items()} for c, runs in got.items()}
    assert untimed(second) == untimed(whole)
    for name in ("a-s0", "b-s0", "c-s1"):
        config = json.load(open(tmp_path / "sharded" / "runs" / name / "config.json"))
        assert config["invocation"]["cell"] == name[:-3]
    with pytest.raises(ValueError, match="shard"):
        run_cells(str(file), cells, out, shard=(2, 2), **kw)
    parse = lambda text: shard_of(type("Args", (), {"shard": text})())
    assert parse("1/4") == (1, 4)
    with pytest.raises(SystemExit, match="K/N"):
        parse("4/4")




def test_sweep_says_how_many_runs_are_left_and_when_they_should_end(tmp_path, capsys):
    """Before each run it trains, a sweep names it and the runs this process has still to train
    after it (finished copies not counted), with the time they should take at the mean of the
    runs trained so far; a rerun with everything finished trains and announces nothing."""
    from circuits.sweep import Cell, run_cells
    from plasticity import FA

    file = tmp_path / "tiny.py"
    file.write_text(TINY_EXPERIMENT)
    cells = {"a": FA(), "b": Cell(FA(), sets={"lr": 0.02}), "c": Cell(FA(), sets={"lr": 0.005})}
    kw = dict(data_root="unused", progress=False)
    run_cells(str(file), {"b": cells["b"]}, str(tmp_path), **kw)  # b-s0 finished beforehand
    capsys.readouterr()
    run_cells(str(file), cells, str(tmp_path), **kw)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sweep:")]
    assert said[0] == "sweep: a-s0, then 1 more to train in this process"
    assert said[1].startswith("sweep: c-s0, then 0 more to train in this process; about ") and "min per run so far" in said[1]
    assert len(said) == 2
    run_cells(str(file), cells, str(tmp_path), **kw)
    assert "sweep:" not in capsys.readouterr().err


def test_a_run_another_process_is_training_is_skipped_not_trained_twice(tmp_path):
    """Shards whose cell lists differ (a later phase that depends on results) can both pick one
    run: the one that finds its folder locked skips it (no error, nothing written there) and
    trains the rest; once the lock is dropped, the run trains as usual."""
    from circuits.rundir import RunLock, in_use
    from circuits.sweep import Cell, run_cells
    from plasticity import FA

    file = tmp_path / "tiny.py"
    file.write_text(TINY_EXPERIMENT)
    cells = {"a": FA(), "b": Cell(FA(), sets={"lr": 0.02})}
    work, out = tmp_path / "work", str(tmp_path / "out")
    kw = dict(data_root="unused", progress=False, work=str(work))
    other = RunLock(str(work / "b-s0")).acquire()  # "another shard" is training b
    assert in_use(str(work / "b-s0")) and not in_use(str(work / "a-s0"))
    got = run_cells(str(file), cells, out, **kw)
    assert set(got) == {"a"} and sorted(os.listdir(work / "b-s0")) == [".lock"]
    other.release()
    assert not in_use(str(work / "b-s0"))
    again = run_cells(str(file), cells, out, **kw)
    assert set(again) == {"a", "b"} and again["a"] == got["a"] and len(again["b"][0]) == 1


def test_final_and_mean_sd_read_the_last_epoch_and_the_finite_values():
    from circuits.sweep import final, mean_sd

    history = [{"epoch": 1, "test_acc": 0.5, "projections": {"h1->h2": {"alignment_deg": 80.0}}},
               {"epoch": 2, "test_acc": 0.75, "projections": {"h1->h2": {"alignment_deg": 60.0}}}]
    assert final(history) == 0.75 and final(history, "alignment_deg", "h1->h2") == 60.0
    assert final(history, "val_acc") != final(history, "val_acc") and final([]) != final([])  # nan
    assert final(history, "alignment_deg", "h2->out") != final(history, "alignment_deg", "h2->out")
    assert mean_sd([1.0, 3.0, float("nan")]) == (2.0, 2 ** 0.5)
    assert mean_sd([4.0]) == (4.0, 0.0)


def test_a_copy_of_another_cell_is_never_mixed_in(tmp_path):
    """A finished run's copy is reused only for the cell it was made for: another rule option,
    another metric-changing setting or another seed under the same name stops the sweep with a
    message naming the copy and what differs (report-only too); bookkeeping settings
    (keep_every, epochs beyond the asked ones) do not."""
    from circuits.errors import ConfigError
    from circuits.sweep import run_cells
    from plasticity import IFA

    file = tmp_path / "tiny.py"
    file.write_text(TINY_EXPERIMENT)
    out = tmp_path / "out"
    kw = dict(data_root="unused", progress=False)
    got = run_cells(str(file), {"ifa": IFA(angle=45.0)}, str(out), **kw)
    assert run_cells(str(file), {"ifa": IFA(angle=45.0)}, str(out), sets={"keep_every": 1}, **kw) == got
    with pytest.raises(ConfigError, match=r"out/runs/ifa-s0 holds a run of another cell .*another circuit or rule"):
        run_cells(str(file), {"ifa": IFA(angle=0.0)}, str(out), train=False, **kw)
    with pytest.raises(ConfigError, match=r"training lr 0.01, not 0.1"):
        run_cells(str(file), {"ifa": IFA(angle=45.0)}, str(out), sets={"lr": 0.1}, **kw)
    (out / "runs" / "ifa-s1").mkdir()
    (out / "runs" / "ifa-s1" / "config.json").write_text((out / "runs" / "ifa-s0" / "config.json").read_text())
    with pytest.raises(ConfigError, match="seed 0, not 1"):
        run_cells(str(file), {"ifa": IFA(angle=45.0)}, str(out), seeds=(1,), **kw)


def test_holm_adjusts_p_values_step_down_in_the_order_given():
    """Holm (1979) by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06,
    0.04, the last raised to the 0.06 before it; capped at 1; one test is left as it is."""
    from circuits.sweep import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2] and holm([]) == []
