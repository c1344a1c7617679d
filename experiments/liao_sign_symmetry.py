"""Liao, Leibo & Poggio (2016), "How Important is Weight Symmetry in Backpropagation?", on MNIST:
BP, FA and the sign-concordant rules (raw and scaled uSF, brSF, frSF) × {plain SGD, Batch
Manhattan (BM), batch norm (BN), BN + BM} on the 784-512-512-10 MLP and a deeper one (six
hidden layers of 256), and a sign-concordance sweep q = 0, 0.25, 0.5, 0.75, 0.9, 1.

Protocol, one for every arm (experiments/liao_mlp.py; Liao et al.'s own MNIST settings were not
reachable from here, so this project's MNIST protocol is used): ReLU, batch 64, 20 epochs, SGD
momentum 0.9, no weight decay, a constant learning rate; 10,000 training cells held out for
validation (val_size). Each arm (depth, rule, condition) trains once (the first seed) per
learning rate of its grid, lr ∈ {0.1, 0.01, 0.001, 0.0001} for SGD and {1e-3, 1e-4, 1e-5} for BM
(BM's step is lr per synapse whatever the gradient); the rate with the best final validation
accuracy is kept (selection on validation only; a run that diverges is never kept), and the
other seeds train at that rate. The test accuracy reported is the final epoch's, mean ± sd over
the seeds. BN: every hidden layer batch-normalises its summed input before the ReLU (zoo.mlp
norm="batch"). BM: Training batch_manhattan (manhattan_sign "gradient": sign of the batch
gradient, then momentum). The concordance sweep runs raw uSF, brSF and frSF on the 2-hidden-layer
MLP under one condition (default BN + BM, ``--concordance-condition``) at the rate chosen for
q = 1 (that arm's grid cell), every seed.

Each run trains in WORK/CELL-sSEED (an interrupted sweep resumes; a diverged run is recorded with
diverged.json and not trained again) and its records are copied to OUT/runs/CELL-sSEED; the page
(liao.md, liao.json and figures: accuracy per arm, accuracy against concordance, ‖e‖ per layer
over training) is written from those copies, so ``--report-only`` regenerates it.

    python experiments/liao_sign_symmetry.py --data-root ../shared/data --seeds 0,1,2 \\
        --work runs/liao --out docs/results/liao
    python experiments/liao_sign_symmetry.py --seeds 0,1,2 --report-only
"""
from __future__ import annotations

import math
import os
import statistics
import time

from circuits import zoo
from circuits.sweep import (Cell, diverged, mean_sd, read_initial, run_cells_from_args, run_name, seeds_of, sweep_parser,
                            write_report)
from plasticity import make_rule

HERE = os.path.dirname(os.path.abspath(__file__))
FILE = os.path.join(HERE, "liao_mlp.py")
# arm name -> (rule name, options)
RULES = {"bp": ("bp", {}), "fa": ("fa", {}), "usf-raw": ("usf", {"scale": "none"}), "usf": ("usf", {}),
         "brsf": ("brsf", {}), "frsf": ("frsf", {})}
CONDITIONS = {"sgd": (False, None), "bm": (True, None), "bn": (False, "batch"), "bn+bm": (True, "batch")}
DEPTHS = {"mlp2": (784, 512, 512, 10), "mlp6": (784, *[256] * 6, 10)}
LR_GRID = {False: (0.1, 0.01, 0.001, 0.0001), True: (1e-3, 1e-4, 1e-5)}
CONCORDANCE = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
CONCORDANCE_RULES = ("usf-raw", "brsf", "frsf")


def arm(depth: str, rule: str, condition: str) -> str:
    return f"{depth}-{rule}-{condition}"


def cell(depth: str, rule: str, condition: str, lr: float, q: float = 1.0) -> tuple[str, Cell]:
    """("DEPTH-RULE[-qQ]-CONDITION-lrLR", its Cell): the rule (with concordance q), the circuit
    (zoo.mlp of DEPTH, batch-normalised for BN conditions) and the settings (lr, batch_manhattan)."""
    name, options = RULES[rule]
    bm, norm = CONDITIONS[condition]
    options = {**options, **({"concordance": q} if q != 1 else {})}
    circuit = zoo.mlp(DEPTHS[depth], name=f"liao-{depth}" + ("-bn" if norm else ""), norm=norm)
    label = f"{depth}-{rule}" + (f"-q{q:g}" if q != 1 else "") + f"-{condition}-lr{lr:g}"
    return label, Cell(make_rule(name, **options), sets={"lr": lr, "batch_manhattan": bm}, circuit=circuit)


def final_value(history: list[dict], key: str) -> float:
    return history[-1].get(key, float("nan")) if history else float("nan")


def select(histories: dict, arms: list[tuple], grid: dict, seed: int) -> dict:
    """{arm: (chosen lr or None, {lr: final val acc, nan if diverged or missing})} from the first
    seed's grid runs: the best final validation accuracy (never a diverged run)."""
    chosen = {}
    for depth, rule, condition in arms:
        scores = {}
        for lr in grid[CONDITIONS[condition][0]]:
            label, _ = cell(depth, rule, condition, lr)
            h = histories.get(label, {}).get(seed)
            scores[lr] = float("nan") if not h or h[-1].get("diverged") else final_value(h, "val_acc")
        finite = {lr: v for lr, v in scores.items() if v == v}
        chosen[arm(depth, rule, condition)] = (max(finite, key=finite.get) if finite else None, scores)
    return chosen


