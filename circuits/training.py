"""The training specification of a DSL file: data, schedule and optimiser settings."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from circuits.errors import ConfigError
from plasticity.optim import MANHATTAN_SIGNS


@dataclass
class Training:
    """How to train a circuit (SGD with momentum, as in the PFA paper).

    ``first_epoch_weight_decay`` replaces ``weight_decay`` in epoch 0 (W and plastic feedback
    alike). ``feedback_lr`` / ``feedback_weight_decay`` set the plastic feedback group (None: the
    same as W). ``per_rule`` maps a rule name to overrides of any field, e.g. the paper's
    ``{"pfa": {"first_epoch_weight_decay": 0.03}}``. ``val_size`` cells of the training set are
    held out for validation (0: none); ``train_size`` > 0 keeps only the first cells of the
    training set (smoke runs and tests). ``implicit_feedback``: let PFA hold R as
    WᵀBᵀ + a_t E₀ (exact, and as fast as BP) whenever W and R share their SGD settings.
    ``input_feedback``: the projections out of the input get their rule's feedback tensors too
    (learned, and their alignment recorded, as in the PFA paper's Fig. 2; W's updates unchanged,
    except that WM's and PAL's first-layer noise draws shift the random stream the others draw from).
    ``keep_every`` > 0: the forward weights at epoch 0 and every ``keep_every`` epochs are kept in
    run_dir/trajectory/epoch-NNNN.pt (for the weight-trajectory probe, ``probes.trajectory``).
    ``batch_manhattan``: the SGD step uses sign(∂W) (Liao et al. 2016; ``manhattan_sign``: where
    the sign is taken relative to weight decay and momentum, "gradient", "decayed" or "step",
    see ``plasticity.optim.BatchManhattanSGD``). ``amp``: forward and
    backward under bfloat16 autocast (None: on for CUDA devices, off on the CPU). ``compile``: run
    the training forward (and with it every rule's backward) through ``torch.compile`` with this
    mode: "default", "reduce-overhead" (CUDA graphs on a GPU) or "max-autotune" (None: eager).
    ``nan_check_every``: read whether the loss stayed finite every k steps (a device sync), and
    before every checkpoint, so a diverged state is never saved; 1: every step, before the step
    is taken (None: 1 on the CPU, 100 on a GPU, where a per-step read would stall the device).
    """

    def compile_options(self) -> dict:
        """The ``Circuit.compile`` options these settings ask for (they set which tensors a run stores)."""
        return {"implicit_feedback": self.implicit_feedback_ok(), "input_feedback": self.input_feedback}

    def implicit_feedback_ok(self) -> bool:
        """Implicit feedback is exact only when W and the feedback share lr and weight decay."""
        return (self.implicit_feedback and self.feedback_lr is None and self.feedback_weight_decay is None
                and not self.batch_manhattan)

    data: str = "mnist"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    first_epoch_weight_decay: float | None = None
    feedback_lr: float | None = None
    feedback_weight_decay: float | None = None
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    val_size: int = 0
    train_size: int = 0
    eval_batch_size: int = 1000
    implicit_feedback: bool = True
    input_feedback: bool = False
    keep_every: int = 0
    batch_manhattan: bool = False
    manhattan_sign: str = "gradient"
    amp: bool | None = None
    compile: str | None = None
    nan_check_every: int | None = None
    per_rule: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, rule: str) -> "Training":
        """The settings for ``rule``: this spec with ``per_rule[rule]`` applied."""
        overrides = dict(self.per_rule.get(rule, {}))
        resolved = self.with_values(overrides, where=f"per_rule[{rule!r}]")
        resolved.per_rule = {}
        return resolved

    def with_values(self, values: dict[str, Any], where: str = "--set") -> "Training":
        """A copy with ``values`` set; strings are parsed by the field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, value in values.items():
            if key not in fields or key == "per_rule":
                raise ConfigError(f"{where}: unknown training setting {key!r} (settings: {', '.join(k for k in fields if k != 'per_rule')})")
            changes[key] = _coerce(key, value, getattr(self, key), fields[key].type, where)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> "Training":
        """Raise ConfigError naming the first setting that cannot train (``lr=-1``, ``batch_size=0``...)."""
        for key, test, need in LIMITS:
            value = getattr(self, key)
            if value is None:
                continue
            if (isinstance(value, float) and not math.isfinite(value)) or not test(value):
                raise ConfigError(f"training setting {key}={value!r} {need}")
        if any(not isinstance(m, int) or m < 1 for m in self.lr_milestones):
            raise ConfigError(f"training setting lr_milestones={self.lr_milestones!r} must list epochs >= 1")
        if self.manhattan_sign not in MANHATTAN_SIGNS:
            raise ConfigError(f"training setting manhattan_sign={self.manhattan_sign!r} must be one of "
                              f"{', '.join(MANHATTAN_SIGNS)}")
        if self.nesterov and self.momentum <= 0:
            raise ConfigError("training setting nesterov=True needs momentum > 0")
        return self


MEANING = {
    "data": "data set: mnist, fashion_mnist, cifar10, cifar100, imagenet, fake_cifar10, fake_imagenet (options after ':')",
    "epochs": "total number of epochs",
    "batch_size": "training batch size",
    "lr": "learning rate of W (and of plastic feedback unless feedback_lr)",
    "momentum": "SGD momentum, in [0, 1)",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 weight decay",
    "first_epoch_weight_decay": "weight decay of epoch 1 only (PFA's paper: 0.03)",
    "feedback_lr": "learning rate of plastic feedback (B, R); none: lr",
    "feedback_weight_decay": "weight decay of plastic feedback; none: weight_decay",
    "lr_milestones": "epochs after which lr is multiplied by lr_gamma, e.g. 20,30",
    "lr_gamma": "factor of lr at each milestone",
    "val_size": "training cells held out for validation",
    "train_size": "keep only the first N training cells (0: all)",
    "eval_batch_size": "batch size of evaluation",
    "implicit_feedback": "hold PFA's/KP's feedback implicitly when exact (faster)",
    "input_feedback": "feedback tensors on the input's projections too, to record their alignment (Fig. 2)",
    "keep_every": "keep the forward weights every N epochs (and at epoch 0) in trajectory/ (0: never)",
    "batch_manhattan": "step by sign(gradient) (Liao et al. 2016)",
    "manhattan_sign": "batch Manhattan: sign of the gradient, of gradient + decay (decayed) or of the momentum step",
    "amp": "bfloat16 autocast; none: on for CUDA",
    "compile": "torch.compile mode: default, reduce-overhead, max-autotune; none: eager",
    "nan_check_every": "read the loss's finiteness every N steps (a device sync); none: 1 on CPU, 100 on GPU",
}


def settings_help() -> str:
    """Every training setting with its default and meaning, for ``--help``."""
    return "\n".join(f"  {f.name:<25} {str(_default(f)):<8} {MEANING.get(f.name, '')}"
                     for f in dataclasses.fields(Training) if f.name != "per_rule")


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


_number = (int, float)
FLOAT32_MAX = 3.4028234663852886e38  # an lr beyond it overflows the optimizer's float32 step
# (setting, test, what it must be): the limits ``Training.check`` enforces
LIMITS = [
    ("epochs", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1 (to test a saved run: --evaluate RUN_DIR)"),
    ("batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1"),
    ("eval_batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1"),
    ("nan_check_every", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1 (or none: 1 on the CPU, 100 on a GPU)"),
    ("keep_every", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0 (0: keep no trajectory)"),
    ("lr", lambda v: isinstance(v, _number) and 0 < v <= FLOAT32_MAX, "must be > 0 (and at most 3.4e38)"),
    ("feedback_lr", lambda v: isinstance(v, _number) and 0 <= v <= FLOAT32_MAX,
     "must be >= 0 (and at most 3.4e38; or none: the same as lr)"),
    ("momentum", lambda v: isinstance(v, _number) and 0 <= v < 1, "must be in [0, 1)"),
    ("weight_decay", lambda v: isinstance(v, _number) and v >= 0, "must be >= 0"),
    ("first_epoch_weight_decay", lambda v: isinstance(v, _number) and v >= 0, "must be >= 0 (or none)"),
    ("feedback_weight_decay", lambda v: isinstance(v, _number) and v >= 0, "must be >= 0 (or none)"),
    ("lr_gamma", lambda v: isinstance(v, _number) and v > 0, "must be > 0"),
    ("val_size", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0"),
    ("train_size", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0 (0: the whole training set)"),
]


def _coerce(key: str, value: Any, current: Any, annotation: str, where: str) -> Any:
    if not isinstance(value, str):
        return value
    bad = ConfigError(f"{where}: {key}={value!r} is not a valid {annotation}")
    if value.lower() in ("none", "null") and "None" in str(annotation):
        return None
    if "list" in str(annotation):
        try:
            parsed = json.loads(value) if value.startswith("[") else [int(v) for v in value.split(",") if v]
        except ValueError:
            raise bad from None
        return parsed
    base = str(annotation).split("|")[0].strip()
    try:
        if base == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if base == "int":
            return int(value)
        if base == "float":
            return float(value)
    except ValueError:
        raise bad from None
    return value
