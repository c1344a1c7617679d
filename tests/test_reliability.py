"""Exact resume, interruption, clear failures, comparisons and many processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from circuits.train import CheckpointError, load_checkpoint
from plasticity import RULES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = """
from circuits import Circuit, Training
from connectomes import Dense
from plasticity import pfa
from populations import Input, Layer, Readout

c = Circuit("tiny", seed=0)
x = c.add(Input("pixels", 784))
h1 = c.add(Layer("h1", {hidden}))
h2 = c.add(Layer("h2", {hidden}))
y = c.add(Readout("digits", 10))
for pre, post in [(x, h1), (h1, h2), (h2, y)]:
    c.connect(pre, post, Dense())
c.feedback(pfa(expansion=4))
circuit = c
training = Training(data="mnist", epochs=2, batch_size={batch}, lr=0.02, momentum=0.9, weight_decay=1e-4,
                    train_size={train_size}, lr_milestones=[1], lr_gamma=0.5,
                    per_rule={{"pfa": {{"first_epoch_weight_decay": 0.01}}}})
"""


def experiment(tmp_path, hidden=64, batch=32, train_size=2000):
    path = tmp_path / "tiny.py"
    path.write_text(EXPERIMENT.format(hidden=hidden, batch=batch, train_size=train_size))
    return str(path)


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "circuits.run", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kw)


def comparable(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_sigterm_mid_epoch_then_resume_is_exact(tmp_path, data_root):
    exp = experiment(tmp_path, hidden=256, batch=16, train_size=8000)
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = cli(exp, "--rule", "pfa", "--data-root", data_root, "--out", str(full))
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "circuits.run", exp, "--rule", "pfa", "--data-root", data_root,
                             "--out", str(cut), "--no-progress", "--log-every", "1"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = cut / "steps.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (steps.exists() and len(steps.read_text().splitlines()) >= 40):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "continue with --resume" in err
    state = load_checkpoint(str(cut / "checkpoint.pt"))
    assert state["epoch"] == 0 and 0 < state["step"] < 500  # stopped inside the first epoch
    from connectomes.files import read_connectome  # an interrupted run has its connectome, as it stood
    assert {r["name"] for r in read_connectome(str(cut / "connectome.h5"))} >= {"pixels->h1", "h1->h2"}
    resumed = cli(exp, "--resume", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(str(full / "checkpoint.pt")), load_checkpoint(str(cut / "checkpoint.pt"))
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b["model"][k]), k
    assert comparable(a["history"]) == comparable(b["history"])
    lines = [json.loads(s) for s in (cut / "metrics.jsonl").read_text().splitlines()]
    assert comparable(lines) == comparable(a["history"])


def test_epochs_count_the_total_on_resume(tmp_path, data_root):
    exp = experiment(tmp_path)
    out = tmp_path / "run"
    assert cli(exp, "--rule", "fa", "--epochs", "1", "--data-root", data_root, "--out", str(out)).returncode == 0
    again = cli("--resume", str(out), "--epochs", "2")
    assert again.returncode == 0, again.stderr
    assert [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    ref = tmp_path / "ref"
    assert cli(exp, "--rule", "fa", "--epochs", "2", "--data-root", data_root, "--out", str(ref)).returncode == 0
    a, b = load_checkpoint(str(out / "checkpoint.pt")), load_checkpoint(str(ref / "checkpoint.pt"))
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items() if isinstance(v, torch.Tensor))
    assert (out / "tensorboard").is_dir() and any((out / "tensorboard").iterdir())


def test_corrupt_checkpoint_and_bad_input_leave_files_untouched(tmp_path, data_root):
    exp = experiment(tmp_path)
    out = tmp_path / "run"
    assert cli(exp, "--rule", "bp", "--epochs", "1", "--data-root", data_root, "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(before["checkpoint.pt"][: len(before["checkpoint.pt"]) // 3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(str(ckpt))
    r = cli("--resume", str(out), "--epochs", "2")
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr
    for bad in (["--rule", "nope"], ["--set", "batch_size=big"], ["--set", "momentum"]):
        r = cli(exp, *bad, "--data-root", data_root, "--out", str(out))
        assert r.returncode == 2 and "error:" in r.stderr, bad
    r = cli(exp, "--rule", "bp", "--data-root", data_root, "--out", str(out))
    assert r.returncode == 2 and "already holds a run" in r.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before if k != "checkpoint.pt")


def test_wrong_data_layout_says_where_it_looked(tmp_path):
    root = tmp_path / "data"
    (root / "MNIST").mkdir(parents=True)
    (root / "MNIST" / "train-images-idx3-ubyte").write_bytes(b"")  # not in MNIST/raw
    r = cli(experiment(tmp_path), "--data-root", str(root), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert f"looked in {root}/MNIST/raw" in r.stderr and "download=True" in r.stderr
    assert not (tmp_path / "run").exists()


def test_forced_nan_names_the_projection_and_keeps_a_good_checkpoint(tmp_path, data_root):
    exp = experiment(tmp_path)
    out = tmp_path / "run"
    r = cli(exp, "--rule", "bp", "--data-root", data_root, "--out", str(out), "--set", "lr=1e6")
    assert r.returncode == 2, r.stderr
    assert "training diverged" in r.stderr and "projection" in r.stderr
    assert any(name in r.stderr for name in ["'pixels->h1'", "'h1->h2'", "'h2->digits'"]), r.stderr
    state = load_checkpoint(str(out / "checkpoint.pt"))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if isinstance(v, torch.Tensor))


def test_compare_rules_and_seeds_skips_finished_runs(tmp_path, data_root):
    exp = experiment(tmp_path, train_size=1000)
    out = tmp_path / "cmp"
    args = [exp, "--compare", "bp,pfa", "--seeds", "2", "--epochs", "1", "--data-root", data_root, "--out", str(out)]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    for name in ["bp-s0", "bp-s1", "pfa-s0", "pfa-s1"]:
        assert (out / name / "metrics.jsonl").exists()
    summary = json.loads((out / "compare.json").read_text())
    assert set(summary["test_acc"]) == {"bp", "pfa"} and summary["test_acc"]["pfa"]["seeds"] == [0, 1]
    assert "| pfa | 2 | 1 |" in (out / "compare.md").read_text()
    from PIL import Image
    with Image.open(out / "compare.png") as png:  # 10 × 4 inches at 120 dpi, one line per rule
        assert png.size == (1200, 480)
        colours = {c for _, c in png.convert("RGB").getcolors(1200 * 480)}
    assert {(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)} <= colours  # matplotlib's C0 (bp) and C1 (pfa) drawn
    again = cli(*args)
    assert again.returncode == 0 and again.stderr.count("skipped") == 4



def test_compare_records_a_diverged_run_and_goes_on(tmp_path, data_root):
    """In --compare, a rule that diverges (FA at lr 1e6 here) is recorded in its run folder's
    diverged.json and named in compare.md; the rules after it still train; the exit status is
    1; a second invocation skips it (never trained again) and the finished runs."""
    exp = tmp_path / "blows.py"
    exp.write_text(EXPERIMENT.format(hidden=32, batch=64, train_size=640)
                   .replace('per_rule={"pfa"', 'per_rule={"fa": {"lr": 1e6}, "pfa"'))
    out = tmp_path / "cmp"
    args = [str(exp), "--compare", "bp,fa,pfa", "--epochs", "1", "--data-root", data_root, "--out", str(out)]
    r = cli(*args)
    assert r.returncode == 1, r.stderr
    record = json.loads((out / "fa-s0" / "diverged.json").read_text())
    assert "training diverged" in record["error"] and record["epochs"] == 0
    assert (out / "pfa-s0" / "metrics.jsonl").exists() and (out / "bp-s0" / "metrics.jsonl").exists()
    page = (out / "compare.md").read_text()
    assert "| fa | 0 | — | — | seed 0 after epoch 0 |" in page and "| pfa | 1 | 1 |" in page
    assert "1 run(s) diverged: fa-s0" in r.stderr
    again = cli(*args)
    assert again.returncode == 1 and "diverged after 0 epochs in an earlier invocation, skipped" in again.stderr
    assert again.stderr.count("finished already") == 2
    # continued by hand at a sane rate, the run is no longer recorded as diverged; --compare takes it
    fixed = cli("--resume", str(out / "fa-s0"), "--set", "lr=0.01")
    assert fixed.returncode == 0, fixed.stderr
    assert not (out / "fa-s0" / "diverged.json").exists()
    assert cli(*args).returncode == 0 and "| fa | 1 | 1 |" in (out / "compare.md").read_text()

DDP_SIZES = dict(hidden=32, batch=64, train_size=640)


@pytest.mark.parametrize("rule", ["bp", "fa", "pfa"])
def test_two_processes_equal_one(rule, tmp_path, data_root):
    """DDP with gloo: every rule's local changes (PFA's plastic R included) average like gradients."""
    exp = experiment(tmp_path, **DDP_SIZES)
    one, two = tmp_path / "one", tmp_path / "two"
    # R as a parameter, so that its .grad is what DDP averages
    common = [exp, "--rule", rule, "--epochs", "1", "--data-root", data_root, "--device", "cpu", "--no-progress",
              "--set", "implicit_feedback=false"]
    r = cli(*common, "--out", str(one))
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "circuits.run", *common, "--out", str(two)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_checkpoint(str(one / "checkpoint.pt")), load_checkpoint(str(two / "checkpoint.pt"))
    keys = [k for k, v in a["model"].items() if isinstance(v, torch.Tensor)]
    assert any(k.endswith(".R") for k in keys) == (rule == "pfa")
    for k in keys:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 1  # written once


def test_step_metrics_connectome_export_and_amp(tmp_path, data_root):
    """--log-every writes per-step projection metrics; --connectome rebuilds connectome.h5 from a
    checkpoint; bfloat16 autocast (`amp`) trains on the CPU too."""
    from connectomes.files import read_connectome
    exp = experiment(tmp_path, train_size=640)
    out = tmp_path / "run"
    r = cli(exp, "--rule", "pfa", "--epochs", "1", "--data-root", data_root, "--out", str(out),
            "--log-every", "5", "--set", "amp=true")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(s) for s in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["global_step"] for s in steps] == [5, 10, 15, 20]
    assert {"alignment_deg", "norm_ratio", "update_angle_deg"} <= set(steps[-1]["projections"]["h1->h2"])
    assert json.loads((out / "metrics.jsonl").read_text())["test_acc"] > 0.25  # 20 steps: well above chance
    first = {rec["name"]: rec["weight"] for rec in read_connectome(str(out / "connectome.h5"))}
    (out / "connectome.h5").unlink()
    r = cli("--connectome", str(out))
    assert r.returncode == 0, r.stderr
    again = {rec["name"]: rec["weight"] for rec in read_connectome(str(out / "connectome.h5"))}
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_torch_compile_trains_like_eager():
    """torch.compile of a compiled circuit gives the same steps as eager (custom rules included)."""
    from circuits import Training, zoo
    from circuits.train import make_optimizer
    from plasticity import make_rule
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    models = []
    for compiled in (False, True):
        m = zoo.mlp((784, 32, 32, 10), feedback=make_rule("pfa", expansion=4)).compile(implicit_feedback=True)
        opt = make_optimizer(m, Training(lr=0.05, momentum=0.9, weight_decay=1e-3))
        m.attach_optimizer(opt)
        f = torch.compile(m) if compiled else m
        for _ in range(4):
            opt.zero_grad()
            m.loss(f(x), y).backward()
            opt.step()
        models.append(m)
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_torch_compile_traces_every_rule_in_one_graph(rule):
    """Every rule's step compiles to one graph, forward and backward, traced once: no graph
    break (DFA's readout error travels as an autograd value; brSF's draw is one custom op) and
    no new graph as an implicit rule's a_t changes (it is read from a buffer; a Python float
    would be guarded on: a new graph each step until dynamo's recompile limit, then eager).
    12 SGD steps equal eager's. aot_eager: dynamo's and AOTAutograd's tracing, no code made."""
    from circuits import Training, zoo
    from circuits.train import make_optimizer
    from plasticity import make_rule
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    options = {"expansion": 4} if rule in ("pfa", "pfa-o") else {}  # pfa-o-square: N̄ = N_out by definition
    models = []
    for compiled in (False, True):
        m = zoo.mlp((784, 24, 24, 10), feedback=make_rule(rule, **options)).compile(implicit_feedback=True)
        opt = make_optimizer(m, Training(lr=0.05, momentum=0.9, weight_decay=1e-2))
        m.attach_optimizer(opt)
        torch._dynamo.reset()
        counters.clear()
        f = torch.compile(m, backend="aot_eager") if compiled else m
        torch.manual_seed(1)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(12):
                opt.zero_grad()
                m.loss(f(x), y).backward()
                opt.step()
        models.append(m)
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1, dict(counters["graph_break"])
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=k)
    proj = models[1].projections["h1->h2"]
    if proj.implicit:
        assert proj.a_t.item() == pytest.approx(proj.state["a"], rel=1e-6) and proj.state["a"] < 0.999


