"""The PFA paper's Fig. 3: path alignment once R's random start has decayed, against expansion.

With ΔR = ΔWᵀBᵀ and weight decay on W and R alike, R → WᵀBᵀ, so the path R B → Wᵀ BᵀB and its
angle to Wᵀ depends only on B (Proposition 3: arccos(1/sqrt(1 + 1/expansion)) for i.i.d. W and
B with variance 1/N̄; 0° for PFA-o). The simulation uses the rule's own tensors: a PFA projection
compiled with implicit R (R = WᵀBᵀ + a E₀) and a = 0, i.e. after the decay.

    python experiments/expansion_sweep.py --out docs/results/expansion_sweep
"""
from __future__ import annotations

import argparse
import math
import os
import statistics

import torch

from circuits import zoo
from circuits.sweep import write_report
from plasticity import PFA, PFAo

EXPANSIONS = (1, 2, 5, 10, 20, 50, 100)


def theory_deg(expansion: float) -> float:
    return math.degrees(math.acos(1 / math.sqrt(1 + 1 / expansion)))


def decayed_path_alignment(rule, n: int, seed: int) -> float:
    """Path alignment of the middle projection of an n-n-n-10 circuit once R's start is gone."""
    model = zoo.mlp((n, n, n, 10), seed=seed, feedback=rule).compile(implicit_feedback=True)
    p = model.projections["h1->h2"]
    p.set_a_t(0.0)  # R = WᵀBᵀ exactly: the initial R has decayed away
    return model.alignment()["h1->h2"]["alignment_deg"]


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

    rows = result["rows"]
    ks = [r["expansion"] for r in rows]
    fine = [1 + i * 0.25 for i in range(397)]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(fine, [theory_deg(k) for k in fine], color="black", lw=1, label="theory arccos(1/√(1+1/expansion))")
    ax.errorbar(ks, [r["pfa_mean_deg"] for r in rows], yerr=[r["pfa_sd_deg"] for r in rows],
                fmt="o", label="PFA, simulated")
    ax.plot(ks, [r["pfa_o_mean_deg"] for r in rows], "s", label="PFA-o, simulated")
    ax.set_xscale("log")
    ax.set_xlabel("expansion N̄ / N_out")
    ax.set_ylabel("path alignment after decay (deg)")
    ax.legend(fontsize=8)
    lines = ["# Path alignment against expansion (the PFA paper's Fig. 3)", "",
             f"Middle projection of a {result['n']}-{result['n']}-{result['n']}-10 circuit, i.i.d. Glorot W, "
             f"R's start decayed (R = WᵀBᵀ), {result['seeds']} seeds. Written by `experiments/expansion_sweep.py`.", "",
             "| expansion | theory (deg) | PFA simulated (deg) | difference | PFA-o (deg) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['expansion']} | {r['theory_deg']:.2f} | {r['pfa_mean_deg']:.2f} ± {r['pfa_sd_deg']:.2f} | "
                     f"{r['pfa_mean_deg'] - r['theory_deg']:+.2f} | {r['pfa_o_mean_deg']:.2f} |")
    write_report(out, "expansion_sweep", result, fig, lines, "path alignment against expansion")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("docs", "results", "expansion_sweep"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    result = sweep(n=args.n, seeds=args.seeds)
    write(result, args.out)
    print(open(os.path.join(args.out, "expansion_sweep.md")).read())


if __name__ == "__main__":
    main()
