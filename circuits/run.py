"""python -m circuits.run FILE: Train the circuit that an experiment file defines.

A run folder is data: --resume, --evaluate and --connectome never run the experiment file that
a folder's config.json names. Without FILE they rebuild the circuit from config.json's
description (no code runs); with FILE they run the file you name, and only if its sha256 is the
one config.json records (or you add --accept-mismatch).
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import textwrap

import torch

from circuits import data as datasets
from circuits.circuit import Circuit
from circuits.compare import write_comparison
from circuits.errors import CircuitError, ConfigError, DataError
from circuits.rebuild import rebuild
from circuits.rundir import (DIVERGED, RunLock, diverged, identity_problems, mark_diverged, read_config, read_records,
                             sha256_file)
from circuits.train import (RESUMABLE, CheckpointError, Interrupted, TrainingDiverged, data_identity, evaluate_split,
                            load_checkpoint, train)
from circuits.training import Training, settings_help
from connectomes.files import write_connectome
from plasticity import RULES, make_rule

EXAMPLES = """\
examples:
  python -m circuits.run experiments/mnist_mlp.py --rule pfa --data-root ../shared/data --out runs/mnist-pfa
  python -m circuits.run experiments/mnist_mlp.py --rule fa --epochs 1 --set lr=0.05 --set batch_size=128
  python -m circuits.run --resume runs/mnist-pfa                    continue a stopped run
  python -m circuits.run --resume runs/mnist-pfa --set lr=0.001     ... with a smaller lr (recorded)
  python -m circuits.run experiments/mnist_mlp.py --resume runs/mnist-pfa   ... its circuit built by the file
  python -m circuits.run --evaluate runs/mnist-pfa                  test accuracy of its checkpoint
  python -m circuits.run --connectome runs/mnist-pfa                RUN_DIR/connectome.h5
  python -m circuits.run experiments/mnist_mlp.py --compare bp,fa,pfa --seeds 3 --out runs/cmp
  torchrun --nproc_per_node=2 -m circuits.run experiments/mnist_mlp.py ...

training settings for --set KEY=VALUE (the defaults of Training(); an experiment file sets its own):
  KEY                       DEFAULT  MEANING
{settings}
On --resume, --set may change only: {resumable}.

