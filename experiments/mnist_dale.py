"""Dale's principle on MNIST: BP, FA, DFA, KP, WM, PAL, PFA and PFA-o with excitatory and
inhibitory cells (80% E / 20% I in h1, h2 and the readout; the pixels are signed afferents),
every synapse with its sending cell's sign through training, beside the same rules unconstrained.

The circuit and training are experiments/mnist_mlp.py's (784-512-512-10 ReLU, batch 64, SGD
0.01, momentum 0.9, the paper's weight decay) with cell types added (``dale_circuit``): W drawn
balanced (``connectomes.dale.balanced_init``), each step projected. Each (rule, seed) trains in
WORK/RULE-dale-sSEED (an interrupted sweep resumes), its metrics are copied to
OUT/runs/RULE-dale-sSEED when it ends, with cell_types.json: the pair statistics of its final
connectome split by cell type (E→E beside cortex). A run that diverges (non-finite activity) is
recorded as such (diverged.json) and the sweep goes on: the table gives its epoch, its best epoch
counts in the best-epoch column, and the final-accuracy mean is over the runs that finished. The
unconstrained runs are the committed 40-epoch runs of docs/results/mnist/runs (the same circuit
and training, seeds 0-4; ``--signed-runs``).
The table (final and best test accuracy, accuracy cost, alignment and norm ratio per projection,
E→E statistics), dale.json and dale.png go to OUT.

    python experiments/mnist_dale.py --data-root ../shared/data --seeds 0,1,2 \\
        --work runs/dale --out docs/results/dale
    python experiments/mnist_dale.py --seeds 0,1,2 --report-only     # the page from OUT/runs
"""
from __future__ import annotations

import json
import os
import statistics

from circuits import Circuit
from circuits.sweep import (Cell, diverged, final, mean_sd, read_records, run_cells_from_args, run_name, seeds_of,
                            sweep_parser, training_note, write_report)
from connectomes import Dense
from plasticity import make_rule
from populations import Input, Layer, Readout

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = ("bp", "fa", "dfa", "kp", "wm", "pal", "pfa", "pfa-o")
EI = {"E": 0.8, "I": 0.2}  # the cortical ratio (Song, Yang & Wang 2016 use 4:1)
PROJECTIONS = ("h1->h2", "h2->digits")
CELL_STATS = ("reciprocity_over_chance", "log_pearson_bidirectional", "lognormal_sigma", "connection_probability")
DENSITY = 0.116  # Song et al.'s connection probability: the matched-density view of the report


def dale_circuit(cells: dict = EI) -> Circuit:
    """experiments/mnist_mlp.py's circuit with cell types on h1, h2 and the readout."""
    c = Circuit("mnist-mlp-dale", seed=0)
    x = c.add(Input("pixels", 784))
    h1 = c.add(Layer("h1", 512, activation="relu", cells=cells))
    h2 = c.add(Layer("h2", 512, activation="relu", cells=cells))
    y = c.add(Readout("digits", 10, loss="cross_entropy", cells=cells))
    for pre, post in [(x, h1), (h1, h2), (h2, y)]:
        c.connect(pre, post, Dense())
    return c


def cells(rules=RULES) -> dict:
    """{"RULE-dale": the rule on the Dale circuit}."""
    circuit = dale_circuit()
    return {f"{r}-dale": Cell(make_rule(r), circuit=circuit) for r in rules}


def write_cell_types(work: str, out: str, name: str) -> None:
    """OUT/runs/NAME/cell_types.json from WORK/NAME/connectome.h5 (the final connectome): the pair
    statistics by cell type, as stored and at the matched density."""
    from connectomes import read_connectome
    from connectomes.reciprocity import cell_type_reciprocity

    h5 = os.path.join(work, name, "connectome.h5")
    if not os.path.exists(h5):
        return
    recs = read_connectome(h5)
    data = {view: {k: {s: getattr(st, s) for s in CELL_STATS + ("bidirectional_pairs", "possible_pairs")}
                   for k, st in cell_type_reciprocity(recs, density=d).items()}
            for view, d in (("native", None), ("matched", DENSITY))}
    data["feedback_bound"] = feedback_bounds(recs)
    os.makedirs(os.path.join(out, "runs", name), exist_ok=True)
    with open(os.path.join(out, "runs", name, "cell_types.json"), "w") as f:
        json.dump(data, f, indent=1, default=lambda v: None)


