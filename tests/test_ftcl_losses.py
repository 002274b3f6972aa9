"""FTCL's smooth max, FSD and LCS dynamic programs, contrastive terms and ACM-Net's losses
(FTCL repo, utils/ftcl_criterion.py and utils/net_utils.py)."""

from __future__ import annotations

import random

import pytest
import torch

from actionray.models.acmnet import ACMNetOutput
from actionray.trainables.ftcl_losses import (acm_loss, contrastive_difference, fine_grained_sequence_distance,
                                              ftcl_loss, in_batch_pairs, longest_common_subsequence, smooth_max)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def slow_fsd(p: torch.Tensor, q: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """Per-cell loop of the FSD recurrence, written from the recurrence (no vectorisation)."""
    h = p.shape[1] // 2
    m, g = _cos(p[:, :h], q[:, :h]), _cos(p[:, h:], q[:, h:])
    table = [[p.new_zeros(()) for _ in range(q.shape[0] + 1)] for _ in range(p.shape[0] + 1)]
    for i in range(1, p.shape[0] + 1):
        for j in range(1, q.shape[0] + 1):
            moves = torch.stack([table[i - 1][j - 1], g[i - 1, j - 1] + table[i - 1][j],
                                 g[i - 1, j - 1] + table[i][j - 1]])
            top = moves.max()
            table[i][j] = m[i - 1, j - 1] + gamma * (torch.log(torch.exp((moves - top) / gamma).sum()) + top / gamma)
    return table[-1][-1]


def slow_lcs(u: torch.Tensor, v: torch.Tensor, thr: float = 0.92) -> torch.Tensor:
    """Per-cell loop of the LCS recurrence with a Python branch and Python max, as the reference writes it."""
    s = _cos(u, v)
    table = [[u.new_zeros(()) for _ in range(v.shape[0] + 1)] for _ in range(u.shape[0] + 1)]
    for i in range(1, u.shape[0] + 1):
        for j in range(1, v.shape[0] + 1):
            if s[i - 1, j - 1] > thr:
                table[i][j] = table[i - 1][j - 1] + s[i - 1, j - 1]
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_smooth_max_reference_values():
    assert smooth_max(torch.zeros(3)).item() == pytest.approx(0.1098612, abs=1e-6)
    assert smooth_max(torch.tensor([1.0, 0.5, -1.0])).item() == pytest.approx(1.0006716, abs=1e-6)


def test_smooth_max_with_gamma_zero_is_the_hard_max():
    assert smooth_max(torch.tensor([0.3, 2.0, -1.0]), gamma=0).item() == 2.0


def test_fsd_reference_values_and_gradient():
    torch.manual_seed(0)
    a, b = torch.randn(5, 1024), torch.randn(5, 1024)
    assert fine_grained_sequence_distance(a, b).item() == pytest.approx(0.7883939, rel=1e-5)
    assert fine_grained_sequence_distance(a, a).item() == pytest.approx(10.497315, rel=1e-5)
    torch.manual_seed(0)
    a = torch.randn(5, 1024).requires_grad_()
    b = a.detach() + 0.5 * torch.randn(5, 1024)
    value = fine_grained_sequence_distance(a, b)
    value.backward()
    assert value.item() == pytest.approx(9.436605, rel=1e-5)
    assert a.grad.norm().item() == pytest.approx(0.110585, rel=1e-4)


def test_fsd_batched_values_and_contrastive_term():
    torch.manual_seed(1)
    act0, act1, other, _ = (torch.randn(4, 5, 1024) for _ in range(4))
    label = torch.tensor([1, 0, 1, 0])
    # The table's negative partner is the third tensor drawn (its naming of the four tensors is ambiguous).
    scores = fine_grained_sequence_distance(act0, torch.where(label.bool()[:, None, None], act1, other))
    assert scores.tolist() == pytest.approx([0.835616, 0.774706, 0.791440, 0.908371], rel=1e-5)
    assert contrastive_difference(scores, label).item() == pytest.approx(0.0280105, rel=1e-4)


def test_fsd_matches_per_cell_loop_in_value_and_gradient_including_rectangular_tables():
    torch.manual_seed(5)
    for l1, l2 in [(5, 5), (3, 6), (4, 1)]:
        p = torch.randn(3, l1, 16, requires_grad=True)
        q = torch.randn(3, l2, 16, requires_grad=True)
        fast = fine_grained_sequence_distance(p, q)
        slow = torch.stack([slow_fsd(p[k], q[k]) for k in range(3)])
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
        gp_fast, gq_fast = torch.autograd.grad(fast.sum(), (p, q))
        gp_slow, gq_slow = torch.autograd.grad(slow.sum(), (p, q))
        torch.testing.assert_close(gp_fast, gp_slow, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gq_fast, gq_slow, rtol=1e-4, atol=1e-6)


def test_fsd_is_larger_for_alike_sequences():
    torch.manual_seed(6)
    a = torch.randn(5, 32)
    assert fine_grained_sequence_distance(a, a + 0.1 * torch.randn(5, 32)) > fine_grained_sequence_distance(
        a, torch.randn(5, 32))


def test_lcs_reference_values_and_contrastive_term():
    torch.manual_seed(2)
    a = torch.rand(2, 30, 2048)
    perm = torch.randperm(30)
    b = 0.8 * a[:, perm] + 0.2 * torch.rand(2, 30, 2048)
    scores = longest_common_subsequence(a, b)
    assert scores.tolist() == pytest.approx([9.904799, 9.903847], rel=1e-5)
    assert contrastive_difference(scores, torch.tensor([1, 0])).item() == pytest.approx(-0.00095272, rel=1e-3)


def test_rescaled_lcs_of_the_in_batch_variant_reference_values():
    torch.manual_seed(3)
    c = torch.rand(4, 30, 2048)
    c[1] = 0.9 * c[0] + 0.1 * torch.rand(30, 2048)
    assert longest_common_subsequence(c[0], c[1], rescaled=True).item() == pytest.approx(29.654818, rel=1e-5)
    assert longest_common_subsequence(c[0], c[2], rescaled=True).item() == 0.0


def test_lcs_matches_per_cell_loop_in_value_and_gradient():
    torch.manual_seed(7)
    base = torch.rand(3, 12, 8)
    u = base.clone().requires_grad_()
    v = (base[:, torch.randperm(12)] + 0.05 * torch.rand(3, 12, 8)).requires_grad_()
    fast = longest_common_subsequence(u, v, threshold=0.95)
    slow = torch.stack([slow_lcs(u[k], v[k], 0.95) for k in range(3)])
    assert (fast > 0).all()  # some matches, so the gradient check is not vacuous
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for g_fast, g_slow in zip(torch.autograd.grad(fast.sum(), (u, v)), torch.autograd.grad(slow.sum(), (u, v))):
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-6)