A run folder holds config.json, metrics.jsonl, checkpoint.pt, connectome.h5, graph.json/.graphml
and tensorboard/. One process writes a folder at a time. Errors exit with status 2, SIGINT/SIGTERM
with 130 after saving where the run stood.
"""


def load_experiment(path: str) -> tuple[Circuit, Training]:
    """Run a DSL file and return its ``circuit`` and ``training`` (default Training())."""
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file {path!r} not found")
    try:
        names = runpy.run_path(path)
    except (CircuitError, ConfigError):
        raise
    except Exception as err:  # an error in the user's file: say which file
        raise ConfigError(f"{path}: {type(err).__name__}: {err}") from err
    circuit = names.get("circuit")
    if circuit is None:
        raise ConfigError(f"{path} defines no `circuit` (it must set circuit = Circuit(...))")
    if not isinstance(circuit, Circuit):
        raise ConfigError(f"{path}: `circuit` is a {type(circuit).__name__}, not a circuits.Circuit")
    training = names.get("training", Training())
    if not isinstance(training, Training):
        raise ConfigError(f"{path}: `training` is a {type(training).__name__}, not a circuits.Training")
    return circuit, training


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def prepare(file: str, rule: str | None, seed: int | None, sets: dict, epochs: int | None):
    """(circuit, resolved training, rule name) for one run of ``file``."""
    circuit, training = load_experiment(file)
    if seed is not None:
        circuit.seed = seed
    if rule:
        try:
            r = make_rule(rule)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        circuit = circuit.with_rule(r)
        rule_name = r.name
    else:
        rules = circuit.rules()
        rule_name = rules.pop() if len(rules) == 1 else "mixed"
    training = training.resolve(rule_name).with_values(sets)
    if epochs is not None:
        training = training.with_values({"epochs": epochs}, where="--epochs")
    return circuit, training.check(), rule_name


def recorded_file(config: dict) -> str | None:
    return (config.get("experiment") or {}).get("file") or (config.get("invocation") or {}).get("file")


def rebuilt_circuit(run_dir: str, config: dict, flag: str) -> Circuit:
    """The run's circuit rebuilt from config.json's description (no file runs); if it cannot be,
    ConfigError with the command that names the experiment file."""
    try:
        circuit = rebuild(config["circuit"])
    except ConfigError as err:
        raise ConfigError(f"{flag} {run_dir}: config.json's circuit cannot be rebuilt without its experiment file "
                          f"({err}); a run folder is data and the file its config.json names is not run unless "
                          f"you name it: python -m circuits.run {recorded_file(config) or 'FILE'} {flag} {run_dir}"
                          ) from None
    print(f"circuits.run: circuit rebuilt from {os.path.join(run_dir, 'config.json')} (no experiment file run)",
          file=sys.stderr)
    circuit.seed = config["seed"]
    return circuit


def named_file(run_dir: str, config: dict, file: str, accept_mismatch: bool, flag: str) -> str:
    """The sha256 of the experiment FILE the user named for a saved run, checked against the one
    config.json records: a run folder never makes the program run a file the user did not name."""
    recorded = config.get("experiment") or {}
    if not os.path.isfile(file):
        raise ConfigError(f"experiment file {file!r} not found")
    sha = sha256_file(file)
    if recorded.get("sha256") and sha != recorded["sha256"] and not accept_mismatch:
        raise ConfigError(f"{flag} {run_dir}: refused: {file} is not the file that made the run (sha256 {sha[:12]}, "
                          f"config.json records {recorded['sha256'][:12]} of {recorded_file(config)}): it was edited since, "
                          "or it is another file; to use it anyway, deliberately, add --accept-mismatch")
    return sha


def from_config(run_dir: str, file: str | None, accept_mismatch: bool = False, flag: str = "--resume"):
    """(config, circuit, training, rule name, file sha256) of an existing run: its circuit built
    by the experiment FILE the user named (checked against config.json), or without FILE rebuilt
    from config.json's description (sha256 None)."""
    config = read_config(run_dir)
    if file:
        sha = named_file(run_dir, config, file, accept_mismatch, flag)
        circuit, _, rule_name = prepare(file, (config.get("invocation") or {}).get("rule"), config["seed"], {}, None)
    else:
        circuit, rule_name, sha = rebuilt_circuit(run_dir, config, flag), str(config["rule"]), None
    try:
        training = Training(**{**config["training"], "per_rule": {}})
    except TypeError as err:
        raise ConfigError(f"{run_dir}/config.json: its training settings do not fit this version ({err})") from None
    try:
        training.check()
    except ConfigError as err:
        raise ConfigError(f"{run_dir}/config.json: {err}") from None
    return config, circuit, training, rule_name, sha


def resume_overrides(sets: dict, epochs: int | None) -> dict:
    """The settings a resume changes, checked to be ones a resumed run may change."""
    for key in sets:
        if key not in RESUMABLE and key in Training.__dataclass_fields__:
            raise ConfigError(f"--set {key}: cannot change on --resume (it changes the run's data, data order or "
                              f"saved tensors); allowed: {', '.join(RESUMABLE)}; or start a new run with another --out")
    return {**sets, **({"epochs": epochs} if epochs is not None else {})}


def resume_run(args, device: str):
    config, circuit, training, rule_name, sha = from_config(args.resume, args.file, args.accept_mismatch)
    overrides = resume_overrides(parse_sets(args.set), args.epochs)
    resumed = training.with_values(overrides, where="--set").check()
    if resumed.compile_options() != training.compile_options():
        raise ConfigError(f"--set {', '.join(overrides)} on --resume would change how the run stores its feedback "
                          "tensors (implicit_feedback, input_feedback); start a new run with another --out")
    invocation = dict(config.get("invocation") or {})
    if args.file:
        invocation.update(file=os.path.abspath(args.file), sha256=sha, circuit_from=os.path.abspath(args.file))
    else:
        invocation.update(sha256=(config.get("experiment") or {}).get("sha256"), circuit_from="config.json")
    history = train(circuit, resumed, rule=rule_name, run_dir=args.resume, data_root=args.data_root or config["data_root"],
                    seed=config["seed"], device=device, progress=not args.no_progress, resume=True,
                    log_every=args.log_every, checkpoint_every=args.checkpoint_every, invocation=invocation,
                    overrides=overrides, accept_mismatch=args.accept_mismatch)
    if diverged(args.resume) is not None:  # continued past its divergence (e.g. at a smaller lr): no longer final
        os.remove(os.path.join(args.resume, DIVERGED))
    return history


