"""The training loop: SGD over a compiled circuit, writing a run directory.

    run_dir/config.json          the resolved circuit, settings, invocation, identity and resumes
    run_dir/metrics.jsonl        one JSON object per epoch (``error_norms``: ‖e‖ per population on
                                 the probe batch, ``CompiledCircuit.error_norms``)
    run_dir/initial.json         the same record at initialisation (epoch 0: before any step)
    run_dir/trajectory/          the forward weights and state every ``keep_every`` epochs (if asked)
    run_dir/steps.jsonl          one per ``log_every`` steps (if asked): loss, lr, projection metrics
    run_dir/checkpoint.pt        everything needed to continue exactly (written atomically; only
                                 ever a finite state: a diverged one never replaces a good one)
    run_dir/connectome.h5        every synaptic tensor, rewritten with every epoch's checkpoint
    run_dir/graph.json, .graphml the population graph (networkx node-link JSON, GraphML)
    run_dir/tensorboard/         TensorBoard event files
    run_dir/.lock                held (flock) while a process writes the folder

A run stopped by SIGINT/SIGTERM saves where it stands (mid-epoch) and can be resumed; the data
order of an epoch is a function of (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import platform
import signal
import sys
import time

import torch
from tqdm.auto import tqdm

from circuits import data as datasets
from circuits import distributed
from circuits.errors import ConfigError
from circuits.rundir import RunLock, check_target, fingerprint, identity_problems, read_config, write_config
from circuits.training import Training
from connectomes.files import write_connectome, write_graph
from plasticity import set_epoch_weight_decay
from plasticity.optim import BatchManhattanSGD

CHECKPOINT_VERSION = 1
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")
# settings ``--resume --set`` may change: neither the data nor the layout of the saved tensors
RESUMABLE = ("epochs", "lr", "momentum", "nesterov", "weight_decay", "first_epoch_weight_decay", "feedback_lr",
             "feedback_weight_decay", "lr_milestones", "lr_gamma", "eval_batch_size", "amp", "compile",
             "keep_every", "nan_check_every")


class TrainingDiverged(RuntimeError):
    """The loss or a weight became NaN or infinite."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; the run saved a checkpoint where it stood."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or from another run, or one that cannot be written."""


def group_settings(training: Training) -> dict[str, dict]:
    """The hyper-parameters of the "forward" group (every W and bias) and of the "feedback"
    group (plastic feedback tensors): learning rate and weight-decay schedule."""
    explicit_wd = training.feedback_weight_decay is not None
    return {
        "forward": {"lr": training.lr, "weight_decay": training.weight_decay,
                    "first_epoch_weight_decay": training.first_epoch_weight_decay},
        "feedback": {"lr": training.lr if training.feedback_lr is None else training.feedback_lr,
                     "weight_decay": training.feedback_weight_decay if explicit_wd else training.weight_decay,
                     "first_epoch_weight_decay": None if explicit_wd else training.first_epoch_weight_decay},
    }


def make_optimizer(model, training: Training) -> torch.optim.SGD:
    """SGD with two parameter groups: "forward" (every W and bias) and "feedback" (plastic
    feedback tensors), each with its own learning rate and weight-decay schedule."""
    settings = group_settings(training)
    groups = [{"params": model.forward_parameters(), "name": "forward", **settings["forward"]}]
    feedback = model.feedback_parameters()
    if feedback:
        groups.append({"params": feedback, "name": "feedback", **settings["feedback"]})
    if training.batch_manhattan:
        return BatchManhattanSGD(groups, sign=training.manhattan_sign, lr=training.lr, momentum=training.momentum,
                                 nesterov=training.nesterov)
    return torch.optim.SGD(groups, lr=training.lr, momentum=training.momentum, nesterov=training.nesterov)


def apply_settings(optimizer, scheduler, training: Training, epoch: int) -> None:
    """Give a restored optimizer and scheduler the settings of ``training`` (a resumed run with
    overrides), as if the run had had them from the start, from 0-based ``epoch`` on."""
    settings = group_settings(training)
    decays = sum(1 for m in training.lr_milestones if m <= epoch)
    for group in optimizer.param_groups:
        spec = settings[group["name"]]
        group.update(initial_lr=spec["lr"], lr=spec["lr"] * training.lr_gamma ** decays,
                     momentum=training.momentum, nesterov=training.nesterov,
                     base_weight_decay=spec["weight_decay"], weight_decay=spec["weight_decay"],
                     first_epoch_weight_decay=spec["first_epoch_weight_decay"])
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    scheduler.milestones = type(scheduler.milestones)(training.lr_milestones)
    scheduler.gamma = training.lr_gamma


NAN_CHECK_ACCELERATOR = 100  # default steps between NaN checks on a GPU (a check is a device sync)
TOP5_FROM = 100  # readouts of at least this many classes (CIFAR-100, ImageNet) also get top-5 accuracy


@torch.no_grad()
def evaluate_split(model, split, batch_size: int, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """{"loss": mean loss, "acc": top-1 accuracy in [0, 1]} of the model on a split, and "top5"
    (the true class among the five highest outputs) when the readout has ≥ ``TOP5_FROM`` classes.

    ``shard`` = (rank, world size): each process evaluates (and reads) its block of the split and
    the sums are all-reduced (every process must call it), giving every process the whole split's numbers."""
    was_training = model.training
    model.eval()
    loss, correct, top5, seen, wide = 0.0, 0, 0, 0, 0
    for x, y in datasets.batches(split, batch_size, shard=shard):
        out = model(x)
        loss += model.loss(out, y).item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
        wide = int(out.shape[1] >= TOP5_FROM)
        if wide:
            top5 += (out.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    if shard[1] > 1:
        loss, correct, top5, seen, wide = distributed.all_sum([loss, correct, top5, seen, wide], _device_of(model))
    if seen != len(split):
        raise RuntimeError(f"evaluation read {seen:g} of the split's {len(split)} items (shard {shard})")
    result = {"loss": loss / len(split), "acc": correct / len(split)}
    if wide:
        result["top5"] = top5 / len(split)
    return result


def _device_of(model):
    """Where the model's tensors are: the device of its collectives (NCCL needs CUDA tensors)."""
    return next(model.parameters()).device


def evaluate(model, split, batch_size: int) -> tuple[float, float]:
    """(mean loss, top-1 accuracy in [0, 1]) of the model on a split."""
    r = evaluate_split(model, split, batch_size)
    return r["loss"], r["acc"]


def evaluated(model, split, batch_size: int, name: str, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """``evaluate_split`` as record keys: NAME_loss, NAME_acc (and NAME_top5)."""
    return {f"{name}_{k}": v for k, v in evaluate_split(model, split, batch_size, shard).items()}


@torch.no_grad()
def first_non_finite(model, x) -> str:
    """Name the first projection whose weights or output are NaN/inf on batch ``x``."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"non-finite weights in {name}"
    found = []
    hooks = [proj.register_forward_hook(
        lambda mod, inp, out: found.append(mod.name) if not found and not torch.isfinite(out).all() else None)
        for proj in model.projections.values()]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return f"non-finite output of projection {found[0]!r}" if found else "a non-finite loss"


@torch.no_grad()
def non_finite_tensor(model, optimizer) -> str | None:
    """The first model tensor (weights, feedback tensors, buffers) or optimizer state (momentum)
    holding a NaN or an infinity, named; None when every one is finite."""
    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            return f"non-finite values in {name}"
    names = {id(p): n for n, p in model.named_parameters()}
    for p, st in optimizer.state.items():
        for key, t in st.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                return f"non-finite optimizer {key} of {names.get(id(p), 'a parameter')}"
    return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def save_checkpoint(path: str, state: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``. A
    failed write (a full disk) removes the temporary file and leaves ``path`` as it was."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        _remove(tmp)
        code = getattr(err, "errno", None)
        reason = os.strerror(code) if code else str(err).splitlines()[0]
        hint = "free space, then continue with --resume" if code in (errno.ENOSPC, errno.EDQUOT) else \
            "continue with --resume once it can be written"
        raise CheckpointError(f"could not write the checkpoint {path} ({reason}); the temporary file was "
                              f"removed and the previous checkpoint is untouched: {hint}") from None


def load_checkpoint(path: str) -> dict:
    """A checkpoint read with ``weights_only=True`` (tensors and plain data, no code)."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that is more than tensors and data
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated, or not a plain checkpoint "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              "the files beside it are untouched") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a circuits checkpoint (version {CHECKPOINT_VERSION})")
    return state


class _Signals:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.caught = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._catch)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _catch(self, signum, frame):
        self.caught = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _tensorboard(run_dir: str, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; keep training if it is absent
        return None
    return SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=purge_step)