def mark_diverged(histories: dict, out: str) -> dict:
    """The histories with {"diverged": True} appended to each run that diverged (diverged.json)."""
    for label, runs in histories.items():
        for seed, h in runs.items():
            if diverged(os.path.join(out, "runs", run_name(label, seed))) is not None:
                runs[seed] = [*h, {"diverged": True}]
    return histories


def summarize(histories: dict, chosen: dict, arms: list[tuple], seeds, qs, q_condition: str, out: str) -> dict:
    """The page's data: one row per arm (its chosen rate, validation accuracy, test accuracy over
    the seeds, ‖e‖ per population per epoch of the first seed from epoch 0) and the concordance
    sweep's rows."""
    def stats(label):
        runs = histories.get(label, {})
        done = {s: h for s, h in runs.items()}
        accs = [float("nan") if h and h[-1].get("diverged") else final_value(h, "test_acc") for h in done.values()]
        acc, sd = mean_sd(accs)
        return {"cell": label, "seeds": sorted(done), "diverged": sum(1 for h in done.values() if h and h[-1].get("diverged")),
                "test_acc": acc, "test_acc_sd": sd, "test_acc_per_seed": accs,
                "epochs": min((len([m for m in h if "epoch" in m]) for h in done.values()), default=0),
                "seconds": statistics.fmean([sum(m.get("seconds", 0.0) for m in h) for h in done.values()]) if done else 0.0}

    rows = []
    for depth, rule, condition in arms:
        lr, scores = chosen[arm(depth, rule, condition)]
        row = {"depth": depth, "rule": rule, "condition": condition, "lr": lr,
               "val_acc_by_lr": {f"{k:g}": v for k, v in scores.items()}}
        if lr is not None:
            label, _ = cell(depth, rule, condition, lr)
            row.update(stats(label))
            row["val_acc"] = scores[lr]
            first = min(histories.get(label, {}) or [0])
            h = histories.get(label, {}).get(first)
            initial = read_initial(os.path.join(out, "runs", run_name(label, first))) or {}
            row["error_norms"] = ([initial.get("error_norms", {})] + [m.get("error_norms", {}) for m in h if "epoch" in m]
                                  if h else [])  # from epoch 0
        rows.append(row)
    concordance = []
    for rule in CONCORDANCE_RULES:
        lr = chosen.get(arm("mlp2", rule, q_condition), (None, {}))[0]
        if lr is None:
            continue
        for q in qs:
            label, _ = cell("mlp2", rule, q_condition, lr, q)
            if histories.get(label):
                concordance.append({"rule": rule, "q": q, "lr": lr, "condition": q_condition, **stats(label)})
    return {"rows": rows, "concordance": concordance, "seeds": list(seeds)}


