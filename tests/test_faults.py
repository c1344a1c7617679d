"""Every bad input and fault the command line is tried with, and the one-line error each gets.

FAULTS is also the table of docs/reliability.md: ``python tests/test_faults.py`` rewrites the
table there, and ``test_reliability_doc_lists_every_fault`` fails when the two differ.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import pytest
import torch

from conftest import MNIST_RAW, require_mnist

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DOC = os.path.join(REPO, "docs", "reliability.md")
BEGIN, END = "<!-- faults: begin (python tests/test_faults.py) -->", "<!-- faults: end -->"
REAL_MNIST = MNIST_RAW  # the faults on MNIST's files link to the real ones (skipped without them)

TINY = """
from circuits import Circuit, Training
from connectomes import Dense
from plasticity import fa
from populations import Input, Layer, Readout

c = Circuit("tiny", seed=0)
x = c.add(Input("pixels", (3, 32, 32)))
h = c.add(Layer("h", {hidden}))
y = c.add(Readout("classes", {classes}))
c.connect(x, h, Dense())
c.connect(h, y, Dense())
c.feedback(fa())
circuit = c
training = Training(data="fake_cifar10:train=128,test=64,augment=false", epochs=2, batch_size=32, lr=0.05)
"""
DATA = "fake_cifar10:train=128,test=64,augment=false"


def tiny_experiment(folder, name="tiny.py", hidden=16, classes=10) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(TINY.format(hidden=hidden, classes=classes))
    return path


@dataclass
class Fault:
    what: str                                   # what the user did (the table's first column)
    argv: Callable[[SimpleNamespace], list]     # the command line, from the context
    message: str                                # the error line, with {run} {out} {exp} {root} {file}
    prepare: Callable | None = None             # (ctx, monkeypatch): set the fault up
    partial: bool = False                       # the message goes on with details (errno text, a pid...)


def _edit(ctx, mp):
    with open(ctx.exp2, "a") as f:
        f.write("\n# edited after the run started\n")


def _foreign_checkpoint(ctx, mp):
    from circuits.run import main
    other = os.path.join(ctx.tmp, "other")
    assert main([ctx.exp, "--out", other, "--seed", "1", "--epochs", "1", "--no-progress", "--device", "cpu"]) == 0
    shutil.copy(os.path.join(other, "checkpoint.pt"), os.path.join(ctx.run, "checkpoint.pt"))


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def _pickle_checkpoint(ctx, mp):
    torch.save({"version": 1, "payload": SimpleNamespace(a=1)}, os.path.join(ctx.run, "checkpoint.pt"))


def _truncate_checkpoint(ctx, mp):
    path = os.path.join(ctx.run, "checkpoint.pt")
    data = open(path, "rb").read()
    _write(path, data[: len(data) // 3])


def _failed_start(ctx, mp):
    os.remove(os.path.join(ctx.run, "checkpoint.pt"))


def _hold_lock(ctx, mp):
    from circuits.rundir import RunLock
    ctx.lock = RunLock(ctx.out).acquire()  # released when the test ends


def _hold_run_lock(ctx, mp):
    from circuits.rundir import RunLock
    ctx.lock = RunLock(ctx.run).acquire()


def _full_disk_on_save(ctx, mp):
    def save(state, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    mp.setattr(torch, "save", save)


def _full_disk_on_rename(ctx, mp):
    real = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **kw)
    mp.setattr(os, "replace", replace)


def _mnist(ctx, names: dict, corrupt: str | None = None):
    """ROOT/MNIST/raw with links to the real files, ``names`` mapping a file to another's content."""
    raw = os.path.join(ctx.root, "MNIST", "raw")
    os.makedirs(raw)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        source = os.path.join(REAL_MNIST, names.get(name, name))
        if name == corrupt:
            data = bytearray(open(source, "rb").read())
            data[-1] ^= 1
            _write(os.path.join(raw, name), bytes(data))
        else:
            os.symlink(os.path.abspath(source), os.path.join(raw, name))


def _swapped(ctx, mp):
    _mnist(ctx, {"train-images-idx3-ubyte": "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte": "train-images-idx3-ubyte",
                 "train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte": "train-labels-idx1-ubyte"})


def _mixed_pair(ctx, mp):
    _mnist(ctx, {"train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte"})


def _corrupt(ctx, mp):
    _mnist(ctx, {}, corrupt="t10k-labels-idx1-ubyte")


def _small_readout(ctx, mp):
    ctx.exp = tiny_experiment(ctx.tmp, "five.py", classes=5)


