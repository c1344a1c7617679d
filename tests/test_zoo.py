"""The zoo: parameter counts equal the standard definitions, and under BP each circuit computes
what the plain PyTorch network computes (same outputs, same gradients)."""
import pytest
import torch
import torch.nn.functional as F

from circuits import zoo
from plasticity import BP, PFA


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def circuit_params(circuit) -> int:
    return sum(p.numel() for p in circuit.with_rule(BP()).compile().forward_parameters())


LeNet, ResNetCifar = zoo.PlainLeNet, zoo.PlainResNetCifar


def test_parameter_counts():
    import torchvision

    assert circuit_params(zoo.resnet18()) == n_params(torchvision.models.resnet18()) == 11_689_512
    assert circuit_params(zoo.resnet20()) == n_params(ResNetCifar(20)) == 269_722
    assert circuit_params(zoo.resnet56()) == n_params(ResNetCifar(56)) == 853_018
    assert circuit_params(zoo.resnet8_mnist()) == n_params(ResNetCifar(8, in_channels=1)) == 75_002
    assert circuit_params(zoo.lenet()) == n_params(LeNet()) == 61_706
    assert circuit_params(zoo.mlp((784, 512, 512, 10))) == 669_706
    assert circuit_params(zoo.resnet18(num_classes=10)) == n_params(torchvision.models.resnet18(num_classes=10))


def copy_into_plain(model, pairs):
    """Copy the compiled circuit's tensors into a plain module: pairs of (projection into
    population, conv/linear module, batch norm or None)."""
    with torch.no_grad():
        for post, conv, bn in pairs:
            (name,) = [n for n, p in model.projections.items() if p.name.endswith(f"->{post}")]
            conv.weight.copy_(model.projections[name].weight)
            if conv.bias is not None:
                conv.bias.copy_(model.biases[post].flatten())
            if bn is not None:
                bn.load_state_dict(model.norms[post].state_dict())


def randomise_norms(model):
    """Non-trivial BatchNorm affine parameters."""
    with torch.no_grad():
        for norm in model.norms.values():
            norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.2, 0.2)


def assert_same_gradients(model, pairs):
    """After ``compare``: each W's gradient, and each norm's γ and β gradients, equal the plain module's."""
    for post, conv, bn in pairs:
        (name,) = [n for n in model.projections if n.endswith(f"->{post}")]
        torch.testing.assert_close(model.projections[name].weight.grad, conv.weight.grad, rtol=1e-8, atol=1e-11)
        if bn is not None:
            torch.testing.assert_close(model.norms[post].weight.grad, bn.weight.grad, rtol=1e-8, atol=1e-11)
            torch.testing.assert_close(model.norms[post].bias.grad, bn.bias.grad, rtol=1e-8, atol=1e-11)


def compare(model, plain, x, y, rtol=1e-10, atol=1e-12):
    model.train(), plain.train()
    out, ref = model(x), plain(x)
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    model.loss(out, y).backward()
    F.cross_entropy(ref, y).backward()
    return out


@pytest.mark.parametrize("build,depth,in_channels,size", [(zoo.resnet20, 20, 3, 32), (zoo.resnet8_mnist, 8, 1, 28)])
def test_cifar_resnets_under_bp_are_the_plain_resnets(build, depth, in_channels, size):
    model = build(feedback=BP()).compile().double()
    randomise_norms(model)
    plain = ResNetCifar(depth, in_channels=in_channels).double()
    pairs = [("stem", plain.conv1, plain.bn1), ("classes", plain.fc, None)]
    n = (depth - 2) // 6
    for i, block in enumerate(plain.blocks):
        name = f"s{i // n + 1}b{i % n}"
        pairs += [(f"{name}_a", block.conv1, block.bn1), (f"{name}_b", block.conv2, block.bn2)]
    copy_into_plain(model, pairs)
    x, y = torch.randn(4, in_channels, size, size, dtype=torch.float64), torch.randint(0, 10, (4,))
    compare(model, plain, x, y)
    assert_same_gradients(model, pairs)
    assert "s2b0_skip" in model.circuit.projections() and model.circuit.projections()["s2b0_skip"]["geometry"].kind == "shortcut_a"