def test_lcs_without_any_match_is_zero_with_zero_gradient():
    u = torch.eye(4, 8).requires_grad_()
    v = torch.eye(4, 8).flip(1).contiguous().requires_grad_()
    value = longest_common_subsequence(u, v)
    value.backward()
    assert value.item() == 0.0 and u.grad.abs().sum().item() == 0.0


def test_contrastive_difference_with_only_positives_is_minus_their_mean():
    scores = torch.tensor([2.0, 4.0])
    assert contrastive_difference(scores, torch.tensor([1, 1])).item() == pytest.approx(-3.0)


def _output(b: int = 2, t: int = 4, c: int = 3, d: int = 6, seed: int = 0) -> ACMNetOutput:
    g = torch.Generator().manual_seed(seed)
    scores = [torch.softmax(torch.randn(b, c + 1, generator=g), 1) for _ in range(3)]
    feats = [torch.randn(b, d, generator=g) for _ in range(3)]
    att = torch.softmax(torch.randn(b, t, 3, generator=g), 2)
    cas = [torch.softmax(torch.randn(b, t, c + 1, generator=g), 2) for _ in range(4)]
    return ACMNetOutput(*scores, *feats, att, *cas, torch.rand(b, 4, d, generator=g),
                        torch.randn(b, 2, 8, generator=g), torch.randn(b, 2, 8, generator=g))


