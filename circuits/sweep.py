"""Grids of training runs for the experiment scripts: one experiment file, its circuit trained
with several rule variants (a sparse connector, an IFA angle, a mixture...) and seeds. Each
(cell, seed) trains into its own run directory ``WORK/CELL-sSEED``; a finished one is skipped and
a stopped one resumed from its checkpoint, so an interrupted sweep continues where it stopped.
Each finished run's results are copied to ``OUT/runs/CELL-sSEED`` at once (to be committed),
and the page is written from those copies, so ``--report-only`` regenerates it from them."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field

from circuits.circuit import Circuit
from circuits.errors import ConfigError
from circuits.run import load_experiment, started_run
from circuits.rundir import (DIVERGED, RunInUse, circuit_difference, diverged, fingerprint, in_use, mark_diverged,
                             read_records, recorded_fingerprint, sha256_file)
from circuits.train import Interrupted, TrainingDiverged
from circuits.train import train as train_run
from plasticity import Rule


RECORDS = ("config.json", "metrics.jsonl", "initial.json", DIVERGED)  # a run's results, without its checkpoint


def run_name(cell: str, seed: int) -> str:
    return f"{cell}-s{seed}"


def read_initial(run_dir: str) -> dict | None:
    """The run's epoch-0 record (initial.json), None for runs made before it was written."""
    path = os.path.join(run_dir, "initial.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def copy_records(src: str, dst: str) -> None:
    """Copy a run's results (config.json, metrics.jsonl, initial.json; not its checkpoint) to
    ``dst``, each atomically: the folder a sweep's page is written from, and committed."""
    os.makedirs(dst, exist_ok=True)
    for name in RECORDS:
        if os.path.exists(os.path.join(src, name)):
            tmp = os.path.join(dst, f".{name}.tmp")
            shutil.copy2(os.path.join(src, name), tmp)
            os.replace(tmp, os.path.join(dst, name))


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep that needs more than a rule: ``sets``, training settings of this cell
    (applied after the file's ``per_rule`` and before the command line's ``--set``, e.g.
    ``{"batch_manhattan": True, "lr": 1e-4}``), and ``circuit``, a circuit to train instead of
    the experiment file's (e.g. ``zoo.mlp(..., norm="batch")``; the rule is put on it)."""

    rule: Rule
    sets: dict = field(default_factory=dict)
    circuit: Circuit | None = None


def as_cell(value: Rule | Cell) -> Cell:
    return value if isinstance(value, Cell) else Cell(value)


def run_cells(file: str, cells: dict[str, Rule | Cell], out: str, *, data_root: str, seeds=(0,),
              epochs: int | None = None, sets: dict | None = None, device: str = "cpu",
              progress: bool = True, work: str | None = None, train: bool = True,
              keep_going: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, dict[int, list[dict]]]:
    """Train ``file``'s circuit once per cell and seed with the cell's rule on every plastic
    projection; training settings are the file's, resolved for the rule (``per_rule``), then
    the cell's own ``sets`` (a ``Cell``), then ``sets`` and ``epochs``. A cell is a ``Rule`` or a
    ``Cell`` (a rule with training settings and/or a circuit of its own). Returns {cell: {seed:
    metrics per epoch}} of the finished runs.

    Run CELL-sSEED trains in ``work``/CELL-sSEED (default ``out``/runs: checkpoints and all); when
    it finishes, its results (``RECORDS``) are copied to ``out``/runs/CELL-sSEED, which is what a
    page is written from and what is committed. A finished run is never trained again, and a
    stopped one resumes from its checkpoint. ``train=False`` trains nothing: the results are
    read from the copies alone (regenerating a page from committed data), even where the work
    folder still holds the runs.

    ``keep_going``: a run that diverges (``TrainingDiverged``: a learning-rate grid reaches
    rates some rules cannot take) does not stop the sweep: its run folder gets ``diverged.json``
    ({"error": the message, "epochs": epochs finished}), copied with its records; it counts as
    finished (never trained again) and returns the epochs it finished (``diverged(run_dir)``
    tells it apart).

    ``shard`` (k, n): this process trains only every n-th run of the seed × cell order, from the
    k-th (n processes with k = 0 … n−1 share a sweep); the other runs' results are read from their
    copies where they have finished, as with ``train=False``. A run whose folder another process
    holds (its lock: two shards whose cell lists differ, e.g. when a later phase depends on
    results another shard is still producing) is skipped, never trained twice at once."""
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
    circuit, training = load_experiment(file)
    records = os.path.join(out, "runs")
    work = work or records
    histories: dict[str, dict[int, list[dict]]] = {}
    order = [(seed, cell, as_cell(spec)) for seed in seeds for cell, spec in cells.items()]

    def settings(cell: str, spec: Cell):
        t = training.resolve(spec.rule.name).with_values(dict(spec.sets), where=f"cell {cell!r}")
        t = t.with_values(dict(sets or {}))
        return t.with_values({"epochs": epochs}, where="epochs") if epochs is not None else t

    def finished_copy(seed: int, cell: str, spec: Cell) -> bool:
        copy = os.path.join(records, run_name(cell, seed))
        return diverged(copy) is not None or len(read_records(copy)) >= settings(cell, spec).epochs

    # the sweep's own progress: this process's runs still to train, and when they should end
    pending = {index for index, entry in enumerate(order) if train and index % n == k and not finished_copy(*entry)}
    trained_seconds: list[float] = []
    for index, (seed, cell, spec) in enumerate(order):
        pending.discard(index)
        mine = train and index % n == k
        rule = spec.rule
        t = settings(cell, spec)
        name = run_name(cell, seed)
        run_dir, copy = os.path.join(work, name), os.path.join(records, name)
        c = (spec.circuit if spec.circuit is not None else circuit).with_rule(rule)
        c.seed = seed
        problems = copy_problems(copy, c, t, seed)
        if problems:
            raise ConfigError(f"{copy} holds a run of another cell than {cell!r} seed {seed} asks for "
                              f"({'; '.join(problems)}): its results would be mixed in; move it away or "
                              "write this sweep to another --out")
        copied = read_records(copy)
        if diverged(copy) is not None:  # final: a diverged run is not trained again
            histories.setdefault(cell, {})[seed] = copied
            continue
        if len(copied) >= t.epochs and (not mine or work == records
                                        or not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))):
            histories.setdefault(cell, {})[seed] = copied[:t.epochs]
            continue
        if not mine:
            continue
        if in_use(run_dir):  # another process (a shard whose order differs) is training it
            print(f"{name}: being trained by another process, skipped here", file=sys.stderr)
            continue
        resume, finished = started_run(run_dir, t.epochs) if diverged(run_dir) is None else (False, read_records(run_dir))
        if finished is None:
            per_run = statistics.fmean(trained_seconds) / 60 if trained_seconds else None
            eta = (f"; about {per_run * (len(pending) + 1):.0f} min to go at {per_run:.1f} min per run so far"
                   if per_run is not None else "")
            print(f"sweep: {name}, then {len(pending)} more to train in this process{eta}", file=sys.stderr)
            started = time.monotonic()
            invocation = {"file": os.path.abspath(file), "sha256": sha256_file(file), "rule": rule.name,
                          "rule_options": rule.describe(), "seed": seed, "sets": dict(sets or {}), "cell": cell}
            if spec.sets:
                invocation["cell_sets"] = dict(spec.sets)
            try:
                finished = train_run(c, t, rule=rule.name, run_dir=run_dir, data_root=data_root, seed=seed,
                                     device=device, progress=progress, resume=resume, invocation=invocation)
            except RunInUse:  # it took the lock between the check above and here
                print(f"{name}: being trained by another process, skipped here", file=sys.stderr)
                continue
            except TrainingDiverged as err:
                if not keep_going:
                    raise
                finished = read_records(run_dir)
                mark_diverged(run_dir, str(err), len(finished))
                print(f"{name}: diverged after {len(finished)} epochs ({err})", file=sys.stderr)
            trained_seconds.append(time.monotonic() - started)
            last = finished[-1] if finished else {}
            print(f"{name}: {len(finished)} epochs, test accuracy {last.get('test_acc', float('nan')):.4f}",
                  file=sys.stderr)
        if work != records:
            copy_records(run_dir, copy)
        histories.setdefault(cell, {})[seed] = finished
    return histories


