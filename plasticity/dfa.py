"""DFA (Nøkland 2016): each layer receives the readout error directly, e_in = B e_L, through a
fixed random B (N_pre × N_readout). The readout error is sent from the readout
(``plasticity.ReadoutTap``, which the compiled circuit adds to the readout activity) rather
than recomputed; no backprop runs underneath. The projection's own backward sends nothing.

On a convolution N_pre counts every pre cell (C·H·W, flattened C-major): B reaches each cell of
the feature map separately (memory-heavy on large maps, but the rule as written).

``B_gain``: None (Glorot-uniform B, the default) or g: B ~ N(0, g²/N_readout)."""
import math

import torch.nn.functional as F

from plasticity.base import FeedbackEdge, Rule, feedback_init, gain_option


class DFA(Rule):
    name = "dfa"
    edges = (FeedbackEdge("B", "readout", "pre", plastic=False),)
    sparse_tensors = ("B",)
    needs_readout_error = True

    def __init__(self, B_gain=None, connector=None):
        super().__init__(connector=connector, **gain_option(self.name, "B_gain", B_gain))

    def check(self, projection, geometry, readouts):
        if len(readouts) != 1:
            raise ValueError(f"projection {projection!r}: dfa needs exactly one readout population, "
                             f"the circuit has {len(readouts)}")

    def init_feedback(self, proj, generator):
        n_pre = math.prod(proj.pre_shape)
        n_readout = proj.readout_size
        proj.register_buffer("B", feedback_init((n_pre, n_readout), generator, self.options.get("B_gain")))

    def feedback_tensor(self, proj, W):
        B = proj.B
        return B if B.shape == W.transpose(0, 1).shape else None

    def readout_feedback(self, proj, e_readout, x_shape):
        return F.linear(e_readout, proj.B.to(e_readout.dtype)).view(x_shape)  # B e_L

    def backward(self, proj, x, W, delta, plastic, need_e):
        return None, proj.geometry.weight_grad(x, delta), []  # e_in: readout_feedback
