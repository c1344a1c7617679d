"""Probes of trained circuits (issue 22) against exact answers: the Hessian against a dense
float64 Hessian, attacks against a brute-force search, landscapes and trajectories against
direct computation, and the command line on a real run folder."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from circuits import Circuit, Training
from circuits.data import Split
from circuits.train import train
from conftest import REPO
from connectomes import Dense
from helpers import small_mlp
from plasticity import make_rule
from populations import Input, Layer, Readout

from probes import curvature, landscape, robustness, trajectory


def small_problem(rule="fa"):
    torch.manual_seed(0)
    model = small_mlp(make_rule(rule), sizes=(5, 6, 4, 3), activation="tanh").compile(seed=0).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, [(x[:12], y[:12]), (x[12:], y[12:])]


def dense_hessian(model, batches):
    """The Hessian of the mean cross-entropy over all batches w.r.t. the forward weights, by
    torch.autograd.functional.hessian on the exact forward map (independent of curvlinops)."""
    from torch.func import functional_call

    ws = curvature.forward_weights(model)
    names = [n for n, p in model.named_parameters() if any(p is w for w in ws)]
    n = sum(len(y) for _, y in batches)

    def loss(*params):
        return sum(F.cross_entropy(functional_call(model, dict(zip(names, params)), (x,), {"exact": True}), y,
                                   reduction="sum") for x, y in batches) / n

    blocks = torch.autograd.functional.hessian(loss, tuple(w.detach() for w in ws))
    return torch.cat([torch.cat([blocks[i][j].reshape(ws[i].numel(), ws[j].numel()) for j in range(len(ws))], 1)
                      for i in range(len(ws))], 0)


def test_hessian_operator_trace_and_top_eigenvalues_against_a_dense_float64_hessian():
    model, batches = small_problem()
    op = curvature.hessian_operator(model, batches)
    H = dense_hessian(model, batches)
    assert op.shape == H.shape == (6 * 5 + 4 * 6 + 3 * 4,) * 2
    torch.testing.assert_close(op @ torch.eye(H.shape[0], dtype=torch.float64), H, rtol=0, atol=1e-12)
    est = curvature.hessian_trace(op, num_matvecs=400)
    assert abs(est["trace"] - torch.trace(H).item()) < 4 * est["stderr"] and est["stderr"] < 0.2
    values, vectors = curvature.top_eigenpairs(op, k=2)
    exact = torch.linalg.eigvalsh(H)
    assert values == pytest.approx(exact[-2:].flip(0).numpy(), rel=1e-6)
    v = torch.as_tensor(vectors[:, 0])
    torch.testing.assert_close(H @ v, values[0] * v, rtol=0, atol=1e-6)
    grid, density = curvature.spectral_density(op, ncv=20)
    assert (density * (grid[1] - grid[0])).sum() == pytest.approx(1, abs=0.01)


def test_the_curvature_is_the_circuits_not_the_rules():
    """The same W in an FA circuit and a BP circuit: the same Hessian (the loss runs the exact
    forward map; feedback plays no part)."""
    fa, batches = small_problem("fa")
    bp, _ = small_problem("bp")
    bp.load_state_dict({k: v for k, v in fa.state_dict().items() if k in bp.state_dict()}, strict=False)
    eye = torch.eye(66, dtype=torch.float64)
    torch.testing.assert_close(curvature.hessian_operator(fa, batches) @ eye, curvature.hessian_operator(bp, batches) @ eye)


def test_landscape_passes_through_the_trained_weights_and_restores_them():
    model, batches = small_problem()
    before = [w.detach().clone() for w in curvature.forward_weights(model)]
    d1, d2 = landscape.directions(model, "random", seed=3)
    for d, w in zip(d1, before):  # filter-normalised: each post cell's direction has its W row's norm
        torch.testing.assert_close(d.norm(dim=1), w.norm(dim=1))
    s = landscape.surface(model, batches, d1, d2, [-0.5, 0.0, 0.5], [0.0, 0.5])
    loss0, acc0 = landscape.loss_and_accuracy(model, batches)
    assert s["loss"][0][1] == pytest.approx(loss0, rel=1e-12) and s["accuracy"][0][1] == acc0
    for w, w0 in zip(curvature.forward_weights(model), before):
        assert torch.equal(w, w0)
    # along the top Hessian eigenvector, the loss bends up by λ_max/2 · α² to second order
    values, vectors = curvature.top_eigenpairs(curvature.hessian_operator(model, batches), k=2)
    h1, h2 = landscape.directions(model, "hessian", eigenvectors=vectors)
    a = 1e-3
    s = landscape.surface(model, batches, h1, h2, [-a, 0.0, a], [0.0])
    curvature_along = (s["loss"][0][0] - 2 * s["loss"][0][1] + s["loss"][0][2]) / a ** 2
    assert curvature_along == pytest.approx(values[0], rel=1e-4)


def tiny_classifier(w, b, mean=0.5, std=0.25):
    """Two pixels → two classes, logits = A x + c on normalised inputs (x − mean)/std: a linear
    classifier whose decision rule in pixel space is known."""
    c = Circuit("tiny", seed=0)
    x = c.add(Input("x", 2))
    y = c.add(Readout("y", 2))
    c.connect(x, y, Dense())
    c.feedback(make_rule("bp"))
    model = c.compile(seed=0).double()
    with torch.no_grad():
        model.projections["x->y"].weight.copy_(torch.tensor([w, [-v for v in w]], dtype=torch.float64))
        model.biases["y"].copy_(torch.tensor([b, -b], dtype=torch.float64))
    return model, (mean,), (std,)


@pytest.mark.parametrize("kind", ["pgd_linf", "fgsm"])
def test_attack_success_matches_a_brute_force_search_on_a_tiny_model(kind):
    """Within the L∞ ball of radius ε (intersected with [0, 1]²) a grid search says whether any
    image is misclassified; PGD (and, for this linear model, FGSM) must succeed exactly when it
    does, for every point whose margin is not within the grid's resolution."""
    model, mean, std = tiny_classifier([1.0, -2.0], 0.3)
    net = robustness.PixelModel(model, mean, std)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(60, 2, generator=g, dtype=torch.float64).view(60, 1, 1, 2)
    with torch.no_grad():
        labels = net(pixels.view(60, 2)).argmax(1)
    eps, steps = 0.1, 201
    grid = torch.linspace(-eps, eps, steps, dtype=torch.float64)
    checked, outcomes = 0, []
    for p, y in zip(pixels.view(60, 2), labels):
        box = torch.stack(torch.meshgrid(grid + p[0], grid + p[1], indexing="ij"), -1).reshape(-1, 2).clamp(0, 1)
        with torch.no_grad():
            logits = net(box)
        margins = logits[:, y] - logits[:, 1 - y]
        if margins.min().abs() < 0.02:  # the boundary within the grid's resolution: undecidable here
            continue
        brute = bool((margins < 0).any())
        adv = robustness.attack(model, p.view(1, 2), y.view(1), kind, eps, mean, std, steps=20).view(1, 2)
        assert (adv - p).abs().max() <= eps + 1e-9 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            fooled = bool(net(adv).argmax(1).item() != y.item())
        assert fooled == brute, (p, y, brute)
        checked += 1
        outcomes.append(brute)
    assert checked > 40 and sum(outcomes) >= 5 and len(outcomes) - sum(outcomes) >= 5  # both answers occur