# training settings that do not change a run's recorded metrics (epochs: a longer run's first
# epochs are used; the others are bookkeeping or exact alternatives)
NOT_IDENTITY = ("epochs", "eval_batch_size", "implicit_feedback", "keep_every", "compile", "nan_check_every")


def copy_problems(copy: str, circuit, training, seed: int) -> list[str]:
    """What differs between a run's copied config.json and the cell about to reuse its results:
    the circuit with its rules (fingerprint), the seed, and the training settings that change
    the metrics (all but ``NOT_IDENTITY``; settings the record predates are not compared).
    [] when they agree or the copy has no config.json."""
    path = os.path.join(copy, "config.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        config = json.load(f)
    problems = []
    if config.get("seed") != seed:
        problems.append(f"seed {config.get('seed')}, not {seed}")
    if recorded_fingerprint(config) != fingerprint(circuit):
        current = json.loads(json.dumps(circuit.describe(), default=str))
        problems.append(f"another circuit or rule ({circuit_difference(config['circuit'], current)})")
    recorded, wanted = config.get("training", {}), training.to_dict()
    changed = [f"{k} {recorded[k]!r}, not {wanted[k]!r}" for k in wanted
               if k in recorded and k not in NOT_IDENTITY and k != "per_rule" and recorded[k] != wanted[k]]
    if changed:
        problems.append("training " + ", ".join(changed))
    return problems


def mean_sd(values) -> tuple[float, float]:
    """(mean, sample sd) of the finite values; sd 0 for one value, (nan, nan) for none."""
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(a: list[float], b: list[float]) -> dict:
    """mean(a) − mean(b) by Welch's t-test: {"diff" (pp), "p", "order", "lo", "hi"}, where order is
    '>' or '<' when p < 0.05, '≈' when not, '?' with fewer than two seeds on a side; [lo, hi] is
    the difference's 90% Welch interval in pp (the two one-sided 5% tests: an equivalence or a
    non-inferiority margin is shown when the interval lies inside it)."""
    from scipy.stats import ttest_ind

    diff = 100 * (statistics.fmean(a) - statistics.fmean(b)) if a and b else float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "p": float("nan"), "order": "?", "lo": float("nan"), "hi": float("nan")}
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        # both constant: no spread, the difference is exact (scipy's statistic is undefined)
        p, lo, hi = (1.0 if diff == 0 else 0.0), diff, diff
    else:
        with warnings.catch_warnings():  # a side of equal values (a diverged arm at chance) makes scipy warn
            warnings.simplefilter("ignore", RuntimeWarning)  # of cancellation; its variance is 0 either way
            test = ttest_ind(a, b, equal_var=False)
            p, ci = (1.0 if sorted(a) == sorted(b) else float(test.pvalue)), test.confidence_interval(0.90)
        lo, hi = 100 * float(ci.low), 100 * float(ci.high)
    return {"diff": diff, "p": p, "order": "≈" if p >= 0.05 else (">" if diff > 0 else "<"), "lo": lo, "hi": hi}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979) of ``pvalues``, returned in the order given: the k-th
    smallest of m (k = 1…m) is multiplied by m − k + 1, then each is raised to the largest before it
    in that order and capped at 1. Calling a test significant where its adjusted p < α keeps the
    chance of any false call among the m tests at most α (for any dependence between them)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = [float("nan")] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[i]))
        out[i] = running
    return out