def feedback_bounds(records: list[dict]) -> dict:
    """{projection: ``connectomes.dale.feedback_sign_bound`` of its direct feedback} for the
    projections whose forward and feedback records carry cell signs (PFA's route through ē and
    BP's transported Wᵀ have none: no direct Daleian feedback tensor)."""
    from connectomes.dale import feedback_sign_bound
    from connectomes.reciprocity import direct_feedback, feedback_routes

    out = {}
    for route in feedback_routes(records):
        fwd, direct = route["forward"], route["direct"]
        if not direct or fwd.get("pre_sign") is None or any(r.get("pre_sign") is None or r.get("transported") for r in direct):
            continue
        out[fwd["name"]] = feedback_sign_bound(fwd["weight"], direct_feedback(direct), fwd["pre_sign"], direct[0]["pre_sign"])
    return out


def summarize(histories: dict, out: str, signed_runs: str, seeds, rules=RULES) -> dict:
    """One row per rule: Dale and unconstrained accuracy (mean ± sd over the seeds run), the cost,
    alignment and norm ratio per projection, and the E→E statistics at the matched density."""
    rows = []
    for r in rules:
        every = histories.get(f"{r}-dale", {})
        if not every:
            continue
        blew_up = {s: diverged(os.path.join(out, "runs", run_name(f"{r}-dale", s))) for s in sorted(every)}
        blew_up = {s: d["epochs"] for s, d in blew_up.items() if d is not None}  # epochs finished before it
        runs = {s: h for s, h in every.items() if s not in blew_up}  # the finished runs
        row = {"rule": r, "seeds": sorted(runs), "diverged": blew_up,
               "epochs": min((len(h) for h in runs.values()), default=0),
               "test_acc_per_seed": [final(runs[s]) for s in sorted(runs)],
               "seconds_per_epoch": statistics.fmean(m.get("seconds", 0.0) for h in every.values() for m in h)}
        row["test_acc"], row["test_acc_sd"] = mean_sd(row["test_acc_per_seed"])
        # best epoch over every run, a diverged one's epochs before it diverged included
        row["best_test_acc"], row["best_test_acc_sd"] = mean_sd(max(m["test_acc"] for m in h) for h in every.values() if h)
        signed = {s: read_records(os.path.join(signed_runs, run_name(r, s))) for s in seeds}
        signed = {s: h[:row["epochs"]] for s, h in signed.items() if row["epochs"] and len(h) >= row["epochs"]}
        row["signed_seeds"] = sorted(signed)
        row["signed_test_acc"], row["signed_test_acc_sd"] = mean_sd(final(h) for h in signed.values())
        row["cost"] = row["signed_test_acc"] - row["test_acc"]
        for proj in PROJECTIONS:
            for key in ("alignment_deg", "norm_ratio"):
                row[f"{key}:{proj}"], row[f"{key}:{proj}_sd"] = mean_sd(final(h, key, proj) for h in runs.values())
                row[f"signed_{key}:{proj}"], _ = mean_sd(final(h, key, proj) for h in signed.values())
        ee, bounds = [], []
        for s in sorted(runs):
            path = os.path.join(out, "runs", run_name(f"{r}-dale", s), "cell_types.json")
            if os.path.exists(path):
                with open(path) as f:
                    types = json.load(f)
                ee.append(types["matched"].get("E→E", {}))
                bounds.append(types.get("feedback_bound", {}).get("h1->h2", {}))
        for key in ("bound_deg", "to_bound_deg", "rms_same", "rms_mixed"):
            row[f"bound_{key}"], row[f"bound_{key}_sd"] = mean_sd(b.get(key, float("nan")) for b in bounds)
        for key in CELL_STATS:
            row[f"EE_{key}"], row[f"EE_{key}_sd"] = mean_sd(e.get(key) if e.get(key) is not None else float("nan")
                                                            for e in ee)
        rows.append(row)
    return {"rows": rows, "density": DENSITY}


def _pm(row, key, spec=".1f", scale=1.0):
    v, sd = row.get(key, float("nan")), row.get(key + "_sd", float("nan"))
    return "—" if v != v else f"{scale * v:{spec}} ± {scale * sd:{spec}}"


