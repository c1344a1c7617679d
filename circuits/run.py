"""``python -m circuits.run FILE``: train the circuit a DSL file defines.

    python -m circuits.run experiments/mnist_mlp.py --rule pfa --epochs 1 --seed 0 \\
        --data-root ../shared/data --out runs/mnist-pfa
    python -m circuits.run --resume runs/mnist-pfa --epochs 2
    python -m circuits.run --connectome runs/mnist-pfa      # connectome.h5 from the checkpoint
    python -m circuits.run experiments/mnist_mlp.py --compare bp,fa,pfa --seeds 3 --out runs/cmp
    torchrun --nproc_per_node=2 -m circuits.run experiments/mnist_mlp.py ...
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys

import torch

from circuits.circuit import Circuit
from circuits.compare import write_comparison
from circuits.errors import CircuitError, ConfigError, DataError
from circuits.train import CheckpointError, Interrupted, TrainingDiverged, load_checkpoint, train
from circuits.training import Training
from connectomes.files import write_connectome
from plasticity import RULES, make_rule


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
    return circuit, training, rule_name


def from_config(run_dir: str):
    """(config, circuit, training, rule name) of an existing run directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir}: no config.json there (is it a run directory?)")
    with open(path) as f:
        config = json.load(f)
    inv = config.get("invocation") or {}
    if "file" not in inv:
        raise ConfigError(f"{run_dir}: config.json does not say which experiment file made it")
    circuit, _, rule_name = prepare(inv["file"], inv.get("rule"), config["seed"], {}, None)
    training = Training(**{**config["training"], "per_rule": {}})
    return config, circuit, training, rule_name


def resume_run(run_dir: str, epochs: int | None, device: str, progress: bool, log_every: int, checkpoint_every: int):
    config, circuit, training, rule_name = from_config(run_dir)
    if epochs is not None:
        training = training.with_values({"epochs": epochs}, where="--epochs")
    return train(circuit, training, rule=rule_name, run_dir=run_dir, data_root=config["data_root"],
                 seed=config["seed"], device=device, progress=progress, resume=True, log_every=log_every,
                 checkpoint_every=checkpoint_every, invocation=config["invocation"])


def export_connectome(run_dir: str) -> str:
    """Write RUN_DIR/connectome.h5 from the run's checkpoint (wherever it stopped)."""
    config, circuit, training, rule_name = from_config(run_dir)
    state = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    model = circuit.compile(seed=config["seed"], implicit_feedback=training.implicit_feedback_ok())
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir}/checkpoint.pt does not fit the circuit of {config['invocation']['file']}: {err}") from None
    path = os.path.join(run_dir, "connectome.h5")
    write_connectome(path, model.connectome(), {"rule": rule_name, "seed": config["seed"], "epoch": state["epoch"],
                                                "step": state["step"], "circuit": circuit.name})
    return path


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
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    resume = False
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) or os.path.exists(ckpt):
        if not resume_if_started:
            raise ConfigError(f"run directory {run_dir!r} already holds a run; choose another --out "
                              f"or continue it with --resume {run_dir}")
        resume, history = started_run(run_dir, training.epochs)
        if history is not None:
            return run_dir, history
    invocation = {"file": os.path.abspath(args.file), "rule": rule, "seed": circuit.seed, "sets": sets}
    history = train(circuit, training, rule=rule_name, run_dir=run_dir, data_root=args.data_root,
                    seed=circuit.seed, device=device, progress=not args.no_progress, resume=resume,
                    log_every=args.log_every, checkpoint_every=args.checkpoint_every, invocation=invocation)
    return run_dir, history


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m circuits.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="experiment DSL file defining `circuit` (and usually `training`)")
    ap.add_argument("--rule", help=f"replace every feedback rule: {', '.join(RULES)}")
    ap.add_argument("--epochs", type=int, help="total number of epochs (default: the file's)")
    ap.add_argument("--seed", type=int, help="seed for initial tensors and data order (default: the circuit's)")
    ap.add_argument("--data-root", default="data", help="folder holding the data sets (torchvision layout)")
    ap.add_argument("--out", help="run directory (default runs/CIRCUIT-RULE-sSEED); with --compare, the folder of all runs")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run in its own directory")
    ap.add_argument("--connectome", metavar="RUN_DIR", help="write RUN_DIR/connectome.h5 from its checkpoint, then stop")
    ap.add_argument("--compare", metavar="RULES", help="comma-separated rules to train and compare")
    ap.add_argument("--seeds", type=int, default=1, help="with --compare: seeds per rule (from --seed, default 0)")
    ap.add_argument("--log-every", type=int, default=0, metavar="K", help="step-level metrics every K steps")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="K", help="also checkpoint every K steps")
    ap.add_argument("--summary", action="store_true", help="print the circuit and its schedule, then stop")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
        try:
            torch.device(device)
        except RuntimeError:
            raise ConfigError(f"--device {device!r} is not a device (cpu, cuda, cuda:N or auto)") from None
        if args.connectome:
            print(export_connectome(args.connectome))
            return 0
        if args.resume:
            history = resume_run(args.resume, args.epochs, device, not args.no_progress,
                                 args.log_every, args.checkpoint_every)
            _report(args.resume, history)
            return 0
        if not args.file:
            raise ConfigError("give an experiment FILE (or --resume RUN_DIR)")
        if args.summary:
            circuit, _, _ = prepare(args.file, args.rule, args.seed, parse_sets(args.set), args.epochs)
            print(circuit.summary())
            print()
            print(circuit.compile().schedule_summary())
            return 0
        if args.compare:
            rules = [r.strip() for r in args.compare.split(",") if r.strip()]
            for r in rules:
                if r.lower().replace("_", "-") not in RULES:
                    raise ConfigError(f"--compare: unknown rule {r!r}; known rules: {', '.join(RULES)}")
            base = args.seed or 0
            out = args.out or os.path.join("runs", "compare")
            runs = {}
            for r in rules:
                for s in range(base, base + args.seeds):
                    run_dir, history = run_one(args, r, s, os.path.join(out, f"{r}-s{s}"), device, resume_if_started=True)
                    runs.setdefault(r, {})[s] = run_dir
                    _report(run_dir, history)
            print(write_comparison(out, runs))
            return 0
        run_dir, history = run_one(args, args.rule, args.seed, None, device)
        _report(run_dir, history)
        return 0
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except (CircuitError, ConfigError, DataError, TrainingDiverged, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _report(run_dir: str, history: list[dict]) -> None:
    last = history[-1] if history else {}
    print(f"{run_dir}: {len(history)} epochs, test accuracy {last.get('test_acc', float('nan')):.4f}")


if __name__ == "__main__":
    sys.exit(main())