def _other_data(ctx, mp):
    """config.json records other labels than the data now under the data root."""
    import json
    path = os.path.join(ctx.run, "config.json")
    config = json.load(open(path))
    config["data"]["labels_sha256"] = "0" * 64
    with open(path, "w") as f:
        json.dump(config, f)


def _block(ctx, mp):
    """config.json describes a circuit with an exact-BP block (as Circuit.from_torch makes)."""
    import json
    path = os.path.join(ctx.run, "config.json")
    config = json.load(open(path))
    config["circuit"]["projections"][0]["geometry"] = {"kind": "block", "module": "Sequential", "parameters": 3}
    with open(path, "w") as f:
        json.dump(config, f)


def _bad_config(ctx, mp):
    _write(os.path.join(ctx.run, "config.json"), b"{not json")


def _plain_file(ctx, mp):
    _write(ctx.file, b"not a folder")


def _foreign_folder(ctx, mp):
    os.makedirs(ctx.out)
    _write(os.path.join(ctx.out, "notes.txt"), b"my notes")


def _ran_marker(ctx, mp):
    """config.json names a file that would leave a marker if it ran."""
    import json
    bad = os.path.join(ctx.tmp, "evil.py")
    with open(bad, "w") as f:
        f.write(f"open({ctx.marker!r}, 'w').write('ran')\n")
    path = os.path.join(ctx.run, "config.json")
    config = json.load(open(path))
    config["invocation"]["file"] = config["experiment"]["file"] = bad
    with open(path, "w") as f:
        json.dump(config, f)


