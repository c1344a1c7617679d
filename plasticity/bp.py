"""BP: errors return through Wᵀ (the transported forward weights). Runs as plain autograd."""
from plasticity.base import FeedbackEdge, Rule


class BP(Rule):
    name = "bp"
    edges = (FeedbackEdge("Wt", "post", "pre", plastic=False, transported=True),)

    def forward(self, proj, x, bias=None):
        return proj.geometry.forward(x, proj.masked_weight(), bias)  # a sparse W: masked gradient

    def feedback_tensor(self, proj, W):
        return W.transpose(0, 1)

    def apply_dale(self, proj, generator):
        """Under Dale's principle BP is the reference, not a model: W obeys the constraint (the
        step is projected) and its error is the exact gradient of the constrained network, sent
        through the transported Wᵀ, whose synapse from post cell j to pre cell i has the sign of
        the *receiving* cell i; that transport is not a synapse set, so nothing is constrained."""
