"""The training loop: SGD over a compiled circuit, one metrics line and one checkpoint per epoch."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time

import torch
from tqdm.auto import tqdm

from circuits import data as datasets
from circuits.training import Training
from plasticity import set_epoch_weight_decay


class TrainingDiverged(RuntimeError):
    """The loss or a weight became NaN or infinite."""


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
    return torch.optim.SGD(groups, lr=training.lr, momentum=training.momentum, nesterov=training.nesterov)


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


def _check_finite(model, loss_value: float, epoch: int, step: int) -> None:
    if math.isfinite(loss_value):
        return
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    where = f"epoch {epoch + 1}, step {step}"
    if bad:
        raise TrainingDiverged(f"training diverged at {where}: non-finite values in {', '.join(bad)}")
    raise TrainingDiverged(f"training diverged at {where}: the loss is {loss_value}")


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train(circuit, training: Training, *, rule: str, run_dir: str, data_root: str, seed: int,
          device: str = "cpu", progress: bool = True, splits=None) -> list[dict]:
    """Train ``circuit`` with ``training`` (already resolved for ``rule``); write the run
    directory; return the metrics (one dict per epoch)."""
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(seed)
    model = circuit.compile(seed=seed, implicit_feedback=training.implicit_feedback_ok()).to(device)
    if splits is None:
        splits = datasets.load(training.data, data_root, training.val_size)
    splits = {k: v.to(device) for k, v in splits.items()}

    config = {
        "circuit": circuit.describe(), "training": training.to_dict(), "rule": rule, "seed": seed,
        "device": device, "data_root": os.path.abspath(data_root),
        "command": sys.argv, "python": platform.python_version(), "torch": torch.__version__,
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    optimizer = make_optimizer(model, training)
    model.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, training.lr_milestones, training.lr_gamma)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    history = []
    open(metrics_path, "w").close()
    for epoch in range(training.epochs):
        set_epoch_weight_decay(optimizer, epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(datasets.batches(splits["train"], training.batch_size, seed=seed, epoch=epoch),
                   total=math.ceil(len(splits["train"]) / training.batch_size),
                   desc=f"{circuit.name} {rule} epoch {epoch + 1}/{training.epochs}",
                   disable=not progress, leave=False, mininterval=1.0)
        for step, (x, y) in enumerate(bar):
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = model.loss(out, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % 200 == 0:
                value = loss.item()
                _check_finite(model, value, epoch, step)
                bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        train_loss = loss_sum.item() / seen
        _check_finite(model, train_loss, epoch, step)
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": correct.item() / seen}
        if "val" in splits:
            record["val_loss"], record["val_acc"] = evaluate(model, splits["val"], training.eval_batch_size)
        record["test_loss"], record["test_acc"] = evaluate(model, splits["test"], training.eval_batch_size)
        record.update(lr=lr, weight_decay=optimizer.param_groups[0]["weight_decay"], seconds=seconds,
                      projections=model.alignment())
        history.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scheduler.step()
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "metrics": history,
                 "rng": torch.get_rng_state()}
        _atomic_write(os.path.join(run_dir, "checkpoint.pt"), lambda f: torch.save(state, f))
        if progress:
            val = f" val {record['val_acc']:.4f}" if "val_acc" in record else ""
            print(f"epoch {epoch + 1}: train loss {train_loss:.4f} acc {record['train_acc']:.4f}{val} "
                  f"test {record['test_acc']:.4f} ({seconds:.1f}s)", file=sys.stderr, flush=True)
    return history
