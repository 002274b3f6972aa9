"""FTCL's fine-grained sequence distance (FSD) and longest common subsequence (LCS) contrasting, and ACM-Net's losses.

Reference: FTCL repo (MengyuanChen21/CVPR2022-FTCL), utils/ftcl_criterion.py (``FTCLLoss``, ``dp_for_fsd``,
``dp_for_lcs``) and utils/net_utils.py (``maxGamma``, ``ACMLoss``). The reference fills its DP tables with Python
loops per pair and per cell; here every cell of an anti-diagonal (i + j = k) and every pair of the batch is one
tensor op, so a table of L1 x L2 cells takes L1 + L2 - 1 sequential steps. Values equal the loops' (same
recurrences, same max-subtraction smooth max) and autograd gives the same gradients.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from actionray.models.acmnet import ACMNetOutput

__all__ = ["smooth_max", "cosine_similarity_matrix", "fine_grained_sequence_distance",
           "longest_common_subsequence", "contrastive_difference", "ftcl_loss", "acm_loss", "in_batch_pairs",
           "ACM_WEIGHTS", "FEATURE_MARGIN"]

# THUMOS14 weights of the guide / feature-norm / sparsity terms (FTCL repo, config `loss_lamb_1/2/3`).
ACM_WEIGHTS = {"guide": 2e-3, "feat": 5e-5, "sparse": 2e-4}
FEATURE_MARGIN = 50.0  # hard-coded in both loss classes of the FTCL repo


def smooth_max(x: Tensor, gamma: float = 0.1, dim: int = -1) -> Tensor:
    """gamma * log sum exp(x / gamma) over ``dim`` (FTCL repo ``maxGamma``); gamma = 0 is the hard max."""
    if gamma == 0:
        return x.max(dim=dim).values
    return gamma * torch.logsumexp(x / gamma, dim=dim)


def cosine_similarity_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of every row pair: (N, L1, D), (N, L2, D) -> (N, L1, L2).

    The reference divides by the plain L2 norm (NaN for an all-zero row); the norm is clamped at 1e-12 here
    so a dead (all-zero ReLU) snippet gives cosine 0 instead of NaN. Nonzero rows are unaffected.
    """
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return a @ b.transpose(-1, -2)


def _antidiagonal_dp(n: int, l1: int, l2: int, cell: Callable[[int, Tensor, Tensor, Tensor, Tensor], Tensor],
                     like: Tensor) -> Tensor:
    """Fill an (l1+1) x (l2+1) table with zero first row/column by anti-diagonals; returns the (N,) corner.

    Diagonal k is stored as an (N, l1+1) tensor indexed by row i (column j = k - i). ``cell(k, i, diag, up,
    left)`` gets, for rows i = 1..l1, the neighbours F[i-1, j-1], F[i-1, j], F[i, j-1] as (N, l1) tensors.
    """
    zeros = like.new_zeros(n, l1 + 1)
    if l1 == 0 or l2 == 0:
        return like.new_zeros(n)
    rows = torch.arange(1, l1 + 1, device=like.device)
    prev2, prev1 = zeros, zeros  # diagonals k-2 and k-1 (k = 0, 1 are all border cells)
    for k in range(2, l1 + l2 + 1):
        new = cell(k, rows, prev2[:, :-1], prev1[:, :-1], prev1[:, 1:])
        cols = k - rows
        valid = (cols >= 1) & (cols <= l2)
        # Border and out-of-table cells are 0; torch.where keeps autograd out of the unused branch.
        new = torch.where(valid, new, torch.zeros_like(new))
        prev2, prev1 = prev1, torch.cat([zeros[:, :1], new], dim=1)
    return prev1[:, l1]


def _on_diagonal(score: Tensor, k: int, rows: Tensor) -> Tensor:
    """score (N, l1, l2) at cells (i, k - i) for rows i = 1..l1 (1-based), columns clamped into range."""
    cols = (k - rows).clamp(1, score.shape[2])
    return score[:, rows - 1, cols - 1]


