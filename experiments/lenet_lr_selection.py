"""MNIST LeNet-5 with a learning rate chosen per rule on a validation split, then trained at that
rate with three seeds at the full protocol (issue 20: the PFA paper's MLP rate, 0.01 with
momentum 0.9, makes FA, DFA, KP, WM and PAL blow up on LeNet; see docs/results/mnist_lenet/).

Protocol (every setting but the learning rate is ``experiments/mnist_lenet.py``'s):

1. Selection, seed 0: each rule at each rate of ``--lrs`` (default 0.01, 0.003, 0.001) for
   ``--select-epochs`` epochs (default 10, before the first lr milestone, so at a constant
   rate: a shortened selection protocol, stated on the page) on 50,000 training images, the
   other 10,000 held out for validation (``val_size=10000``). A rule's rate is the one with the
   highest validation accuracy at the last selection epoch; a run that diverges or ends at or
   near chance (validation accuracy ≤ 20%, twice chance) has failed and is never chosen.
   Where the best rate is the grid's lowest, the rate a third of it (0.0003) is tried too, once.
   The test set plays no part in the choice.
2. Result: each rule at its chosen rate, 40 epochs on all 60,000 training images, seeds
   ``--seeds`` (default 0, 1, 2); reported on the 10,000 test images by
   ``experiments/mnist_results.py --profile lenet`` (final and best epoch, alignment per conv
   projection). Where the chosen rate diverges in a result run (a rate at the edge of what the
   rule takes: one batch order trains, another blows up), the rule is also trained at its
   next-best validation rate, as the row ARM-next (divergence is an event of training: the test
   set still plays no part). A result run at the paper's rate 0.01 with seed 0 is the paper-settings run
   already in ``docs/results/mnist_lenet/runs`` (the same protocol): its records are reused, not
   trained again.

Arms: the twelve rules, and ``pfa-o-nowd``: PFA-o without the first epoch's 0.03 weight decay
(weight decay 1e-4 throughout), the page's explanation of PFA-o's failure at the paper's settings.

    python experiments/lenet_lr_selection.py --data-root ../shared/data --work runs/lenet_sel --shard 0/2
    python experiments/lenet_lr_selection.py --data-root ../shared/data --work runs/lenet_sel --shard 1/2
    python experiments/lenet_lr_selection.py --report-only      # the pages from the committed records

Another MNIST experiment file takes the same protocol with ``--experiment FILE --profile P
--paper-runs DIR --out OUT --rules ...`` (e.g. ``experiments/mnist_resnet.py`` with ``--profile
resnet``).

Writes OUT/selection.{md,json,png} (validation accuracy per rule and rate, the chosen rate) and
the result runs' records in OUT/chosen/runs (the table: ``python experiments/mnist_results.py
--profile lenet --out OUT/chosen``, which this script runs once every result run has finished).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from circuits.errors import ConfigError  # noqa: E402
from circuits.run import load_experiment, parse_sets  # noqa: E402
from circuits.sweep import (Cell, copy_problems, copy_records, diverged, read_records, run_cells, run_name,  # noqa: E402
                            shard_of, sweep_parser, training_note, write_report)
from circuits.train import Interrupted  # noqa: E402
from circuits.training import Training  # noqa: E402
from plasticity import make_rule  # noqa: E402

FILE = os.path.join(HERE, "mnist_lenet.py")
RULES = ("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "ifa", "pfa", "pfa-o", "pfa-o-nowd")
LRS = (0.01, 0.003, 0.001)
PAPER_LR = 0.01
VAL_SIZE = 10_000
LEARNED = 0.2  # validation accuracy a run must pass to count as learning (twice chance, 10 classes)
PAPER_RUNS = os.path.join("docs", "results", "mnist_lenet", "runs")  # the paper-settings runs (lr 0.01)


def arm_cell(arm: str, sets: dict) -> Cell:
    """The cell of an arm: its rule, and for pfa-o-nowd no first-epoch weight decay."""
    if arm == "pfa-o-nowd":
        return Cell(make_rule("pfa-o"), sets={**sets, "first_epoch_weight_decay": None})
    return Cell(make_rule(arm), sets=sets)


def lr_name(lr: float) -> str:
    return f"{lr:g}"


def selection_cells(arms, lrs) -> dict[str, Cell]:
    return {f"{a}-lr{lr_name(lr)}": arm_cell(a, {"lr": lr, "val_size": VAL_SIZE}) for a in arms for lr in lrs}


def score(history: list[dict] | None, run_dir: str) -> float:
    """The last epoch's validation accuracy; nan for a run that diverged or has not run."""
    if not history or diverged(run_dir) is not None:
        return float("nan")
    return history[-1].get("val_acc", float("nan"))


def choose(scores: dict[float, float], lrs) -> tuple[float | None, float | None]:
    """(chosen rate or None, the extra rate to try or None) from {lr: validation accuracy}: the
    best score of a run that learned (finite, above ``LEARNED``: a run at chance or diverged has
    failed); where it is the grid's lowest rate (or every rate failed), a third of that
    rate (one significant digit: 0.0003) is asked for once (``lrs`` is the base grid)."""
    finite = {lr: v for lr, v in scores.items() if v == v and v > LEARNED}
    best = max(finite, key=finite.get) if finite else None
    lowest = min(scores)
    extra = float(f"{min(lrs) / 3:.1g}")
    if (best is None or best == lowest) and lowest >= min(lrs) and extra not in scores:
        return None, extra
    return best, None