@pytest.mark.parametrize("rule", ["brsf", "wm", "pal"])
def test_torch_compile_draws_fresh_noise_every_step_as_eager_does(rule):
    """Compiled, the rules that draw every step (brSF's magnitudes, WM's and PAL's noise) draw
    through one custom op each, running the eager code (the compiler's own random numbers were
    slower): fresh values every pass, the very ones eager draws from the same seed."""
    from circuits import zoo
    from plasticity import make_rule
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    m = zoo.mlp((784, 24, 24, 10), feedback=make_rule(rule)).compile()

    def grads(model):  # every gradient (ΔW, ΔB) of three passes over the same batch, from one seed
        torch.manual_seed(1)
        passes = []
        for _ in range(3):
            m.zero_grad()
            m.loss(model(x), y).backward()
            passes.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
        return passes

    torch._dynamo.reset()
    compiled, eager = grads(torch.compile(m)), grads(m)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(compiled, compiled[1:]):
        assert (a - b).norm() > 1e-3 * a.norm()


def test_training_under_torch_compile_follows_eager(tmp_path, data_root):
    """--set compile=default trains through torch.compile (PFA, implicit R) as eager training
    does; a mode torch.compile does not know is refused before anything is written."""
    exp = experiment(tmp_path, train_size=640)
    runs = {}
    for mode in ("none", "default"):
        out = tmp_path / mode
        r = cli(exp, "--rule", "pfa", "--epochs", "1", "--data-root", data_root, "--out", str(out),
                "--set", f"compile={mode}")
        assert r.returncode == 0, r.stderr[-3000:]
        runs[mode] = load_checkpoint(str(out / "checkpoint.pt"))
    for k, v in runs["none"]["model"].items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(runs["default"]["model"][k], v, rtol=1e-3, atol=1e-4, msg=k)
    r = cli(exp, "--rule", "pfa", "--data-root", data_root, "--out", str(tmp_path / "bad"), "--set", "compile=fast")
    assert r.returncode != 0 and "compile='fast'" in r.stderr and not (tmp_path / "bad").exists()
