"""Cell-level pair statistics on synthetic connectomes whose statistics were planted and known.

Each test plants one statistic the way a reference defines it and checks the reported value
against the planted truth (docs/connectomes.md has the definitions)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from connectomes import alignment_deg
from connectomes import reciprocity as rc
from connectomes.reciprocity import (NonFiniteWeightError, PairStats, bootstrap_intervals, circuit_reciprocity,
                                     feedback_routes, lognormal_fit, pair_statistics, reciprocity_table)
from connectomes.reference import REFERENCES, references_for, song_reciprocity_over_chance
from helpers import connectome_records


def bidirectional_lognormal(n_a=300, n_b=300, r_log=0.365, same_sign=0.7, sigma=0.9, seed=0):
    """Dense W and F whose magnitudes are lognormal with log-space correlation ``r_log`` and
    whose signs agree in a fraction ``same_sign`` of the pairs (independently of magnitude)."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, r_log], [r_log, 1]], size=n_a * n_b)
    mag_f, mag_b = np.exp(sigma * z[:, 0] - 1), np.exp(sigma * z[:, 1] - 1)
    s_f = rng.choice([-1.0, 1.0], n_a * n_b)
    s_b = np.where(rng.random(n_a * n_b) < same_sign, s_f, -s_f)
    W = (s_f * mag_f).reshape(n_b, n_a)
    F = (s_b * mag_b).reshape(n_b, n_a).T
    return torch.tensor(W), torch.tensor(F)


def test_log_space_r_of_bidirectional_pairs_is_songs_statistic():
    """Planted log-space r = 0.365 with 70% sign agreement: Song's statistic reads 0.365; the
    signed Pearson (what was reported before) mixes in sign agreement and reads about 0.26."""
    W, F = bidirectional_lognormal()
    st = pair_statistics(W, F)
    assert st.log_pearson_bidirectional == pytest.approx(0.365, abs=0.02)
    assert st.sign_agreement_bidirectional == pytest.approx(0.7, abs=0.01)
    assert st.excitatory_bidirectional_pairs == pytest.approx(300 * 300 * 0.35, rel=0.05)
    assert st.signed_pearson_bidirectional < 0.3     # a different statistic, named as such


def test_reciprocity_over_chance_uses_each_directions_own_density():
    """Forward and feedback drawn independently at densities 0.5 and 0.1: exactly chance (1.0),
    not P(i↔j)/p̄² = 0.05/0.09 = 0.55."""
    rng = np.random.default_rng(1)
    n = 400
    W = torch.tensor(np.where(rng.random((n, n)) < 0.5, rng.normal(size=(n, n)), 0.0))
    F = torch.tensor(np.where(rng.random((n, n)) < 0.1, rng.normal(size=(n, n)), 0.0))
    st = pair_statistics(W, F)
    assert st.p_forward == pytest.approx(0.5, abs=0.01) and st.p_feedback == pytest.approx(0.1, abs=0.01)
    assert st.reciprocity_over_chance == pytest.approx(1.0, abs=0.05)
    expected = st.possible_pairs * st.p_forward * st.p_feedback
    assert st.reciprocity_over_chance == pytest.approx(st.bidirectional_pairs / expected)
    iv = bootstrap_intervals([rc.pair_block(W, F, 0.0, None, None, None, "W", "F", "a", "b")], repeats=60)
    lo, hi = iv["reciprocity_over_chance"]
    assert lo <= 1.0 <= hi and hi - lo < 0.2


def test_planted_reciprocity_excess_is_recovered():
    """Pairs drawn with P(i↔j) = 4·p² (p = 0.1 per direction): ratio 4."""
    rng = np.random.default_rng(2)
    n, p = 500, 0.1
    b = 4 * p * p                              # bidirectional
    u = p - b                                  # each unidirectional kind
    kind = rng.choice(4, size=(n, n), p=[b, u, u, 1 - b - 2 * u])
    W = torch.tensor(np.where((kind == 0) | (kind == 1), 1.0, 0.0))
    F = torch.tensor(np.where((kind == 0) | (kind == 2), 1.0, 0.0).T)
    st = pair_statistics(W, F)
    assert st.reciprocity_over_chance == pytest.approx(4.0, rel=0.08)
    assert st.connection_probability == pytest.approx(p, rel=0.03)


