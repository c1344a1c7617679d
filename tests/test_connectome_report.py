"""``python -m connectomes.report`` on tiny fake run directories."""
import json
import os

import pytest
import torch

from connectomes.files import write_connectome
from connectomes.report import ReportError, load_run, main, write_report
from helpers import connectome_records


def fake_records(rule: str, seed: int):
    return connectome_records(rule, seed, scale=0.3, feedback="correlated")


def fake_run(path, rule, seed, *, epochs=3, connectome=True):
    os.makedirs(path)
    config = {"circuit": {"name": "tiny", "populations": [], "projections": [], "feedback": []},
              "training": {"epochs": epochs}, "rule": rule, "seed": seed}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for e in range(1, epochs + 1):
            f.write(json.dumps({"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e,
                                "test_loss": 1.1 / e, "test_acc": 0.45 + 0.1 * e, "lr": 0.01, "seconds": 0.1,
                                "projections": {"h1->out": {"alignment_deg": 80 - 10 * e, "norm_ratio": 0.5 + 0.1 * e}}})
                    + "\n")
    if connectome:
        write_connectome(os.path.join(path, "connectome.h5"), fake_records(rule, seed), {"rule": rule})
    return str(path)


def test_report_from_two_runs(tmp_path):
    fa = fake_run(tmp_path / "fa", "fa", 0)
    pfa = fake_run(tmp_path / "pfa", "pfa", 1)
    out = tmp_path / "report"
    path = write_report([fa, pfa], str(out))
    text = open(path).read()
    for png in ("learning_curves.png", "alignment.png", "weight_distributions.png", "weight_correlation_fa_seed_0.png"):
        assert (out / png).stat().st_size > 5000, png
        assert f"({png})" in text
    assert "fa seed 0" in text and "pfa seed 1" in text
    assert "rat cortex" in text and "0.31" in text and "Song et al. 2005" in text
    assert "no direct feedback synapses (rule pfa)" in text
    assert "| 300 |" in text  # the motif census of these small circuits
    # the PFA table says: zero bidirectional pairs
    pfa_section = text.split("### pfa seed 1")[1].split("###")[0]
    row = next(line for line in pfa_section.splitlines() if line.startswith("| bidirectional pairs"))
    assert row.split("|")[2].strip() == "0" and row.split("|")[3].strip() == "0"


def test_run_without_connectome_is_reported_not_fatal(tmp_path):
    run = fake_run(tmp_path / "run", "kp", 0, connectome=False)
    path = write_report([run], str(tmp_path / "out"))
    text = open(path).read()
    assert "no connectome.h5 in" in text and (tmp_path / "out" / "learning_curves.png").exists()


def test_corrupt_connectome_is_noted(tmp_path):
    run = fake_run(tmp_path / "run", "fa", 0, connectome=False)
    with open(os.path.join(run, "connectome.h5"), "wb") as f:
        f.write(b"garbage" * 100)
    assert "could not be read" in load_run(run).connectome_note


def test_missing_or_malformed_run_dirs_name_the_directory(tmp_path, capsys):
    with pytest.raises(ReportError, match="nowhere"):
        load_run(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="empty.*metrics.jsonl|empty.*config.json"):
        load_run(str(empty))
    bad = fake_run(tmp_path / "bad", "fa", 0, connectome=False)
    with open(os.path.join(bad, "metrics.jsonl"), "a") as f:
        f.write("{not json\n")
    with pytest.raises(ReportError, match=r"bad/metrics.jsonl: line 4"):
        load_run(bad)
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_command_line_entry(tmp_path, capsys):
    """``main`` is what ``python -m connectomes.report RUN_DIR --out DIR`` runs."""
    run = fake_run(tmp_path / "r", "fa", 0)
    out = tmp_path / "o"
    assert main([run, "--out", str(out), "--no-motifs"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    assert "| 300 |" not in (out / "report.md").read_text()