def test_resnet18_is_torchvision_resnet18():
    import torchvision

    model = zoo.resnet18(num_classes=10, image_size=64, feedback=BP()).compile().double()
    tv = torchvision.models.resnet18(num_classes=10).double()
    pairs = [("stem", tv.conv1, tv.bn1), ("classes", tv.fc, None)]
    for s, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4], start=1):
        for b, block in enumerate(layer):
            pairs += [(f"s{s}b{b}_a", block.conv1, block.bn1), (f"s{s}b{b}_b", block.conv2, block.bn2)]
            if block.downsample is not None:
                pairs.append((f"s{s}b{b}_down", block.downsample[0], block.downsample[1]))
    copy_into_plain(model, pairs)
    x, y = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.randint(0, 10, (2,))
    compare(model, tv, x, y, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(model.projections["image->stem"].weight.grad, tv.conv1.weight.grad, rtol=1e-7, atol=1e-9)


def test_lenet_is_the_plain_lenet():
    model = zoo.lenet(feedback=BP()).compile().double()
    plain = LeNet().double()
    copy_into_plain(model, [("c1", plain.c1, None), ("c2", plain.c2, None), ("c3", plain.c3, None),
                            ("f4", plain.f4, None), ("classes", plain.f5, None)])
    x, y = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (3,))
    compare(model, plain, x, y)
    torch.testing.assert_close(model.projections["p1->c2"].weight.grad, plain.c2.weight.grad, rtol=1e-9, atol=1e-12)


def test_lenet_with_batch_norm_is_the_plain_one():
    """lenet(norm="batch") (Liao et al.'s BN arm on a conv circuit): BN after c1, c2, c3 and f4,
    no biases there; under BP the same outputs and gradients as plain PyTorch, float64."""
    model = zoo.lenet(feedback=BP(), norm="batch").compile().double()
    randomise_norms(model)
    plain = LeNet(norm=True).double()
    assert circuit_params(zoo.lenet(norm="batch")) == n_params(plain) == 61_706 - 226 + 2 * 226
    pairs = [("c1", plain.c1, plain.bn1), ("c2", plain.c2, plain.bn2), ("c3", plain.c3, plain.bn3),
             ("f4", plain.f4, plain.bn4), ("classes", plain.f5, None)]
    copy_into_plain(model, pairs)
    x, y = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (5,))
    compare(model, plain, x, y)
    assert_same_gradients(model, pairs)


def test_population_biases_are_one_per_cell_or_channel():
    """A dense population's bias is (C,), a feature map's (C, 1, 1): one per cell or channel,
    broadcast over H×W; checkpoints and their readers hold this layout."""
    mlp = zoo.mlp((6, 5, 3), feedback=BP()).compile()
    assert {n: tuple(b.shape) for n, b in mlp.biases.items()} == {"h1": (5,), "classes": (3,)}
    lenet = zoo.lenet(feedback=BP()).compile()
    assert {n: tuple(b.shape) for n, b in lenet.biases.items()} == {
        "c1": (6, 1, 1), "c2": (16, 1, 1), "c3": (120, 1, 1), "f4": (84,), "classes": (10,)}
    assert tuple(lenet.state_dict()["biases.c1"].shape) == (6, 1, 1)


def test_zoo_circuits_take_every_rule():
    c = zoo.resnet20(feedback=PFA(expansion=10))
    fb = c.projections("feedback")
    assert "s2b0_a->s2b0_b:R" in fb and "image->stem:B" not in fb  # the first layer sends no error
    assert c.population("s2b0_a->s2b0_b:ebar").shape == (320, 16, 16)
    with pytest.raises(ValueError, match="depth 6n"):
        zoo.resnet_cifar(21)


def test_the_forward_drops_activities_no_later_projection_reads():
    """A ResNet block's BN output (population s1b0_b, linear) is read once, by the residual sum;
    autograd saves nothing of it, so plain PyTorch frees it there, and so must the compiled
    forward (ResNet-20 at batch 128 held 40 MB more than plain PyTorch when it kept every
    activity until the end). ``run(record=...)`` still returns every population."""
    import weakref

    model = zoo.resnet8_mnist(feedback=BP()).compile()
    kept, alive_late = {}, {}
    for name in ("s1b0_b",):
        model.norms[name].register_forward_hook(lambda m, i, o, name=name: kept.__setitem__(name, weakref.ref(o)))
    # the last stage's BN runs long after stage 1's block was summed: what is alive then?
    model.norms["s3b0_b"].register_forward_hook(
        lambda m, i, o: alive_late.update({n: r() is not None for n, r in kept.items()}))
    out = model(torch.randn(2, 1, 28, 28))
    assert alive_late == {"s1b0_b": False}
    record = {}
    model.run(torch.randn(2, 1, 28, 28), record=record)
    assert set(record) == {p.population.name for p in model._plan} and out.shape == (2, 10)
