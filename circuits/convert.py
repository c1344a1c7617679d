"""``Circuit.from_torch``: a torch model (e.g. from torchvision) as a circuit.

The model is traced with ``torch.fx`` (torch.nn modules such as Linear, Conv2d, BatchNorm, ReLU
and pooling stay leaves: symbolic tracing never enters them), its shapes are propagated on an
example input, and every node of the graph is mapped onto the circuit model:

    Linear / Conv2d              a plastic projection (Dense / Conv2d) carrying the module's weight;
                                 its bias becomes the post population's bias
    BatchNorm1d/2d, activations  the post population's transfer (norm, then activation)
    x + y                        two projections into one population
    pooling, flatten             weightless projections (exact)
    anything else                an exact-BP block (``connectomes.Block``): run as plain
                                 PyTorch, listed by ``Circuit.exact_blocks()``, the summary and
                                 a warning

Weights, biases and BatchNorm states are copied, so the compiled circuit computes what the
model computes. The rules then act on the compiled circuit's own leaf projections: the trace is
of the torch model, never of a rule's autograd Function, so no rule silently becomes BP (tests
check the gradients).
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from circuits.circuit import Circuit
from circuits.errors import CircuitError
from connectomes.geometry import (AdaptiveAvgPool2d, AvgPool2d, Block, Conv2d, Dense, Geometry, Identity,
                                  MaxPool2d)
from populations import Input, Layer, Readout

ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu"}
ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", torch.sigmoid: "sigmoid",
                        F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", F.silu: "silu"}
ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}
FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass
class _Pending:
    """A population still being assembled: incoming terms (pre, geometry, weight, name), bias,
    norm and activation, until a node reads its activity."""

    shape: tuple
    terms: list = field(default_factory=list)
    bias: torch.Tensor | None = None
    norm: nn.Module | None = None
    activation: str | None = None


class _Call(nn.Module):
    """A function or method applied to one tensor with fixed other arguments (an exact block)."""

    def __init__(self, target, args, kwargs, method: bool):
        super().__init__()
        self.target, self.args, self.kwargs, self.method = target, args, kwargs, method

    def forward(self, x):
        args = [x if a is _Call else a for a in self.args]
        if self.method:
            return getattr(args[0], self.target)(*args[1:], **self.kwargs)
        return self.target(*args, **self.kwargs)

    def extra_repr(self):
        return getattr(self.target, "__name__", str(self.target))


def _default_bn(m) -> bool:
    return (isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine and m.track_running_stats
            and m.eps == 1e-5 and m.momentum == 0.1)


class _Converter:
    def __init__(self, module: nn.Module, input_shape: tuple, name: str, seed: int):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.c = Circuit(name, seed=seed)
        self.modules = dict(module.named_modules())
        self.values: dict = {}  # fx node → population name (str) or _Pending
        self.synapses: set = set()  # Linear/Conv2d modules already turned into projections

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def shape(node) -> tuple:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise CircuitError(f"cannot convert node {node.name!r} ({node.target}): its output is not one tensor")
        return tuple(meta.shape[1:])

    def unique_population(self, name: str) -> str:
        base, k = name, 1
        while name in self.c.graph:
            name, k = f"{base}_{k}", k + 1
        return name

    def unique_projection(self, name: str) -> str:
        known = self.c.projections()
        base, k = name, 1
        while name in known:
            name, k = f"{base}_{k}", k + 1
        return name

    def pop(self, node) -> str:
        """The population whose activity node ``node`` is (assembled now if still pending)."""
        value = self.values[node]
        if isinstance(value, str):
            return value
        name = self.finish(value, node.name)
        self.values[node] = name
        return name

    def finish(self, p: _Pending, name: str, readout: bool = False) -> str:
        name = self.unique_population(name)
        if readout:
            self.c.add(Readout(name, p.shape[0], bias=p.bias is not None))
        else:
            self.c.add(Layer(name, p.shape, activation=p.activation or "identity", bias=p.bias is not None,
                             norm="batch" if p.norm is not None else None))
        for pre, geometry, weight, pname in p.terms:
            self.c.connect(pre, name, geometry, name=self.unique_projection(pname or f"{pre}->{name}"), weight=weight)
        if p.bias is not None or p.norm is not None:
            self.c.set_initial(name, bias=None if p.bias is None else p.bias.detach(),
                               norm=None if p.norm is None else p.norm.state_dict())
        return name

    def extendable(self, node) -> _Pending | None:
        """The pending population of ``node`` if this is its only reader (so it may grow)."""
        value = self.values.get(node)
        return value if isinstance(value, _Pending) and len(node.users) == 1 else None

    def tensor_args(self, node) -> list:
        found = []
        torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
        return found

    # -- node kinds ------------------------------------------------------------------------------
    def through(self, node, arg, geometry: Geometry, weight=None, name=None, bias=None):
        self.values[node] = _Pending(self.shape(node), [(self.pop(arg), geometry, weight, name)], bias=bias)

    def transfer(self, node, arg, norm=None, activation=None):
        """BatchNorm or an activation: the population's own transfer, if it has room for it."""
        p = self.extendable(arg)
        fits = p is not None and p.activation is None and (norm is None or p.norm is None)
        if not fits:
            p = _Pending(self.shape(node), [(self.pop(arg), Identity(), None, None)])
        if norm is not None:
            p.norm = norm
        if activation is not None:
            p.activation = activation
        self.values[node] = p

    def add(self, node, a, b):
        if self.shape(a) != self.shape(node) or self.shape(b) != self.shape(node):
            raise CircuitError(f"cannot convert node {node.name!r}: an addition with broadcasting "
                               f"({self.shape(a)} + {self.shape(b)})")
        if a is b:  # x + x: the same cells twice
            name = self.pop(a)
            self.values[node] = _Pending(self.shape(node), [(name, Identity(), None, None)] * 2)
            return
        terms, bias = [], None
        for arg in (a, b):
            p = self.extendable(arg)
            if p is not None and p.norm is None and p.activation is None:  # one sum: merge the terms
                terms += p.terms
                bias = p.bias if bias is None else (bias if p.bias is None else bias + p.bias)
            else:
                terms.append((self.pop(arg), Identity(), None, None))
        self.values[node] = _Pending(self.shape(node), terms, bias=bias)

    def block(self, node, module: nn.Module, label: str):
        args = self.tensor_args(node)
        if len(set(args)) != 1:
            raise CircuitError(f"cannot convert node {node.name!r} ({label}): it combines {len(set(args))} tensors; "
                               "only additions can be expressed (two projections into one population)")
        self.values[node] = _Pending(self.shape(node), [(self.pop(args[0]), Block(module, label), None, node.name)])

    def call_block(self, node):
        """A function/method node with one tensor argument, kept as an exact-BP block."""
        args = self.tensor_args(node)
        if len(set(args)) != 1:
            label = getattr(node.target, "__name__", str(node.target))
            raise CircuitError(f"cannot convert node {node.name!r} ({label}): it combines {len(set(args))} tensors; "
                               "only additions can be expressed (two projections into one population)")
        (arg,) = set(args)
        label = str(node.target if node.op == "call_method" else getattr(node.target, "__name__", node.target))
        template = tuple(_Call if a is arg else a for a in node.args)
        if template.count(_Call) != len(args) or (node.op == "call_method" and template[0] is not _Call):
            raise CircuitError(f"cannot convert node {node.name!r} ({label}): its tensor is not a plain argument")
        module = _Call(node.target, template, dict(node.kwargs), node.op == "call_method")
        self.values[node] = _Pending(self.shape(node), [(self.pop(arg), Block(module, label), None, node.name)])

    def is_flatten(self, node, arg) -> bool:
        return self.shape(node) == (math.prod(self.shape(arg)),) and len(self.shape(arg)) > 1

    # -- the walk --------------------------------------------------------------------------------
    def module_node(self, node):
        m = self.modules[node.target]
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if node.target in self.synapses:
                raise CircuitError(f"cannot convert node {node.name!r}: module {node.target!r} is called twice; "
                                   "shared weights are not expressible (each projection holds its own W)")
            self.synapses.add(node.target)
        arg = node.args[0] if node.args else None
        if len(self.tensor_args(node)) != 1 or arg is None or node.kwargs:
            return self.block(node, m, type(m).__name__)
        if isinstance(m, nn.Linear) and len(self.shape(arg)) == 1:  # (on more dims it acts on the last: a block)
            return self.through(node, arg, Dense(), m.weight, node.name, m.bias)
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            geometry = Conv2d(m.kernel_size, m.stride, m.padding, m.dilation, m.groups)
            return self.through(node, arg, geometry, m.weight, node.name, m.bias)
        if _default_bn(m) and len(self.shape(arg)) == (1 if isinstance(m, nn.BatchNorm1d) else 3):
            return self.transfer(node, arg, norm=m)
        if type(m) in ACTIVATION_MODULES:
            return self.transfer(node, arg, activation=ACTIVATION_MODULES[type(m)])
        if isinstance(m, nn.MaxPool2d) and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices:
            return self.through(node, arg, MaxPool2d(m.kernel_size, m.stride, m.padding))
        if (isinstance(m, nn.AvgPool2d) and not m.ceil_mode and m.count_include_pad
                and m.divisor_override is None):
            return self.through(node, arg, AvgPool2d(m.kernel_size, m.stride, m.padding))
        if isinstance(m, nn.AdaptiveAvgPool2d) and None not in _tuple(m.output_size):
            return self.through(node, arg, AdaptiveAvgPool2d(m.output_size))
        if isinstance(m, nn.Flatten) and self.is_flatten(node, arg):
            self.values[node] = self.pop(arg)
            return None
        if isinstance(m, nn.Identity):
            self.values[node] = self.pop(arg)
            return None
        return self.block(node, m, type(m).__name__)

    def function_node(self, node):
        target, args = node.target, node.args
        method = node.op == "call_method"
        tensors = self.tensor_args(node)
        if not tensors:
            self.values[node] = None  # a Python value (e.g. x.size(0)): read only by flatten/view
            return None
        arg = args[0] if args and isinstance(args[0], torch.fx.Node) else None
        if (target in ADD_FUNCTIONS and not method or method and target in ADD_METHODS) \
                and len(args) == 2 and all(isinstance(a, torch.fx.Node) for a in args) and not node.kwargs:
            return self.add(node, *args)
        if node.meta.get("tensor_meta") is None:
            self.values[node] = None
            return None
        if arg is not None:
            act = ACTIVATION_METHODS.get(target) if method else ACTIVATION_FUNCTIONS.get(target)
            if act and len(args) == 1 and set(node.kwargs) <= {"inplace"}:
                return self.transfer(node, arg, activation=act)
            flatten = (target in FLATTEN_METHODS) if method else (target in FLATTEN_FUNCTIONS)
            if flatten and self.is_flatten(node, arg):
                self.values[node] = self.pop(arg)
                return None
            if not method and target is F.adaptive_avg_pool2d and len(tensors) == 1:
                size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
                if None not in _tuple(size):
                    return self.through(node, arg, AdaptiveAvgPool2d(size))
        return self.call_block(node)

    def run(self, feedback=None) -> Circuit:
        traced = torch.fx.symbolic_trace(self.module)
        was_training = self.module.training
        self.module.eval()  # shape propagation must not move BatchNorm statistics
        try:
            dtype = next((p.dtype for p in self.module.parameters() if p.is_floating_point()), torch.float32)
            with torch.no_grad():
                ShapeProp(traced).propagate(torch.zeros(2, *self.input_shape, dtype=dtype))
        finally:
            self.module.train(was_training)
        inputs = [n for n in traced.graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise CircuitError(f"from_torch converts models with one input, {type(self.module).__name__} has {len(inputs)}")
        for node in traced.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = self.c.add(Input(self.unique_population(node.name), self.input_shape)).name
            elif node.op == "get_attr":
                raise CircuitError(f"cannot convert node {node.name!r}: it reads the model's tensor "
                                   f"{node.target!r} directly (not through a module)")
            elif node.op == "call_module":
                self.module_node(node)
            elif node.op in ("call_function", "call_method"):
                self.function_node(node)
            elif node.op == "output":
                self.output(node)
        if feedback is not None:
            if isinstance(feedback, str):
                from plasticity import make_rule
                feedback = make_rule(feedback)
            self.c.feedback(feedback)
        blocks = self.c.exact_blocks()
        if blocks:
            listed = ", ".join(f"{b['name']} ({b['module']}, {b['parameters']} parameters)" for b in blocks)
            warnings.warn(f"{self.c.name}: {len(blocks)} operation(s) kept as exact-BP blocks: {listed}", stacklevel=3)
        return self.c

    def output(self, node):
        out = node.args[0]
        if not isinstance(out, torch.fx.Node) or len(self.shape(out)) != 1:
            raise CircuitError(f"from_torch needs a model that returns one batch × classes tensor, "
                               f"{type(self.module).__name__} returns {node.args[0]!r}")
        p = self.extendable(out)
        name = self.unique_population("logits")
        if p is not None and p.norm is None and p.activation is None:
            self.finish(p, name, readout=True)
        else:
            self.c.add(Readout(name, self.shape(out)[0], bias=False))
            self.c.connect(self.pop(out), name, Identity())


def _tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def from_torch(module: nn.Module, feedback=None, input_shape=(3, 224, 224), name: str | None = None,
               seed: int = 0) -> Circuit:
    """A circuit computing what ``module`` computes on inputs of ``input_shape`` (without the
    batch dim), with its weights, biases and BatchNorm states, and the feedback rule
    ``feedback`` (a Rule or a rule name; None: call ``circuit.feedback`` later).

    What the circuit cannot express becomes an exact-BP block: listed by
    ``circuit.exact_blocks()`` and ``circuit.summary()``, and announced with a warning.
    """
    return _Converter(module, input_shape, name or type(module).__name__.lower(), seed).run(feedback)
