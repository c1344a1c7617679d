"""Accuracy of a trained circuit under input corruptions and adversarial perturbations.

Both act in pixel space (values in [0, 1]): the data set's normalised images are mapped back with
its (mean, sd) (``circuits.data.normalisation``), perturbed, clipped to [0, 1] and normalised
again before the circuit sees them. The circuit runs its exact forward map in evaluation mode,
so the input gradient an attack follows is the true one, whichever rule trained the circuit.

Corruptions, MNIST-C-style (Mu & Gilmer 2019 name the kinds; the graded severities 1–5 here are
this module's own, listed in ``SEVERITIES``): Gaussian, shot (Poisson) and impulse (salt and
pepper) noise, Gaussian blur, contrast, brightness, rotation, shear, translation and scaling,
drawn from a generator seeded per (corruption, severity), so every circuit sees the same images.

Attacks (torchattacks, Kim 2020): FGSM (L∞), PGD in L∞ and in L2 (random start, ``steps``
steps of size 2.5·ε/steps), each at a grid of budgets ε in pixel units.
"""
from __future__ import annotations

import math

import torch

from probes.curvature import ExactForward

SEVERITIES = {  # the parameter of each corruption at severities 1..5
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),   # noise sd
    "shot_noise": (60, 25, 12, 5, 3),                   # photons per unit intensity (fewer: noisier)
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),    # fraction of pixels set to 0 or 1
    "gaussian_blur": (0.5, 0.75, 1.0, 1.5, 2.0),        # blur sd in pixels
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),             # contrast kept
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),            # added to every pixel
    "rotate": (10, 20, 30, 40, 50),                     # degrees, random sign
    "shear": (10, 20, 30, 40, 50),                      # degrees, random sign
    "translate": (0.05, 0.1, 0.15, 0.2, 0.25),          # fraction of the image side, random direction
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),                 # zoom out by this factor
}


def _per_channel(values, like: torch.Tensor) -> torch.Tensor:
    """Per-channel constants shaped to broadcast over dim 1 of ``like`` (N × C [× H × W])."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, *[1] * (like.dim() - 2))


def to_pixels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised inputs → pixel values (x · sd + mean, per channel)."""
    return x * _per_channel(std, x) + _per_channel(mean, x)


def to_normalised(p: torch.Tensor, mean, std) -> torch.Tensor:
    """Pixel values → the normalised inputs the circuit was trained on."""
    return (p - _per_channel(mean, p)) / _per_channel(std, p)


def _affine(images, generator, angle=0.0, shear=0.0, translate=0.0, scale=1.0):
    from torchvision.transforms.v2 import functional as TF

    out = torch.empty_like(images)
    n, _, h, w = images.shape
    for i in range(n):
        sign = 1 if torch.rand(1, generator=generator).item() < 0.5 else -1
        direction = torch.rand(1, generator=generator).item() * 2 * math.pi
        out[i] = TF.affine(images[i], angle=sign * angle, shear=[sign * shear, 0.0],
                           translate=[round(translate * w * math.cos(direction)), round(translate * h * math.sin(direction))],
                           scale=scale)
    return out


def corrupt(images: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (N × C × H × W, pixel values in [0, 1]) under corruption ``kind`` at
    ``severity`` 1..5, clipped to [0, 1]."""
    from torchvision.transforms.v2 import functional as TF

    if kind not in SEVERITIES:
        raise ValueError(f"unknown corruption {kind!r} (known: {', '.join(SEVERITIES)})")
    if not 1 <= severity <= 5:
        raise ValueError(f"corruption severity must be 1..5, got {severity!r}")
    c = SEVERITIES[kind][severity - 1]
    g = torch.Generator().manual_seed(seed * 1000 + list(SEVERITIES).index(kind) * 10 + severity)
    x = images
    if kind == "gaussian_noise":
        x = x + c * torch.randn(x.shape, generator=g)
    elif kind == "shot_noise":
        x = torch.poisson(x.clamp(0, 1) * c, generator=g) / c
    elif kind == "impulse_noise":
        u = torch.rand(x.shape, generator=g)
        x = torch.where(u < c / 2, torch.zeros_like(x), torch.where(u < c, torch.ones_like(x), x))
    elif kind == "gaussian_blur":
        k = 2 * math.ceil(3 * c) + 1
        x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[c, c])
    elif kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    elif kind == "brightness":
        x = x + c
    elif kind == "rotate":
        x = _affine(x, g, angle=c)
    elif kind == "shear":
        x = _affine(x, g, shear=c)
    elif kind == "translate":
        x = _affine(x, g, translate=c)
    elif kind == "scale":
        x = _affine(x, g, scale=c)
    return x.clamp(0, 1)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    f = ExactForward(model).eval()
    correct = sum((f(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(y), batch_size))
    return correct / len(y)


def corruption_accuracy(model, x: torch.Tensor, y: torch.Tensor, mean, std, kinds=None, seed: int = 0) -> dict:
    """{kind: [accuracy at severity 1..5]} and {"clean": accuracy} on normalised test images ``x``."""
    model.eval()
    pixels = to_pixels(x, mean, std)
    out = {"clean": accuracy(model, x, y)}
    for kind in kinds or SEVERITIES:
        out[kind] = [accuracy(model, to_normalised(corrupt(pixels, kind, s, seed), mean, std), y) for s in range(1, 6)]
    return out


class PixelModel(torch.nn.Module):
    """The circuit's exact forward map on pixel-space inputs (normalised inside): what an attack
    perturbs is the image a person sees."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.f, self.mean, self.std = ExactForward(model), mean, std

    def forward(self, pixels):
        return self.f(to_normalised(pixels, self.mean, self.std))


def attack(model, pixels: torch.Tensor, y: torch.Tensor, kind: str, eps: float, mean, std,
           steps: int = 20, seed: int = 0) -> torch.Tensor:
    """Adversarial pixel images (in [0, 1]) within ε of ``pixels``: ``kind`` is "fgsm" (L∞),
    "pgd_linf" or "pgd_l2" (torchattacks; PGD with a random start and step 2.5·ε/steps)."""
    import torchattacks

    net = PixelModel(model, mean, std).eval()
    if eps == 0:
        return pixels.clone()
    if kind == "fgsm":
        atk = torchattacks.FGSM(net, eps=eps)
    elif kind == "pgd_linf":
        atk = torchattacks.PGD(net, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    elif kind == "pgd_l2":
        atk = torchattacks.PGDL2(net, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    else:
        raise ValueError(f"unknown attack {kind!r} (known: fgsm, pgd_linf, pgd_l2)")
    torch.manual_seed(seed)
    return atk(pixels, y)


def adversarial_accuracy(model, x: torch.Tensor, y: torch.Tensor, mean, std, budgets: dict, steps: int = 20,
                         batch_size: int = 500, seed: int = 0) -> dict:
    """{attack: [accuracy at each ε of budgets[attack]]} on normalised test images ``x``."""
    model.eval()
    pixels = to_pixels(x, mean, std)
    out = {}
    for kind, epsilons in budgets.items():
        accs = []
        for eps in epsilons:
            correct = 0
            for i in range(0, len(y), batch_size):
                adv = attack(model, pixels[i:i + batch_size], y[i:i + batch_size], kind, eps, mean, std, steps, seed)
                with torch.no_grad():
                    correct += (PixelModel(model, mean, std)(adv).argmax(1) == y[i:i + batch_size]).sum().item()
            accs.append(correct / len(y))
        out[kind] = accs
    return out
