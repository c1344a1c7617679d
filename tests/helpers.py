"""Small circuits and hand-made connectome records for the tests."""
import torch

from circuits import Circuit
from circuits.train import make_optimizer
from connectomes import Dense
from plasticity import set_epoch_weight_decay
from populations import Input, Layer, Readout

TEACHER_SIZES = (12, 16, 10, 5)  # the circuits trained on teacher_batches


def small_mlp(rule, sizes=(6, 7, 5, 4), activation="tanh", seed=0, name="small"):
    """Input(sizes[0]) → Layer … → Readout(sizes[-1]), Dense everywhere, ``rule`` on all."""
    c = Circuit(name, seed=seed)
    pops = [c.add(Input("x0", sizes[0]))]
    for i, n in enumerate(sizes[1:-1], start=1):
        pops.append(c.add(Layer(f"h{i}", n, activation=activation)))
    pops.append(c.add(Readout("out", sizes[-1])))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense())
    if rule is not None:
        c.feedback(rule)
    return c


def connectome_records(rule: str, seed: int = 0, scale: float = 1.0, feedback: str = "random"):
    """Hand-made connectome records of x0(6) → h1(7) → out(4) in a rule's feedback layout (PFA:
    B and R through ē; BP: the transported W2ᵀ; otherwise one direct B). ``scale`` multiplies
    W; ``feedback="correlated"`` makes the direct B = 0.5 W2ᵀ + noise instead of random."""
    g = torch.Generator().manual_seed(seed)
    W1, W2 = torch.randn(7, 6, generator=g) * scale, torch.randn(4, 7, generator=g) * scale
    recs = [{"name": "x0->h1", "kind": "forward", "pre": "x0", "post": "h1", "weight": W1, "rule": rule,
             "plastic": True, "transported": False},
            {"name": "h1->out", "kind": "forward", "pre": "h1", "post": "out", "weight": W2, "rule": rule,
             "plastic": True, "transported": False}]
    if rule == "pfa":
        recs += [{"name": "h1->out:B", "kind": "feedback", "pre": "out", "post": "h1->out:ebar",
                  "weight": torch.randn(8, 4, generator=g), "rule": rule, "plastic": False,
                  "transported": False, "forward": "h1->out"},
                 {"name": "h1->out:R", "kind": "feedback", "pre": "h1->out:ebar", "post": "h1",
                  "weight": torch.randn(7, 8, generator=g), "rule": rule, "plastic": True,
                  "transported": False, "forward": "h1->out"}]
    elif rule == "bp":
        recs.append({"name": "h1->out:B", "kind": "feedback", "pre": "out", "post": "h1", "weight": W2.t().clone(),
                     "rule": rule, "plastic": False, "transported": True, "forward": "h1->out"})
    else:
        B = (0.5 * W2.t() + 0.1 * torch.randn(7, 4, generator=g) if feedback == "correlated"
             else torch.randn(7, 4, generator=g))
        recs.append({"name": "h1->out:B", "kind": "feedback", "pre": "out", "post": "h1", "weight": B,
                     "rule": rule, "plastic": rule == "kp", "transported": False, "forward": "h1->out"})
    return recs


def teacher_batches(n_steps, batch=16, seed=1):
    """A linear teacher's labels on Gaussian inputs (float64), for TEACHER_SIZES circuits."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(TEACHER_SIZES[-1], TEACHER_SIZES[0], generator=g, dtype=torch.float64)
    for _ in range(n_steps):
        x = torch.randn(batch, TEACHER_SIZES[0], generator=g, dtype=torch.float64)
        yield x, (x @ teacher.t()).argmax(1)


def train_two_epochs(model, training, steps_per_epoch=150, dtype=torch.float32):
    """SGD over two 'epochs' (the first with its own weight decay), lr halved in between."""
    opt = make_optimizer(model, training)
    model.attach_optimizer(opt)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.5)
    for epoch in range(2):
        set_epoch_weight_decay(opt, epoch)
        for x, y in teacher_batches(steps_per_epoch, seed=10 + epoch):
            opt.zero_grad()
            model.loss(model(x.to(dtype)), y).backward()
            opt.step()
        sched.step()
    return model


def train_alike(implicit, explicit, training, tensor):
    """Train both for two epochs; W and the plastic feedback ``tensor`` (R or B, the implicit one
    rebuilt on demand) agree to float32 tolerance."""
    train_two_epochs(explicit, training)
    train_two_epochs(implicit, training)
    for name, p in implicit.projections.items():
        ref = explicit.projections[name]
        torch.testing.assert_close(p.weight, ref.weight, rtol=1e-4, atol=1e-5)
        if p.sends_error:
            torch.testing.assert_close(p.rule.tensor(p, tensor), getattr(ref, tensor), rtol=1e-4, atol=1e-5)
