"""FA (Lillicrap et al. 2016): e_in = B δ through a fixed random B (pre × post), Glorot init.

``B_gain``: None (Glorot-uniform B, the default) or g: B ~ N(0, g²/N_post) (g = 1: LeCun, √2:
He), to vary the feedback's scale apart from W's (trainability maps)."""
from plasticity.base import FeedbackEdge, Rule, feedback_init, feedback_shape, gain_option


class FA(Rule):
    name = "fa"
    edges = (FeedbackEdge("B", "post", "pre", plastic=False),)
    sparse_tensors = ("B",)

    def __init__(self, B_gain=None, connector=None):
        super().__init__(connector=connector, **gain_option(self.name, "B_gain", B_gain))

    def init_feedback(self, proj, generator):
        B = feedback_init(feedback_shape(proj.weight.shape), generator, self.options.get("B_gain"))
        proj.register_buffer("B", B)

    def feedback_tensor(self, proj, W):
        return proj.B
