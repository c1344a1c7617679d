"""The PFA paper's Fig. 3: (a) the eigenvalues of BᵀB and (b) the path alignment against expansion.

(a) B as PFA draws it (N̄ × N_out, i.i.d., variance 1/N̄): the eigenvalues of BᵀB follow the
Marchenko–Pastur law with λ = N_out/N̄ = 1/expansion: mean 1, standard deviation √λ, support
[(1 − √λ)², (1 + √λ)²] (the paper's Eq. 8); per expansion, the mean, sd, min and max over the
N_out eigenvalues of the h1→h2 projection's B (N_out = 512), beside the law.

(b) Path alignment:

With ΔR = ΔWᵀBᵀ and weight decay on W and R alike, R → WᵀBᵀ, so the path R B → Wᵀ BᵀB and its
angle to Wᵀ depends only on B (Proposition 3: arccos(1/sqrt(1 + 1/expansion)) for i.i.d. W and
B with variance 1/N̄; 0° for PFA-o). The simulation uses the rule's own tensors: a PFA projection
compiled with implicit R (R = WᵀBᵀ + a E₀) and a = 0, i.e. after the decay.

Trained networks (the paper's "observed path alignment after training"): PFA at expansion 1 … 50
on experiments/mnist_mlp.py's circuit and training (40 epochs), h1→h2 at the end, as trained and
with R's remaining start a·E₀ set to 0 (from each run's checkpoint); expansion 10 is the MNIST
table's runs (docs/results/mnist).

    python experiments/expansion_sweep.py --out docs/results/expansion_sweep          # theory + simulation
    python experiments/expansion_sweep.py --trained RUNS --out docs/results/expansion_sweep
        # RUNS/pfa-xK-sSEED: trained runs (with checkpoints); their metrics are copied to OUT/runs
        # and each one's residual to OUT/trained_residual.json; without --trained, the copies are read
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics

import torch

from circuits import zoo
from circuits.sweep import copy_records, final, mean_sd, read_records, write_report
from plasticity import PFA, PFAo

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINED = re.compile(r"^pfa-x(?P<k>[0-9.]+)-s(?P<seed>\d+)$")

EXPANSIONS = (1, 2, 5, 10, 20, 50, 100)


def theory_deg(expansion: float) -> float:
    return math.degrees(math.acos(1 / math.sqrt(1 + 1 / expansion)))


def decayed_path_alignment(rule, n: int, seed: int) -> float:
    """Path alignment of the middle projection of an n-n-n-10 circuit once R's start is gone."""
    model = zoo.mlp((n, n, n, 10), seed=seed, feedback=rule).compile(implicit_feedback=True)
    p = model.projections["h1->h2"]
    p.set_a_t(0.0)  # R = WᵀBᵀ exactly: the initial R has decayed away
    return model.alignment()["h1->h2"]["alignment_deg"]


def eigenvalue_rows(expansions=EXPANSIONS, n=512, seeds=3) -> list[dict]:
    """Fig. 3a: statistics of the eigenvalues of BᵀB for B as the PFA rule draws it (h1→h2 of an
    n-n-n-10 circuit), pooled over seeds, beside the Marchenko–Pastur law with λ = 1/expansion."""
    rows = []
    for k in expansions:
        eig = torch.cat([torch.linalg.eigvalsh((lambda B: B.t() @ B)(
            zoo.mlp((n, n, n, 10), seed=s, feedback=PFA(expansion=k)).compile().projections["h1->h2"].B.double()))
            for s in range(seeds)])
        lam = 1 / k
        rows.append({"expansion": k, "mean": eig.mean().item(), "sd": eig.std().item(), "min": eig.min().item(),
                     "max": eig.max().item(), "theory_sd": math.sqrt(lam),
                     "theory_min": (1 - math.sqrt(lam)) ** 2, "theory_max": (1 + math.sqrt(lam)) ** 2})
    return rows


def residual(run_dir: str, projection: str = "h1->h2") -> dict:
    """From a PFA run's checkpoint (implicit R = WᵀBᵀ + a E₀): a, and the path alignment (deg) and
    norm ratio as trained and with a = 0 (R's random start fully decayed)."""
    from connectomes.analysis import alignment_deg, norm_ratio

    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=True)["model"]
    key = f"projections.{projection}."
    W, B, E0B = (state[key + k].double() for k in ("weight", "B", "E0B"))
    a = state[key + "_extra_state"]["a"]
    decayed = W.t() @ (B.t() @ B)
    trained = decayed + a * E0B
    return {"a": a, "alignment_deg": alignment_deg(W, trained), "norm_ratio": norm_ratio(W, trained),
            "alignment_deg_a0": alignment_deg(W, decayed), "norm_ratio_a0": norm_ratio(W, decayed)}