def final(history: list[dict], key: str = "test_acc", projection: str | None = None):
    """The last epoch's value of ``key`` (of one projection's metrics if ``projection``)."""
    if not history:
        return float("nan")
    last = history[-1]
    if projection is not None:
        return last.get("projections", {}).get(projection, {}).get(key, float("nan"))
    return last.get(key, float("nan"))


def sweep_parser(description: str, default_out: str):
    """The command-line options every sweep script shares (its own are added by the caller)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--epochs", type=int, help="epochs per run (default: the experiment file's)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; each cell trains once per seed")
    ap.add_argument("--work", help="where runs train (checkpoints; default OUT/runs); finished runs' "
                                   "metrics and config are copied to OUT/runs")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the page from the results already in OUT/runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--shard", default="0/1", metavar="K/N",
                    help="train only every N-th run from the K-th (N processes, K = 0 … N-1, share the sweep; "
                         "the page is complete once all have finished: rerun with --report-only)")
    return ap


def run_cells_from_args(file: str, cells: dict[str, Rule | Cell], args, seeds=None,
                        keep_going: bool = False) -> dict[str, dict[int, list[dict]]]:
    """``run_cells`` with the options of ``sweep_parser`` (``seeds``: instead of ``--seeds``)."""
    from circuits.run import parse_sets

    try:
        return run_cells(file, cells, args.out, data_root=args.data_root,
                         seeds=seeds_of(args) if seeds is None else seeds, epochs=args.epochs, sets=parse_sets(args.set),
                         device=args.device, progress=not args.no_progress, work=args.work, train=not args.report_only,
                         keep_going=keep_going, shard=shard_of(args))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    except Interrupted as err:  # SIGINT/SIGTERM: the run saved where it stood; the sweep resumes there
        print(f"{err}\nthe sweep stopped; the same command continues it (finished runs are skipped, this one "
              "resumes)", file=sys.stderr)
        raise SystemExit(130) from None


def shard_of(args) -> tuple[int, int]:
    """``--shard K/N`` as (K, N)."""
    text = getattr(args, "shard", "0/1") or "0/1"
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must be K/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= k < n:
        raise SystemExit(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def seeds_of(args) -> tuple[int, ...]:
    return tuple(int(s) for s in str(args.seeds).split(",") if s.strip())


def training_hours(histories: dict) -> float:
    """Hours of training steps in ``histories`` ({cell: {seed: records}}, as run_cells returns),
    summed from each epoch record's ``seconds`` (evaluation not counted): a property of the
    finished runs, the same whichever invocation writes the page."""
    return sum(r.get("seconds", 0.0) for runs in histories.values() for h in runs.values() for r in h) / 3600


def training_note(histories: dict) -> str:
    """The sentence a sweep's page states its cost in."""
    return (f"training steps in all: {training_hours(histories):.1f} core-hours (the records' epoch seconds, "
            "evaluation not counted)")


def write_report(out: str, stem: str, data: dict, fig, lines: list[str], caption: str) -> str:
    """Write a sweep's results to ``out``: STEM.json (``data``), STEM.png (the matplotlib
    ``fig``, closed afterwards) and STEM.md (``lines``, then the figure under ``caption``), each
    atomically (a temporary file, then a rename). Returns the markdown."""
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, stem)

    def replace(suffix, write):
        # one name per process: two shards writing the same report must not share a temporary
        # file; matplotlib picks the format from the suffix
        tmp = f"{path}.tmp{os.getpid()}{suffix}"
        write(tmp)
        os.replace(tmp, path + suffix)

    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
    replace(".json", dump)
    fig.tight_layout()
    replace(".png", lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    text = "\n".join([*lines, "", f"![{caption}]({stem}.png)", ""])

    def markdown(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    replace(".md", markdown)
    return text
