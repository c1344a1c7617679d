"""The connectome statistics split by cell type (Dale's principle), on a planted connectome."""
import pytest
import torch

from connectomes.reciprocity import TYPE_PAIRS, cell_type_reciprocity, circuit_reciprocity
from connectomes.report import cell_type_lines

N_PRE, N_POST, PRE_E, POST_E = 20, 10, 16, 8


def planted(seed=0):
    """h0 (16 E, 4 I) → h1 (8 E, 2 I) with direct feedback. E→E: forward and reverse synapses at
    the same 25% of pairs, reverse strength = forward² (ln-correlation exactly 1); every other
    type pair: independent masks and strengths. Signs: each synapse has its sender's."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.tensor([1] * PRE_E + [-1] * (N_PRE - PRE_E), dtype=torch.int8)
    post = torch.tensor([1] * POST_E + [-1] * (N_POST - POST_E), dtype=torch.int8)
    mag = torch.exp(torch.randn(N_POST, N_PRE, generator=g, dtype=torch.float64))
    fmask = torch.rand(N_POST, N_PRE, generator=g) < 0.25
    bmask = (torch.rand(N_POST, N_PRE, generator=g) < 0.4)
    ee = (post > 0)[:, None] & (pre > 0)[None, :]
    bmask = torch.where(ee, fmask, bmask)
    bmag = torch.where(ee, mag ** 2, torch.exp(torch.randn(N_POST, N_PRE, generator=g, dtype=torch.float64)))
    W = mag * fmask * pre.double()[None, :]
    F = (bmag * bmask * post.double()[:, None]).t()  # pre × post, the sign of the sending post cell
    recs = [{"name": "x->h0", "kind": "forward", "pre": "x", "post": "h0", "weight": torch.randn(N_PRE, 3, generator=g),
             "rule": "kp", "plastic": True, "transported": False, "post_sign": pre},
            {"name": "h0->h1", "kind": "forward", "pre": "h0", "post": "h1", "weight": W, "rule": "kp",
             "plastic": True, "transported": False, "pre_sign": pre, "post_sign": post},
            {"name": "h0->h1:B", "kind": "feedback", "pre": "h1", "post": "h0", "weight": F, "rule": "kp",
             "plastic": True, "transported": False, "forward": "h0->h1", "pre_sign": post, "post_sign": pre}]
    return recs, fmask, bmask, ee


def test_each_type_pair_counts_only_its_own_cells():
    recs, fmask, bmask, ee = planted()
    st = cell_type_reciprocity(recs)
    assert list(st) == list(TYPE_PAIRS)
    e = st["E→E"]
    n = int(fmask[ee].sum())
    assert (e.n_pre, e.n_post, e.possible_pairs) == (PRE_E, POST_E, PRE_E * POST_E)
    assert e.forward_synapses == e.feedback_synapses == e.bidirectional_pairs == n
    assert e.reciprocity_over_chance == pytest.approx(PRE_E * POST_E / n, rel=1e-12)
    assert e.log_pearson_bidirectional == pytest.approx(1.0, abs=1e-12)  # ln bwd = 2 ln fwd, on magnitudes
    assert e.excitatory_fraction == 1.0
    ie = st["I→E"]  # pre I cells (columns 16..19) onto post E cells (rows 0..7)
    assert ie.possible_pairs == (N_PRE - PRE_E) * POST_E
    assert ie.forward_synapses == int(fmask[:POST_E, PRE_E:].sum())
    assert ie.feedback_synapses == int(bmask[:POST_E, PRE_E:].sum())
    ii = st["I→I"]
    assert ii.possible_pairs == (N_PRE - PRE_E) * (N_POST - POST_E)
    assert ii.bidirectional_pairs == int((fmask & bmask)[POST_E:, PRE_E:].sum())
    # the pooled view folds the types together: the other pairs' independent masks dilute E→E's reciprocity
    pooled = circuit_reciprocity(recs)["h0->h1"]
    assert pooled.reciprocity_over_chance < e.reciprocity_over_chance


def test_a_connectome_without_cell_types_has_no_split():
    recs, *_ = planted()
    for r in recs:
        r.pop("pre_sign", None)
        r.pop("post_sign", None)
    assert cell_type_reciprocity(recs) == {}
    assert cell_type_lines(recs, "run") == []


def test_the_report_compares_only_e_to_e_with_cortex():
    recs, *_ = planted()
    lines = "\n".join(cell_type_lines(recs, "kp seed 0", density=0.5))
    assert "| quantity | E→E (kp) | E→I (kp) | I→E (kp) | I→I (kp) |" in lines
    assert "E→E against cortex" in lines and "I→I against" not in lines and "song2005" in lines


def test_feedback_sign_bound_on_a_hand_made_pair():
    """Two pre cells (E, I) and two post cells (E, I): Wᵀ = [[1, 2], [-3, -4]] (rows: pre cells,
    their signs); the Daleian F may match Wᵀ only on E→E (1) and I→I (-4): P = [[1, 0], [0, -4]]."""
    import math

    from connectomes.dale import feedback_sign_bound

    W = torch.tensor([[1.0, -3.0], [2.0, -4.0]], dtype=torch.float64)  # post × pre: columns E (+), I (−)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64)
    P = torch.tensor([[1.0, 0.0], [0.0, -4.0]], dtype=torch.float64)
    out = feedback_sign_bound(W, P, signs, signs)
    assert out["same_fraction"] == pytest.approx(17 / 30, abs=1e-15)
    assert out["bound_deg"] == pytest.approx(math.degrees(math.acos(math.sqrt(17 / 30))), abs=1e-12)
    assert out["alignment_deg"] == pytest.approx(out["bound_deg"], abs=1e-12) and out["to_bound_deg"] == pytest.approx(0, abs=1e-6)
    assert out["rms_mixed"] == 0 and out["rms_same"] == pytest.approx(math.sqrt(17 / 2), abs=1e-12)
    F = torch.tensor([[1.0, 0.0], [2.0, -4.0]], dtype=torch.float64)  # 2: I pre cell hears E post cell (mixed)
    out = feedback_sign_bound(W, F, signs, signs)
    assert out["rms_mixed"] == pytest.approx(math.sqrt(2), abs=1e-12) and out["bound_deg"] == pytest.approx(
        math.degrees(math.acos(math.sqrt(17 / 30))), abs=1e-12)
    assert out["alignment_deg"] == pytest.approx(math.degrees(math.acos((1 + -6 + 16) / math.sqrt(30 * 21))), abs=1e-12)