def next_best(scores: dict[float, float], chosen: float) -> float | None:
    """The rate with the best validation accuracy after ``chosen`` among runs that learned (None
    if there is none): the fallback where the chosen rate diverged in a result run. Divergence
    is an event of training, so the test set still plays no part in the choice."""
    rest = {lr: v for lr, v in scores.items() if lr != chosen and v == v and v > LEARNED}
    return max(rest, key=rest.get) if rest else None


def select(histories: dict, arms, lrs, out: str, epochs: int) -> dict[str, dict]:
    """{arm: {"scores": {lr: val acc}, "chosen": lr or None, "missing": [lrs not finished]}}."""
    table = {}
    for a in arms:
        rates = list(lrs)
        while True:
            scores, missing = {}, []
            for lr in rates:
                name = f"{a}-lr{lr_name(lr)}"
                h = histories.get(name, {}).get(0)
                run_dir = os.path.join(out, "runs", run_name(name, 0))
                if diverged(run_dir) is None and (not h or len(h) < epochs):  # a run diverged in epoch 1 has no epochs
                    missing.append(lr)
                scores[lr] = score(h, run_dir)
            best, extra = choose(scores, lrs)
            if missing or extra is None:
                break
            rates.append(extra)
        table[a] = {"scores": scores, "chosen": None if missing else best, "missing": missing,
                    "extra": [lr for lr in scores if lr not in lrs]}
    return table


def reuse_paper_runs(chosen: dict[str, float], seeds, out: str, training: Training, sets: dict, epochs: int | None,
                     file: str = FILE, paper_runs: str = PAPER_RUNS) -> list[str]:
    """Copy the paper-settings runs in ``paper_runs`` (lr 0.01, the same protocol) of rules chosen
    at 0.01 into OUT/chosen/runs, where their records are identical to what the result phase
    would train (checked: circuit, rule, seed and training settings)."""
    circuit, _ = load_experiment(file)
    reused = []
    for a, lr in chosen.items():
        if lr != PAPER_LR or a == "pfa-o-nowd":
            continue
        for seed in seeds:
            src, dst = os.path.join(paper_runs, run_name(a, seed)), os.path.join(out, "chosen", "runs", run_name(a, seed))
            t = training.resolve(a).with_values({"lr": lr}).with_values(sets)
            t = t.with_values({"epochs": epochs}) if epochs is not None else t
            c = circuit.with_rule(make_rule(a))
            c.seed = seed
            if (os.path.exists(dst) or len(read_records(src)) < t.epochs or diverged(src) is not None
                    or copy_problems(src, c, t, seed)):
                continue
            copy_records(src, dst)
            reused.append(run_name(a, seed))
    return reused


