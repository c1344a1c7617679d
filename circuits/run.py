"""``python -m circuits.run FILE``: train the circuit a DSL file defines.

    python -m circuits.run experiments/mnist_mlp.py --rule pfa --epochs 1 --seed 0 \\
        --data-root ../shared/data --out runs/mnist-pfa
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys

import torch

from circuits.circuit import Circuit
from circuits.errors import CircuitError, ConfigError, DataError
from circuits.train import TrainingDiverged, train
from circuits.training import Training
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m circuits.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="experiment DSL file defining `circuit` (and usually `training`)")
    ap.add_argument("--rule", help=f"replace every feedback rule: {', '.join(RULES)}")
    ap.add_argument("--epochs", type=int, help="number of epochs (default: the file's)")
    ap.add_argument("--seed", type=int, help="seed for initial tensors and data order (default: the circuit's)")
    ap.add_argument("--data-root", default="data", help="folder holding the data sets (torchvision layout)")
    ap.add_argument("--out", help="run directory (default runs/CIRCUIT-RULE-sSEED)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    ap.add_argument("--summary", action="store_true", help="print the circuit and its schedule, then stop")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        circuit, training = load_experiment(args.file)
        if args.seed is not None:
            circuit.seed = args.seed
        if args.rule:
            try:
                rule = make_rule(args.rule)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            circuit = circuit.with_rule(rule)
            rule_name = rule.name
        else:
            rules = circuit.rules()
            rule_name = rules.pop() if len(rules) == 1 else "mixed"
        training = training.resolve(rule_name).with_values(parse_sets(args.set))
        if args.epochs is not None:
            training = training.with_values({"epochs": args.epochs}, where="--epochs")
        if args.summary:
            print(circuit.summary())
            print()
            print(circuit.compile().schedule_summary())
            return 0
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        run_dir = args.out or os.path.join("runs", f"{circuit.name}-{rule_name}-s{circuit.seed}")
        if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            raise ConfigError(f"run directory {run_dir!r} already holds a run; choose another --out")
        history = train(circuit, training, rule=rule_name, run_dir=run_dir, data_root=args.data_root,
                        seed=circuit.seed, device=device, progress=not args.no_progress)
        last = history[-1] if history else {}
        print(f"{run_dir}: {len(history)} epochs, test accuracy {last.get('test_acc', float('nan')):.4f}")
        return 0
    except (CircuitError, ConfigError, DataError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