def test_nan_is_an_error_naming_the_tensor_and_cell_pair():
    W = torch.randn(4, 5)
    W[2, 3] = float("nan")
    F = torch.randn(5, 4)
    for kwargs in ({}, {"mask": torch.ones(4, 5, dtype=torch.bool)}):
        with pytest.raises(NonFiniteWeightError, match=r"h1->h2\[2, 3\] = nan .*cell 3 of h1 onto cell 2 of h2"):
            pair_statistics(W, F, name="h1->h2", pre="h1", post="h2", **kwargs)
    G = torch.randn(4, 5)
    F[1, 0] = float("inf")
    with pytest.raises(NonFiniteWeightError, match=r"h1->h2:B\[1, 0\] = inf"):
        pair_statistics(G, F, name="h1->h2", feedback_name="h1->h2:B")
    recs = connectome_records("fa")
    recs[-1]["weight"][0, 1] = float("nan")
    with pytest.raises(NonFiniteWeightError, match=r"h1->out:B\[0, 1\]"):
        circuit_reciprocity(recs)


def test_dense_networks_are_compared_at_a_matched_density():
    """A dense pair is connected everywhere (p = 1, ratio 1: nothing to say); at a matched
    density each direction keeps exactly its strongest |w|: independent feedback is at chance,
    transposed feedback (KP's fixed point) is at 1/p, as planted."""
    rng = np.random.default_rng(3)
    n = 300
    W = torch.tensor(rng.normal(size=(n, n)))
    fa = pair_statistics(W, torch.tensor(rng.normal(size=(n, n))))
    assert fa.connection_probability == 1.0 and fa.dense and fa.reciprocity_over_chance == 1.0
    p = 0.1
    fa_m = pair_statistics(W, torch.tensor(rng.normal(size=(n, n))), density=p)
    assert fa_m.forward_synapses == fa_m.feedback_synapses == round(p * n * n)
    assert fa_m.connection_probability == pytest.approx(p)
    assert fa_m.reciprocity_over_chance == pytest.approx(1.0, abs=0.1)
    kp_m = pair_statistics(W, W.t().clone(), density=p)
    assert kp_m.reciprocity_over_chance == pytest.approx(1 / p)
    assert kp_m.log_pearson_bidirectional == pytest.approx(1.0)
    keep = rc.strongest(W.numpy(), np.ones((n, n), dtype=bool), 7)
    assert np.sort(np.abs(W.numpy()[keep])).tolist() == np.sort(np.abs(W.numpy()).ravel())[-7:].tolist()


def test_no_feedback_counts_only_the_forward_direction():
    """PFA's projection: the reverse synapse cannot exist. A dense W is then p = 1 (not 0.5),
    bidirectional fraction 0, and the chance level and correlations are undefined, with reasons."""
    W = torch.randn(5, 7)
    st = pair_statistics(W, None)
    assert st.connection_probability == 1.0 and not st.feedback_possible
    assert st.bidirectional_pairs == 0 and st.bidirectional_fraction == 0.0
    assert math.isnan(st.reciprocity_over_chance) and "cannot exist" in st.notes["reciprocity_over_chance"]
    assert math.isnan(st.signed_pearson_connected) and "undefined" in st.notes["signed_pearson_connected"]
    assert st.alignment_deg == 90.0 and "convention" in st.notes["alignment_deg"]