def _as_batch(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor, bool]:
    if p.dim() != q.dim() or p.dim() not in (2, 3):
        raise ValueError(f"sequences must both be (L, D) or both (N, L, D); got {tuple(p.shape)} and {tuple(q.shape)}")
    single = p.dim() == 2
    return (p.unsqueeze(0), q.unsqueeze(0), True) if single else (p, q, False)


def fine_grained_sequence_distance(p: Tensor, q: Tensor, gamma: float = 0.1) -> Tensor:
    """FSD similarity of sequences (L1, D) vs (L2, D) -> scalar, or batched (N, L1, D) vs (N, L2, D) -> (N,).

    Channels split in two halves: match scores m = cos of the first halves, gap scores g = cos of the second.
    F[i,j] = m[i,j] + smax_gamma(F[i-1,j-1], g[i,j] + F[i-1,j], g[i,j] + F[i,j-1]); score F[L1, L2]
    (FTCL repo, utils/ftcl_criterion.py ``dp_for_fsd``). Larger means more alike.
    """
    p, q, single = _as_batch(p, q)
    if p.shape[-1] % 2:
        raise ValueError(f"FSD feature width {p.shape[-1]} must be even (match | gap halves)")
    half = p.shape[-1] // 2
    m = cosine_similarity_matrix(p[..., :half], q[..., :half])
    g = cosine_similarity_matrix(p[..., half:], q[..., half:])

    def cell(k: int, rows: Tensor, diag: Tensor, up: Tensor, left: Tensor) -> Tensor:
        gk = _on_diagonal(g, k, rows)
        moves = torch.stack([diag, gk + up, gk + left], dim=-1)  # match, delete, insert
        return _on_diagonal(m, k, rows) + smooth_max(moves, gamma)

    out = _antidiagonal_dp(p.shape[0], p.shape[1], q.shape[1], cell, m)
    return out[0] if single else out


def longest_common_subsequence(u: Tensor, v: Tensor, threshold: float = 0.92, rescaled: bool = False) -> Tensor:
    """Soft LCS length of (L1, D) vs (L2, D) -> scalar, or batched (N, L1, D) vs (N, L2, D) -> (N,).

    G[i,j] = G[i-1,j-1] + s[i,j] if s[i,j] > threshold else max(G[i-1,j], G[i,j-1]) with s the cosine (FTCL
    repo, utils/ftcl_criterion.py ``dp_for_lcs``). ``rescaled`` uses s' = 5 * max(0, s - 0.8) instead, the
    in-batch variant of ``ACMLoss`` (utils/net_utils.py). Python's ``max(up, left)`` keeps ``up`` on a tie, so
    the gradient goes to ``up`` on ties here too.
    """
    u, v, single = _as_batch(u, v)
    s = cosine_similarity_matrix(u, v)
    if rescaled:
        s = (s - 0.8).clamp_min(0.0) * 5.0

    def cell(k: int, rows: Tensor, diag: Tensor, up: Tensor, left: Tensor) -> Tensor:
        sk = _on_diagonal(s, k, rows)
        return torch.where(sk > threshold, diag + sk, torch.where(left > up, left, up))

    out = _antidiagonal_dp(u.shape[0], u.shape[1], v.shape[1], cell, s)
    return out[0] if single else out


def contrastive_difference(scores: Tensor, pair_label: Tensor) -> Tensor:
    """mean of scores over negative pairs minus mean over positive pairs, each 0 when empty: (N,), (N,) -> ()."""
    pos = pair_label.to(scores.dtype)
    neg = 1.0 - pos
    return (neg * scores).sum() / (neg.sum() + 1e-10) - (pos * scores).sum() / (pos.sum() + 1e-10)


def _branch_ce(probs: Tensor, target: Tensor, eps: float) -> Tensor:
    return -(torch.log(probs + eps) * target).sum(dim=1).mean()


