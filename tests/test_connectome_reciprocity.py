"""Cell-level pair statistics on synthetic connectomes with planted structure."""
import math

import numpy as np
import pytest
import torch

from connectomes import alignment_deg
from connectomes import reciprocity as rc
from connectomes.reciprocity import (circuit_reciprocity, feedback_routes, lognormal_fit, pair_statistics,
                                     reciprocity_table)
from connectomes.reference import RAT_CORTEX
from helpers import connectome_records


def planted(n_a=200, n_b=220, connected=0.25, bidirectional=0.31, r=0.36, seed=0):
    """W (n_b × n_a) and F (n_a × n_b) where a fraction ``connected`` of cell pairs is
    connected, ``bidirectional`` of those in both directions with strengths correlated by r."""
    rng = np.random.default_rng(seed)
    W = np.zeros((n_b, n_a))
    F = np.zeros((n_a, n_b))
    pick = rng.choice(n_a * n_b, int(connected * n_a * n_b), replace=False)
    jj, ii = np.divmod(pick, n_a)
    n_bi = int(round(bidirectional * pick.size))
    xy = rng.multivariate_normal([0, 0], [[1.0, r], [r, 1.0]], size=n_bi)
    W[jj[:n_bi], ii[:n_bi]], F[ii[:n_bi], jj[:n_bi]] = xy[:, 0], xy[:, 1]
    fwd = rng.random(pick.size - n_bi) < 0.5
    j1, i1 = jj[n_bi:], ii[n_bi:]
    W[j1[fwd], i1[fwd]] = rng.normal(size=fwd.sum())
    F[i1[~fwd], j1[~fwd]] = rng.normal(size=(~fwd).sum())
    return torch.tensor(W), torch.tensor(F), pick.size, n_bi


def test_planted_bidirectional_fraction_and_correlation():
    W, F, n_conn, n_bi = planted()
    st = pair_statistics(W, F)
    assert st.connected_pairs == n_conn and st.bidirectional_pairs == n_bi
    assert st.bidirectional_fraction == pytest.approx(0.31, abs=0.005)
    assert st.pearson_bidirectional == pytest.approx(0.36, abs=0.05)
    assert st.spearman_bidirectional == pytest.approx(0.36, abs=0.06)
    n_pairs = 200 * 220
    p = (st.forward_synapses + st.feedback_synapses) / (2 * n_pairs)
    assert st.connection_probability == pytest.approx(p)
    assert st.reciprocity_ratio == pytest.approx((n_bi / n_pairs) / p ** 2)
    # over connected pairs, absent = 0: a weaker correlation, and the angle of the same vectors
    assert 0 < st.pearson_connected < st.pearson_bidirectional
    assert st.alignment_deg == pytest.approx(alignment_deg(W, F))
    assert 60 < st.alignment_deg < 90


def test_song_like_mixture_gives_the_papers_R_and_angle():
    """69% of forward synapses without partner, 31% with r = 0.36: R ≈ 0.2, ≈ 78°."""
    rng = np.random.default_rng(1)
    n = 300
    W = torch.tensor(rng.normal(size=(n, n)))
    partner = rng.random((n, n)) < 0.31
    noise = rng.normal(size=(n, n))
    F = torch.tensor(np.where(partner, 0.36 * W.numpy() + math.sqrt(1 - 0.36 ** 2) * noise, 0.0).T)
    st = pair_statistics(W, F)
    assert st.bidirectional_fraction == pytest.approx(0.31, abs=0.01)
    assert st.pearson_connected == pytest.approx(0.2, abs=0.03)
    assert st.alignment_deg == pytest.approx(78, abs=2.0)


def test_no_feedback_means_no_reciprocal_synapses():
    W = torch.randn(5, 7)
    st = pair_statistics(W, None)
    assert st.feedback_synapses == 0 and st.bidirectional_pairs == 0
    assert st.connection_probability == 0.5
    assert st.bidirectional_fraction == 0.0 and st.reciprocity_ratio == 0.0
    assert st.alignment_deg == 90.0
    assert st.pearson_connected == 0.0 and math.isnan(st.pearson_bidirectional)