def saved_model(run_dir: str, file: str | None, accept_mismatch: bool, flag: str):
    """(config, training, rule name, checkpoint state, model with the checkpoint's tensors) of a saved run."""
    config, circuit, training, rule_name, sha = from_config(run_dir, file, accept_mismatch, flag)
    state = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    problems = identity_problems(config, circuit=circuit, rule=rule_name, seed=config["seed"],
                                 experiment_sha=sha, data=None, state=state)
    if problems and not accept_mismatch:
        raise ConfigError(f"{flag} {run_dir}: refused: {'; '.join(problems)}; add --accept-mismatch to go on anyway")
    model = circuit.compile(seed=config["seed"], **training.compile_options())
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{run_dir}/checkpoint.pt does not fit the circuit of {file or 'config.json'}: "
                              f"{str(err).splitlines()[0]}") from None
    return config, training, rule_name, state, model


def export_connectome(run_dir: str, file: str | None = None, accept_mismatch: bool = False) -> str:
    """Write RUN_DIR/connectome.h5 from the run's checkpoint (wherever it stopped)."""
    config, _, rule_name, state, model = saved_model(run_dir, file, accept_mismatch, "--connectome")
    path = os.path.join(run_dir, "connectome.h5")
    with RunLock(run_dir).acquire():  # not while a run writes the folder
        write_connectome(path, model.connectome(), {"rule": rule_name, "seed": config["seed"],
                                                    "epoch": state["epoch"], "step": state["step"],
                                                    "circuit": model.circuit.name})
    return path


def evaluate_run(run_dir: str, file: str | None, device: str, data_root: str | None = None,
                 accept_mismatch: bool = False) -> str:
    """Test loss and accuracy of a saved run's checkpoint, as one line."""
    config, training, _, state, model = saved_model(run_dir, file, accept_mismatch, "--evaluate")
    splits = datasets.load(training.data, data_root or config["data_root"], training.val_size)
    recorded, current = config.get("data"), data_identity(training.data, splits)
    if recorded and recorded != current and not accept_mismatch:
        differ = ", ".join(sorted(k for k in current if current.get(k) != recorded.get(k)))
        raise ConfigError(f"--evaluate {run_dir}: refused: the data differ from what config.json records ({differ}); "
                          "add --accept-mismatch to evaluate on them anyway")
    model = model.to(device)
    parts = []
    for split in ("val", "test"):
        if split in splits:
            r = evaluate_split(model, splits[split].to(device), training.eval_batch_size)
            parts.append(f"{split} loss {r['loss']:.4f}, {split} accuracy {r['acc']:.4f}"
                         + (f", {split} top-5 accuracy {r['top5']:.4f}" if "top5" in r else ""))
    where = f"epoch {state['epoch']}" + (f", step {state['step']}" if state["step"] else "")
    return f"{run_dir} ({where}): {'; '.join(parts)}"


def started_run(run_dir: str, epochs: int) -> tuple[bool, list[dict] | None]:
    """(resume, history) for a run directory that may hold a checkpoint: history (and a note on
    stderr) when the run already finished ``epochs`` epochs, else whether to resume it."""
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(ckpt):
        return False, None
    state = load_checkpoint(ckpt)
    if state["epoch"] >= epochs and state["step"] == 0:
        print(f"{run_dir}: finished already ({state['epoch']} epochs), skipped", file=sys.stderr)
        return False, state["history"]
    return True, None


