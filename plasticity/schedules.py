"""Weight-decay schedules (the learning-rate ones come from ``torch.optim.lr_scheduler``).

The PFA paper uses a large weight decay in the first epoch, for W and R alike, to erase R's
random start, then a small one. Each optimizer parameter group keeps its own values under the
keys ``base_weight_decay`` and ``first_epoch_weight_decay`` (None: no special first epoch).
"""
from __future__ import annotations

import torch


def set_epoch_weight_decay(optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Set every group's weight decay for ``epoch`` (0-based)."""
    for group in optimizer.param_groups:
        base = group.setdefault("base_weight_decay", group["weight_decay"])
        first = group.get("first_epoch_weight_decay")
        group["weight_decay"] = first if (epoch == 0 and first is not None) else base