def test_zero_feedback_and_no_feedback_agree_where_they_should():
    """An all-zero feedback tensor: no feedback synapse, the same 90° and undefined correlation as
    None, but the reverse direction is possible (p counts it) and chance is 0 (undefined ratio)."""
    W = torch.randn(6, 4)
    zero, none = pair_statistics(W, torch.zeros(4, 6)), pair_statistics(W, None)
    assert zero.alignment_deg == none.alignment_deg == 90.0
    assert math.isnan(zero.signed_pearson_connected) and math.isnan(none.signed_pearson_connected)
    assert zero.connection_probability == 0.5 and zero.feedback_possible
    assert math.isnan(zero.reciprocity_over_chance) and "chance level 0" in zero.notes["reciprocity_over_chance"]


def test_song_appendix_model_gives_the_papers_R_and_angle():
    """The PFA paper's Appendix 1.2 model: signed normal weights, 31% of pairs given a partner at
    r = 0.36: R over connected pairs = 0.36·√0.31 = 0.200 and the angle 78.5°."""
    rng = np.random.default_rng(1)
    n = 400
    W = torch.tensor(rng.normal(size=(n, n)))
    partner = rng.random((n, n)) < 0.31
    F = torch.tensor(np.where(partner, 0.36 * W.numpy() + math.sqrt(1 - 0.36 ** 2) * rng.normal(size=(n, n)), 0.0).T)
    st = pair_statistics(W, F)
    assert st.bidirectional_fraction == pytest.approx(0.31, abs=0.01)
    assert st.signed_pearson_connected == pytest.approx(0.36 * math.sqrt(0.31), abs=0.01)
    assert st.alignment_deg == pytest.approx(math.degrees(math.acos(0.36 * math.sqrt(0.31))), abs=0.7)
    assert st.alignment_deg == pytest.approx(alignment_deg(W, F))


def test_lognormal_sigma_is_fitted_to_excitatory_synapses_only():
    """Excitatory magnitudes lognormal with σ = 0.9355 (Song), inhibitory ones with σ = 0.3:
    the comparison number reads 0.9355; the signs-folded σ is another, named, number."""
    rng = np.random.default_rng(4)
    n = 300
    exc = rng.random((n, n)) < 0.5
    w = np.where(exc, np.exp(rng.normal(-0.702, 0.9355, (n, n))), -np.exp(rng.normal(-2.0, 0.3, (n, n))))
    st = pair_statistics(torch.tensor(w), None)
    assert st.lognormal_sigma == pytest.approx(0.9355, abs=0.02)
    assert st.lognormal_mu == pytest.approx(-0.702, abs=0.02)
    assert st.excitatory_fraction == pytest.approx(0.5, abs=0.01)
    mixture_var = 0.5 * (0.9355 ** 2 + 0.3 ** 2) + 0.25 * (2.0 - 0.702) ** 2
    assert st.abs_lognormal_sigma == pytest.approx(math.sqrt(mixture_var), abs=0.02)


def test_strength_ratio_of_bidirectional_to_unidirectional_synapses():
    """Synapses of bidirectional pairs planted 2.75× stronger (Cossell et al.'s medians)."""
    rng = np.random.default_rng(5)
    n = 300
    bi = rng.random((n, n)) < 0.2
    only_f = ~bi & (rng.random((n, n)) < 0.3)
    base = np.exp(rng.normal(0, 0.5, (n, n)))
    W = np.where(bi, 2.75 * base, np.where(only_f, base, 0.0))
    F = np.where(bi, 2.75 * np.exp(rng.normal(0, 0.5, (n, n))), 0.0).T
    st = pair_statistics(torch.tensor(W), torch.tensor(F))
    assert st.strength_ratio_bidirectional == pytest.approx(2.75, rel=0.05)