def run_one(args, rule: str | None, seed: int | None, run_dir: str | None, device: str, resume_if_started=False):
    sets = parse_sets(args.set)
    circuit, training, rule_name = prepare(args.file, rule, seed, sets, args.epochs)
    run_dir = run_dir or args.out or os.path.join("runs", f"{circuit.name}-{rule_name}-s{circuit.seed}")
    resume = False
    if os.path.isfile(os.path.join(run_dir, "checkpoint.pt")):
        if not resume_if_started:
            raise ConfigError(f"run directory {run_dir!r} already holds a run; choose another --out "
                              f"or continue it with --resume {run_dir}")
        resume, history = started_run(run_dir, training.epochs)
        if history is not None:
            return run_dir, history
    invocation = {"file": os.path.abspath(args.file), "sha256": sha256_file(args.file), "rule": rule,
                  "seed": circuit.seed, "sets": sets}
    history = train(circuit, training, rule=rule_name, run_dir=run_dir, data_root=args.data_root or "data",
                    seed=circuit.seed, device=device, progress=not args.no_progress, resume=resume,
                    log_every=args.log_every, checkpoint_every=args.checkpoint_every, invocation=invocation,
                    accept_mismatch=args.accept_mismatch)
    return run_dir, history


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m circuits.run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.replace("python -m circuits.run FILE: ", "", 1),
        epilog=EXAMPLES.format(resumable=textwrap.fill(", ".join(RESUMABLE), 95, subsequent_indent="  "),
                               settings=settings_help()))
    ap.add_argument("file", nargs="?", metavar="FILE",
                    help="experiment file defining `circuit` (and usually `training`); with --resume, --evaluate "
                         "and --connectome optional: it builds the circuit if its sha256 is the run's (without it, "
                         "the circuit is rebuilt from config.json)")
    ap.add_argument("--rule", help=f"replace every feedback rule: {', '.join(RULES)} (default: the file's)")
    ap.add_argument("--epochs", type=int, metavar="N", help="total number of epochs, also on --resume (default: the file's)")
    ap.add_argument("--seed", type=int, metavar="S", help="seed of the initial tensors and the data order (default: the circuit's)")
    ap.add_argument("--data-root", metavar="DIR",
                    help="folder holding the data sets in torchvision's layout, e.g. DIR/MNIST/raw (default: ./data; "
                         "on --resume/--evaluate: the run's)")
    ap.add_argument("--out", metavar="DIR",
                    help="run folder, new or empty (default: runs/CIRCUIT-RULE-sSEED); with --compare, the folder "
                         "of all runs")
    ap.add_argument("--device", default="auto", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: auto, CUDA if available)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting (repeatable; the keys are listed below)")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run in its own folder")
    ap.add_argument("--evaluate", metavar="RUN_DIR", help="print the test accuracy of a saved run's checkpoint, then stop")
    ap.add_argument("--connectome", metavar="RUN_DIR", help="write RUN_DIR/connectome.h5 from its checkpoint, then stop")
    ap.add_argument("--accept-mismatch", action="store_true",
                    help="resume although the file, circuit, rule, seed, data or checkpoint differ from what "
                         "config.json records (recorded there)")
    ap.add_argument("--compare", metavar="RULES", help="comma-separated rules to train and compare, e.g. bp,fa,pfa")
    ap.add_argument("--seeds", type=int, default=1, metavar="N", help="with --compare: seeds per rule, from --seed (default: 1)")
    ap.add_argument("--log-every", type=int, default=0, metavar="K",
                    help="also write step-level metrics every K steps to steps.jsonl (default: 0, off)")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                    help="also checkpoint every K steps (default: 0, only at the end of each epoch)")
    ap.add_argument("--summary", action="store_true", help="print the circuit and its schedule, then stop")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bar (the start-up and per-epoch lines stay; no bar is drawn when stderr is "
                         "not a terminal)")
    return ap


