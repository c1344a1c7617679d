"""experiments/brain_mixture.py --study: the corrected statistics of finished mixed-rule runs, from
hand-made run folders whose kp and fa groups are planted."""
import json
import os
import runpy

import numpy as np
import pytest
import torch

from conftest import REPO
from connectomes.files import write_connectome

bm = runpy.run_path(os.path.join(REPO, "experiments", "brain_mixture.py"), run_name="brain_mixture")


def mixed_run(path, seed: int, kp: float = 0.16, fa: float = 0.15, n=(30, 40, 40, 10)):
    """A run folder of pixels(30) → h1(40) → h2(40) → digits(10) whose hidden projections carry
    a kp group (feedback = Wᵀ) and an fa group (independent feedback) on disjoint cell pairs."""
    rng = np.random.default_rng(seed)
    names = ("pixels", "h1", "h2", "digits")
    recs = []
    for (a, na), (b, nb) in zip(zip(names, n), zip(names[1:], n[1:])):
        W = rng.normal(size=(nb, na))
        name = f"{a}->{b}"
        recs.append({"name": name, "kind": "forward", "pre": a, "post": b, "weight": torch.tensor(W)})
        if a == "pixels":
            continue
        u = rng.random((na, nb))
        kp_mask, fa_mask = u < kp, (u >= kp) & (u < kp + fa)
        for group, F in (("kp", np.where(kp_mask, W.T, 0.0)), ("fa", np.where(fa_mask, rng.normal(size=(na, nb)), 0.0))):
            recs.append({"name": f"{name}:B_{group}", "kind": "feedback", "pre": b, "post": a,
                         "weight": torch.tensor(F), "forward": name})
    os.makedirs(path)
    write_connectome(os.path.join(path, "connectome.h5"), recs)
    groups = {"kp": kp, "fa": fa, "pfa": round(1 - kp - fa, 2)}
    config = {"seed": seed, "circuit": {"name": "mnist-brain-mixture", "projections": [
        {"name": "pixels->h1", "rule": {"rule": "mixed", "groups": groups}}]}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for e in (1, 2):
            f.write(json.dumps({"epoch": e, "test_acc": 0.9 + 0.01 * e, "seconds": 30.0}) + "\n")
    return str(path)


def test_study_measures_each_seed_and_writes_the_page(tmp_path):
    runs = [mixed_run(tmp_path / f"s{s}", s) for s in (0, 1)]
    refit = [mixed_run(tmp_path / "kp0.2", 0, kp=0.2, fa=0.11)]
    out = tmp_path / "out"
    bm["study"](runs, refit, str(out), "python experiments/brain_mixture.py --study ...")
    data = json.load(open(out / "study.json"))
    st = data["runs"][0]["projections"]["h1->h2"]
    # planted: 31% of pairs bidirectional; in the kp group the feedback is Wᵀ exactly
    assert st["stored"]["bidirectional_fraction"] == pytest.approx(0.31, abs=0.1)
    assert st["stored"]["reciprocity_over_chance"] == pytest.approx(1.0)        # W dense: chance exactly
    assert st["log_r_kp_group"] == pytest.approx(1.0) and abs(st["log_r_fa_group"]) < 0.5
    assert st["matched"]["connection_probability"] == pytest.approx(0.116, abs=0.01)
    assert "reciprocity_over_chance" in st["stored"]["intervals"]
    assert data["refit"][0]["groups"]["kp"] == 0.2
    assert (out / "runs" / "kp0.16-s1" / "metrics.jsonl").exists()
    page = (out / "README.md").read_text()
    assert "| log-space r, bidirectional excitatory pairs (Song) |" in page and "mean ± sd over seeds" in page
    assert "## Does the split still fit" in page and "| 0.2 | 0.11 |" in page
    assert "reciprocity over chance is exactly 1" in page and (out / "brain_mixture.png").exists()
    # the page is regenerated from study.json alone
    (out / "README.md").unlink()
    bm["write_study"](str(out))
    assert (out / "README.md").read_text() == page
    assert "{" not in page                             # no unformatted placeholder left in the page