def in_batch_pairs(labels: Tensor, rng: random.Random | None = None) -> tuple[list[tuple[int, int]],
                                                                             list[tuple[int, int]]]:
    """``ACMLoss``'s in-batch pairs: positives i < j with the same single class, negatives disjoint, subsampled.

    Deviation: the reference's ``random.sample`` raises when there are fewer negatives than positives; here
    all negatives are kept then.
    """
    pos, neg = [], []
    b = labels.shape[0]
    for i in range(b - 1):
        for j in range(i + 1, b):
            shared = float((labels[i] * labels[j]).sum())
            if shared == 1 and torch.equal(labels[i], labels[j]):
                pos.append((i, j))
            elif shared == 0:
                neg.append((i, j))
    rng = rng or random.Random()
    return pos, rng.sample(neg, min(len(pos), len(neg)))


def acm_loss(out: "ACMNetOutput", labels: Tensor, *, variant: Literal["clean", "repository"] = "clean",
             weights: dict[str, float] | None = None, margin: float = FEATURE_MARGIN, eps: float = 1e-10,
             lcs_weight: float = 0.1, fsd_weight: float = 0.8, gamma: float = 0.1, lcs_threshold: float = 0.92,
             rng: random.Random | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """ACM-Net loss of one batch (labels (B, C) multi-hot) -> (total, named terms).

    ``clean``: branch classification + 2e-3 guide + 5e-5 feature norm + 2e-4 sparsity (ACM-Net). ``repository``:
    the FTCL repo's baseline criterion ``ACMLoss`` (utils/net_utils.py), which also adds 0.1 LCS' + 0.8 FSD' over
    in-batch pairs with the rescaled LCS similarity. ``eps`` inside the log is 1e-10 as in ``FTCLLoss``
    (``ACMLoss`` uses 1e-45, which float32 rounds to a denormal; the two differ only for probabilities ~0).
    ``clean`` is the default: it is ACM-Net as published, so "+ FSD / + LCS" ablations start from a baseline
    without pair terms; ``repository`` reproduces the README's baseline command.
    """
    if variant not in ("clean", "repository"):
        raise ValueError(f"acm_loss variant {variant!r}: expected 'clean' or 'repository'")
    w = {**ACM_WEIGHTS, **(weights or {})}
    labels = labels.to(out.inst_scores.dtype)
    zero, one = labels.new_zeros(labels.shape[0], 1), labels.new_ones(labels.shape[0], 1)
    targets = [torch.cat([labels, zero], 1), torch.cat([labels, one], 1), torch.cat([torch.zeros_like(labels), one], 1)]
    targets = [t / t.sum(dim=1, keepdim=True) for t in targets]
    terms = {name: _branch_ce(p, t, eps) for name, p, t in
             zip(("inst", "cont", "back"), (out.inst_scores, out.cont_scores, out.back_scores), targets)}
    att = out.attention
    terms["guide"] = (1 - out.inst_cas[..., -1] - att[..., 0].detach()).abs().sum(dim=1).mean()
    n_inst, n_cont, n_back = (f.norm(p=2, dim=1) for f in (out.inst_feature, out.cont_feature, out.back_feature))
    terms["feat"] = ((margin - n_inst + n_cont).clamp_min(0) + (margin - n_cont + n_back).clamp_min(0)
                     + n_back).pow(2).mean()
    # Sum over time, then mean over batch AND the two channels, as the code does (half of "mean_B sum_t (A0+A1)").
    terms["sparse"] = att[..., :2].sum(dim=1).mean()
    # ``weights["inst"]``: 5.0 in the ACM-Net repo's ActivityNet criterion (utils/net_utils.py), 1.0 for THUMOS14.
    total = (w.get("inst", 1.0) * terms["inst"] + terms["cont"] + terms["back"] + w["guide"] * terms["guide"]
             + w["feat"] * terms["feat"] + w["sparse"] * terms["sparse"])
    terms["acm"] = total
    if variant == "repository":
        pos, neg = in_batch_pairs(labels, rng)
        lcs = fsd = total.new_zeros(())
        if pos:  # the reference sets both terms to 0 without positives
            pi, pj = (list(x) for x in zip(*pos))
            pos_lcs = longest_common_subsequence(out.lcs_candidates[pi], out.lcs_candidates[pj],
                                                 lcs_threshold, rescaled=True).mean()
            pos_fsd = fine_grained_sequence_distance(out.fsd_act[pi], out.fsd_act[pj], gamma).mean()
            neg_lcs = neg_fsd = total.new_zeros(())
            if neg:
                ni, nj = (list(x) for x in zip(*neg))
                neg_lcs = longest_common_subsequence(out.lcs_candidates[ni], out.lcs_candidates[nj],
                                                     lcs_threshold, rescaled=True).mean()
                neg_fsd = fine_grained_sequence_distance(out.fsd_act[ni], out.fsd_bak[nj], gamma).mean()
            lcs, fsd = neg_lcs - pos_lcs, neg_fsd - pos_fsd
        terms["lcs"], terms["fsd"] = lcs, fsd
        total = total + lcs_weight * lcs + fsd_weight * fsd
    terms["total"] = total
    return total, terms


def ftcl_loss(out1: "ACMNetOutput", out2: "ACMNetOutput", labels1: Tensor, labels2: Tensor, *,
              lcs_weight: float = 0.1, fsd_weight: float = 0.8, use_lcs: bool = True, use_fsd: bool = True,
              gamma: float = 0.1, lcs_threshold: float = 0.92, acm_weights: dict[str, float] | None = None
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """FTCL objective of a batch of video pairs (FTCL repo, utils/ftcl_criterion.py ``FTCLLoss.forward``).

    L = (L_ACM(video 1) + L_ACM(video 2)) / 2 + 0.1 L_LCS + 0.8 L_FSD, with pair label 1 when the two (B, C)
    label vectors share a class. FSD compares fsd_act(1) with fsd_act(2) for positives and with fsd_bak(2)
    for negatives; LCS compares lcs_candidates of both. ``use_lcs``/``use_fsd`` False = the repo's
    ``--without_lcs``/``--without_fsd`` ablations (term replaced by 0).
    """
    acm1, t1 = acm_loss(out1, labels1, weights=acm_weights)
    acm2, t2 = acm_loss(out2, labels2, weights=acm_weights)
    pair_label = ((labels1 * labels2).sum(dim=1) > 0)
    zero = acm1.new_zeros(())
    fsd_scores = lcs_scores = None
    l_fsd = l_lcs = zero
    if use_fsd:
        if out2.fsd_act.shape != out2.fsd_bak.shape:
            raise ValueError(f"fsd_act {tuple(out2.fsd_act.shape)} and fsd_bak {tuple(out2.fsd_bak.shape)} differ: "
                             "FTCL pairs need at least 2 * fsd_len snippets per video")
        other = torch.where(pair_label[:, None, None], out2.fsd_act, out2.fsd_bak)
        fsd_scores = fine_grained_sequence_distance(out1.fsd_act, other, gamma)
        l_fsd = contrastive_difference(fsd_scores, pair_label)
    if use_lcs:
        lcs_scores = longest_common_subsequence(out1.lcs_candidates, out2.lcs_candidates, lcs_threshold)
        l_lcs = contrastive_difference(lcs_scores, pair_label)
    acm = (acm1 + acm2) / 2
    total = acm + lcs_weight * l_lcs + fsd_weight * l_fsd
    terms = {"acm": acm, "lcs": l_lcs, "fsd": l_fsd, "total": total,
             **{f"{k}_1": v for k, v in t1.items() if k not in ("acm", "total")},
             **{f"{k}_2": v for k, v in t2.items() if k not in ("acm", "total")}}
    if fsd_scores is not None:
        terms["fsd_scores"] = fsd_scores.detach()
    if lcs_scores is not None:
        terms["lcs_scores"] = lcs_scores.detach()
    return total, terms
