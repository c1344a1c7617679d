"""The command line on the real MNIST: one epoch of bp and of pfa."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "circuits.run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("rule,sets", [
    ("bp", []),
    # The paper's first epoch decays W and R by 0.03 to erase R's random start; that epoch alone
    # costs BP as much as PFA (both end it near 0.93), so the one-epoch check runs PFA on the
    # later epochs' decay (1e-4). The full protocol is benchmarked in docs/results.
    ("pfa", ["--set", "first_epoch_weight_decay=none"]),
])
def test_one_epoch_on_mnist(rule, sets, data_root, tmp_path):
    out = tmp_path / f"run-{rule}"
    proc = run_cli("experiments/mnist_mlp.py", "--rule", rule, "--epochs", "1", "--seed", "0",
                   "--data-root", data_root, "--out", str(out), "--no-progress", *sets)
    assert proc.returncode == 0, proc.stderr
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    m = json.loads(lines[0])
    for key in ["epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "projections"]:
        assert key in m, key
    assert m["epoch"] == 1 and 0 <= m["train_acc"] <= 1
    assert m["test_acc"] >= 0.95, m
    projections = m["projections"]
    assert set(projections) == {"pixels->h1", "h1->h2", "h2->digits"}
    assert set(projections["pixels->h1"]) == {"update_angle_deg"}  # no feedback route into the input
    for name in ["h1->h2", "h2->digits"]:
        v = projections[name]
        if rule == "bp":
            assert v["alignment_deg"] < 1e-3 and abs(v["norm_ratio"] - 1) < 1e-6 and v["sign_concordance"] == 1
        else:
            assert 0 < v["alignment_deg"] < 90 and v["norm_ratio"] > 0 and 0.5 < v["sign_concordance"] < 1
    for v in projections.values():
        assert (v["update_angle_deg"] < 1e-3) if rule == "bp" else (0 < v["update_angle_deg"] < 90)
    assert projections["h2->digits"]["update_angle_deg"] < 1e-3  # the readout's error is exact for every rule
    config = json.loads((out / "config.json").read_text())
    assert config["rule"] == rule and config["seed"] == 0
    assert config["training"]["batch_size"] == 64
    assert {p["name"] for p in config["circuit"]["projections"]} == {"pixels->h1", "h1->h2", "h2->digits"}
    assert (out / "checkpoint.pt").exists()
    from connectomes.files import read_connectome
    records = {r["name"]: r for r in read_connectome(str(out / "connectome.h5"))}
    assert tuple(records["h1->h2"]["weight"].shape) == (512, 512)
    if rule == "pfa":  # B: h2.e → ē (5120 × 512), R: ē → h1.e (512 × 5120), R rebuilt from W
        assert tuple(records["h1->h2:B"]["weight"].shape) == (5120, 512)
        assert tuple(records["h1->h2:R"]["weight"].shape) == (512, 5120)
    assert (out / "graph.json").exists() and (out / "graph.graphml").exists()
    # a second run into the same directory is refused rather than overwriting it
    again = run_cli("experiments/mnist_mlp.py", "--rule", rule, "--epochs", "1",
                    "--data-root", data_root, "--out", str(out), "--no-progress")
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_summary_flag():
    proc = run_cli("experiments/mnist_mlp.py", "--summary", "--rule", "fa")
    assert proc.returncode == 0, proc.stderr
    assert "h1->h2:B" in proc.stdout and "Schedule of 'mnist-mlp'" in proc.stdout
