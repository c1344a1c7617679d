"""Run folders you can trust (issue 18): the last good state survives a divergence, one writer per
folder, resume checks what it continues, a folder is data (nothing named in it runs), a failed
start leaves a reusable folder, and the command line says what it does. Tiny generated data."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from circuits.run import main
from circuits.train import load_checkpoint
from connectomes.files import read_connectome
from test_faults import REPO, tiny_experiment

RUN = ["--no-progress", "--device", "cpu"]


def tensors(state):
    return {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}


def all_finite(state):
    return all(torch.isfinite(v).all() for v in tensors(state).values() if v.is_floating_point())


def cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "circuits.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def test_divergence_in_a_later_epoch_keeps_the_epoch_checkpoint_and_resumes_with_a_smaller_lr(tmp_path, capsys):
    exp = tiny_experiment(str(tmp_path))
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main([exp, "--out", str(ref), "--epochs", "1", *RUN]) == 0
    # epoch 2 runs at lr 0.05 · 1e37: it diverges; epoch 1 was good
    assert main([exp, "--out", str(out), "--set", "lr_milestones=1", "--set", "lr_gamma=1e37", *RUN]) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch 2" in err
    assert f"the last good state is in {out}/checkpoint.pt (after epoch 1: epoch 1, step 0)" in err
    assert f"--resume {out} --set lr=" in err
    state = load_checkpoint(str(out / "checkpoint.pt"))
    assert (state["epoch"], state["step"]) == (1, 0) and all_finite(state)
    good = load_checkpoint(str(ref / "checkpoint.pt"))
    assert all(torch.equal(v, tensors(good)[k]) for k, v in tensors(state).items())  # not one diverged step
    assert {r["name"] for r in read_connectome(str(out / "connectome.h5"))}  # the epoch-1 connectome is there
    # continued with a sane decay: recorded in config.json, the lr of epoch 2 follows it
    assert main([exp, "--resume", str(out), "--set", "lr_gamma=0.5", *RUN]) == 0
    assert "; overrides lr_gamma=0.5 (recorded in config.json)" in capsys.readouterr().err  # the log says so too
    config = json.loads((out / "config.json").read_text())
    assert config["resumes"][-1]["overrides"] == {"lr_gamma": "0.5"} and config["resumes"][-1]["at"]["epoch"] == 1
    assert config["training"]["lr_gamma"] == 0.5
    lrs = [json.loads(s)["lr"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.05, 0.025])
    capsys.readouterr()
    assert main([exp, "--resume", str(out), "--epochs", "1", *RUN]) == 2  # fewer epochs than done
    assert "has done 2 epochs already (--epochs counts the total)" in capsys.readouterr().err


def test_non_finite_feedback_tensors_are_never_saved_as_good(tmp_path, capsys):
    """KP's plastic B overflows (its weight decay 3e38) while the loss stays finite: the epoch's end
    refuses to save it and names the tensor; the checkpoint on disk stays the finite initial state."""
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    code = main([exp, "--rule", "kp", "--epochs", "1", "--set", "batch_size=128", "--set", "feedback_lr=100",
                 "--set", "feedback_weight_decay=3e38",
                 "--out", str(out), *RUN])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "training diverged at epoch 1, step 1: non-finite values in projections.h->classes.B" in err
    assert "(the initial state: epoch 0, step 0)" in err
    state = load_checkpoint(str(out / "checkpoint.pt"))
    assert (state["epoch"], state["step"]) == (0, 0) and all_finite(state)


def test_two_concurrent_runs_into_one_folder_one_writes(tmp_path):
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-m", "circuits.run", exp, "--out", str(out), "--seed", str(seed),
                               "--epochs", "3", "--set", "data=fake_cifar10:train=2048,test=64,augment=false", *RUN],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = [seed for seed, (code, _) in zip((0, 1), results) if code == 0][0]
    loser_err = [err for code, err in results if code == 2][0]
    assert "is in use by another process" in loser_err or "already holds a run" in loser_err, loser_err
    config = json.loads((out / "config.json").read_text())
    state = load_checkpoint(str(out / "checkpoint.pt"))
    assert config["seed"] == state["seed"] == winner and state["epoch"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_held_lock_refuses_a_second_writer_and_a_dead_holder_frees_it(tmp_path, capsys):
    from circuits.rundir import RunLock
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from circuits.rundir import RunLock; RunLock(sys.argv[2]).acquire();"
                               "print('locked', flush=True); time.sleep(60)", REPO, str(out)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert main([exp, "--out", str(out), "--epochs", "1", *RUN]) == 2
    assert f"is in use by another process (pid {holder.pid})" in capsys.readouterr().err
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main([exp, "--out", str(out), "--epochs", "1", *RUN]) == 0  # the OS dropped the dead holder's lock
    with RunLock(str(out)):
        pass


def test_a_kill_before_the_first_checkpoint_leaves_a_reusable_folder(tmp_path):
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-m", "circuits.run", exp, "--out", str(out), *RUN], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "config.json").exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert (out / "config.json").exists()
    (out / "checkpoint.pt.tmp-99999999").write_bytes(b"a write the kill cut short")
    if (out / "checkpoint.pt").exists():  # the kill came after the initial checkpoint: resume it
        r = cli(exp, "--resume", str(out), *RUN)
    else:  # before it: the same command starts again in the same folder
        r = cli(exp, "--out", str(out), *RUN)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 2
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # the killed writer's temporary is gone


def test_resume_from_the_initial_checkpoint_is_exact(tmp_path, monkeypatch):
    """A run stopped right after its initial checkpoint (epoch 0, step 0) resumes to the very
    tensors of an uninterrupted run, with a rule that draws noise every step (PAL)."""
    from circuits import train as train_module
    exp = tiny_experiment(str(tmp_path))
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([exp, "--rule", "pal", "--out", str(full), *RUN]) == 0

    class Killed(Exception):
        pass

    def killed(self):
        raise Killed
    with monkeypatch.context() as mp:
        mp.setattr(train_module._Signals, "__enter__", killed)
        with pytest.raises(Killed):
            main([exp, "--rule", "pal", "--out", str(cut), *RUN])
    assert (load_checkpoint(str(cut / "checkpoint.pt"))["epoch"], len((cut / "metrics.jsonl").read_text())) == (0, 0)
    assert main([exp, "--resume", str(cut), *RUN]) == 0
    a, b = load_checkpoint(str(full / "checkpoint.pt")), load_checkpoint(str(cut / "checkpoint.pt"))
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(v, tensors(b)[k]) for k, v in tensors(a).items())


def test_a_failed_start_is_reused_and_a_foreign_folder_untouched(tmp_path, monkeypatch, capsys):
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as mp:  # the disk is full at the first checkpoint: config.json, metrics, no checkpoint
        mp.setattr(torch, "save", full)
        assert main([exp, "--out", str(out), *RUN]) == 2
    assert (out / "config.json").exists() and (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert main([exp, "--out", str(out), *RUN]) == 0  # the same command again
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main([exp, "--out", str(mine), *RUN]) == 2
    assert "holds files that are not a run's (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    assert main([exp, "--out", str(out), "--epochs", "1", *RUN]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    capsys.readouterr()
    assert main([exp, "--resume", str(out), "--epochs", "2", *RUN]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "(No space left on device)" in err and "previous checkpoint is untouched" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_resume_checks_what_it_continues(tmp_path, capsys):
    """An edited experiment file and a checkpoint of another seed are refused; --accept-mismatch
    goes on deliberately and config.json records what was accepted."""
    exp = tiny_experiment(str(tmp_path))
    out, other = tmp_path / "out", tmp_path / "other"
    assert main([exp, "--out", str(out), "--epochs", "1", *RUN]) == 0
    assert main([exp, "--out", str(other), "--epochs", "1", "--seed", "1", *RUN]) == 0
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    capsys.readouterr()
    assert main([exp, "--resume", str(out), "--epochs", "2", *RUN]) == 2
    assert "checkpoint.pt is not this run's: it holds a run of seed 1" in capsys.readouterr().err
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    assert main([exp, "--out", str(tmp_path / "x"), "--epochs", "1", *RUN]) == 0
    bigger = tiny_experiment(str(tmp_path), "bigger.py", hidden=17)
    os.replace(bigger, exp)  # the file is edited: another circuit
    assert main([exp, "--resume", str(tmp_path / "x"), "--epochs", "2", *RUN]) == 2
    err = capsys.readouterr().err
    assert "is not the file that made the run" in err and "--accept-mismatch" in err
    with open(exp, "w") as f:  # only a comment differs: the circuit is the same; accepted deliberately
        f.write(open(tiny_experiment(str(tmp_path), "same.py")).read() + "# a comment\n")
    assert main([exp, "--resume", str(tmp_path / "x"), "--epochs", "2", "--accept-mismatch", *RUN]) == 0
    resumes = json.loads((tmp_path / "x" / "config.json").read_text())["resumes"]
    assert "the experiment file changed since the run started" in resumes[-1]["accepted_mismatch"][0]


def test_a_run_folder_is_data(tmp_path, capsys):
    """--resume, --connectome and --evaluate never run the file config.json names: without FILE
    they rebuild the circuit from config.json's description (and resume exactly), a named file
    runs only if its hash is the recorded one, a circuit that cannot be rebuilt is refused with
    the command to run; a checkpoint's pickle cannot run code either. PAL draws noise every
    step from the global generator, so resuming after epoch 1 is exact only if the checkpoint's
    random state is restored: this is the test that fails when ``_Trainer.restore`` skips
    ``torch.set_rng_state`` (issue 25)."""
    exp = tiny_experiment(str(tmp_path))
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert main([exp, "--rule", "pal", "--out", str(ref), *RUN]) == 0
    assert main([exp, "--rule", "pal", "--out", str(out), "--epochs", "1", *RUN]) == 0
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((out / "config.json").read_text())
    config["invocation"]["file"] = config["experiment"]["file"] = str(evil)
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["--evaluate", str(out), *RUN]) == 0 and "test accuracy" in capsys.readouterr().out
    assert main(["--connectome", str(out), *RUN]) == 0
    assert main(["--resume", str(out), "--epochs", "2", *RUN]) == 0
    assert "circuit rebuilt from" in capsys.readouterr().err
    a, b = load_checkpoint(str(ref / "checkpoint.pt")), load_checkpoint(str(out / "checkpoint.pt"))
    assert all(torch.equal(v, tensors(b)[k]) for k, v in tensors(a).items())  # resumed exactly
    assert json.loads((out / "config.json").read_text())["resumes"][-1]["circuit_from"] == "config.json"
    for flag in ("--resume", "--connectome", "--evaluate"):
        assert main([str(evil), flag, str(out), *RUN]) == 2  # named, but not the file that made the run
        assert "is not the file that made the run" in capsys.readouterr().err
    config["circuit"]["projections"][0]["geometry"] = {"kind": "block", "module": "Sequential", "parameters": 3}
    (out / "config.json").write_text(json.dumps(config))
    for flag in ("--resume", "--connectome", "--evaluate"):
        assert main([flag, str(out), *RUN]) == 2
        assert f"python -m circuits.run {evil} {flag} {out}" in capsys.readouterr().err
    assert not marker.exists()

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    torch.save({"version": 1, "model": Payload()}, out / "checkpoint.pt")
    assert main([exp, "--evaluate", str(out), *RUN]) == 2
    assert "not a plain checkpoint" in capsys.readouterr().err and not marker.exists()


def test_evaluate_and_connectome_of_a_saved_run(tmp_path, capsys):
    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    assert main([exp, "--out", str(out), *RUN]) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()
    assert main([exp, "--evaluate", str(out), *RUN]) == 0
    assert capsys.readouterr().out.strip() == (f"{out} (epoch 2): test loss {last['test_loss']:.4f}, "
                                                f"test accuracy {last['test_acc']:.4f}")
    records = {r["name"]: r["weight"] for r in read_connectome(str(out / "connectome.h5"))}
    (out / "connectome.h5").unlink()
    assert main([exp, "--connectome", str(out), *RUN]) == 0
    again = {r["name"]: r["weight"] for r in read_connectome(str(out / "connectome.h5"))}
    assert records.keys() == again.keys() and all(torch.equal(records[k], again[k]) for k in records)


def test_tensorboard_scalars_are_the_records_at_their_epochs(tmp_path):
    """TensorBoard holds initial.json at step 0 and each epoch of metrics.jsonl at the global
    step that ends it (128 training images in batches of 32: 4 steps an epoch), so a curve
    starts at the initial state, as the paper's do; value for value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp = tiny_experiment(str(tmp_path))
    out = tmp_path / "out"
    assert main([exp, "--out", str(out), *RUN]) == 0
    records = [json.loads((out / "initial.json").read_text()),
               *(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for key in ("test_acc", "test_loss"):
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        assert [step for step, _ in logged] == [4 * r["epoch"] for r in records] == [0, 4, 8], key
        assert [value for _, value in logged] == pytest.approx([r[key] for r in records], rel=1e-6), key


def test_start_up_and_epoch_lines_without_a_bar_in_logs(tmp_path):
    exp = tiny_experiment(str(tmp_path))
    for flags in ([], ["--no-progress"]):
        out = tmp_path / f"out{len(flags)}"
        r = cli(exp, "--out", str(out), "--device", "cpu", *flags)
        assert r.returncode == 0, r.stderr
        lines = r.stderr.splitlines()
        assert lines[0].startswith("circuits.run: circuit 'tiny'") and "rule fa, seed 0" in lines[0]
        for part in ("device cpu", f"run folder {out} (new run)", "data fake_cifar10", "(128 train, 64 test)"):
            assert part in lines[0], part
        assert [s.split(":")[0] for s in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
        assert "\r" not in r.stderr and "it/s" not in r.stderr  # stderr is a pipe: no progress bar


def test_help_is_plain_and_complete(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text and "\\\\" not in text
    for part in ("(default:", "examples:", "batch_size", "lr_milestones", "--evaluate", "--connectome",
                 "--no-progress", "--accept-mismatch", "a run folder is data"):
        assert part.lower() in text.lower(), part


def test_readme_synopsis_names_every_flag():
    from circuits.run import build_parser
    readme = open(os.path.join(REPO, "README.md")).read()
    synopsis = readme.split("## Running")[1].split("```")[1]
    for action in build_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in synopsis, flag


def test_an_os_error_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """An OSError that no check turned into a project error (a folder without write permission,
    a full disk while the run folder is made) ends the command with status 2 and one line:
    the system's reason and the file it concerns, not a traceback."""
    import circuits.run

    exp = tiny_experiment(str(tmp_path))

    def refuse(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/runs/x")
    monkeypatch.setattr(circuits.run, "run_one", refuse)
    assert main([exp, "--out", str(tmp_path / "out"), *RUN]) == 2
    assert capsys.readouterr().err == f"error: {os.strerror(errno.EACCES)}: /data/runs/x\n"

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(circuits.run, "run_one", full)
    assert main([exp, "--out", str(tmp_path / "out"), *RUN]) == 2
    assert capsys.readouterr().err == f"error: {os.strerror(errno.ENOSPC)}\n"
