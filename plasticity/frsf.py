"""frSF (Moskovitz et al. 2018): e_in = (|M| ⊙ sign(Wᵀ)) δ with magnitudes M drawn once
(Glorot-uniform) and fixed; the signs follow W every step."""
from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule, feedback_shape


class FRSF(Rule):
    name = "frsf"
    edges = (FeedbackEdge("M_sign_Wt", "post", "pre", plastic=False, transported=True),)

    def init_feedback(self, proj, generator):
        proj.register_buffer("M", xavier_uniform(feedback_shape(proj.weight.shape), generator).abs_())

    def feedback_tensor(self, proj, W):
        return W.sign().transpose(0, 1).mul(proj.M)