def test_corruptions_keep_pixels_in_range_and_are_repeatable():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 28, 28, generator=g)
    for kind in robustness.SEVERITIES:
        for s in (1, 5):
            a, b = robustness.corrupt(images, kind, s), robustness.corrupt(images, kind, s)
            assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b), kind
            assert not torch.equal(a, images), kind
    contrast = robustness.corrupt(images, "contrast", 3)  # contrast 0.2 about each image's mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(contrast, (images - mean) * 0.2 + mean)
    torch.testing.assert_close(robustness.corrupt(images * 0.5, "brightness", 2), images * 0.5 + 0.2)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        robustness.corrupt(images, "fog", 1)


def trained_with_trajectory(tmp_path, epochs: int, lr: float, keep_every: int):
    """(circuit, splits, run folder) of a 4-5-3 tanh FA circuit with biases trained on 32 random
    cells, its forward weights and state kept every ``keep_every`` epochs."""
    g = torch.Generator().manual_seed(0)
    splits = {"train": Split(torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)),
              "test": Split(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))}
    c = Circuit("path", seed=0)
    x, h, y = c.add(Input("x", 4)), c.add(Layer("h", 5, activation="tanh")), c.add(Readout("y", 3))
    c.connect(x, h, Dense())
    c.connect(h, y, Dense())
    c.feedback(make_rule("fa"))
    run = tmp_path / "run"
    train(c, Training(data="generated", epochs=epochs, batch_size=8, lr=lr, keep_every=keep_every), rule="fa",
          run_dir=str(run), data_root="unused", seed=0, progress=False, splits=splits)
    return c, splits, run