def test_acm_loss_hand_computed_case():
    # One video, 2 classes + background, 2 snippets; every term worked out by hand.
    out = _output(b=1, t=2, c=2, d=2)
    out.inst_scores = torch.tensor([[0.5, 0.25, 0.25]])
    out.cont_scores = torch.tensor([[0.25, 0.25, 0.5]])
    out.back_scores = torch.tensor([[0.1, 0.1, 0.8]])
    out.inst_feature, out.cont_feature, out.back_feature = (torch.tensor([[v, 0.0]]) for v in (60.0, 20.0, 3.0))
    out.attention = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])
    out.inst_cas = torch.tensor([[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]])
    total, terms = acm_loss(out, torch.tensor([[1.0, 0.0]]))
    import math
    inst = -math.log(0.5)
    cont = -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))
    back = -math.log(0.8)
    guide = abs(1 - 0.2 - 0.5) + abs(1 - 0.8 - 0.1)
    feat = (max(0, 50 - 60 + 20) + max(0, 50 - 20 + 3) + 3) ** 2
    sparse = (0.6 + 0.4) / 2  # sum over time, mean over batch and the instance/context channels
    assert terms["inst"].item() == pytest.approx(inst, rel=1e-6)
    assert terms["cont"].item() == pytest.approx(cont, rel=1e-6)
    assert terms["back"].item() == pytest.approx(back, rel=1e-6)
    assert terms["guide"].item() == pytest.approx(guide, rel=1e-6)
    assert terms["feat"].item() == pytest.approx(feat, rel=1e-6)
    assert terms["sparse"].item() == pytest.approx(sparse, rel=1e-6)
    expected = inst + cont + back + 2e-3 * guide + 5e-5 * feat + 2e-4 * sparse
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_guide_loss_sends_no_gradient_to_attention():
    out = _output()
    out.attention.requires_grad_()
    out.inst_cas.requires_grad_()
    _, terms = acm_loss(out, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    grad_att, grad_cas = torch.autograd.grad(terms["guide"], (out.attention, out.inst_cas), allow_unused=True)
    assert grad_att is None and grad_cas.abs().sum() > 0


def test_in_batch_pairs_follow_the_repository_rule():
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]])
    pos, neg = in_batch_pairs(labels, random.Random(0))
    assert pos == [(0, 1)]  # (0, 3) overlaps but is not the same single class
    assert len(neg) == 1 and neg[0] in [(0, 2), (0, 4), (1, 2), (1, 4), (2, 4), (3, 4)]


def test_repository_variant_adds_in_batch_terms_and_clean_does_not():
    out = _output(b=3, seed=1)
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    clean, t_clean = acm_loss(out, labels, variant="clean")
    repo, t_repo = acm_loss(out, labels, variant="repository", rng=random.Random(0))
    assert "lcs" not in t_clean and "fsd" in t_repo
    expected = clean + 0.1 * t_repo["lcs"] + 0.8 * t_repo["fsd"]
    assert repo.item() == pytest.approx(expected.item(), rel=1e-6)
    assert t_repo["fsd"].item() != 0.0
    with pytest.raises(ValueError, match="variant"):
        acm_loss(out, labels, variant="acm")


def test_ftcl_loss_combines_acm_lcs_and_fsd_with_paper_weights():
    out1, out2 = _output(seed=2), _output(seed=3)
    y1 = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    y2 = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    total, terms = ftcl_loss(out1, out2, y1, y2)
    acm = (acm_loss(out1, y1)[0] + acm_loss(out2, y2)[0]) / 2
    fsd = torch.stack([fine_grained_sequence_distance(out1.fsd_act[0], out2.fsd_act[0]),
                       fine_grained_sequence_distance(out1.fsd_act[1], out2.fsd_bak[1])])
    lcs = longest_common_subsequence(out1.lcs_candidates, out2.lcs_candidates)
    label = torch.tensor([1, 0])
    expected = acm + 0.1 * contrastive_difference(lcs, label) + 0.8 * contrastive_difference(fsd, label)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    without, t_without = ftcl_loss(out1, out2, y1, y2, use_lcs=False, use_fsd=False)
    assert without.item() == pytest.approx(acm.item(), rel=1e-6) and t_without["fsd"].item() == 0.0