RUN = ["--no-progress", "--device", "cpu"]
FAULTS = [
    Fault("`--set lr=-1`", lambda c: [c.exp, "--set", "lr=-1", "--out", c.out],
          "training setting lr=-1.0 must be > 0 (and at most 3.4e38)"),
    Fault("`--set lr=1e39`", lambda c: [c.exp, "--set", "lr=1e39", "--out", c.out],
          "training setting lr=1e+39 must be > 0 (and at most 3.4e38)"),
    Fault("`--set batch_size=0`", lambda c: [c.exp, "--set", "batch_size=0", "--out", c.out],
          "training setting batch_size=0 must be an integer >= 1"),
    Fault("`--set momentum=1.5`", lambda c: [c.exp, "--set", "momentum=1.5", "--out", c.out],
          "training setting momentum=1.5 must be in [0, 1)"),
    Fault("`--set lr=fast`", lambda c: [c.exp, "--set", "lr=fast", "--out", c.out],
          "--set: lr='fast' is not a valid float"),
    Fault("`--set learning_rate=0.1` (no such setting)", lambda c: [c.exp, "--set", "learning_rate=0.1", "--out", c.out],
          "--set: unknown training setting 'learning_rate'", partial=True),
    Fault("`--set compile=fast`", lambda c: [c.exp, "--set", "compile=fast", "--out", c.out],
          "training setting compile='fast': not a torch.compile mode", partial=True),
    Fault("`--epochs 0`", lambda c: [c.exp, "--epochs", "0", "--out", c.out],
          "--epochs 0: must be at least 1; to test a saved run: --evaluate RUN_DIR"),
    Fault("`--compare bp --seeds 0`", lambda c: [c.exp, "--compare", "bp", "--seeds", "0", "--out", c.out],
          "--seeds 0: must be at least 1"),
    Fault("`--rule xyz`", lambda c: [c.exp, "--rule", "xyz", "--out", c.out], "unknown rule 'xyz'", partial=True),
    Fault("`--device tpu9`", lambda c: [c.exp, "--device", "tpu9", "--out", c.out],
          "--device 'tpu9' is not a device (cpu, cuda, cuda:N or auto)"),
    Fault("a readout smaller than the number of classes", lambda c: [c.exp, "--out", c.out],
          f"readout 'classes' has 5 cells but data set '{DATA}' has 10 classes: give it at least 10", _small_readout),
    Fault("`--out` at a file", lambda c: [c.exp, "--out", c.file],
          "--out '{file}' is a file, not a folder; choose another --out", _plain_file),
    Fault("`--out` at a folder of other files", lambda c: [c.exp, "--out", c.out],
          "--out '{out}' holds files that are not a run's (notes.txt); a run writes only into a new or empty "
          "folder: choose another --out", _foreign_folder),
    Fault("`--out` at another run's folder", lambda c: [c.exp, "--out", c.run],
          "run directory '{run}' already holds a run; choose another --out or continue it with --resume {run}"),
    Fault("a second run into a folder in use", lambda c: [c.exp, "--out", c.out],
          "run folder '{out}' is in use by another process", _hold_lock, partial=True),
    Fault("`--connectome RUN_DIR` while a run writes that folder", lambda c: [c.exp, "--connectome", c.run],
          "run folder '{run}' is in use by another process", _hold_run_lock, partial=True),
    Fault("the disk fills up while the checkpoint is written", lambda c: [c.exp, "--out", c.out],
          "could not write the checkpoint {out}/checkpoint.pt (No space left on device); the temporary file was "
          "removed and the previous checkpoint is untouched: free space, then continue with --resume", _full_disk_on_save),
    Fault("the disk fills up as the checkpoint is renamed into place", lambda c: [c.exp, "--out", c.out],
          "could not write the checkpoint {out}/checkpoint.pt (No space left on device)", _full_disk_on_rename,
          partial=True),
    Fault("a run that diverges (`--set lr=1e38`)", lambda c: [c.exp, "--set", "lr=1e38", "--out", c.out],
          "training diverged at epoch 1, step", partial=True),
    Fault("`--resume RUN_DIR` without FILE, of a circuit config.json cannot rebuild (an exact-BP block)",
          lambda c: ["--resume", c.run],
          "--resume {run}: config.json's circuit cannot be rebuilt without its experiment file (geometry 'block'); "
          "a run folder is data and the file its config.json names is not run unless you name it: "
          "python -m circuits.run {exp} --resume {run}", _block),
    Fault("`--connectome RUN_DIR` without FILE, of a circuit config.json cannot rebuild", lambda c: ["--connectome", c.run],
          "--connectome {run}: config.json's circuit cannot be rebuilt without its experiment file", _block,
          partial=True),
    Fault("`--evaluate RUN_DIR` without FILE, of a circuit config.json cannot rebuild", lambda c: ["--evaluate", c.run],
          "--evaluate {run}: config.json's circuit cannot be rebuilt without its experiment file", _block,
          partial=True),
    Fault("`--resume` with an experiment file edited since the run started", lambda c: [c.exp2, "--resume", c.run],
          "--resume {run}: refused: {exp2} is not the file that made the run", _edit, partial=True),
    Fault("`--resume` of a folder holding another run's checkpoint (seed 1)", lambda c: [c.exp, "--resume", c.run],
          "--resume {run}: refused: checkpoint.pt is not this run's: it holds a run of seed 1", _foreign_checkpoint,
          partial=True),
    Fault("`--resume` on data other than the run's", lambda c: [c.exp, "--resume", c.run, "--epochs", "2"],
          "--resume {run}: refused: the data differ from what config.json records (labels_sha256)", _other_data,
          partial=True),
    Fault("`--evaluate` on data other than the run's", lambda c: [c.exp, "--evaluate", c.run],
          "--evaluate {run}: refused: the data differ from what config.json records (labels_sha256); add "
          "--accept-mismatch to evaluate on them anyway", _other_data),
    Fault("`--resume RUN_DIR --rule pfa`", lambda c: ["--resume", c.run, "--rule", "pfa"],
          "--rule does not go with --resume: a saved run keeps its own (config.json)"),
    Fault("`--resume RUN_DIR --evaluate RUN_DIR`", lambda c: ["--resume", c.run, "--evaluate", c.run],
          "--resume and --evaluate: give one of them"),
    Fault("`--resume --set batch_size=8`", lambda c: [c.exp, "--resume", c.run, "--set", "batch_size=8"],
          "--set batch_size: cannot change on --resume", partial=True),
    Fault("`--resume` of a folder a failed start left (config.json, no checkpoint)", lambda c: [c.exp, "--resume", c.run],
          "{run} has no checkpoint.pt: the run stopped before its first checkpoint; start it again with the same "
          "command (the folder is reused)", _failed_start),
    Fault("`--resume` of a folder with a bad config.json", lambda c: [c.exp, "--resume", c.run],
          "{run}/config.json is not valid JSON", _bad_config, partial=True),
    Fault("`--resume` of a truncated checkpoint", lambda c: [c.exp, "--resume", c.run],
          "checkpoint {run}/checkpoint.pt is corrupt or truncated, or not a plain checkpoint (RuntimeError: "
          "PytorchStreamReader failed reading zip archive", _truncate_checkpoint,
          partial=True),
    Fault("`--resume` of a checkpoint holding a pickled object", lambda c: [c.exp, "--resume", c.run],
          "checkpoint {run}/checkpoint.pt is corrupt or truncated, or not a plain checkpoint (UnpicklingError: "
          "Weights only load failed",
          _pickle_checkpoint, partial=True),
    Fault("`--resume` without FILE where config.json names a file that would run code, circuit not rebuildable",
          lambda c: ["--resume", c.run],
          "--resume {run}: config.json's circuit cannot be rebuilt without its experiment file (geometry 'block'); "
          "a run folder is data and the file its config.json names is not run unless you name it: "
          "python -m circuits.run {tmp}/evil.py --resume {run}", lambda c, mp: (_ran_marker(c, mp), _block(c, mp))),
    Fault("`FILE --resume` where FILE is not the file config.json records", lambda c: [c.tmp + "/evil.py", "--resume", c.run],
          "--resume {run}: refused: {tmp}/evil.py is not the file that made the run", _ran_marker, partial=True),
    Fault("MNIST's train and test files swapped", lambda c: [c.exp, "--set", "data=mnist", "--data-root", c.root, "--out", c.out],
          "{root}/MNIST/raw/train-images-idx3-ubyte holds 10000 items; MNIST's train file holds 60000: it looks like "
          "the test file (are the train and test files swapped?)", _swapped),
    Fault("MNIST's train images paired with the test labels", lambda c: [c.exp, "--set", "data=mnist", "--data-root", c.root, "--out", c.out],
          "{root}/MNIST/raw/train-labels-idx1-ubyte holds 10000 items; MNIST's train file holds 60000: it looks like "
          "the test file (are the train and test files swapped?)", _mixed_pair),
    Fault("an MNIST file with one byte changed", lambda c: [c.exp, "--set", "data=mnist", "--data-root", c.root, "--out", c.out],
          "{root}/MNIST/raw/t10k-labels-idx1-ubyte is not MNIST's t10k-labels-idx1-ubyte (md5 differs from the known "
          "27ae3e4e09519cfbb04c329615203637); the file is corrupt or from another data set: fetch it again", _corrupt),
    Fault("MNIST missing under `--data-root`", lambda c: [c.exp, "--set", "data=mnist", "--data-root", c.root, "--out", c.out],
          "MNIST not found: looked in {root}/MNIST/raw for train-images-idx3-ubyte", partial=True),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run of the tiny experiment on generated data."""
    from circuits.run import main
    folder = tmp_path_factory.mktemp("trained")
    exp = tiny_experiment(str(folder))
    run = os.path.join(str(folder), "run")
    assert main([exp, "--out", run, "--epochs", "1", *RUN]) == 0
    return exp, run


def context(tmp_path, trained) -> SimpleNamespace:
    exp, run = trained
    tmp = str(tmp_path)
    ctx = SimpleNamespace(tmp=tmp, exp=exp, run=os.path.join(tmp, "run"), out=os.path.join(tmp, "out"),
                          root=os.path.join(tmp, "data"), file=os.path.join(tmp, "a-file"),
                          exp2=os.path.join(tmp, "tiny-edited.py"), marker=os.path.join(tmp, "ran"), lock=None)
    shutil.copytree(run, ctx.run)
    shutil.copy(exp, ctx.exp2)
    return ctx


@pytest.mark.parametrize("fault", FAULTS, ids=[f.what for f in FAULTS])
def test_fault_gets_one_clear_line(fault, tmp_path, trained, monkeypatch, capsys):
    from circuits.run import main
    if fault.prepare in (_swapped, _mixed_pair, _corrupt):
        require_mnist()
    ctx = context(tmp_path, trained)
    if fault.prepare:
        fault.prepare(ctx, monkeypatch)
    capsys.readouterr()
    try:
        code = main([*RUN, *fault.argv(ctx)])
    finally:
        if ctx.lock:
            ctx.lock.release()
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("error: " + fault.message.format(**vars(ctx))), last
    assert not os.path.exists(ctx.marker)  # no file named inside a run folder ran
    for folder in (ctx.out, ctx.run):
        if os.path.isdir(folder):
            assert not [n for n in os.listdir(folder) if ".tmp" in n], os.listdir(folder)  # no temporary left


def render() -> str:
    """The table of docs/reliability.md."""
    names = {"run": "RUN_DIR", "out": "DIR", "exp": "FILE", "exp2": "FILE", "root": "DATA_ROOT", "file": "PATH",
             "tmp": "DIR"}
    rows = ["| what the user did, or what went wrong | the error (one line, exit status 2) |", "|---|---|"]
    for f in FAULTS:
        message = f.message.format(**{k: v for k, v in names.items()}) + (" …" if f.partial else "")
        rows.append(f"| {f.what} | `error: {message}` |")
    return "\n".join(rows)


def test_reliability_doc_lists_every_fault():
    text = open(DOC).read()
    table = text.split(BEGIN)[1].split(END)[0].strip()
    assert table == render(), "docs/reliability.md is out of date: run `python tests/test_faults.py`"


def write_doc() -> None:
    text = open(DOC).read()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    with open(DOC, "w") as f:
        f.write(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    write_doc()
    print(f"wrote the table of {DOC}")