def test_trajectory_pca_of_the_kept_weights(tmp_path):
    _, _, run = trained_with_trajectory(tmp_path, epochs=4, lr=0.1, keep_every=2)
    assert sorted(os.listdir(run / "trajectory")) == ["epoch-0000.pt", "epoch-0002.pt", "epoch-0004.pt"]
    t = trajectory.trajectory_pca(str(run))
    assert t["epochs"] == [0, 2, 4] and sum(t["explained_variance_ratio"]) == pytest.approx(1)
    assert t["coords"][-1] == pytest.approx([0, 0], abs=1e-12) and t["distance_to_final"][-1] == 0
    first, last = (torch.load(run / "trajectory" / f"epoch-{e:04d}.pt", weights_only=True)["weights"] for e in (0, 4))
    direct = torch.cat([(first[n] - last[n]).double().reshape(-1) for n in first]).norm().item()
    assert t["distance_to_final"][0] == pytest.approx(direct)
    final = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert torch.equal(last["h->y"], final["projections.h->y.weight"])
    with pytest.raises(ValueError, match="keep_every"):
        trajectory.trajectory_pca(str(tmp_path))


def test_probes_command_line_on_a_run_folder(data_root, tmp_path):
    run = tmp_path / "runs" / "pfa-s0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "circuits.run", os.path.join(REPO, "experiments", "mnist_mlp.py"),
                          "--rule", "pfa", "--epochs", "2", "--set", "train_size=256", "--set", "keep_every=1",
                          "--data-root", data_root, "--out", str(run), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = subprocess.run([sys.executable, "-W", "ignore", "-m", "probes", str(run), "--out", str(tmp_path / "probes"),
                            "--all", "--examples", "64", "--matvecs", "4", "--ncv", "8", "--points", "3",
                            "--steps", "2", "--data-root", data_root],
                           capture_output=True, text=True, cwd=REPO, env=env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    r = json.loads((tmp_path / "probes" / "pfa-s0" / "probes.json").read_text())
    assert r["rule"] == "pfa" and r["hessian"]["parameters"] == 784 * 512 + 512 * 512 + 512 * 10
    assert {"landscape_hessian", "landscape_random", "trajectory", "corruptions", "attacks"} <= set(r)
    assert r["trajectory"]["epochs"] == [0, 1, 2] and r["hessian_over_training"]["epochs"] == [0, 1, 2]
    assert r["hessian_over_training"]["top_eigenvalues"][-1] == pytest.approx(r["hessian"]["top_eigenvalues"], rel=1e-3)
    assert r["attacks"]["accuracy"]["pgd_linf"][0] == r["corruptions"]["clean"]  # ε = 0: the clean images
    for name in ("hessian_spectrum.png", "landscape_hessian.png", "trajectory.png", "robustness.png",
                 "hessian_over_training.png"):
        assert (tmp_path / "probes" / "pfa-s0" / name).stat().st_size > 0
    assert "| pfa-s0 | pfa |" in (tmp_path / "probes" / "probes.md").read_text()


def test_hessian_over_training_rebuilds_each_kept_epochs_forward_map(tmp_path):
    """At a kept epoch the probe's Hessian is the dense Hessian of the circuit with that epoch's W
    *and biases* (kept with W); the biases matter (the final ones give another Hessian); the
    model is restored afterwards; a trajectory kept without the state is refused."""
    c, splits, run = trained_with_trajectory(tmp_path, epochs=3, lr=0.5, keep_every=1)
    kept = trajectory.kept_states(str(run))
    assert [e for e, _, _ in kept] == [0, 1, 2, 3] and set(kept[1][2]) == {"biases.h", "biases.y"}
    model = c.compile(seed=0).double()
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    final = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    batches = [(splits["train"].x.double()[:20], splits["train"].y[:20])]

    epoch, weights, state = kept[1]
    at_epoch = c.compile(seed=0).double()
    at_epoch.load_state_dict({**final, **{f"projections.{n}.weight": w for n, w in weights.items()}, **state},
                             strict=False)
    H = dense_hessian(at_epoch, batches)
    r = curvature.over_training(model, [kept[1], kept[-1]], batches, num_matvecs=400, k=2)
    assert r["epochs"] == [1, 3]
    assert abs(r["trace"][0] - torch.trace(H).item()) < 4 * r["stderr"][0]
    assert r["top_eigenvalues"][0] == pytest.approx(torch.linalg.eigvalsh(H)[-2:].flip(0).numpy(), rel=1e-6)
    assert r["weight_norm"][0] == pytest.approx(torch.cat([w.double().reshape(-1) for w in weights.values()]).norm().item())
    # the last kept epoch is the final state; and the biases count: epoch 1's W with the final biases differ
    assert r["top_eigenvalues"][1] == pytest.approx(
        torch.linalg.eigvalsh(dense_hessian(model, batches))[-2:].flip(0).numpy(), rel=1e-6)
    wrong_bias = c.compile(seed=0).double()
    wrong_bias.load_state_dict({**final, **{f"projections.{n}.weight": w for n, w in weights.items()}}, strict=False)
    assert abs(torch.linalg.eigvalsh(dense_hessian(wrong_bias, batches))[-1].item() - r["top_eigenvalues"][0][0]) > 1e-4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in final.items())  # restored
    torch.save({"epoch": 9, "weights": weights}, run / "trajectory" / "epoch-0009.pt")  # as kept before the state
    with pytest.raises(ValueError, match="weights W only"):
        curvature.over_training(model, trajectory.kept_states(str(run))[-1:], batches, num_matvecs=2, where="old")


