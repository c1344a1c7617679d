"""``python -m connectomes.report`` on tiny fake run directories."""
import json
import os

import numpy as np
import pytest
import torch

from connectomes.files import write_connectome
from connectomes.reciprocity import pair_statistics
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
    path = write_report([fa, pfa], str(out), intervals=40)
    text = open(path).read()
    for png in ("cortex_comparison.png", "density_dependence.png", "learning_curves.png", "alignment.png",
                "weight_distributions.png", "weight_correlation_fa_seed_0.png", "pfa_paths_pfa_seed_1.png"):
        assert f"({png})" in text, png
        assert plt_image_shape(out / png)[0] > 300, png
    # the first screen: the comparison figure and table come before anything else
    first = text.split("## Runs")[0]
    assert "cortex_comparison.png" in first and "| *campagnola2022* |" in first and "| *song2005* |" in first
    assert "- **fa seed 0** (h1->out, at matched density 0.116): close to cortex on" in first
    assert "- **pfa seed 1** (h1->out, at matched density 0.116)" in first
    assert "no reciprocal synapse can exist" in first.split("**pfa seed 1**")[1]
    # the numbers in report.json are the statistics of the file's tensors
    data = json.load(open(out / "report.json"))
    run = next(r for r in data["runs"] if r["rule"] == "fa")
    recs = fake_records("fa", 0)
    truth = pair_statistics(recs[1]["weight"], recs[2]["weight"], density=0.116)
    head = run["analysis"]["headline"]
    assert head["forward_synapses"] == truth.forward_synapses == round(0.116 * 28)
    assert head["bidirectional_pairs"] == truth.bidirectional_pairs
    pfa_head = next(r for r in data["runs"] if r["rule"] == "pfa")["analysis"]["headline"]
    assert pfa_head["bidirectional_pairs"] == 0 and pfa_head["reciprocity_over_chance"] is None
    assert "cannot exist" in pfa_head["notes"]["reciprocity_over_chance"]
    # per-projection tables, the triad codes explained, every reference with its source
    assert "At the matched density p = 0.116" in text
    assert "| 300 | all three pairs reciprocal |" in text
    assert "Campagnola et al. 2022" in text and "Fig. 6B caption" in text and "[unverified]" in text


def plt_image_shape(path):
    from matplotlib import image

    return image.imread(str(path)).shape


def test_run_without_connectome_is_reported_not_fatal(tmp_path):
    run = fake_run(tmp_path / "run", "kp", 0, connectome=False)
    path = write_report([run], str(tmp_path / "out"))
    text = open(path).read()
    assert "no connectome.h5 in" in text and "python -m circuits.run --connectome" in text and (tmp_path / "out" / "learning_curves.png").exists()


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


def planted_sparse_run(path, n: int, seed: int):
    """A run folder whose connectome a->b is sparse both ways: each direction 10% of the n × n
    pairs, bidirectional pairs at 4× chance, lognormal strengths. Returns (run folder, W)."""
    rng = np.random.default_rng(seed)
    p = 0.1
    b = 4 * p * p
    kind = rng.choice(4, size=(n, n), p=[b, p - b, p - b, 1 - 2 * p + b])
    W = np.where((kind == 0) | (kind == 1), rng.lognormal(size=(n, n)), 0.0)
    F = np.where((kind == 0) | (kind == 2), rng.lognormal(size=(n, n)), 0.0).T
    recs = [{"name": "a->b", "kind": "forward", "pre": "a", "post": "b", "weight": torch.tensor(W), "rule": "fa"},
            {"name": "a->b:B", "kind": "feedback", "pre": "b", "post": "a", "weight": torch.tensor(F), "rule": "fa",
             "forward": "a->b"}]
    run = fake_run(path, "fa", 0, connectome=False)
    write_connectome(os.path.join(run, "connectome.h5"), recs)
    return run, W


def test_a_sparse_circuit_is_compared_as_it_is(tmp_path):
    """A sparse forward and feedback connectome (planted: 10% per direction, bidirectional pairs
    4× chance) is compared as stored, and the report finds the planted excess."""
    run, _ = planted_sparse_run(tmp_path / "sparse", 120, seed=0)
    write_report([run], str(tmp_path / "out"), intervals=50, motifs=False)
    head = json.load(open(tmp_path / "out" / "report.json"))["runs"][0]["analysis"]
    assert head["view"] == "as is"
    st = head["headline"]
    assert st["reciprocity_over_chance"] == pytest.approx(4.0, rel=0.2)
    lo, hi = st["intervals"]["reciprocity_over_chance"]
    assert lo < st["reciprocity_over_chance"] < hi
    assert "(a->b, as it is)" in (tmp_path / "out" / "report.md").read_text()


def test_a_dale_run_gets_its_cell_type_section(tmp_path):
    """A run whose records carry cell types gets the E→E / E→I / I→E / I→I section, with the
    statistics of its own records; a signed run gets none."""
    from connectomes.report import cell_type_lines
    from test_dale_connectome import planted

    recs, *_ = planted()
    dale = fake_run(tmp_path / "dale", "kp", 0, connectome=False)
    write_connectome(os.path.join(dale, "connectome.h5"), recs)
    signed = fake_run(tmp_path / "signed", "fa", 0)
    write_report([dale, signed], str(tmp_path / "out"), intervals=0, motifs=False)
    text = (tmp_path / "out" / "report.md").read_text()
    section = text.split("## Cell types (Dale's principle)")[1].split("\n## ")[0]
    expected = cell_type_lines(recs, "kp seed 0", density=0.116)
    assert expected and "\n".join(expected).strip() in section
    assert "E→E against cortex" in section and "fa seed 0" not in section


def test_command_line_threshold_defaults_to_nonzero_synapses(tmp_path):
    """Without --threshold a synapse exists where w ≠ 0: the planted sparse connectome's
    reciprocity (4× chance) is found; counting the zeros as synapses would give 1."""
    run, W = planted_sparse_run(tmp_path / "sparse", 100, seed=1)
    assert main([run, "--out", str(tmp_path / "o"), "--no-motifs", "--intervals", "0"]) == 0
    st = json.load(open(tmp_path / "o" / "report.json"))["runs"][0]["analysis"]["headline"]
    fwd = int((W != 0).sum())
    assert st["forward_synapses"] == fwd
    assert st["reciprocity_over_chance"] == pytest.approx(4.0, rel=0.25)


def test_weight_correlation_excitatory_panel_shows_the_positive_pairs(tmp_path, monkeypatch):
    """The right panel holds the bidirectional pairs whose forward and feedback synapses are both
    excitatory (w > 0), and its title counts them and gives r of their logarithms."""
    from matplotlib.figure import Figure

    from connectomes.report import plot_weight_correlation

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    run = load_run(fake_run(tmp_path / "fa", "fa", 0))
    assert plot_weight_correlation(run, str(tmp_path / "w.png")) is not None
    recs = fake_records("fa", 0)
    x, y = recs[1]["weight"].double().numpy().ravel(), recs[2]["weight"].double().numpy().T.ravel()
    both = (x > 0) & (y > 0)
    r_log = np.corrcoef(np.log(x[both]), np.log(y[both]))[0, 1]
    title = figures[0].axes[1].get_title()
    assert f"of {int(both.sum())} pairs shown" in title and int(both.sum()) < x.size
    assert f"r(ln) = {r_log:.3f}" in title
