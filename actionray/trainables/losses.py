"""Category-supervised Contrastive Learning (CCL, GCNet) in three variants, all on per-segment features (B, T, D).

Every variant first maps a video to phi(v) = L2-normalise(mean over T of its segment features), as the GCNet code
does (no projection head). Which one trains is ``loss.ccl.variant``:
- "supcon" (default): ``category_supervised_contrastive_loss``, a SupCon loss with same-label positives. The
  GCNet README describes CCL as pulling same-category videos together and pushing different categories apart
  on normalised features with temperature 0.1; SupCon is the standard loss with exactly those properties.
- "released": ``released_ccl_loss``, the six-term ``comprehensive_contrastive_loss`` of the GCNet repo
  (ops/models.py) reproduced term by term for parity studies. Note: no released GCNet training script adds any
  CCL term to its loss (main.py computes cross-entropy only), so neither variant is "what the authors trained";
  the README's ablation (+CCL) can only be approximated.
- "instance": ``instance_contrastive_loss``, the category_supervised=false case (positives are the other
  view of the same video, NT-Xent; with one clip per video the views are its even and odd segments), an
  invention: the reference has no such switch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["video_embedding", "category_supervised_contrastive_loss", "released_ccl_views", "released_ccl_terms",
           "released_ccl_loss", "instance_contrastive_loss"]


def video_embedding(features: torch.Tensor) -> torch.Tensor:
    """(B, T, D) segment features -> (B, D) L2-normalised segment average."""
    if features.dim() != 3:
        raise ValueError(f"CCL features must be (B, T, D), got {tuple(features.shape)}")
    return F.normalize(features.mean(dim=1), p=2, dim=1)


def category_supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor,
                                         temperature: float = 0.1) -> torch.Tensor:
    """SupCon over videos: features (B, T, D), labels (B,) -> scalar.

    With z_i = video_embedding, s_ij = z_i . z_j / tau, P(i) = {p != i : y_p = y_i} and A(i) = {a != i}:
        L = mean_{i : P(i) non-empty}  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )
    (Khosla et al. 2020, L_out). Same-label pairs are pulled together; every other video, in particular every
    different-label one, sits in the denominator and is pushed away. A batch with no same-label pair gives 0.
    """
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match features {tuple(features.shape)}")
    z = video_embedding(features)
    sim = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not anchors.any():
        return sim.sum() * 0.0  # keeps the graph: a zero gradient, not a missing one
    per_anchor = -(log_prob * positives).sum(dim=1)[anchors] / counts[anchors]
    return per_anchor.mean()


def released_ccl_views(features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GCNet code's sample construction: (A, yA, Bv, yB, G1, G2) from features (B, T, D), labels (B,).

    A, Bv = the two halves (h = ceil(B/2)); G = a batch permutation of the features, split the same way;
    G1 = its first half permuted again, G2 = its second half with one random pair of segment positions swapped.
    """
    b, t = features.shape[:2]
    if b < 2:
        raise ValueError(f"released CCL needs at least 2 videos per batch, got {b}")
    h = (b + 1) // 2  # torch.chunk(2) sizes
    perm = torch.randperm(b, generator=generator).to(features.device)
    shuffled = features[perm]
    g1 = shuffled[:h][torch.randperm(h, generator=generator).to(features.device)]
    g2 = shuffled[h:]
    if t > 1:
        i = int(torch.randint(0, t, (1,), generator=generator))
        j = int(torch.randint(0, t - 1, (1,), generator=generator))
        j = j + 1 if j >= i else j  # a distinct second position, uniform over the others
        order = list(range(t))
        order[i], order[j] = j, i
        g2 = g2[:, order]
    return features[:h], labels[:h], features[h:], labels[h:], g1, g2


def released_ccl_terms(a: torch.Tensor, labels_a: torch.Tensor, bv: torch.Tensor, labels_b: torch.Tensor,
                       g1: torch.Tensor, g2: torch.Tensor, temperature: float = 0.08) -> dict[str, torch.Tensor]:
    """The six terms of GCNet's ``comprehensive_contrastive_loss`` and their weighted total (key "total").

    S(U, V) = phi(U) phi(V)^T / tau; M_ij = [yA_i == yB_j];
    AB = sum(M (1 - S_AB)) / (sum M + 1e-8) + sum((1 - M) relu(S_AB)) / (sum(1 - M) + 1e-8);
    AG1, AG2, BG1 = mean relu(S); BG2 = mean |S(Bv, G2) - 0.3|; G1G2 = mean relu(S) * tau * (1 + mean S);
    total = (0.1 AB + 0.2 AG1 + 0.2 AG2 + 0.2 BG1 + 0.2 BG2 + 0.1 G1G2) / 100.
    """
    za, zb, z1, z2 = (video_embedding(v) for v in (a, bv, g1, g2))

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ v.t() / temperature

    same = (labels_a[:, None] == labels_b[None, :]).to(za.dtype)
    s_ab = sim(za, zb)
    terms = {
        "AB": (same * (1 - s_ab)).sum() / (same.sum() + 1e-8)
        + ((1 - same) * torch.relu(s_ab)).sum() / ((1 - same).sum() + 1e-8),
        "AG1": torch.relu(sim(za, z1)).mean(),
        "AG2": torch.relu(sim(za, z2)).mean(),
        "BG1": torch.relu(sim(zb, z1)).mean(),
        "BG2": (sim(zb, z2) - 0.3).abs().mean(),
    }
    s_12 = sim(z1, z2)
    terms["G1G2"] = torch.relu(s_12).mean() * (temperature * (1 + s_12.mean()))
    weights = {"AB": 0.1, "AG1": 0.2, "AG2": 0.2, "BG1": 0.2, "BG2": 0.2, "G1G2": 0.1}
    terms["total"] = sum(weights[k] * terms[k] for k in weights) / 100
    return terms


def released_ccl_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.08,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """GCNet-repo CCL (ops/models.py, tau 0.08 there): features (B, T, D), labels (B,) -> scalar.

    Reproduced for parity only: the released training scripts never add it to the loss, its "negatives" are
    permutations of the same batch (possibly the anchor itself), and (1 - cos/tau) is not a contrastive
    likelihood. Random choices come from ``generator`` (seed it for reproducible values).
    """
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match features {tuple(features.shape)}")
    a, ya, bv, yb, g1, g2 = released_ccl_views(features, labels, generator)
    return released_ccl_terms(a, ya, bv, yb, g1, g2, temperature)["total"]


def instance_contrastive_loss(features_view1: torch.Tensor, features_view2: torch.Tensor | None = None,
                              temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over two views (B, T, D) each -> scalar: the positive of a video is its other view, the 2B - 2
    other embeddings are negatives (category_supervised=false; labels are not used).

    With ``features_view2=None`` the two views are the even and the odd segments of the one clip (T >= 2), so
    the loss runs on a single-view training batch.
    """
    if features_view2 is None:
        if features_view1.dim() != 3 or features_view1.shape[1] < 2:
            raise ValueError(f"one-clip instance CCL needs (B, T>=2, D) features, got {tuple(features_view1.shape)}")
        features_view1, features_view2 = features_view1[:, 0::2], features_view1[:, 1::2]
    if features_view1.shape[0] != features_view2.shape[0] or features_view1.shape[2:] != features_view2.shape[2:]:
        raise ValueError(f"view shapes differ: {tuple(features_view1.shape)} vs {tuple(features_view2.shape)}")
    z = torch.cat([video_embedding(features_view1), video_embedding(features_view2)])
    b = features_view1.shape[0]
    sim = (z @ z.t() / temperature).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)
