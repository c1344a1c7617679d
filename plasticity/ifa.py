"""IFA (Cheon, Bae & Paik 2025): fixed feedback given a one-time soft alignment at initialisation.

    B = ‖W₀‖ (cos θ · Ŵ₀ᵀ + sin θ · N̂⊥)

with Ŵ₀ᵀ = W₀ᵀ/‖W₀‖ and N̂⊥ a random direction orthogonalised against Ŵ₀ᵀ (Frobenius norms,
B in feedback layout pre × post). ∠(vec W₀ᵀ, vec B) = θ exactly and ‖B‖ = ‖W₀‖; then B stays
fixed and e_in = B δ as in FA. θ = 0° starts symmetric, θ = 90° is FA with a scaled B.

``B_gain``: None (‖B‖ = ‖W₀‖, the default) or g: ‖B‖ = g·√(n/fan_in), the norm expected of a
feedback tensor drawn N(0, g²/fan_in) (n synapses, fan_in = N_post · kernel), so that the
feedback's scale can be varied apart from W's at the same angle (trainability maps).

Cheon, Bae & Paik (2025) build the pair the other way round (Fig. 4a: W₀ sampled at θ from a
random B); at a given θ and scale the two constructions differ only in which of the pair is the
Glorot draw.
"""
import math

import torch

from plasticity.base import FeedbackEdge, Rule, feedback_shape, gain_option


class IFA(Rule):
    name = "ifa"
    edges = (FeedbackEdge("B", "post", "pre", plastic=False),)
    sparse_tensors = ("B",)

    def __init__(self, angle: float = 45.0, B_gain=None, connector=None):
        if not 0 <= angle <= 180:
            raise ValueError(f"ifa: angle must be between 0 and 180 degrees, got {angle!r}")
        super().__init__(connector=connector, angle=angle, **gain_option(self.name, "B_gain", B_gain))

    def init_feedback(self, proj, generator):
        Wt = proj.weight.detach().transpose(0, 1).double()
        norm = Wt.norm()
        w_hat = Wt / norm
        noise = torch.randn(feedback_shape(proj.weight.shape), generator=generator, dtype=torch.float64)
        noise -= (noise * w_hat).sum() * w_hat  # orthogonal to Ŵᵀ
        n_hat = noise / noise.norm()
        theta = math.radians(self.options["angle"])
        gain = self.options.get("B_gain")
        if gain is not None:
            fan_in = Wt.shape[1] * math.prod(Wt.shape[2:])
            norm = gain * math.sqrt(Wt.numel() / fan_in)
        B = norm * (math.cos(theta) * w_hat + math.sin(theta) * n_hat)
        proj.register_buffer("B", B.to(proj.weight.dtype).contiguous())  # feedback layout, like FA's B

    def feedback_tensor(self, proj, W):
        return proj.B

    def apply_dale(self, proj, generator):
        if proj.signs.get("post") is not None:
            raise ValueError(f"projection {proj.name!r}: ifa cannot run under Dale's principle: B is built at an "
                             "exact angle to W₀ᵀ, whose entries have the signs of the receiving pre cells; a B with "
                             "the signs of its sending post cells cannot keep that angle")
