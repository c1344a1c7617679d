"""The training loop: SGD over a compiled circuit, writing a run directory.

    run_dir/config.json          the resolved circuit, settings and invocation
    run_dir/metrics.jsonl        one JSON object per epoch
    run_dir/steps.jsonl          one per ``log_every`` steps (if asked): loss, lr, projection metrics
    run_dir/checkpoint.pt        everything needed to continue exactly (written atomically)
    run_dir/connectome.h5        every synaptic tensor at the end (connectomes.files)
    run_dir/graph.json, .graphml the population graph (networkx node-link JSON, GraphML)
    run_dir/tensorboard/         TensorBoard event files

A run stopped by SIGINT/SIGTERM saves where it stands (mid-epoch) and can be resumed; the data
order of an epoch is a function of (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import time
import zipfile

import torch
from tqdm.auto import tqdm

from circuits import data as datasets
from circuits import distributed
from circuits.errors import ConfigError
from circuits.training import Training
from connectomes.files import write_connectome, write_graph
from plasticity import set_epoch_weight_decay
from plasticity.optim import BatchManhattanSGD

CHECKPOINT_VERSION = 1
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


class TrainingDiverged(RuntimeError):
    """The loss or a weight became NaN or infinite."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; the run saved a checkpoint where it stood."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or from another run."""


def make_optimizer(model, training: Training) -> torch.optim.SGD:
    """SGD with two parameter groups: "forward" (every W and bias) and "feedback" (plastic
    feedback tensors), each with its own learning rate and weight-decay schedule."""
    groups = [{"params": model.forward_parameters(), "name": "forward", "lr": training.lr,
               "weight_decay": training.weight_decay,
               "first_epoch_weight_decay": training.first_epoch_weight_decay}]
    feedback = model.feedback_parameters()
    if feedback:
        explicit_wd = training.feedback_weight_decay is not None
        groups.append({
            "params": feedback, "name": "feedback",
            "lr": training.lr if training.feedback_lr is None else training.feedback_lr,
            "weight_decay": training.feedback_weight_decay if explicit_wd else training.weight_decay,
            "first_epoch_weight_decay": None if explicit_wd else training.first_epoch_weight_decay,
        })
    sgd = BatchManhattanSGD if training.batch_manhattan else torch.optim.SGD
    return sgd(groups, lr=training.lr, momentum=training.momentum, nesterov=training.nesterov)


@torch.no_grad()
def evaluate(model, split, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy in [0, 1]) of the model on a split."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for x, y in datasets.batches(split, batch_size):
        out = model(x)
        loss += model.loss(out, y).item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss / len(split), correct / len(split)


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


def save_checkpoint(path: str, state: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err}); "
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


def train(circuit, training: Training, *, rule: str, run_dir: str, data_root: str, seed: int,
          device: str = "cpu", progress: bool = True, splits=None, resume: bool = False,
          log_every: int = 0, checkpoint_every: int = 0, invocation: dict | None = None) -> list[dict]:
    """Train ``circuit`` with ``training`` (already resolved for ``rule``) into ``run_dir``.

    ``resume``: continue from ``run_dir/checkpoint.pt`` (``training.epochs`` is the total).
    ``checkpoint_every``: also checkpoint every k steps. Returns the metrics, one dict per epoch.
    """
    if training.compile not in COMPILE_MODES:
        raise ConfigError(f"training setting compile={training.compile!r}: not a torch.compile mode "
                          f"(one of {', '.join(map(repr, COMPILE_MODES))})")
    device = distributed.setup(device)
    rank, world = distributed.world()
    main = rank == 0
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    steps_path = os.path.join(run_dir, "steps.jsonl")

    state = load_checkpoint(ckpt_path) if resume else None
    torch.manual_seed(seed)
    model = circuit.compile(seed=seed, implicit_feedback=training.implicit_feedback_ok()).to(device)
    optimizer = make_optimizer(model, training)
    model.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, training.lr_milestones, training.lr_gamma)
    if splits is None:
        splits = datasets.load(training.data, data_root, training.val_size)
    if training.train_size:
        splits = {**splits, "train": splits["train"].head(training.train_size)}
    splits = {k: v.to(device) for k, v in splits.items()}
    steps_per_epoch = math.ceil(len(splits["train"]) / training.batch_size)

    history, start_epoch, start_step = [], 0, 0
    partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit this circuit: {err}") from None
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        history, start_epoch, start_step = state["history"], state["epoch"], state["step"]
        partial = state["partial"]
    if main:
        os.makedirs(run_dir, exist_ok=True)
        if state is None:
            config = {"circuit": circuit.describe(), "training": training.to_dict(), "rule": rule,
                      "seed": seed, "device": device, "world_size": world,
                      "data_root": os.path.abspath(data_root), "invocation": invocation or {},
                      "command": sys.argv, "python": platform.python_version(), "torch": torch.__version__}
            with open(os.path.join(run_dir, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            write_graph(circuit.graph, os.path.join(run_dir, "graph.json"))
            write_graph(circuit.graph, os.path.join(run_dir, "graph.graphml"))
        # the checkpoint is the truth: drop any line written after it
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in history)
        if state is None and log_every:
            open(steps_path, "w").close()
    writer = _tensorboard(run_dir, start_epoch * steps_per_epoch + start_step) if main else None
    amp = training.amp if training.amp is not None else device.startswith("cuda")
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bool(amp))
    # a fixed batch (the first training cells, unshuffled) on which each epoch's ΔW is compared with BP's
    probe = next(datasets.batches(splits["train"], training.batch_size))
    net = model
    if world > 1:
        # fixed feedback tensors are equal on every process by seeding: no need to broadcast
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            broadcast_buffers=False)
    if training.compile:
        net = torch.compile(net, mode=training.compile)

    def checkpoint(epoch, step, partial):
        if main:
            save_checkpoint(ckpt_path, {
                "version": CHECKPOINT_VERSION, "rule": rule, "seed": seed, "epoch": epoch, "step": step,
                "partial": partial, "history": history, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
        distributed.barrier()

    with _Signals() as signals:
        for epoch in range(start_epoch, training.epochs):
            set_epoch_weight_decay(optimizer, epoch)
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            loss_sum = torch.tensor(partial["loss_sum"], device=device, dtype=torch.float64)
            correct = torch.tensor(partial["correct"], device=device)
            seen = partial["seen"]
            start = time.perf_counter() - partial["seconds"]
            bar = tqdm(total=steps_per_epoch, initial=first, leave=False, mininterval=1.0,
                       disable=not (progress and main),
                       desc=f"{circuit.name} {rule} epoch {epoch + 1}/{training.epochs}")
            batches = datasets.batches(splits["train"], training.batch_size, seed=seed, epoch=epoch)
            for step, (x, y) in enumerate(batches):
                if step < first:
                    continue
                x, y = distributed.shard(x, y)
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    out = net(x)
                    loss = model.loss(out, y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # the weights are still the last good ones
                    where = first_non_finite(model, x)
                    checkpoint(epoch, step, {"loss_sum": loss_sum.item(), "correct": correct.item(),
                                             "seen": seen, "seconds": time.perf_counter() - start})
                    raise TrainingDiverged(f"training diverged at epoch {epoch + 1}, step {step}: {where}; "
                                           f"the last good state is in {ckpt_path}")
                loss.backward()
                optimizer.step()
                loss_sum += loss_value * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(y)
                bar.update(1)
                global_step = epoch * steps_per_epoch + step + 1
                if log_every and global_step % log_every == 0 and main:
                    line = {"epoch": epoch + 1, "step": step + 1, "global_step": global_step,
                            "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                            "projections": projection_metrics(model, probe)}
                    with open(steps_path, "a") as f:
                        f.write(json.dumps(line) + "\n")
                    if writer:
                        writer.add_scalar("step/loss", loss_value, global_step)
                        _log_projections(writer, line["projections"], global_step, "step/")
                done_steps = step + 1
                stop = signals.caught is not None
                if stop or (checkpoint_every and global_step % checkpoint_every == 0 and done_steps < steps_per_epoch):
                    checkpoint(epoch, done_steps, {"loss_sum": loss_sum.item(), "correct": correct.item(),
                                                   "seen": seen, "seconds": time.perf_counter() - start})
                if stop:
                    bar.close()
                    raise Interrupted(f"{signals.caught}: stopped at epoch {epoch + 1}, step {done_steps}; "
                                      f"continue with --resume {run_dir}")
            bar.close()
            seconds = time.perf_counter() - start
            record = {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen}
            if main:
                if "val" in splits:
                    record["val_loss"], record["val_acc"] = evaluate(model, splits["val"], training.eval_batch_size)
                record["test_loss"], record["test_acc"] = evaluate(model, splits["test"], training.eval_batch_size)
            record.update(lr=lr, weight_decay=optimizer.param_groups[0]["weight_decay"], seconds=seconds,
                          projections=projection_metrics(model, probe))
            history.append(record)
            scheduler.step()
            if main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer:
                    _log_epoch(writer, record, (epoch + 1) * steps_per_epoch)
            checkpoint(epoch + 1, 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0})
            if progress and main:
                val = f" val {record['val_acc']:.4f}" if "val_acc" in record else ""
                print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}{val} "
                      f"test {record['test_acc']:.4f} ({seconds:.1f}s)", file=sys.stderr, flush=True)
    if writer:
        writer.close()
    if main and history:
        write_connectome(os.path.join(run_dir, "connectome.h5"), model.connectome(),
                         {"rule": rule, "seed": seed, "epoch": len(history), "circuit": circuit.name})
    return history


def projection_metrics(model, probe) -> dict[str, dict[str, float]]:
    """Per plastic projection: weight/path alignment, norm ratio and sign concordance (where it
    has a feedback route) and the angle between its ΔW and BP's on the ``probe`` batch."""
    metrics = model.alignment()
    for name, angle in model.update_alignment(*probe).items():
        metrics.setdefault(name, {})["update_angle_deg"] = angle
    return metrics


def _log_epoch(writer, record: dict, global_step: int) -> None:
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr"):
        if key in record:
            writer.add_scalar(f"epoch/{key}", record[key], global_step)
    _log_projections(writer, record["projections"], global_step)
    writer.flush()


def _log_projections(writer, projections: dict, global_step: int, prefix: str = "") -> None:
    for name, m in projections.items():
        for key, value in m.items():
            writer.add_scalar(f"{prefix}{key}/{name}", value, global_step)