def test_threshold_and_masks_define_synapses():
    W = torch.tensor([[0.5, 0.01], [0.0, -2.0]])      # 2 post × 2 pre
    F = torch.tensor([[0.4, 0.0], [0.02, -1.0]])      # 2 pre × 2 post
    st = pair_statistics(W, F)
    assert (st.forward_synapses, st.feedback_synapses, st.bidirectional_pairs) == (3, 3, 3)
    st = pair_statistics(W, F, threshold=0.05)
    assert (st.forward_synapses, st.feedback_synapses, st.bidirectional_pairs) == (2, 2, 2)
    st = pair_statistics(W, F, mask=torch.tensor([[True, False], [True, True]]))
    assert st.forward_synapses == 2
    with pytest.raises(ValueError, match="does not match Wᵀ"):
        pair_statistics(W, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="dense 2-D"):
        pair_statistics(torch.zeros(2, 2, 3, 3), None)
    with pytest.raises(ValueError, match="density"):
        pair_statistics(W, F, density=0)


def test_ranks_and_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)
    y = x + rng.integers(0, 3, 200)
    assert np.array_equal(rc.rank(x), sstats.rankdata(x))
    assert rc.spearman(x, y) == pytest.approx(sstats.spearmanr(x, y).statistic, abs=1e-12)
    assert rc.pearson(x, y) == pytest.approx(sstats.pearsonr(x, y).statistic, abs=1e-12)


def test_lognormal_fit_recovers_song_parameters():
    rng = np.random.default_rng(0)
    w = np.exp(rng.normal(-0.702, 0.9355, 20000)) * rng.choice([-1, 1], 20000)
    fit = lognormal_fit(torch.tensor(w))
    assert fit["mu"] == pytest.approx(-0.702, abs=0.03)
    assert fit["sigma"] == pytest.approx(0.9355, abs=0.02)
    assert fit["ks"] < 0.02 and fit["n"] == 20000 and fit["ks_pvalue"] > 0.01


# --------------------------------------------------------------------------- whole circuits
def test_pfa_records_have_zero_direct_reciprocal_synapses():
    stats = circuit_reciprocity(connectome_records("pfa"))
    st = stats["h1->out"]
    assert st.route == "indirect" and not st.feedback_possible
    assert st.feedback_synapses == 0 and st.bidirectional_pairs == 0 and st.bidirectional_fraction == 0
    assert st.connection_probability == 1.0 and st.alignment_deg == 90.0
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


def test_pooled_chance_is_computed_per_projection():
    """Two projections at densities 0.5 and 0.1, each at chance on its own: pooled ratio 1, where
    one pooled density would report a spurious excess, P(i↔j)/p̄² = 0.13/0.09 = 1.44 (pairs
    that differ in connection probability make reciprocity look over-represented)."""
    rng = np.random.default_rng(6)

    def rec(name, pre, post, p, n=200):
        W = torch.tensor(np.where(rng.random((n, n)) < p, 1.0, 0.0))
        F = torch.tensor(np.where(rng.random((n, n)) < p, 1.0, 0.0))
        return [{"name": name, "kind": "forward", "pre": pre, "post": post, "weight": W},
                {"name": f"{name}:B", "kind": "feedback", "pre": post, "post": pre, "weight": F, "forward": name}]

    recs = rec("a->b", "a", "b", 0.5) + rec("b->c", "b", "c", 0.1)
    stats = circuit_reciprocity(recs)
    assert stats["pooled"].reciprocity_over_chance == pytest.approx(1.0, abs=0.05)
    st = stats["pooled"]
    naive = (st.bidirectional_pairs / st.possible_pairs) / st.connection_probability ** 2
    assert naive == pytest.approx(0.13 / 0.09, abs=0.06)


def test_fa_and_bp_records_pair_with_their_direct_feedback():
    fa = circuit_reciprocity(connectome_records("fa"))["h1->out"]
    assert fa.route == "direct" and fa.feedback_names == ["h1->out:B"]
    assert fa.bidirectional_fraction == 1.0 and fa.connection_probability == 1.0
    bp = circuit_reciprocity(connectome_records("bp"))["h1->out"]
    assert bp.transported
    assert bp.signed_pearson_bidirectional == pytest.approx(1.0) and bp.alignment_deg == pytest.approx(0, abs=1e-5)