def write(result: dict, out: str, note: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], [100 * r["signed_test_acc"] for r in rows], 0.4,
           yerr=[100 * r["signed_test_acc_sd"] for r in rows], label="signed", color="C7")
    ax.bar([i + 0.2 for i in xs], [100 * r["test_acc"] for r in rows], 0.4,
           yerr=[100 * r["test_acc_sd"] for r in rows], label="Dale (80% E)", color="C3")
    ax.set_xticks(list(xs), [r["rule"] for r in rows])
    lo = min([100 * r[k] for r in rows for k in ("test_acc", "signed_test_acc") if r[k] == r[k]] or [90])
    ax.set_ylim(max(0, lo - 2), 100)
    ax.set_ylabel("final test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    lines = ["# Dale's principle on MNIST", "", note, "",
             "| rule | seeds | epochs | Dale: final test acc (%) | best-epoch (%) | signed: final (%) | cost (points) | "
             "h1→h2 alignment (deg) Dale / signed | h2→digits alignment (deg) Dale / signed | norm ratio h1→h2 | "
             "norm ratio h2→digits | s per epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cost = "—" if r["cost"] != r["cost"] else f"{100 * r['cost']:.2f}"

        def al(p):
            s = r[f"signed_alignment_deg:{p}"]
            return f"{_pm(r, f'alignment_deg:{p}')} / {'—' if s != s else f'{s:.1f}'}"
        seeds = ",".join(map(str, r["seeds"])) or "none"
        if r.get("diverged"):
            seeds += " (diverged: " + ", ".join(f"seed {s} after epoch {e}" for s, e in r["diverged"].items()) + ")"
        lines.append(f"| {r['rule']} | {seeds} | {r['epochs']} | {_pm(r, 'test_acc', '.2f', 100)} | "
                     f"{_pm(r, 'best_test_acc', '.2f', 100)} | {_pm(r, 'signed_test_acc', '.2f', 100)} | "
                     f"{cost} | {al('h1->h2')} | {al('h2->digits')} | "
                     f"{_pm(r, 'norm_ratio:h1->h2', '.2f')} | {_pm(r, 'norm_ratio:h2->digits', '.2f')} | "
                     f"{r['seconds_per_epoch']:.0f} |")
    lines += ["", f"E→E pairs of the final connectome at the matched density {result['density']:g} (h1→h2 and "
              "h2→digits pooled; magnitudes; Song et al. 2005: reciprocity over chance ≈ 4, log-space r 0.36, "
              "σ of ln EPSP 0.94):", "",
              "| rule | reciprocity over chance | log-space r, bidirectional | σ of ln w | connection probability |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule']} | " + " | ".join(_pm(r, f"EE_{k}", ".2f") for k in CELL_STATS) + " |")
    lines += ["", "How much of Wᵀ the direct Daleian feedback of h1→h2 holds (final connectome; "
              "`connectomes.dale.feedback_sign_bound`): a feedback synapse i ← j has the sign of its sender j, Wᵀ[i, j] "
              "that of cell i, so only same-type pairs (E→E, I→I) can agree; bound = ∠(Wᵀ, P) with P = Wᵀ on the "
              "same-type pairs and 0 elsewhere, the best alignment any Daleian B can reach; rms of B on the same-type "
              "and on the mixed pairs (where the closest B to Wᵀ is zero). Rules without a direct Daleian tensor "
              "(BP's transported Wᵀ, DFA, PFA's ē route) have none.", "",
              "| rule | bound (deg) | ∠(P, B) (deg) | rms B, same-type pairs | rms B, mixed pairs |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("bound_bound_deg") == r.get("bound_bound_deg"):
            lines.append(f"| {r['rule']} | {_pm(r, 'bound_bound_deg')} | {_pm(r, 'bound_to_bound_deg')} | "
                         f"{_pm(r, 'bound_rms_same', '.4f')} | {_pm(r, 'bound_rms_mixed', '.4f')} |")
    return write_report(out, "dale", result, fig, lines, "final test accuracy, Dale against signed")


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "dale"))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--signed-runs", default=os.path.join(os.path.dirname(HERE), "docs", "results", "mnist", "runs"),
                    help="the unconstrained runs (RULE-sSEED folders) to stand beside")
    args = ap.parse_args(argv)
    rules = tuple(r.strip() for r in args.rules.split(","))
    sweep = cells(rules)
    histories = run_cells_from_args(os.path.join(HERE, "mnist_mlp.py"), sweep, args, keep_going=True)
    work = args.work or os.path.join(args.out, "runs")
    for cell, runs in histories.items():
        for seed in runs:
            if diverged(os.path.join(args.out, "runs", run_name(cell, seed))) is None:  # no final connectome
                write_cell_types(work, args.out, run_name(cell, seed))
    seeds = seeds_of(args)
    note = (f"Written by `experiments/mnist_dale.py --epochs {args.epochs or 40}` (seeds {','.join(map(str, seeds))}; "
            "h1, h2 and the readout 80% E / 20% I, pixels signed; circuit and training of experiments/mnist_mlp.py); "
            "mean ± sample sd over the seeds; signed: the committed unconstrained runs of the same seeds; cost = "
            f"signed − Dale final accuracy; {training_note(histories)}.")
    print(write(summarize(histories, args.out, args.signed_runs, seeds, rules), args.out, note))


if __name__ == "__main__":
    main()
