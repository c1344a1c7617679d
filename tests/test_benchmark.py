"""benchmarks/step_time.py runs end to end (a tiny run: no timing is judged here)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import step_time  # noqa: E402


def test_step_time_writes_paired_ratios_and_targets(tmp_path):
    step_time.main(["--workload", "mlp", "--rules", "fa,pfa", "--reps", "3", "--steps", "1",
                    "--warmup", "1", "--out", str(tmp_path), "--tag", "test"])
    data = json.load(open(tmp_path / "step_time.json"))["mlp-test"]
    rows = data["rows"]
    assert set(rows) == {"plain PyTorch BP", "fa", "pfa", "pfa (explicit ē route)", "pfa (R as parameter)",
                         step_time.REFERENCE_FA}
    assert rows["plain PyTorch BP"]["ratio_to_plain_bp"] == 1.0
    assert rows["plain PyTorch BP"]["ratio_q1"] == rows["plain PyTorch BP"]["ratio_q3"] == 1.0  # paired with itself
    assert all(row["median_ms"] > 0 and "ratio_q1" in row and "ratio_q3" in row for row in rows.values())
    assert rows["fa"]["target"] == 1.10 and rows["pfa"]["target"] == 1.6
    table = (tmp_path / "step_time.md").read_text()
    assert "| fa |" in table and "≤ 1.10" in table


def test_step_time_rejects_an_unknown_rule(tmp_path, capsys):
    import pytest
    with pytest.raises(SystemExit):
        step_time.main(["--workload", "mlp", "--rules", "fa,nope", "--out", str(tmp_path)])
    assert "nope" in capsys.readouterr().err