def test_probe_results_page_from_probes_json(tmp_path):
    """experiments/probe_results.py: the summary table and the Hessian-over-training table come
    from the probes.json files alone."""
    import runpy
    module = runpy.run_path(os.path.join(REPO, "experiments", "probe_results.py"))
    corr = {"clean": 0.98, **{k: [0.9, 0.8, 0.7, 0.6, 0.5] for k in ("noise", "blur")}}
    budgets = {"fgsm": [0.0, 0.1], "pgd_linf": [0.0, 0.1], "pgd_l2": [0.0, 1.0]}
    for name, trace in [("bp-s0", 15.0), ("fa-s0", 18.0)]:
        r = {"rule": name[:2], "seed": 0, "examples": 100, "weight_norms": {"a": 3.0, "b": 4.0},
             "hessian": {"trace": {"trace": trace, "stderr": 0.5}, "top_eigenvalues": [0.9, 0.5]},
             "corruptions": corr, "attacks": {"budgets": budgets, "accuracy": {k: [0.98, 0.2] for k in budgets}}}
        if name == "fa-s0":
            r["hessian_over_training"] = {"epochs": [0, 5], "trace": [2.0, 18.0], "stderr": [0.1, 0.5],
                                          "top_eigenvalues": [[0.25], [4.75]], "weight_norm": [20.0, 40.0]}
        os.makedirs(tmp_path / name)
        (tmp_path / name / "probes.json").write_text(json.dumps(r))
    page = module["write"](module["summary"](module["load"](str(tmp_path))), str(tmp_path))
    assert "| bp-s0 | bp | 0 | 5.0 | 15.00 ± 0.50 | 0.900 | 0.500 | 98.0% | 70.0% | 20.0% | 20.0% | 20.0% |" in page
    assert "**fa-s0**" in page and "**bp-s0**" not in page
    assert "| trace | 2.0 ± 0.1 | 18.0 ± 0.5 |" in page and "| λ₁ | 0.25 | 4.75 |" in page and "| ‖W‖ | 20.0 | 40.0 |" in page
    assert (tmp_path / "summary_over_training.png").stat().st_size > 0
    only = tmp_path / "only"
    os.makedirs(only / "fa-s0")
    r = json.loads((tmp_path / "fa-s0" / "probes.json").read_text())
    (only / "fa-s0" / "probes.json").write_text(json.dumps({k: v for k, v in r.items()
                                                            if k not in ("hessian", "corruptions", "attacks")}))
    page = module["write"](module["summary"](module["load"](str(only))), str(only))
    assert "| trace | 2.0 ± 0.1 | 18.0 ± 0.5 |" in page and "clean accuracy" not in page
    assert (only / "summary.png").stat().st_size > 0 and not (only / "summary_over_training.png").exists()
    # seeds of one run name are averaged; a folder whose suffix is not its recorded seed stays alone
    seeds = tmp_path / "seeds"
    for name, seed, trace in [("bp-s0", 0, 15.0), ("bp-s1", 1, 17.0), ("bp-s2", 0, 99.0)]:
        os.makedirs(seeds / name)
        r = json.loads((tmp_path / "bp-s0" / "probes.json").read_text())
        (seeds / name / "probes.json").write_text(json.dumps({**r, "seed": seed, "hessian": {
            **r["hessian"], "trace": {"trace": trace, "stderr": 0.5}}}))
    page = module["write"](module["summary"](module["load"](str(seeds))), str(seeds))
    means = [line for line in page.split("seeds probed")[1].split("\n") if line.startswith("| bp")]
    assert means == [next(line for line in means if line.startswith("| bp | 0,1 | 5.0 ± 0.0 | 16.00 ± 1.41 |"))]


