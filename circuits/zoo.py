"""The standard circuits, written in the DSL: ``mlp``, ``lenet``, ``resnet20``, ``resnet56``,
``resnet8_mnist``, ``resnet18``. Each returns a ``Circuit``; ``feedback`` (a rule) is applied if given, otherwise
call ``circuit.feedback(rule)`` yourself.

Populations follow the circuit model: a population sums its inputs, then normalises and applies
its activation. A ResNet block ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`` is three
populations: ``<block>_a`` (conv1, BN, ReLU), ``<block>_b`` (conv2, BN, linear) and ``<block>``
(the residual sum: an Identity from ``_b`` plus the shortcut from x, then ReLU). Parameter counts
equal the standard definitions (tests/test_zoo.py checks them against plain PyTorch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from circuits.circuit import Circuit
from connectomes.geometry import Conv2d, Dense, GlobalAvgPool, Identity, MaxPool2d, ShortcutA
from populations import Input, Layer, Readout


def _finish(c: Circuit, feedback) -> Circuit:
    if feedback is not None:
        c.feedback(feedback)
    return c


def _conv(c, pre, name, channels, kernel, stride=1, padding=0, activation="relu", norm="batch"):
    """A (C, H, W) population fed by one convolution from ``pre``; returns it."""
    geometry = Conv2d(kernel, stride=stride, padding=padding)
    h, w = geometry.output_hw(*pre.shape[1:])
    post = c.add(Layer(name, (channels, h, w), activation=activation, norm=norm))
    c.connect(pre, post, geometry)
    return post


def mlp(sizes=(784, 512, 512, 10), activation="relu", name="mlp", seed=0, feedback=None, norm=None,
        init_gain=None) -> Circuit:
    """Input(sizes[0]) → Dense layers → Readout(sizes[-1]) (the PFA paper's MNIST circuit).
    ``norm="batch"``: every hidden layer batch-normalises its summed input before its activation
    (BatchNorm1d, affine; no bias, the norm's shift replaces it), as Liao et al. (2016) use BN.
    ``init_gain``: None (Glorot-uniform W) or g, every W ~ N(0, g²/fan_in)."""
    c = Circuit(name, seed=seed)
    pops = [c.add(Input("pixels", sizes[0]))]
    pops += [c.add(Layer(f"h{i}", n, activation=activation, norm=norm)) for i, n in enumerate(sizes[1:-1], start=1)]
    pops.append(c.add(Readout("classes", sizes[-1])))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense(init_gain=init_gain))
    return _finish(c, feedback)


def lenet(num_classes=10, in_channels=1, name="lenet", seed=0, feedback=None, norm=None) -> Circuit:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28×28 MNIST: conv 5×5 (6,
    padding 2, as the original's 32×32 input), pool, conv 5×5 (16), pool, conv 5×5 (120),
    dense 84, readout. 61,706 parameters for 10 classes. ``norm="batch"``: c1, c2, c3 and f4
    batch-normalise their summed input before the ReLU (BatchNorm2d / 1d, no bias)."""
    c = Circuit(name, seed=seed)
    x = c.add(Input("pixels", (in_channels, 28, 28)))
    c1 = _conv(c, x, "c1", 6, 5, padding=2, norm=norm)
    p1 = c.add(Layer("p1", (6, 14, 14), activation="identity", bias=False))
    c.connect(c1, p1, MaxPool2d(2))
    c2 = _conv(c, p1, "c2", 16, 5, norm=norm)
    p2 = c.add(Layer("p2", (16, 5, 5), activation="identity", bias=False))
    c.connect(c2, p2, MaxPool2d(2))
    c3 = _conv(c, p2, "c3", 120, 5, norm=norm)
    f4 = c.add(Layer("f4", 84, norm=norm))
    c.connect(c3, f4, Dense())
    y = c.add(Readout("classes", num_classes))
    c.connect(f4, y, Dense())
    return _finish(c, feedback)


def _basic_block(c, x, name, channels, stride, shortcut):
    """A BasicBlock: conv3×3-BN-ReLU, conv3×3-BN, + shortcut(x), ReLU. ``shortcut``: "A" (option A),
    "B" (1×1 conv + BN when the shape changes) or identity when it does not."""
    a = _conv(c, x, f"{name}_a", channels, 3, stride=stride, padding=1)
    b = _conv(c, a, f"{name}_b", channels, 3, padding=1, activation="identity")
    out = c.add(Layer(name, b.shape, activation="relu", bias=False))
    c.connect(b, out, Identity())
    if x.shape == b.shape:
        c.connect(x, out, Identity(), name=f"{name}_skip")
    elif shortcut == "A":
        c.connect(x, out, ShortcutA(stride), name=f"{name}_skip")
    else:
        down = _conv(c, x, f"{name}_down", channels, 1, stride=stride, activation="identity")
        c.connect(down, out, Identity())
    return out


def resnet_cifar(depth: int, num_classes=10, name=None, seed=0, feedback=None, in_channels=3,
                 image_size=32) -> Circuit:
    """He et al. (2016)'s CIFAR ResNet of ``depth`` = 6n + 2 layers: conv3×3 (16), three stages of
    n BasicBlocks with 16, 32, 64 channels (stride 2 and option-A shortcuts between stages),
    global average pooling, readout. ``in_channels`` and ``image_size`` set the input
    (in_channels, image_size, image_size): 3 × 32 for CIFAR, 1 × 28 for MNIST (``resnet8_mnist``)."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    c = Circuit(name or f"resnet{depth}", seed=seed)
    x = _conv(c, c.add(Input("image", (in_channels, image_size, image_size))), "stem", 16, 3, padding=1)
    _stages_and_readout(c, x, (16, 32, 64), n, "A", num_classes)
    return _finish(c, feedback)


def resnet20(num_classes=10, seed=0, feedback=None) -> Circuit:
    """ResNet-20 for CIFAR (0.27M parameters: 269,722 for 10 classes)."""
    return resnet_cifar(20, num_classes, seed=seed, feedback=feedback)


def resnet56(num_classes=10, seed=0, feedback=None) -> Circuit:
    """ResNet-56 for CIFAR (0.85M parameters: 853,018 for 10 classes)."""
    return resnet_cifar(56, num_classes, seed=seed, feedback=feedback)


def resnet8_mnist(num_classes=10, seed=0, feedback=None) -> Circuit:
    """The smallest CIFAR ResNet (depth 8: one BasicBlock per stage, 16/32/64 channels, option-A
    shortcuts) on 1 × 28 × 28 MNIST images: 28 → 14 → 7 pixels over the three stages (75,002
    parameters for 10 classes)."""
    return resnet_cifar(8, num_classes, name="resnet8-mnist", seed=seed, feedback=feedback, in_channels=1,
                        image_size=28)


def resnet18(num_classes=1000, image_size=224, seed=0, feedback=None) -> Circuit:
    """ResNet-18 for ImageNet, as ``torchvision.models.resnet18`` (11,689,512 parameters for 1000
    classes): conv 7×7 stride 2 + BN + ReLU, max pool 3×3 stride 2, four stages of two
    BasicBlocks (64, 128, 256, 512 channels; 1×1 conv + BN shortcuts where the shape changes),
    global average pooling, readout."""
    c = Circuit("resnet18", seed=seed)
    x = _conv(c, c.add(Input("image", (3, image_size, image_size))), "stem", 64, 7, stride=2, padding=3)
    pool_geometry = MaxPool2d(3, stride=2, padding=1)
    pooled = c.add(Layer("stem_pool", (64, *pool_geometry.output_hw(*x.shape[1:])), activation="identity", bias=False))
    c.connect(x, pooled, pool_geometry)
    _stages_and_readout(c, pooled, (64, 128, 256, 512), 2, "B", num_classes)
    return _finish(c, feedback)


def _stages_and_readout(c: Circuit, x, widths, blocks: int, shortcut: str, num_classes: int) -> None:
    """ResNet stages of ``blocks`` BasicBlocks each (stride 2 into every stage after the first),
    then global average pooling and the readout."""
    for stage, channels in enumerate(widths, start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(c, x, f"s{stage}b{block}", channels, stride, shortcut=shortcut)
    pool = c.add(Layer("pool", widths[-1], activation="identity", bias=False))
    c.connect(x, pool, GlobalAvgPool())
    c.connect(pool, c.add(Readout("classes", num_classes)), Dense())


# -- plain PyTorch references: the same networks as ordinary nn.Modules trained by autograd, for
#    parity tests and the step-time benchmark (benchmarks/step_time.py) ---------------------------
class PlainMLP(nn.Module):
    """The ``mlp`` circuit as nn.Linear layers with ReLU between them."""

    def __init__(self, sizes=(784, 512, 512, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class PlainLeNet(nn.Module):
    """LeNet-5 with ReLU and max pooling on 28×28 (padding 2 in the first convolution).
    ``norm=True``: c1, c2, c3, f4 without bias, each followed by batch norm (``lenet(norm="batch")``)."""

    def __init__(self, num_classes=10, norm=False):
        super().__init__()
        bias = not norm
        self.c1 = nn.Conv2d(1, 6, 5, padding=2, bias=bias)
        self.c2, self.c3 = nn.Conv2d(6, 16, 5, bias=bias), nn.Conv2d(16, 120, 5, bias=bias)
        self.f4, self.f5 = nn.Linear(120, 84, bias=bias), nn.Linear(84, num_classes)
        bn2, bn1 = (nn.BatchNorm2d, nn.BatchNorm1d) if norm else (lambda n: nn.Identity(),) * 2
        self.bn1, self.bn2, self.bn3, self.bn4 = bn2(6), bn2(16), bn2(120), bn1(84)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(torch.relu(self.bn2(self.c2(x))), 2)
        x = torch.relu(self.bn3(self.c3(x))).flatten(1)
        return self.f5(torch.relu(self.bn4(self.f4(x))))


class PlainBlockA(nn.Module):
    """He et al.'s CIFAR BasicBlock with the option-A (parameter-free) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return torch.relu(out + short)


class PlainResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet (depth 6n + 2, 16-32-64 channels, option-A shortcuts)."""

    def __init__(self, depth, num_classes=10, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for b in range(n):
                blocks.append(PlainBlockA(cin, cout, 2 if stage and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))
