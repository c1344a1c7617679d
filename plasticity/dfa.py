"""DFA (Nøkland 2016): each layer receives the readout error directly, e_in = B e_L, through a
fixed random B (N_pre × N_readout). The readout error is broadcast from the readout (the
compiled circuit taps it) rather than recomputed; no backprop runs underneath.

On a convolution N_pre counts every pre cell (C·H·W, flattened C-major): B reaches each cell of
the feature map separately (memory-heavy on large maps, but the rule as written)."""
import math

import torch.nn.functional as F

from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule


class DFA(Rule):
    name = "dfa"
    edges = (FeedbackEdge("B", "readout", "pre", plastic=False),)
    sparse_tensors = ("B",)
    needs_readout_error = True

    def check(self, projection, geometry, readouts):
        if len(readouts) != 1:
            raise ValueError(f"projection {projection!r}: dfa needs exactly one readout population, "
                             f"the circuit has {len(readouts)}")

    def init_feedback(self, proj, generator):
        n_pre = math.prod(proj.pre_shape)
        n_readout = proj.readout_size
        proj.register_buffer("B", xavier_uniform((n_pre, n_readout), generator))

    def feedback_tensor(self, proj, W):
        B = proj.B
        return B if B.shape == W.transpose(0, 1).shape else None

    def backward(self, proj, x, W, delta, plastic, need_e):
        e_in = None
        if need_e:
            e_in = F.linear(proj.broadcast.error, proj.B).view(x.shape)
        return e_in, proj.geometry.weight_grad(x, delta), []