def trained_rows(out: str, epochs: int = 40) -> list[dict]:
    """Fig. 3b's trained points from OUT/runs/pfa-xK-sSEED (and expansion 10 from the MNIST
    table's pfa-sSEED runs): per expansion, h1→h2's final path alignment, mean ± sd over seeds,
    as trained and with a = 0 (OUT/trained_residual.json, docs/results/mnist/residual.json)."""
    runs, found = os.path.join(out, "runs"), {}
    residuals = _load_json(os.path.join(out, "trained_residual.json"))
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        m = TRAINED.match(name)
        history = read_records(os.path.join(runs, name))
        if m and len(history) >= epochs:
            found.setdefault(float(m["k"]), {})[int(m["seed"])] = (history[:epochs], residuals.get(name))
    if 10.0 not in found:  # expansion 10 is the MNIST table's PFA (same circuit, training and rule)
        mnist = os.path.join(HERE, "..", "docs", "results", "mnist")
        mnist_residuals = _load_json(os.path.join(mnist, "residual.json"))
        for seed in range(5):
            history = read_records(os.path.join(mnist, "runs", f"pfa-s{seed}"))
            if len(history) >= epochs:
                found.setdefault(10.0, {})[seed] = (history[:epochs],
                                                    mnist_residuals.get(f"pfa-s{seed}", {}).get("h1->h2"))
    rows = []
    for k in sorted(found):
        per_seed = found[k]
        row = {"expansion": k, "seeds": sorted(per_seed), "theory_deg": theory_deg(k)}
        row["alignment_deg"], row["alignment_sd"] = mean_sd(final(h, "alignment_deg", "h1->h2") for h, _ in per_seed.values())
        row["test_acc"], row["test_acc_sd"] = mean_sd(final(h) for h, _ in per_seed.values())
        row["alignment_deg_a0"], row["alignment_a0_sd"] = mean_sd(r["alignment_deg_a0"] for _, r in per_seed.values() if r)
        row["a"], _ = mean_sd(r["a"] for _, r in per_seed.values() if r)
        rows.append(row)
    return rows


def _load_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def take_trained(src: str, out: str) -> None:
    """Copy the finished pfa-xK-sSEED runs of ``src`` to OUT/runs and record each one's residual
    (from its checkpoint) in OUT/trained_residual.json, keeping earlier entries."""
    path = os.path.join(out, "trained_residual.json")
    residuals = _load_json(path)
    for name in sorted(os.listdir(src)):
        run = os.path.join(src, name)
        if TRAINED.match(name) and os.path.exists(os.path.join(run, "checkpoint.pt")) and read_records(run):
            copy_records(run, os.path.join(out, "runs", name))
            residuals[name] = residual(run)
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(sorted(residuals.items())), f, indent=2)


def sweep(expansions=EXPANSIONS, n=512, seeds=3) -> dict:
    rows = []
    for k in expansions:
        pfa = [decayed_path_alignment(PFA(expansion=k), n, s) for s in range(seeds)]
        pfa_o = [decayed_path_alignment(PFAo(expansion=k), n, s) for s in range(seeds)]
        rows.append({"expansion": k, "theory_deg": theory_deg(k),
                     "pfa_mean_deg": statistics.fmean(pfa), "pfa_sd_deg": statistics.pstdev(pfa),
                     "pfa_o_mean_deg": statistics.fmean(pfa_o)})
    return {"n": n, "seeds": seeds, "rows": rows}


