"""frSF (Moskovitz et al. 2018): e_in = (|M| ⊙ sign(Wᵀ)) δ with magnitudes M drawn once
(Glorot-uniform) and fixed; the signs follow W every step.

Liao et al. (2016)'s frSF ("fixed random magnitude sign-concordant feedback", V = M ∘ sign(W)
with M drawn once); the Glorot-uniform draw is BioTorch's (Liao et al.'s magnitude distribution is
not stated in what we could read: assumed).
|M| is kept in W's layout (post × pre), as ``Mt``, so that |M| ⊙ sign(W) is one contiguous pass
over W; the feedback is its transpose (a view). ``concordance`` (q in [0, 1], default 1): a fixed
random fraction 1 − q of the feedback synapses carries the opposite sign of W
(``plasticity.concordance``; drawn after M from the same seeded generator, so M is the plain
rule's): (|M| ⊙ C ⊙ sign(W))ᵀ δ."""
from connectomes.geometry import xavier_uniform
from plasticity.base import FeedbackEdge, Rule
from plasticity.concordance import apply_concordance, check_concordance, concordance_options, draw_concordance


class FRSF(Rule):
    name = "frsf"
    edges = (FeedbackEdge("M_sign_Wt", "post", "pre", plastic=False, transported=True),)
    sparse_tensors = ("Mt",)

    def __init__(self, connector=None, concordance=1.0):
        q = check_concordance(self.name, concordance)
        super().__init__(connector=connector, **concordance_options(q))
        self.concordance = q

    def init_feedback(self, proj, generator):
        proj.register_buffer("Mt", xavier_uniform(tuple(proj.weight.shape), generator).abs_())
        draw_concordance(proj, self.concordance, generator)

    def feedback_tensor(self, proj, W):
        return apply_concordance(proj, W.sign()).mul_(proj.Mt).transpose(0, 1)