def test_table_puts_each_quantity_beside_every_reference(capsys):
    stats = circuit_reciprocity(connectome_records("fa"))
    table = reciprocity_table(stats)
    lines = table.splitlines()
    assert "cortex (study)" in lines[0]
    row = next(line for line in lines if line.startswith("| reciprocity over chance"))
    assert "campagnola2022" in row and "avermann2012" in row and "4.08† (song2005)" in row
    row = next(line for line in lines if line.startswith("| log-space Pearson r"))
    assert row.rstrip(" |").endswith("0.36 (song2005)")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    rc.print_reciprocity(connectome_records("fa"))
    assert "h1->out (fa)" in capsys.readouterr().out


# --------------------------------------------------------------------------- the references
def test_every_reference_is_sourced_and_names_a_statistic():
    fields = set(PairStats.__dataclass_fields__) | {"triplet_motifs"}
    for ref in REFERENCES:
        assert ref.source and ref.note and ref.study, ref
        assert ref.statistic in fields, ref.statistic
        assert ref.status in ("primary", "secondary", "derived", "unverified")
    studies = {r.study for r in REFERENCES if r.statistic == "reciprocity_over_chance" and r.usable}
    assert {"campagnola2022", "avermann2012"} <= studies
    assert not any(r.usable for r in references_for("connection_probability") if r.study == "song2005")


def test_song_numbers_are_consistent():
    """p = 0.116 with 31% of connected pairs bidirectional implies P(i↔j)/p² = 4.08; the mean
    of Song's fitted lognormal is 0.77 mV, its median 0.50 mV."""
    from connectomes.reference import lognormal_epsp_mean_mv, lognormal_epsp_median_mv

    p, f = 0.116, 0.31
    b = 2 * f * p / (1 + f)
    u = b * (1 - f) / f
    assert b + u / 2 == pytest.approx(p) and b / (b + u) == pytest.approx(f)
    assert song_reciprocity_over_chance() == pytest.approx(b / p ** 2) == pytest.approx(4.08, abs=0.005)
    assert lognormal_epsp_mean_mv() == pytest.approx(0.77, abs=0.005)
    assert lognormal_epsp_median_mv() == pytest.approx(0.50, abs=0.005)


def test_closeness_to_a_reference():
    """Inside a published range; within ±25% of a point; for a ratio, within ±25% of ln(ratio)
    (chance, 1.0, is not close to Song's 1.23); for an angle, of cos(angle) (90°, no correlation,
    is not close to 78°); NaN never."""
    from connectomes.reference import reference

    campagnola = next(r for r in references_for("reciprocity_over_chance") if r.study == "campagnola2022")
    assert campagnola.meets(3.2) and not campagnola.meets(2.0) and campagnola.meets(2.0, (2.0, 3.1))
    song_r = reference("log_pearson_bidirectional")
    assert song_r.meets(0.44) and not song_r.meets(0.46) and not song_r.meets(float("nan"))
    song_ratio = reference("strength_ratio_bidirectional")
    assert not song_ratio.meets(1.01) and song_ratio.meets(1.2)
    angle = reference("alignment_deg")
    assert angle.meets(79.3) and not angle.meets(82.3) and not angle.meets(90.0)


def test_sign_feedback_of_one_magnitude_has_no_log_space_correlation():
    """uSF's feedback is s·sign(Wᵀ): every excitatory feedback strength is s, so Song's r is
    undefined, and the note says why (not 'too few pairs')."""
    W = torch.randn(30, 20, dtype=torch.float64)
    st = pair_statistics(W, 0.1 * torch.sign(W.t()))
    assert st.excitatory_bidirectional_pairs > 200
    assert math.isnan(st.log_pearson_bidirectional) and "all equal" in st.notes["log_pearson_bidirectional"]
    assert st.sign_agreement_bidirectional == 1.0
