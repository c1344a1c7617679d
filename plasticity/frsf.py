"""frSF (Moskovitz et al. 2018): e_in = (|M| ⊙ sign(Wᵀ)) δ with magnitudes M drawn once
(Glorot-uniform) and fixed; the signs follow W every step.

|M| is kept in W's layout (post × pre), as ``Mt``, so that |M| ⊙ sign(W) is one contiguous pass
over W; the feedback is its transpose (a view)."""
from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule


class FRSF(Rule):
    name = "frsf"
    edges = (FeedbackEdge("M_sign_Wt", "post", "pre", plastic=False, transported=True),)
    sparse_tensors = ("Mt",)

    def init_feedback(self, proj, generator):
        proj.register_buffer("Mt", xavier_uniform(tuple(proj.weight.shape), generator).abs_())

    def feedback_tensor(self, proj, W):
        return W.sign().mul_(proj.Mt).transpose(0, 1)
