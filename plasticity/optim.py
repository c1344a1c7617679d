"""Optimizer variants that belong to the learning rules."""
import torch


class BatchManhattanSGD(torch.optim.SGD):
    """SGD whose step uses the sign of each weight's batch gradient, sign(ΔW), instead of ΔW
    (Batch Manhattan, Liao, Leibo & Poggio 2016); momentum and weight decay act after the sign."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.sign_()
        super().step()
        return loss