def write(result: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, eig, trained = result["rows"], result.get("eigenvalues", []), result.get("trained", [])
    ks = [r["expansion"] for r in rows]
    fine = [1 + i * 0.25 for i in range(397)]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    ax = axes[0]
    if eig:
        ek = [r["expansion"] for r in eig]
        mean, sd = [r["mean"] for r in eig], [r["sd"] for r in eig]
        ax.fill_between(ek, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], alpha=0.3,
                        label="mean ± sd of the eigenvalues (PFA's B)")
        ax.plot(ek, mean, "o-", ms=4)
        ax.plot(ek, [r["min"] for r in eig], "v", color="C0", ms=4, label="smallest, largest")
        ax.plot(ek, [r["max"] for r in eig], "^", color="C0", ms=4)
        lam = [1 / k for k in fine]
        ax.plot(fine, [1 + math.sqrt(x) for x in lam], "k--", lw=1, label="Marchenko–Pastur: 1 ± √λ")
        ax.plot(fine, [1 - math.sqrt(x) for x in lam], "k--", lw=1)
        ax.plot(fine, [(1 + math.sqrt(x)) ** 2 for x in lam], "k:", lw=1, label="support edges (1 ± √λ)²")
        ax.plot(fine, [(1 - math.sqrt(x)) ** 2 for x in lam], "k:", lw=1)
    ax.set(xscale="log", xlabel="expansion N̄ / N_out = 1/λ", ylabel="eigenvalues of BᵀB", title="(a)")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(fine, [theory_deg(k) for k in fine], color="black", lw=1, label="theory arccos(1/√(1+1/expansion))")
    ax.errorbar(ks, [r["pfa_mean_deg"] for r in rows], yerr=[r["pfa_sd_deg"] for r in rows],
                fmt="o", label="random W, R = WᵀBᵀ (simulated)")
    ax.plot(ks, [r["pfa_o_mean_deg"] for r in rows], "s", label="PFA-o, simulated")
    if trained:
        tk = [r["expansion"] for r in trained]
        ax.errorbar(tk, [r["alignment_deg"] for r in trained], yerr=[r["alignment_sd"] for r in trained], fmt="D",
                    capsize=3, label="trained on MNIST, 40 epochs (h1→h2)")
        ax.errorbar(tk, [r["alignment_deg_a0"] for r in trained], yerr=[r["alignment_a0_sd"] for r in trained],
                    fmt="x", capsize=3, label="trained, R's start (a·E₀) removed")
    ax.set(xscale="log", xlabel="expansion N̄ / N_out", ylabel="path alignment (deg)", title="(b)")
    ax.legend(fontsize=7)
    lines = ["# The PFA paper's Fig. 3: BᵀB's eigenvalues and the path alignment against expansion", "",
             "## (a) Eigenvalues of BᵀB", "",
             f"B of the h1→h2 projection (N_out = {result['n']}) as the PFA rule draws it, {result['seeds']} seeds pooled; "
             "Marchenko–Pastur with λ = 1/expansion: mean 1, sd √λ, support [(1 − √λ)², (1 + √λ)²].", "",
             "| expansion | mean | sd (theory √λ) | min (theory edge) | max (theory edge) |", "|---|---|---|---|---|"]
    for r in eig:
        lines.append(f"| {r['expansion']:g} | {r['mean']:.3f} | {r['sd']:.3f} ({r['theory_sd']:.3f}) | "
                     f"{r['min']:.3f} ({r['theory_min']:.3f}) | {r['max']:.3f} ({r['theory_max']:.3f}) |")
    lines += ["", "## (b) Path alignment", "",
              f"Simulation: middle projection of a {result['n']}-{result['n']}-{result['n']}-10 circuit, i.i.d. Glorot W, "
              f"R's start decayed (R = WᵀBᵀ), {result['seeds']} seeds.", "",
              "| expansion | theory (deg) | PFA simulated (deg) | difference | PFA-o (deg) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['expansion']} | {r['theory_deg']:.2f} | {r['pfa_mean_deg']:.2f} ± {r['pfa_sd_deg']:.2f} | "
                     f"{r['pfa_mean_deg'] - r['theory_deg']:+.2f} | {r['pfa_o_mean_deg']:.2f} |")
    if trained:
        lines += ["", "Trained: PFA on MNIST (experiments/mnist_mlp.py, 40 epochs, the paper's protocol; expansion 10 is "
                  "the MNIST table's runs), h1→h2 at the end, mean ± sd over seeds. \"as trained\" includes what is "
                  "left of R's random start (R = WᵀBᵀ + a·E₀, a after the first epoch's decay 0.03 and 39 epochs at "
                  "1e-4); \"a = 0\" is the same W and B with that residue removed, Proposition 3's limit.", "",
                  "| expansion | seeds | theory (deg) | trained, as trained (deg) | trained, a = 0 (deg) | a | test accuracy (%) |",
                  "|---|---|---|---|---|---|---|"]
        for r in trained:
            lines.append(f"| {r['expansion']:g} | {','.join(map(str, r['seeds']))} | {r['theory_deg']:.2f} | "
                         f"{r['alignment_deg']:.2f} ± {r['alignment_sd']:.2f} | {r['alignment_deg_a0']:.2f} ± "
                         f"{r['alignment_a0_sd']:.2f} | {r['a']:.3f} | {100 * r['test_acc']:.2f} ± {100 * r['test_acc_sd']:.2f} |")
    write_report(out, "expansion_sweep", result, fig, lines, "eigenvalues of BᵀB and path alignment against expansion")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("docs", "results", "expansion_sweep"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trained", metavar="RUNS", help="folder of trained pfa-xK-sSEED runs to take (with checkpoints)")
    args = ap.parse_args(argv)
    if args.trained:
        take_trained(args.trained, args.out)
    result = sweep(n=args.n, seeds=args.seeds)
    result["eigenvalues"] = eigenvalue_rows(n=args.n, seeds=args.seeds)
    result["trained"] = trained_rows(args.out)
    write(result, args.out)
    print(open(os.path.join(args.out, "expansion_sweep.md")).read())


if __name__ == "__main__":
    main()