def test_probe_results_plots_a_sweep_against_its_value(tmp_path):
    """Runs named PREFIX-VALUE-sSEED (the IFA angle sweep's ifa-θ-sS) get summary_sweep.png, each
    measure against VALUE; runs that are not one sweep (other names, one value) get none."""
    import runpy
    module = runpy.run_path(os.path.join(REPO, "experiments", "probe_results.py"))
    budgets = {"fgsm": [0.0, 0.1], "pgd_linf": [0.0, 0.1], "pgd_l2": [0.0, 1.0]}

    def probes(seed, trace):
        return {"rule": "ifa", "seed": seed, "examples": 10, "weight_norms": {"a": 1.0},
                "hessian": {"trace": {"trace": trace, "stderr": 0.1}, "top_eigenvalues": [1.0, 0.5]},
                "corruptions": {"clean": 0.9, "noise": [0.8] * 5},
                "attacks": {"budgets": budgets, "accuracy": {k: [0.9, 0.1] for k in budgets}}}

    def page(root, runs):
        for name, seed, trace in runs:
            os.makedirs(root / name)
            (root / name / "probes.json").write_text(json.dumps(probes(seed, trace)))
        return module["write"](module["summary"](module["load"](str(root))), str(root))

    runs = [("ifa-0-s0", 0, 50.0), ("ifa-0-s1", 1, 54.0), ("ifa-90-s0", 0, 30.0), ("ifa-7.5-s0", 0, 40.0)]
    text = page(tmp_path / "sweep", runs)
    prefix, groups = module["sweep_values"](module["summary"](module["load"](str(tmp_path / "sweep"))))
    assert prefix == "ifa" and list(groups) == [0.0, 7.5, 90.0] and [r["trace"] for r in groups[0.0]] == [50.0, 54.0]
    assert "(summary_sweep.png)" in text and (tmp_path / "sweep" / "summary_sweep.png").stat().st_size > 0
    # the trace falls with the value over the four runs (50, 54 at 0; 40 at 7.5; 30 at 90): ranks give
    # ρ = −0.95 (scipy.stats.spearmanr); the mean at each end is over its seeds
    assert "| Hessian trace | 4 | -0.95 |" in text and "| 52 | 30 |" in text
    assert "| largest Hessian eigenvalue λ₁ |" not in text  # constant: no correlation to show
    for root, runs in [("rules", [("bp-s0", 0, 1.0), ("fa-s0", 0, 2.0)]),
                       ("one-value", [("ifa-45-s0", 0, 1.0), ("ifa-45-s1", 1, 2.0)]),
                       ("two-prefixes", [("ifa-0-s0", 0, 1.0), ("kp-90-s0", 0, 2.0)]),
                       ("wrong-seed", [("ifa-0-s0", 0, 1.0), ("ifa-90-s3", 0, 2.0)])]:
        assert "summary_sweep.png" not in page(tmp_path / root, runs)
        assert not (tmp_path / root / "summary_sweep.png").exists()