def data_identity(name: str, splits: dict) -> dict:
    """What config.json records of the data: sizes, and a hash of the labels of in-memory sets."""
    out = {"name": name, **{k: len(v) for k, v in sorted(splits.items())}}
    labels = [splits[k].y for k in sorted(splits) if isinstance(splits[k], datasets.Split)]
    if labels:
        h = hashlib.sha256()
        for y in labels:
            h.update(y.cpu().numpy().tobytes())
        out["labels_sha256"] = h.hexdigest()
    return out


def check_classes(circuit, splits: dict, data: str) -> None:
    """Refuse a readout with fewer cells than the data set has classes."""
    classes = datasets.num_classes(splits)
    for p in circuit.populations():
        if p.kind == "readout" and classes and p.size < classes:
            raise ConfigError(f"readout {p.name!r} has {p.size} cells but data set {data!r} has {classes} "
                              f"classes: give it at least {classes}")


FRESH = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}


def train(circuit, training: Training, *, rule: str, run_dir: str, data_root: str, seed: int,
          device: str = "cpu", progress: bool = True, splits=None, resume: bool = False,
          log_every: int = 0, checkpoint_every: int = 0, invocation: dict | None = None,
          overrides: dict | None = None, accept_mismatch: bool = False) -> list[dict]:
    """Train ``circuit`` with ``training`` (already resolved for ``rule``) into ``run_dir``.

    ``resume``: continue from ``run_dir/checkpoint.pt`` (``training.epochs`` is the total) after
    checking that circuit, rule, seed, data and experiment file are the run's (``accept_mismatch``:
    continue anyway, recorded); ``overrides``: the settings changed for this resume (recorded).
    ``checkpoint_every``: also checkpoint every k steps. Returns the metrics, one dict per epoch.
    """
    training.check()
    if training.compile not in COMPILE_MODES:
        raise ConfigError(f"training setting compile={training.compile!r}: not a torch.compile mode "
                          f"(one of {', '.join(map(repr, COMPILE_MODES))})")
    device = distributed.setup(device)
    trainer = _Trainer(circuit, training, rule=rule, run_dir=run_dir, seed=seed, device=device,
                       progress=progress, log_every=log_every, checkpoint_every=checkpoint_every,
                       invocation=invocation or {})
    with trainer.lock:
        if trainer.main:
            check_target(run_dir, resume)
            if resume:
                trainer.lock.acquire()
        trainer.setup(data_root, splits, resume, accept_mismatch, overrides)
        if trainer.main:
            trainer.lock.acquire().clear_temporaries()
            check_target(run_dir, resume)
            trainer.start_folder(data_root, overrides or {})
        return trainer.run()


