"""The MNIST MLP table (issue 20's "validation-split variant"): every rule with the PFA paper's
MNIST settings (``experiments/mnist_mlp.py``: 40 epochs, batch 64, SGD lr 0.01 halved at epochs
20 and 30, momentum 0.9, weight decay 1e-4; PFA/PFA-o 0.03 in the first epoch), but trained on
the 50,000 training images left after holding out the last 10,000 as a validation split. The
number reported is the test accuracy at the epoch with the best *validation* accuracy: a
best-epoch number whose epoch is not chosen on the images it is scored on (the main table's
best-epoch column, like the paper's, is chosen on the test images themselves).

    python experiments/mnist_val.py --data-root ../shared/data --work runs/mnist_val --shard 0/2
    python experiments/mnist_val.py --data-root ../shared/data --work runs/mnist_val --shard 1/2
    python experiments/mnist_val.py --report-only     # the page from the committed records

Seed-major (every rule's seed 0 first); each finished run's records are copied to
OUT/runs/RULE-sSEED at once; a stopped run resumes, a diverged one is recorded and skipped. The
page is ``experiments/mnist_results.py``'s table for OUT (its "test accuracy at the best
validation epoch" column).
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from circuits.sweep import Cell, run_cells_from_args, sweep_parser  # noqa: E402
from plasticity import make_rule  # noqa: E402

FILE = os.path.join(HERE, "mnist_mlp.py")
RULES = ("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "ifa", "pfa", "pfa-o")
VAL_SIZE = 10_000


def cells(rules) -> dict[str, Cell]:
    """One cell per rule: the rule with its defaults and the validation split held out."""
    return {rule: Cell(make_rule(rule), sets={"val_size": VAL_SIZE}) for rule in rules}


def main(argv=None) -> int:
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "mnist_val"))
    ap.set_defaults(seeds="0,1,2")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated (default: the twelve)")
    args = ap.parse_args(argv)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        ap.error(f"unknown rule(s) {', '.join(unknown)} (known: {', '.join(RULES)})")
    run_cells_from_args(FILE, cells(rules), args, keep_going=True)
    page = [sys.executable, os.path.join(HERE, "mnist_results.py"), "--out", args.out, "--profile", "mlp",
            "--epochs", str(args.epochs or 40)]
    return subprocess.run(page, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