def test_threshold_and_masks_define_synapses():
    W = torch.tensor([[0.5, 0.01], [0.0, -2.0]])      # 2 post × 2 pre
    F = torch.tensor([[0.4, 0.0], [0.02, -1.0]])      # 2 pre × 2 post
    st = pair_statistics(W, F)
    assert (st.forward_synapses, st.feedback_synapses, st.bidirectional_pairs) == (3, 3, 3)
    st = pair_statistics(W, F, threshold=0.05)
    assert (st.forward_synapses, st.feedback_synapses, st.bidirectional_pairs) == (2, 2, 2)
    mask = torch.tensor([[True, False], [True, True]])
    st = pair_statistics(W, F, mask=mask)
    assert st.forward_synapses == 2
    with pytest.raises(ValueError, match="does not match Wᵀ"):
        pair_statistics(W, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="dense 2-D"):
        pair_statistics(torch.zeros(2, 2, 3, 3), None)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)
    y = x + rng.integers(0, 3, 200)
    assert rc.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_lognormal_fit_recovers_song_parameters():
    rng = np.random.default_rng(0)
    w = np.exp(rng.normal(-0.702, 0.9355, 20000)) * rng.choice([-1, 1], 20000)
    fit = lognormal_fit(torch.tensor(w))
    assert fit["mu"] == pytest.approx(-0.702, abs=0.03)
    assert fit["sigma"] == pytest.approx(0.9355, abs=0.02)
    assert fit["ks"] < 0.02 and fit["n"] == 20000
    assert fit["ks_pvalue"] > 0.01


# --------------------------------------------------------------------------- whole circuits
def records(rule: str, seed=0):
    return connectome_records(rule, seed)


def test_pfa_records_have_zero_direct_reciprocal_synapses():
    stats = circuit_reciprocity(records("pfa"))
    st = stats["h1->out"]
    assert st.route == "indirect" and not st.direct_feedback
    assert st.feedback_synapses == 0 and st.bidirectional_pairs == 0 and st.bidirectional_fraction == 0
    assert st.alignment_deg == 90.0
    assert stats["x0->h1"].route == "none"
    assert stats["pooled"].bidirectional_pairs == 0


def test_pfa_from_the_real_compiler_has_no_direct_feedback():
    from helpers import small_mlp
    from plasticity import PFA

    recs = small_mlp(PFA(expansion=2)).compile().connectome()
    stats = circuit_reciprocity(recs)
    for name, st in stats.items():
        assert st.bidirectional_pairs == 0 and st.feedback_synapses == 0, name
    assert {it["route"] for it in feedback_routes(recs)} == {"none", "indirect"}


def test_fa_and_bp_records_pair_with_their_direct_feedback():
    fa = circuit_reciprocity(records("fa"))["h1->out"]
    assert fa.route == "direct" and fa.feedback_names == ["h1->out:B"]
    assert fa.bidirectional_fraction == 1.0 and fa.connection_probability == 1.0
    assert abs(fa.pearson_connected) < 0.6
    bp = circuit_reciprocity(records("bp"))["h1->out"]
    assert bp.transported
    assert bp.pearson_bidirectional == pytest.approx(1.0) and bp.alignment_deg == pytest.approx(0, abs=1e-5)


def test_table_puts_each_quantity_beside_rat_cortex(capsys):
    stats = circuit_reciprocity(records("fa"))
    table = reciprocity_table(stats)
    assert "rat cortex" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("| bidirectional / connected"))
    assert row.rstrip(" |").endswith(str(RAT_CORTEX["bidirectional_fraction"]))
    assert all(line.count("|") == table.splitlines()[0].count("|") for line in table.splitlines())
    rc.print_reciprocity(records("fa"))
    assert "h1->out (fa)" in capsys.readouterr().out
