"""BP: errors return through Wᵀ (the transported forward weights). Runs as plain autograd."""
from plasticity.base import FeedbackEdge, Rule


class BP(Rule):
    name = "bp"
    edges = (FeedbackEdge("Wt", "post", "pre", plastic=False, transported=True),)

    def forward(self, proj, x, bias=None):
        return proj.geometry.forward(x, proj.masked_weight(), bias)  # a sparse W: masked gradient

    def feedback_tensor(self, proj, W):
        return W.transpose(0, 1)