def write(result: dict, out: str, note: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("lr") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    # (a) accuracy per arm
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    arms = list(dict.fromkeys((r["depth"], r["rule"]) for r in rows))
    width = 0.8 / max(1, len(conditions))
    for j, cond in enumerate(conditions):
        xs, ys, es = [], [], []
        for i, (depth, rule) in enumerate(arms):
            r = next((r for r in rows if (r["depth"], r["rule"], r["condition"]) == (depth, rule, cond)), None)
            if r is not None and r["test_acc"] == r["test_acc"]:
                xs.append(i + j * width)
                ys.append(100 * r["test_acc"])
                es.append(100 * r["test_acc_sd"])
        axes[0].bar(xs, ys, width, yerr=es, capsize=2, label=cond, color=f"C{j}")
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(arms))], [f"{d}\n{r}" for d, r in arms], fontsize=7)
    axes[0].set_ylabel("final test accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    # (b) accuracy against concordance
    for i, rule in enumerate(dict.fromkeys(c["rule"] for c in result["concordance"])):
        mine = [c for c in result["concordance"] if c["rule"] == rule]
        axes[1].errorbar([c["q"] for c in mine], [100 * c["test_acc"] for c in mine],
                         yerr=[100 * c["test_acc_sd"] for c in mine], fmt="o-", capsize=3, color=f"C{i}", label=rule)
    axes[1].set_xlabel("sign concordance q (fraction of feedback synapses with W's sign)")
    axes[1].set_ylabel("final test accuracy (%)")
    if result["concordance"]:
        axes[1].legend(fontsize=7, title=result["concordance"][0]["condition"], title_fontsize=7)
    # (c) ‖e‖ per layer over training, raw uSF on the deepest circuit run, per condition
    deep = [r for r in rows if r["rule"] == "usf-raw" and r.get("error_norms")]
    depth = max((r["depth"] for r in deep), default=None, key=lambda d: len(DEPTHS[d]))
    for j, r in enumerate(r for r in deep if r["depth"] == depth):
        layers = sorted((k for k in r["error_norms"][-1] if k.startswith("h")), key=lambda k: int(k[1:]))
        epochs = range(len(r["error_norms"]))
        for k, layer in enumerate(layers):
            axes[2].plot(epochs, [m.get(layer, math.nan) for m in r["error_norms"]], "o-", ms=3, color=f"C{j}",
                         alpha=0.35 + 0.65 * (k + 1) / len(layers), label=r["condition"] if k == 0 else None)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("‖e‖ per hidden layer (darker: nearer the readout)")
    axes[2].set_title(f"raw uSF, {depth}" if depth else "", fontsize=8)
    if deep:
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    lines = ["# Liao, Leibo & Poggio (2016) on MNIST", "", note, "",
             "| circuit | rule | condition | lr (chosen on val) | val acc (%) | seeds | diverged | epochs | "
             "final test accuracy (%) | wall time per run (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("lr") is None:
            lines.append(f"| {r['depth']} | {r['rule']} | {r['condition']} | — (every rate diverged or not run) "
                         f"| — | — | — | — | — | — |")
            continue
        lines.append(f"| {r['depth']} | {r['rule']} | {r['condition']} | {r['lr']:g} | {100 * r['val_acc']:.2f} | "
                     f"{','.join(map(str, r['seeds']))} | {r['diverged']} | {r['epochs']} | "
                     f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_sd']:.2f} | {r['seconds']:.0f} |")
    if result["concordance"]:
        lines += ["", f"Sign concordance ({result['concordance'][0]['condition']}, 784-512-512-10):", "",
                  "| rule | q | lr | seeds | diverged | final test accuracy (%) |", "|---|---|---|---|---|---|"]
        for c in result["concordance"]:
            lines.append(f"| {c['rule']} | {c['q']:g} | {c['lr']:g} | {','.join(map(str, c['seeds']))} | {c['diverged']} | "
                         f"{100 * c['test_acc']:.2f} ± {100 * c['test_acc_sd']:.2f} |")
    return write_report(out, "liao", result, fig, lines,
                        "accuracy per arm; accuracy against sign concordance; error norms per layer over training")


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "liao"))
    ap.add_argument("--depths", default=",".join(DEPTHS))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--lrs", help="one learning-rate grid for every arm, comma-separated (default: per optimizer)")
    ap.add_argument("--concordance", default=",".join(f"{q:g}" for q in CONCORDANCE),
                    help="q values of the concordance sweep ('' : none)")
    ap.add_argument("--concordance-condition", default="bn+bm", choices=list(CONDITIONS))
    args = ap.parse_args(argv)
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
    depths, rules, conditions = split(args.depths), split(args.rules), split(args.conditions)
    for name, given, known in [("depth", depths, DEPTHS), ("rule", rules, RULES), ("condition", conditions, CONDITIONS)]:
        unknown = [g for g in given if g not in known]
        if unknown:
            ap.error(f"unknown {name} {', '.join(unknown)} (known: {', '.join(known)})")
    grid = ({bm: tuple(float(v) for v in split(args.lrs)) for bm in (False, True)} if args.lrs else LR_GRID)
    qs = tuple(float(q) for q in split(args.concordance))
    seeds = seeds_of(args)
    arms = [(d, r, c) for d in depths for r in rules for c in conditions]
    start = time.time()
    # 1. every rate of each arm's grid, first seed: the selection on validation
    grid_cells = dict(cell(d, r, c, lr) for d, r, c in arms for lr in grid[CONDITIONS[c][0]])
    histories = mark_diverged(run_cells_from_args(FILE, grid_cells, args, seeds=seeds[:1], keep_going=True), args.out)
    chosen = select(histories, arms, grid, seeds[0])
    # 2. the other seeds at each arm's chosen rate; 3. the concordance sweep at the q = 1 arm's rate
    final_cells = dict(cell(d, r, c, chosen[arm(d, r, c)][0]) for d, r, c in arms if chosen[arm(d, r, c)][0] is not None)
    q_condition = args.concordance_condition
    for rule in CONCORDANCE_RULES:
        lr = chosen.get(arm("mlp2", rule, q_condition), (None,))[0]
        if lr is not None and rule in rules:
            final_cells.update(cell("mlp2", rule, q_condition, lr, q) for q in qs)
    more = mark_diverged(run_cells_from_args(FILE, final_cells, args, seeds=seeds, keep_going=True), args.out)
    for label, runs in more.items():
        histories.setdefault(label, {}).update(runs)
    note = (f"Written by `experiments/liao_sign_symmetry.py --epochs {args.epochs or 20}` (seeds "
            f"{','.join(map(str, seeds))}; protocol in the script's docstring: learning rate chosen per arm on the "
            f"validation split with seed {seeds[0]}, test accuracy of the final epoch, mean ± sample sd over the "
            f"seeds; a diverged run counts as failed). Wall time: the training epochs' seconds per run (this "
            f"invocation: {time.time() - start:.0f} s, finished runs skipped).")
    print(write(summarize(histories, chosen, arms, seeds, qs, q_condition, args.out), args.out, note))


if __name__ == "__main__":
    main()
