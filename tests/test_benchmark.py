"""benchmarks/step_time.py runs end to end (a tiny run: no timing is judged here)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import step_time  # noqa: E402


def test_step_time_writes_paired_ratios_and_targets(tmp_path):
    step_time.main(["--workload", "mlp", "--rules", "fa,pfa", "--reps", "3", "--steps", "1",
                    "--warmup", "1", "--out", str(tmp_path), "--tag", "test"])
    data = json.load(open(tmp_path / "step_time.json"))["mlp-test"]
    rows = data["rows"]
    assert set(rows) == {"plain PyTorch BP", "fa", "pfa", "pfa (explicit ē route)", "pfa (R as parameter)",
                         step_time.REFERENCE_FA, step_time.REFERENCE_FA_WT}
    assert rows["plain PyTorch BP"]["ratio_to_plain_bp"] == 1.0
    assert rows["plain PyTorch BP"]["ratio_q1"] == rows["plain PyTorch BP"]["ratio_q3"] == 1.0  # paired with itself
    assert all(row["median_ms"] > 0 and "ratio_q1" in row and "ratio_q3" in row for row in rows.values())
    assert all(len(row["times_ms"]) == 3 and row["ratio_ci95"][0] <= row["ratio_to_plain_bp"] <= row["ratio_ci95"][1]
               for row in rows.values())
    assert rows["fa"]["target"] == 1.10 and rows["pfa"]["target"] == 1.6
    table = (tmp_path / "step_time.md").read_text()
    assert "| fa |" in table and "≤ 1.10" in table


def test_overhead_workload_has_reference_rows_and_no_targets(tmp_path):
    step_time.main(["--workload", "overhead", "--rules", "fa", "--reps", "2", "--steps", "1",
                    "--warmup", "1", "--out", str(tmp_path), "--tag", "test"])
    data = json.load(open(tmp_path / "step_time.json"))["overhead-test"]
    assert set(data["rows"]) == {"plain PyTorch BP", "fa", step_time.REFERENCE_FA, step_time.REFERENCE_FA_WT}
    assert data["steps_per_rep"] == 5 and "16-16-16-10" in data["workload"]
    assert not any("target" in row for row in data["rows"].values())


def test_reference_rows_are_fa_and_with_b_transported_exact_bp():
    """The reference with B = Wᵀ gives autograd's gradients (it differs from BP only in running
    a Python Function); the FA reference sends errors through its own B."""
    import torch
    from circuits import zoo
    x, y = torch.randn(5, 784, dtype=torch.float64), torch.randint(0, 10, (5,))
    grads = {}
    for name, make in [("plain", zoo.PlainMLP), ("wt", lambda: step_time.MinimalFAMLP(transported=True)),
                       ("fa", step_time.MinimalFAMLP)]:
        torch.manual_seed(0)
        model = make().double()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads[name] = [p.grad for p in model.layers.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(grads["plain"], grads["wt"]))
    assert torch.allclose(grads["plain"][-1], grads["fa"][-1], rtol=1e-12, atol=1e-14)  # the readout's Δb: the same δ
    assert not torch.allclose(grads["plain"][0], grads["fa"][0])  # the first layer's ΔW: errors through B


def test_the_verdict_reads_the_interval_of_the_median():
    ratios = [1.0 + 0.01 * i for i in range(21)]  # median 1.10
    lo, hi = step_time.median_ci(ratios)
    assert lo < 1.10 < hi and step_time.median_ci([1.2] * 9) == (1.2, 1.2)
    row = {"ratio_to_plain_bp": 1.08, "target": 1.10}
    assert step_time.verdict({**row, "ratio_ci95": (1.05, 1.09)}) == "met"
    assert step_time.verdict({**row, "ratio_ci95": (1.11, 1.15)}) == "**not met**"
    assert step_time.verdict({**row, "ratio_ci95": (1.05, 1.12)}) == "within noise (met by the median)"
    assert step_time.verdict({**row, "ratio_to_plain_bp": 1.11, "ratio_ci95": (1.05, 1.12)}) == \
        "within noise (not met by the median)"


def test_step_time_rejects_an_unknown_rule(tmp_path, capsys):
    import pytest
    with pytest.raises(SystemExit):
        step_time.main(["--workload", "mlp", "--rules", "fa,nope", "--out", str(tmp_path)])
    assert "nope" in capsys.readouterr().err


def test_connectome_stats_benchmark_writes_its_table(tmp_path):
    import connectome_stats

    connectome_stats.main(["--cells", "60", "--repeats", "1", "--out", str(tmp_path)])
    rows = json.load(open(tmp_path / "connectome_stats.json"))["rows"]
    assert len(rows) == 5 and all(r["median_s"] > 0 and len(r["times_s"]) == 1 for r in rows)
    assert "| pair_statistics, dense 60×60 (W and F) |" in (tmp_path / "connectome_stats.md").read_text()


def test_memory_benchmark_counts_known_bytes_and_repeats_exactly(tmp_path):
    """benchmarks/memory.py on the tiny MLP (16-16-16-10): plain BP holds its weights, gradients and
    momentum (3 × 714 float32 = 8568 bytes) when the step starts; FA holds besides them its B of the
    two projections that send errors (16·16 + 16·10 floats); the step's own extra bytes are
    the same for both (activations and new gradients); a second run gives the same bytes."""
    import memory

    args = ["--workload", "overhead", "--rules", "fa,pfa", "--warmup", "1", "--tag", "test"]
    memory.main([*args, "--out", str(tmp_path / "a")])
    memory.main([*args, "--out", str(tmp_path / "b")])
    rows = json.load(open(tmp_path / "a" / "memory.json"))["overhead-test"]["rows"]
    assert rows == json.load(open(tmp_path / "b" / "memory.json"))["overhead-test"]["rows"]
    assert set(rows) == {"plain PyTorch BP", "fa", "pfa", "pfa (explicit ē route)", "pfa (R as parameter)"}
    bp, fa = rows["plain PyTorch BP"], rows["fa"]
    assert bp["held_bytes"] == 3 * 4 * (16 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10) == 8568
    assert fa["held_bytes"] - bp["held_bytes"] == 4 * (16 * 16 + 16 * 10)
    assert fa["peak_bytes"] - fa["held_bytes"] == bp["peak_bytes"] - bp["held_bytes"] > 0
    assert bp["ratio_to_plain_bp"] == 1.0 and fa["ratio_to_plain_bp"] == fa["peak_bytes"] / bp["peak_bytes"]
    assert fa["target"] == 1.10 and fa["met"] is False and "target" not in rows["pfa (explicit ē route)"]
    table = (tmp_path / "a" / "memory.md").read_text()
    assert "| fa | 0.010 | 0.011 | 1.173 | ≤ 1.10 **not met** |" in table


def test_flops_benchmark_counts_the_products_of_a_step(tmp_path):
    """benchmarks/flops.py on the tiny MLP (16-16-16-10, batch 4): plain BP's step is the forward
    products (2·b·Σ in·out), the same again for ΔW, and the errors sent back by the two upper
    projections; FA does the same products; WM adds its mirror, y = W ξ and Σ ξ yᵀ for each
    projection that sends errors (batch-sized noise: 2 × 2·b·in·out each)."""
    import flops

    flops.main(["--workload", "overhead", "--rules", "fa,wm", "--out", str(tmp_path)])
    rows = json.load(open(tmp_path / "flops.json"))["overhead"]["rows"]
    b, forward, upper = 4, 16 * 16 + 16 * 16 + 16 * 10, 16 * 16 + 16 * 10
    bp = 2 * b * (forward + forward + upper)
    assert rows["plain PyTorch BP"]["flops"] == rows["fa"]["flops"] == bp == 14080
    assert rows["wm"]["flops"] == bp + 2 * 2 * b * upper
    assert rows["wm"]["ratio_to_plain_bp"] == rows["wm"]["flops"] / bp
    assert "| wm | 0.000 | 1.473 |" in (tmp_path / "flops.md").read_text()


def test_data_pipeline_benchmark_on_ten_tiny_images(tmp_path):
    """benchmarks/data_pipeline.py end to end on 10 small JPEGs: one row per decoder and worker
    count, every image of the pass after the first batch counted, the two decoders' evaluation
    tensors close (JPEG decoders differ by rounding only), the GPU step rate unknown on a CPU."""
    import data_pipeline

    data_pipeline.main(["--images", "10", "--classes", "2", "--width", "64", "--height", "48", "--image-size", "32",
                        "--batch-size", "4", "--workers", "0", "--repeats", "2", "--out", str(tmp_path), "--tag", "t"])
    run = json.load(open(tmp_path / "data_pipeline.json"))["t"]
    assert [(r["decoder"], r["workers"]) for r in run["rows"]] == [("pil", 0), ("torchvision", 0)]
    assert all(len(r["runs"]) == 2 and r["images_per_s"] > 0 and r["images_timed"] == 10 - 4 for r in run["rows"])
    assert run["setup"].startswith("10 JPEGs 64×48") and run["decoder_difference"]["images"] == 2
    assert run["decoder_difference"]["mean_abs"] < 0.02
    assert run["resnet18_step_images_per_s"] is None and run["resnet18_step_note"].startswith("unknown")
    assert "| torchvision | 0 |" in (tmp_path / "data_pipeline.md").read_text()


GPU_CHECK = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.sh")


@pytest.mark.parametrize("step", ["devices", "step_time", "memory", "ddp", "data_pipeline"])
def test_gpu_check_runs_each_step_on_the_cpu(step, tmp_path):
    """benchmarks/gpu_check.sh --cpu-dry-run, one step at a time (GPU_CHECK_STEPS): the step
    succeeds, the others are recorded as skipped, and its results land in the one folder (the
    DDP step on generated data: 2 gloo processes end with 1 process's weights)."""
    import subprocess

    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_STEPS": step, "OMP_NUM_THREADS": "1",
           "CIRCUITS_DATA_ROOT": str(tmp_path / "no-data")}
    r = subprocess.run(["bash", GPU_CHECK, "--cpu-dry-run", str(tmp_path / "out")], env=env, capture_output=True,
                       text=True, timeout=300)
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text().splitlines()
    assert r.returncode == 0, (summary, (out / f"{step}.log").read_text()[-3000:])
    assert [line.split()[0] for line in summary] == ["devices", "step_time", "memory", "ddp", "data_pipeline"]
    assert all(("ok (" in line) == line.startswith(step) and ("skipped" in line) != line.startswith(step)
               for line in summary), summary
    assert "torch" in (out / "env.txt").read_text()
    if step == "devices":
        assert "skipped" in (out / "devices.log").read_text()  # the CUDA tests, on a machine without CUDA
    elif step in ("step_time", "memory"):
        run = json.load(open(out / f"{step}.json"))["overhead-gpu"]
        assert set(run["rows"]) >= {"plain PyTorch BP", "fa"} and run["device"] == "cpu"
    elif step == "ddp":
        record = json.load(open(out / "ddp.json"))
        assert record["data"].startswith("fake_cifar10") and record["device"] == "cpu"
        assert record["max_weight_difference"] < 1e-5 and record["test_acc"][0] == record["test_acc"][1]
        assert not (out / "ddp-two").exists()
    else:
        assert json.load(open(out / "data_pipeline.json"))["gpu"]["rows"][0]["images_timed"] == 8 - 4
