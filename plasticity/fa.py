"""FA (Lillicrap et al. 2016): e_in = B δ through a fixed random B (pre × post), Glorot init."""
from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, feedback_shape


class FA(Rule):
    name = "fa"
    edges = (FeedbackEdge("B", "post", "pre", plastic=False),)
    sparse_tensors = ("B",)

    def init_feedback(self, proj, generator):
        proj.register_buffer("B", xavier_uniform(feedback_shape(proj.weight.shape), generator))

    def feedback_tensor(self, proj, W):
        return proj.B