class _Trainer:
    """One training run: its model, optimizer, data and run folder."""

    def __init__(self, circuit, training, *, rule, run_dir, seed, device, progress, log_every,
                 checkpoint_every, invocation):
        self.circuit, self.training, self.rule, self.run_dir, self.seed = circuit, training, rule, run_dir, seed
        self.device, self.log_every, self.checkpoint_every, self.invocation = device, log_every, checkpoint_every, invocation
        self.rank, self.world = distributed.world()
        self.main = self.rank == 0
        self.progress = progress and self.main and sys.stderr.isatty()  # no bar written into a log file
        self.lock = RunLock(run_dir)
        self.ckpt_path = os.path.join(run_dir, "checkpoint.pt")
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.steps_path = os.path.join(run_dir, "steps.jsonl")
        self.state, self.last_good = None, None

    # -- set-up --------------------------------------------------------------------------------
    def setup(self, data_root: str, splits, resume: bool, accept_mismatch: bool = False,
              overrides: dict | None = None) -> None:
        training = self.training
        if resume:
            if not os.path.exists(self.ckpt_path):
                raise CheckpointError(f"{self.run_dir} has no checkpoint.pt: the run stopped before its first "
                                      "checkpoint; start it again with the same command (the folder is reused)")
            self.state = load_checkpoint(self.ckpt_path)
        torch.manual_seed(self.seed)
        self.model = self.circuit.compile(seed=self.seed, **training.compile_options()).to(self.device)
        self.optimizer = make_optimizer(self.model, training)
        self.model.attach_optimizer(self.optimizer)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, training.lr_milestones, training.lr_gamma)
        if splits is None:
            splits = datasets.load(training.data, data_root, training.val_size)
        check_classes(self.circuit, splits, training.data)
        self.data = data_identity(training.data, splits)
        if training.train_size:
            splits = {**splits, "train": splits["train"].head(training.train_size)}
        self.splits = {k: v.to(self.device) for k, v in splits.items()}
        self.steps_per_epoch = math.ceil(len(self.splits["train"]) / training.batch_size)
        self.history, self.start_epoch, self.start_step, self.partial = [], 0, 0, dict(FRESH)
        if self.state is not None:
            self.check_identity(accept_mismatch)
            self.restore(self.state)
            if training.epochs < self.start_epoch:
                raise ConfigError(f"--epochs {training.epochs}: the run in {self.run_dir} has done "
                                  f"{self.start_epoch} epochs already (--epochs counts the total)")
            if overrides:  # the restored optimizer and scheduler take the new settings
                apply_settings(self.optimizer, self.scheduler, training, self.start_epoch)

    def check_identity(self, accept_mismatch: bool) -> None:
        """Refuse to resume a run that is not the one config.json records (unless accepted)."""
        self.config = read_config(self.run_dir)
        self.problems = identity_problems(self.config, circuit=self.circuit, rule=self.rule, seed=self.seed,
                                          experiment_sha=self.invocation.get("sha256"), data=self.data,
                                          state=self.state)
        if self.problems and not accept_mismatch:
            raise ConfigError(f"--resume {self.run_dir}: refused: {'; '.join(self.problems)}. A run continues "
                              "only as it started; to continue anyway, deliberately, add --accept-mismatch "
                              "(recorded in config.json), or start a new run with another --out")

    def restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as err:
            detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
            raise CheckpointError(f"checkpoint {self.ckpt_path} does not fit this circuit: {detail}") from None
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.history, self.start_epoch, self.start_step = state["history"], state["epoch"], state["step"]
        self.partial = state["partial"]
        self.last_good = (state["epoch"], state["step"])

    def start_folder(self, data_root: str, overrides: dict) -> None:
        """Write (fresh) or check and extend (resumed) config.json; the metrics follow the checkpoint."""
        if self.state is None:
            write_config(self.run_dir, self.config(data_root))
            write_graph(self.circuit.graph, os.path.join(self.run_dir, "graph.json"))
            write_graph(self.circuit.graph, os.path.join(self.run_dir, "graph.graphml"))
        else:
            self.record_resume(overrides)
        with open(self.metrics_path, "w") as f:  # the checkpoint is the truth: drop any line written after it
            f.writelines(json.dumps(r) + "\n" for r in self.history)
        if self.state is None and self.log_every:
            open(self.steps_path, "w").close()
        line = self.startup_line(data_root)
        if overrides:
            line += "; overrides " + ", ".join(f"{k}={v}" for k, v in overrides.items()) + " (recorded in config.json)"
        if getattr(self, "problems", None):
            line += "; accepted: " + "; ".join(self.problems)
        print(line, file=sys.stderr, flush=True)

    def config(self, data_root: str) -> dict:
        inv = self.invocation
        return {"circuit": self.circuit.describe(), "fingerprint": fingerprint(self.circuit),
                "training": self.training.to_dict(), "rule": self.rule, "seed": self.seed,
                "device": self.device, "world_size": self.world, "data_root": os.path.abspath(data_root),
                "data": self.data, "experiment": {"file": inv.get("file"), "sha256": inv.get("sha256")},
                "invocation": inv, "command": sys.argv, "python": platform.python_version(),
                "torch": torch.__version__, "resumes": []}

    def record_resume(self, overrides: dict) -> None:
        """Record the resume in config.json: where, when, its overrides and any accepted mismatch."""
        config = self.config
        config.setdefault("resumes", []).append({
            "at": {"epoch": self.start_epoch, "step": self.start_step},
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "overrides": overrides, "accepted_mismatch": self.problems, "command": sys.argv,
            "circuit_from": self.invocation.get("circuit_from")})
        config["training"] = self.training.to_dict()
        write_config(self.run_dir, config)

    def startup_line(self, data_root: str) -> str:
        c, n_params = self.circuit, sum(p.numel() for p in self.model.parameters())
        sizes = ", ".join(f"{len(v)} {k}" for k, v in self.splits.items())
        where = (f"resumed at epoch {self.start_epoch + 1}, step {self.start_step}"
                 if self.state is not None else "new run")
        source = "generated" if self.training.data.startswith("fake_") else f"from {os.path.abspath(data_root)}"
        return (f"circuits.run: circuit {c.name!r} ({len(c.populations())} populations, {len(c.projections())} "
                f"projections, {n_params:,} parameters), rule {self.rule}, seed {self.seed}; data "
                f"{self.training.data} {source} ({sizes}); device {self.device}; "
                f"run folder {self.run_dir} ({where}); {self.training.epochs} epochs")

    # -- checkpoints -----------------------------------------------------------------------------
    def good_state(self) -> str:
        if self.last_good is None:
            return "no checkpoint was written"
        epoch, step = self.last_good
        what = "the initial state" if epoch == step == 0 else f"after epoch {epoch}" + (f", step {step}" if step else "")
        return f"the last good state is in {self.ckpt_path} ({what}: epoch {epoch}, step {step})"

    def diverged(self, epoch: int, step: int, where: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at epoch {epoch + 1}, step {step}: {where}; nothing was saved over the last "
            f"good state; {self.good_state()}. To continue from it with a smaller learning rate: "
            f"python -m circuits.run --resume {self.run_dir} --set lr={self.training.lr / 10:g}")

    def require_finite(self, epoch: int, step: int) -> None:
        bad = non_finite_tensor(self.model, self.optimizer)
        if bad:
            raise self.diverged(epoch, step, bad)

    def checkpoint(self, epoch: int, step: int, partial: dict, at: tuple[int, int]) -> None:
        """Save the state (epoch, step) unless a tensor is non-finite (then TrainingDiverged names
        the good checkpoint, which stays). ``at``: the 0-based (epoch, step) for the message."""
        self.require_finite(*at)
        if self.main:
            save_checkpoint(self.ckpt_path, {
                "version": CHECKPOINT_VERSION, "rule": self.rule, "seed": self.seed,
                "fingerprint": fingerprint(self.circuit), "epoch": epoch, "step": step,
                "partial": partial, "history": self.history, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
            self.last_good = (epoch, step)
        distributed.barrier()

    def write_connectome(self, epoch: int, step: int) -> None:
        if self.main:
            write_connectome(os.path.join(self.run_dir, "connectome.h5"), self.model.connectome(),
                             {"rule": self.rule, "seed": self.seed, "epoch": epoch, "step": step,
                              "circuit": self.circuit.name})

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        training, model = self.training, self.model
        self.writer = _tensorboard(self.run_dir, self.start_epoch * self.steps_per_epoch + self.start_step) if self.main else None
        amp = training.amp if training.amp is not None else self.device.startswith("cuda")
        self.autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=bool(amp))
        # a fixed batch (the first training cells, unshuffled) on which each epoch's ΔW is compared
        # with BP's; read by the process that writes the metrics only (the others read only their shards)
        self.probe = next(datasets.batches(self.splits["train"], training.batch_size)) if self.main else None
        self.net = model
        if self.world > 1:
            # fixed feedback tensors are equal on every process by seeding: no need to broadcast
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[torch.device(self.device).index] if self.device.startswith("cuda") else None,
                broadcast_buffers=False)
        if training.compile:
            self.net = torch.compile(self.net, mode=training.compile)
        if self.state is None:  # the initial state: a kill or a divergence before epoch 1 ends leaves it
            self.checkpoint(0, 0, dict(FRESH), at=(0, 0))
            self.record_initial()
            self.keep_weights(0)
        try:
            with _Signals() as signals:
                for epoch in range(self.start_epoch, training.epochs):
                    self.epoch(epoch, signals)
        finally:
            if self.writer:
                self.writer.close()
        return self.history

    def nan_check_every(self) -> int:
        """Steps between reads of the loss's finiteness (``Training.nan_check_every``; None: every
        step on the CPU, every ``NAN_CHECK_ACCELERATOR`` steps on an accelerator)."""
        k = self.training.nan_check_every
        if k is None:
            k = 1 if torch.device(self.device).type == "cpu" else NAN_CHECK_ACCELERATOR
        return k

    def check_losses(self, loss_sum: torch.Tensor, epoch: int, since: int, done: int, x) -> None:
        """Deferred NaN guard: the epoch's loss sum, accumulated on the device, turns non-finite
        with the first non-finite loss; reading it (one sync, all-reduced across processes) tells
        whether a step in (since, done] diverged. Called before anything is saved."""
        bad = 0.0 if torch.isfinite(loss_sum).item() else 1.0
        if self.world > 1:
            bad = distributed.all_sum([bad], loss_sum.device)[0]
        if bad:
            k = self.nan_check_every()
            raise self.diverged(epoch, done, f"the training loss became non-finite in one of steps {since + 1}-{done} "
                                f"of epoch {epoch + 1} (checked every {k} steps: nan_check_every={k}); "
                                f"now: {first_non_finite(self.model, x)}")

    def epoch(self, epoch: int, signals) -> None:
        training, model, optimizer = self.training, self.model, self.optimizer
        set_epoch_weight_decay(optimizer, epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        first = self.start_step if epoch == self.start_epoch else 0
        partial = self.partial if first else dict(FRESH)
        loss_sum = torch.tensor(partial["loss_sum"], device=self.device, dtype=torch.float64)
        correct = torch.tensor(partial["correct"], device=self.device)
        seen = partial["seen"]
        start = time.perf_counter() - partial["seconds"]
        every = self.nan_check_every()
        checked = first  # the steps up to here are known finite

        def so_far():
            return {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": seen,
                    "seconds": time.perf_counter() - start}

        bar = tqdm(total=self.steps_per_epoch, initial=first, leave=False, mininterval=1.0, disable=not self.progress,
                   desc=f"{self.circuit.name} {self.rule} epoch {epoch + 1}/{training.epochs}")
        batches = datasets.batches(self.splits["train"], training.batch_size, seed=self.seed, epoch=epoch,
                                   shard=(self.rank, self.world))
        for step, (x, y) in enumerate(batches):
            if step < first:
                continue
            optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                out = self.net(x)
                loss = model.loss(out, y)
            if every == 1:  # read the loss now (a device sync every step): stop before the step
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # nothing is saved: the checkpoint on disk stays
                    bar.close()
                    raise self.diverged(epoch, step, first_non_finite(model, x))
            loss.backward()
            optimizer.step()
            if every == 1:
                loss_sum += loss_value * len(y)
            else:  # the same float64 sum, kept on the device: non-finite from the first bad loss on
                loss_sum += loss.detach().double() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.update(1)
            global_step = epoch * self.steps_per_epoch + step + 1
            done = step + 1
            stop = signals.caught is not None
            log = self.log_every and global_step % self.log_every == 0 and self.main
            save = stop or (self.checkpoint_every and global_step % self.checkpoint_every == 0
                            and done < self.steps_per_epoch)
            if every > 1 and (save or done == self.steps_per_epoch or global_step % every == 0
                              or (self.log_every and global_step % self.log_every == 0)):
                try:
                    self.check_losses(loss_sum, epoch, checked, done, x)
                except TrainingDiverged:
                    bar.close()
                    raise
                checked = done
            if log:
                self.log_step(epoch, step, global_step, loss_value if every == 1 else loss.item())
            if save:
                self.checkpoint(epoch, done, so_far(), at=(epoch, done))
            if stop:
                bar.close()
                self.write_connectome(epoch, done)
                raise Interrupted(f"{signals.caught}: stopped at epoch {epoch + 1}, step {done}; continue with "
                                  f"--resume {self.run_dir}")
        bar.close()
        totals = [loss_sum.item(), correct.item(), seen]
        if self.world > 1:  # the epoch's training loss and accuracy over every process's share
            totals = distributed.all_sum(totals, loss_sum.device)
        self.end_epoch(epoch, lr, totals[0], totals[1], totals[2], time.perf_counter() - start)

    def error_norms(self) -> dict[str, float]:
        """‖e‖ per population on the probe batch (``CompiledCircuit.error_norms``), with the random
        state left as it was: a rule that draws (brSF, WM, PAL) trains on the same numbers as
        without this record."""
        cuda = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            return self.model.error_norms(*self.probe)

    def log_step(self, epoch: int, step: int, global_step: int, loss_value: float) -> None:
        line = {"epoch": epoch + 1, "step": step + 1, "global_step": global_step, "loss": loss_value,
                "lr": self.optimizer.param_groups[0]["lr"], "projections": projection_metrics(self.model, self.probe)}
        with open(self.steps_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.writer:
            self.writer.add_scalar("step/loss", loss_value, global_step)
            _log_projections(self.writer, line["projections"], global_step, "step/")

    def record_initial(self) -> None:
        """Write initial.json: epoch 0 (accuracy, loss and projection metrics before any step), where
        the paper's training curves start; TensorBoard gets it at step 0. The random state is
        left as it was, so training draws the same numbers as without this record."""
        record = {"epoch": 0}
        cuda = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            self._initial_metrics(record)
        if self.main:
            tmp = os.path.join(self.run_dir, "initial.json.tmp")
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, os.path.join(self.run_dir, "initial.json"))
            if self.writer:
                _log_epoch(self.writer, record, 0)

    def keep_weights(self, epoch: int) -> None:
        """Save the forward weights {projection: W} and the rest of the forward map's state
        (``CompiledCircuit.forward_state``: biases, norm parameters and running statistics) to
        trajectory/epoch-NNNN.pt when ``keep_every`` asks for this epoch (atomically, like the
        checkpoint)."""
        k = self.training.keep_every
        if not (self.main and k and epoch % k == 0):
            return
        folder = os.path.join(self.run_dir, "trajectory")
        os.makedirs(folder, exist_ok=True)
        weights = {name: p.weight.detach().cpu().clone() for name, p in self.model.projections.items()
                   if p.weight.requires_grad}
        path = os.path.join(folder, f"epoch-{epoch:04d}.pt")
        torch.save({"epoch": epoch, "weights": weights, "state": self.model.forward_state()}, path + ".tmp")
        os.replace(path + ".tmp", path)

    def _initial_metrics(self, record: dict) -> None:
        for split in ("val", "test"):
            if split in self.splits:
                record.update(evaluated(self.model, self.splits[split], self.training.eval_batch_size, split,
                                        (self.rank, self.world)))
        if self.main:
            record["projections"] = projection_metrics(self.model, self.probe)
            record["error_norms"] = self.model.error_norms(*self.probe)

    def end_epoch(self, epoch: int, lr: float, loss_sum: float, correct: int, seen: int, seconds: float) -> None:
        """Check, evaluate, record and checkpoint a finished epoch; print its line."""
        self.require_finite(epoch, self.steps_per_epoch)
        training, model, optimizer = self.training, self.model, self.optimizer
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen}
        shard = (self.rank, self.world)
        if "val" in self.splits:
            record.update(evaluated(model, self.splits["val"], training.eval_batch_size, "val", shard))
        record.update(evaluated(model, self.splits["test"], training.eval_batch_size, "test", shard))
        record.update(lr=lr, weight_decay=optimizer.param_groups[0]["weight_decay"], seconds=seconds)
        if self.main:  # on the probe batch, which the main process alone reads
            record.update(projections=projection_metrics(model, self.probe), error_norms=self.error_norms())
        self.history.append(record)
        self.scheduler.step()
        if self.main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.writer:
                _log_epoch(self.writer, record, (epoch + 1) * self.steps_per_epoch)
        self.checkpoint(epoch + 1, 0, dict(FRESH), at=(epoch, self.steps_per_epoch))
        self.write_connectome(epoch + 1, 0)
        self.keep_weights(epoch + 1)
        if self.main:
            val = f" val {record['val_acc']:.4f}" if "val_acc" in record else ""
            val += f" test top-5 {record['test_top5']:.4f}" if "test_top5" in record else ""
            print(f"epoch {epoch + 1}/{training.epochs}: train loss {record['train_loss']:.4f} acc "
                  f"{record['train_acc']:.4f}{val} test {record['test_acc']:.4f} ({seconds:.1f}s)",
                  file=sys.stderr, flush=True)


def projection_metrics(model, probe) -> dict[str, dict[str, float]]:
    """Per plastic projection: weight/path alignment, norm ratio and sign concordance (where it
    has a feedback route) and the angle between its ΔW and BP's on the ``probe`` batch."""
    metrics = model.alignment()
    for name, angle in model.update_alignment(*probe).items():
        metrics.setdefault(name, {})["update_angle_deg"] = angle
    return metrics


def _log_epoch(writer, record: dict, global_step: int) -> None:
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "test_loss", "test_acc", "test_top5", "lr"):
        if key in record:
            writer.add_scalar(f"epoch/{key}", record[key], global_step)
    _log_projections(writer, record["projections"], global_step)
    for name, value in record.get("error_norms", {}).items():
        writer.add_scalar(f"error_norm/{name}", value, global_step)
    writer.flush()


def _log_projections(writer, projections: dict, global_step: int, prefix: str = "") -> None:
    for name, m in projections.items():
        for key, value in m.items():
            writer.add_scalar(f"{prefix}{key}/{name}", value, global_step)