def check_args(args) -> None:
    for flag, value, least in (("--seeds", args.seeds, 1), ("--epochs", args.epochs, 1),
                               ("--log-every", args.log_every, 0), ("--checkpoint-every", args.checkpoint_every, 0)):
        if value is not None and value < least:
            hint = "; to test a saved run: --evaluate RUN_DIR" if flag == "--epochs" else ""
            raise ConfigError(f"{flag} {value}: must be at least {least}{hint}")
    saved = [f for f, v in (("--resume", args.resume), ("--evaluate", args.evaluate),
                            ("--connectome", args.connectome)) if v]
    if len(saved) > 1:
        raise ConfigError(f"{' and '.join(saved)}: give one of them")
    if saved:
        extra = [f for f, v in (("--rule", args.rule), ("--seed", args.seed), ("--out", args.out),
                                ("--compare", args.compare), ("--summary", args.summary)) if v not in (None, False)]
        if extra:
            raise ConfigError(f"{extra[0]} does not go with {saved[0]}: a saved run keeps its own (config.json)")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out!r} is a file, not a folder; choose another --out")


def pick_device(name: str) -> str:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    return device


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        device = pick_device(args.device)
        if args.connectome:
            print(export_connectome(args.connectome, args.file, args.accept_mismatch))
            return 0
        if args.evaluate:
            print(evaluate_run(args.evaluate, args.file, device, args.data_root, args.accept_mismatch))
            return 0
        if args.resume:
            _report(args.resume, resume_run(args, device))
            return 0
        if not args.file:
            raise ConfigError("give an experiment FILE (or FILE --resume RUN_DIR); --help lists the options")
        if args.summary:
            circuit, _, _ = prepare(args.file, args.rule, args.seed, parse_sets(args.set), args.epochs)
            print(circuit.summary())
            print()
            print(circuit.compile().schedule_summary())
            return 0
        if args.compare:
            return compare(args, device)
        run_dir, history = run_one(args, args.rule, args.seed, None, device)
        _report(run_dir, history)
        return 0
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training began: nothing to save
        print("interrupted before training began; nothing was saved", file=sys.stderr)
        return 130
    except (CircuitError, ConfigError, DataError, TrainingDiverged, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder without write permission...
        print(f"error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2


def compare(args, device: str) -> int:
    """Train each rule of ``--compare`` with each seed into OUT/RULE-sSEED (finished runs skipped,
    stopped ones resumed) and write the comparison. A run that diverges is recorded as such
    (``diverged.json`` beside its last finite checkpoint; never trained again) and the list goes
    on; the exit status is then 1, after the comparison of the others is written."""
    rules = [r.strip() for r in args.compare.split(",") if r.strip()]
    for r in rules:
        if r.lower().replace("_", "-") not in RULES:
            raise ConfigError(f"--compare: unknown rule {r!r}; known rules: {', '.join(RULES)}")
    base = args.seed or 0
    out = args.out or os.path.join("runs", "compare")
    runs, blown = {}, {}
    for r in rules:
        for s in range(base, base + args.seeds):
            run_dir = os.path.join(out, f"{r}-s{s}")
            record = diverged(run_dir)
            if record is None:
                try:
                    run_dir, history = run_one(args, r, s, run_dir, device, resume_if_started=True)
                except TrainingDiverged as err:
                    epochs = len(read_records(run_dir))
                    mark_diverged(run_dir, str(err), epochs)
                    print(f"{run_dir}: {err}; recorded in {DIVERGED}, going on with the next run", file=sys.stderr)
                    record = {"error": str(err), "epochs": epochs}
                else:
                    runs.setdefault(r, {})[s] = run_dir
                    _report(run_dir, history)
                    continue
            else:
                print(f"{run_dir}: diverged after {record['epochs']} epochs in an earlier invocation, skipped",
                      file=sys.stderr)
            blown.setdefault(r, {})[s] = record
    print(write_comparison(out, runs, blown))
    if blown:
        print(f"error: {sum(len(v) for v in blown.values())} run(s) diverged: "
              + ", ".join(f"{r}-s{s}" for r, by_seed in blown.items() for s in by_seed), file=sys.stderr)
        return 1
    return 0


def _report(run_dir: str, history: list[dict]) -> None:
    last = history[-1] if history else {}
    print(f"{run_dir}: {len(history)} epochs, test accuracy {last.get('test_acc', float('nan')):.4f}")


if __name__ == "__main__":
    sys.exit(main())
