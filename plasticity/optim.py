"""Optimizer variants that belong to the learning rules."""
import torch

MANHATTAN_SIGNS = ("gradient", "decayed", "step")


class BatchManhattanSGD(torch.optim.SGD):
    """Batch Manhattan (BM; Liao, Leibo & Poggio 2016): each weight moves by a fixed amount in the
    direction of the sign of its gradient summed over the batch, sign(Σ_batch ∂E/∂w), whatever
    the gradient's size. Our losses are batch means, and sign(mean) = sign(sum).

    ``sign`` says where the sign is taken, relative to weight decay λ and momentum μ (the
    buffer v, as in ``torch.optim.SGD``: v ← μ v + (1 − dampening) d, v ← d on the first step;
    Nesterov steps d + μ v instead of v), for g = the batch gradient of w:

    - "gradient" (default; what this option has always done): d = sign(g) + λ w; w ← w − lr v.
      The sign first, then weight decay and momentum as plain SGD.
    - "decayed": d = sign(g + λ w); w ← w − lr v. Weight decay inside the sign, momentum after.
    - "step": d = g + λ w; w ← w − lr sign(v). The sign of the momentum step itself.

    With μ = λ = 0 all three are w ← w − lr sign(g). Liao et al. say BM is used with momentum
    and weight decay, but the text that defines where they act was not reachable from here
    (arXiv 1510.05067; only the abstract, which names BM, could be read): the three placements are
    the candidates, "gradient" the assumed default. Every parameter the optimizer holds is
    stepped this way: W, biases, norms' affine parameters and plastic feedback tensors (KP's B,
    PFA's R). A zero gradient (an absent synapse of a sparse W) gives sign 0: such a weight only
    decays, and stays 0 from 0.
    """

    def __init__(self, params, sign: str = "gradient", **kwargs):
        if sign not in MANHATTAN_SIGNS:
            raise ValueError(f"Batch Manhattan: sign={sign!r} is not one of {', '.join(map(repr, MANHATTAN_SIGNS))}")
        super().__init__(params, **kwargs)
        self.sign = sign

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.sign == "gradient":  # sign, then torch's own SGD step (weight decay, momentum)
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.sign_()
            super().step()
            return loss
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            dampening, nesterov = group["dampening"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                if self.sign == "decayed":
                    d.sign_()
                if mu:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(mu).add_(d, alpha=1 - dampening)
                    d = d.add(buf, alpha=mu) if nesterov else buf.clone()
                if self.sign == "step":
                    d.sign_()
                p.add_(d, alpha=-lr)
        return loss
