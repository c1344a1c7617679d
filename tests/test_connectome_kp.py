"""KP trained with weight decay ends with feedback ≈ Wᵀ: forward/feedback correlation near 1,
while FA's fixed random feedback stays uncorrelated and PFA has no direct feedback at all."""
import torch

from circuits import Training
from circuits.train import make_optimizer
from connectomes.reciprocity import circuit_reciprocity
from helpers import small_mlp
from plasticity import FA, KP, set_epoch_weight_decay

SIZES = (12, 16, 10, 5)


def train(model, steps=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(SIZES[-1], SIZES[0], generator=g, dtype=torch.float64)
    opt = make_optimizer(model, Training(lr=0.05, momentum=0.9, weight_decay=0.05))
    set_epoch_weight_decay(opt, 1)
    for _ in range(steps):
        x = torch.randn(16, SIZES[0], generator=g, dtype=torch.float64)
        opt.zero_grad()
        model.loss(model(x), (x @ teacher.t()).argmax(1)).backward()
        opt.step()
    return model


def test_kp_forward_and_feedback_strengths_correlate_after_training():
    model = small_mlp(KP(), SIZES, activation="relu").compile().double()
    before = circuit_reciprocity(model.connectome())
    assert all(abs(before[n].signed_pearson_connected) < 0.6 for n in ("h1->h2", "h2->out"))
    after = circuit_reciprocity(train(model).connectome())
    for name in ("h1->h2", "h2->out"):
        st = after[name]
        assert st.route == "direct" and st.bidirectional_fraction == 1.0
        assert st.signed_pearson_connected > 0.95 and st.signed_pearson_bidirectional > 0.95, (name, st.signed_pearson_connected)
        assert st.alignment_deg < 15
    assert after["pooled"].signed_pearson_connected > 0.95


def test_fa_feedback_stays_uncorrelated():
    after = circuit_reciprocity(train(small_mlp(FA(), SIZES, activation="relu").compile().double()).connectome())
    assert all(after[n].signed_pearson_connected < 0.9 for n in ("h1->h2", "h2->out"))