def figure(table: dict, lrs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for a, row in table.items():
        pts = sorted((lr, v) for lr, v in row["scores"].items())
        ax.plot([p[0] for p in pts], [100 * p[1] if p[1] == p[1] else math.nan for p in pts], marker="o", label=a)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def page(table: dict, lrs, epochs: int, note: str, circuit: str = "lenet") -> list[str]:
    rates = sorted({lr for row in table.values() for lr in row["scores"]}, reverse=True)
    lines = [f"# MNIST, {circuit}: learning rate per rule, chosen on a validation split", "",
             f"Seed 0, {epochs} epochs at a constant rate (a shortened selection protocol; the results are 40-epoch "
             f"runs), the training images less {VAL_SIZE:,} held out, validation accuracy on those at the last epoch. "
             f"Chosen: the best validation accuracy of a run that learned (above {100 * LEARNED:.0f}%, twice chance); "
             "'—' a run that diverged (non-finite values), '·' not run. "
             "The test set plays no part.", "",
             "| arm | " + " | ".join(f"lr {lr_name(lr)}" for lr in rates) + " | chosen |",
             "|---|" + "---|" * (len(rates) + 1)]
    for a, row in table.items():
        cells = []
        for lr in rates:
            v = row["scores"].get(lr)
            cells.append("·" if v is None or lr in row["missing"] else ("—" if v != v else f"{100 * v:.2f}"))
        chosen = "waiting for " + ", ".join(map(lr_name, row["missing"])) if row["missing"] else (
            lr_name(row["chosen"]) if row["chosen"] is not None else "none (every rate failed)")
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {chosen} |")
    lines += ["", note]
    return lines


def main(argv=None) -> int:
    try:
        return sweep(argv)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    except Interrupted as err:  # SIGINT/SIGTERM: the run saved where it stood
        print(f"{err}\nthe sweep stopped; the same command continues it (finished runs are skipped, this one "
              "resumes)", file=sys.stderr)
        return 130


def sweep(argv=None) -> int:
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "mnist_lenet", "lr_selection"))
    ap.set_defaults(seeds="0,1,2")
    ap.add_argument("--rules", default=",".join(RULES), help="arms, comma-separated (default: all)")
    ap.add_argument("--lrs", default=",".join(map(lr_name, LRS)), help="the rate grid (default: %(default)s)")
    ap.add_argument("--select-epochs", type=int, default=10)
    ap.add_argument("--experiment", default=FILE, help="the MNIST experiment file (default: %(default)s; e.g. "
                                                       "experiments/mnist_resnet.py with --profile resnet)")
    ap.add_argument("--paper-runs", default=PAPER_RUNS,
                    help="runs at the file's own rate 0.01 to reuse where a rule is chosen at it (default: %(default)s)")
    ap.add_argument("--profile", default="lenet", choices=("lenet", "resnet", "mlp"), help="mnist_results.py's profile for the result table (default: lenet)")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.rules.split(",") if a.strip()]
    unknown = [a for a in arms if a not in RULES]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)} (known: {', '.join(RULES)})")
    lrs = tuple(float(v) for v in args.lrs.split(","))
    circuit, training = load_experiment(args.experiment)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    sets = parse_sets(args.set)
    common = dict(data_root=args.data_root, sets=sets, device=args.device, progress=not args.no_progress,
                  train=not args.report_only, keep_going=True, shard=shard_of(args))
    work = args.work or os.path.join(args.out, "runs")

    def selection(cells: dict[str, Cell]) -> dict:
        """Train this process's share of ``cells``, then read every finished one (other shards'
        runs included: a shard passes their place in the order before they finish)."""
        run_cells(args.experiment, cells, args.out, seeds=(0,), epochs=args.select_epochs, work=work, **common)
        return run_cells(args.experiment, cells, args.out, seeds=(0,), epochs=args.select_epochs, work=work,
                         **{**common, "train": False})

    histories = selection(selection_cells(arms, lrs))
    table = select(histories, arms, lrs, args.out, args.select_epochs)
    extra = {f"{a}-lr{lr_name(lr)}": arm_cell(a, {"lr": lr, "val_size": VAL_SIZE})
             for a, row in table.items() for lr in row["missing"] if lr not in lrs}
    if extra:
        histories.update(selection(extra))
        table = select(histories, arms, lrs, args.out, args.select_epochs)
    note = (f"Written by `experiments/lenet_lr_selection.py` (grid {', '.join(map(lr_name, lrs))}); the selection "
            f"runs' {training_note(histories)}.")
    data = {"select_epochs": args.select_epochs, "val_size": VAL_SIZE, "grid": list(lrs),
            "arms": {a: {**row, "scores": {lr_name(k): v for k, v in row["scores"].items()}} for a, row in table.items()}}
    print(write_report(args.out, "selection", data, figure(table, lrs), page(table, lrs, args.select_epochs, note, circuit.name),
                       "validation accuracy against the learning rate, per rule"))
    chosen = {a: row["chosen"] for a, row in table.items() if row["chosen"] is not None}
    if not chosen:
        return 0
    if not args.report_only:
        reused = reuse_paper_runs(chosen, seeds, args.out, training, sets, args.epochs, args.experiment,
                                  args.paper_runs)
        if reused:
            print(f"reused the paper-settings runs {', '.join(reused)} (lr {PAPER_LR:g}, the same protocol)", file=sys.stderr)
    result_cells = {a: arm_cell(a, {"lr": lr}) for a, lr in chosen.items()}
    chosen_out = os.path.join(args.out, "chosen")
    result_work = os.path.join(work, "chosen") if args.work else None
    run_cells(args.experiment, result_cells, chosen_out, seeds=seeds, epochs=args.epochs, work=result_work, **common)
    done = run_cells(args.experiment, result_cells, chosen_out, seeds=seeds, epochs=args.epochs, work=result_work,
                     **{**common, "train": False})  # every shard's finished runs
    # where the chosen rate diverged in a result run, the next-best rate on validation too (ARM-next)
    fallback = {}
    for a, lr in chosen.items():
        if any(diverged(os.path.join(chosen_out, "runs", run_name(a, seed))) is not None for seed in seeds):
            following = next_best(table[a]["scores"], lr)
            if following is not None:
                fallback[f"{a}-next"] = arm_cell(a, {"lr": following})
    if fallback:
        print(f"chosen rate diverged in a result run: also at the next-best rate {', '.join(fallback)}", file=sys.stderr)
        run_cells(args.experiment, fallback, chosen_out, seeds=seeds, epochs=args.epochs, work=result_work, **common)
        done.update(run_cells(args.experiment, fallback, chosen_out, seeds=seeds, epochs=args.epochs, work=result_work,
                              **{**common, "train": False}))
        result_cells.update(fallback)
    finished = all(len(done.get(a, {})) == len(seeds) for a in result_cells) and len(chosen) == len(arms)
    if finished:
        subprocess.run([sys.executable, os.path.join(HERE, "mnist_results.py"), "--profile", args.profile,
                        "--out", chosen_out, "--epochs", str(args.epochs or training.epochs)], check=True)
    else:
        print("result runs not all finished (or rates not all chosen): rerun to continue; the table is written "
              "when every one has", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
