"""CCL losses: each formula against a slow reference loop, float64 gradcheck, and the released code's constants."""

from __future__ import annotations

import math

import pytest
import torch

from actionray.trainables.losses import (category_supervised_contrastive_loss, instance_contrastive_loss,
                                         released_ccl_loss, released_ccl_terms, released_ccl_views)


def _features(b=6, t=3, d=5, seed=0, dtype=torch.float64):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _phi(v: torch.Tensor) -> list[list[float]]:
    """Segment mean then L2 normalisation, as Python lists."""
    out = []
    for video in v.tolist():
        mean = [sum(col) / len(video) for col in zip(*video)]
        norm = math.sqrt(sum(x * x for x in mean))
        out.append([x / norm for x in mean])
    return out


def _dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def _slow_supcon(features, labels, tau):
    z, y = _phi(features), labels.tolist()
    total, anchors = 0.0, 0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(math.exp(_dot(z[i], z[a]) / tau) for a in range(len(z)) if a != i)
        total += -sum(math.log(math.exp(_dot(z[i], z[p]) / tau) / denominator) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def _slow_released_terms(a, ya, b, yb, g1, g2, tau):
    za, zb, z1, z2 = _phi(a), _phi(b), _phi(g1), _phi(g2)
    ya, yb = ya.tolist(), yb.tolist()

    def mean_of(f, us, vs):
        return sum(f(_dot(u, v) / tau) for u in us for v in vs) / (len(us) * len(vs))

    same = [(i, j) for i in range(len(za)) for j in range(len(zb)) if ya[i] == yb[j]]
    diff = [(i, j) for i in range(len(za)) for j in range(len(zb)) if ya[i] != yb[j]]
    ab = (sum(1 - _dot(za[i], zb[j]) / tau for i, j in same) / (len(same) + 1e-8)
          + sum(max(_dot(za[i], zb[j]) / tau, 0) for i, j in diff) / (len(diff) + 1e-8))
    relu = lambda s: max(s, 0.0)  # noqa: E731
    g1g2 = mean_of(relu, z1, z2) * tau * (1 + mean_of(lambda s: s, z1, z2))
    terms = {"AB": ab, "AG1": mean_of(relu, za, z1), "AG2": mean_of(relu, za, z2), "BG1": mean_of(relu, zb, z1),
             "BG2": mean_of(lambda s: abs(s - 0.3), zb, z2), "G1G2": g1g2}
    terms["total"] = (0.1 * ab + 0.2 * (terms["AG1"] + terms["AG2"] + terms["BG1"] + terms["BG2"]) + 0.1 * g1g2) / 100
    return terms


def _slow_nt_xent(v1, v2, tau):
    z = _phi(v1) + _phi(v2)
    n, b = len(z), len(z) // 2
    total = 0.0
    for i in range(n):
        positive = (i + b) % n
        denominator = sum(math.exp(_dot(z[i], z[a]) / tau) for a in range(n) if a != i)
        total += -math.log(math.exp(_dot(z[i], z[positive]) / tau) / denominator)
    return total / n


def test_supcon_matches_the_slow_reference_loop():
    feats, labels = _features(), torch.tensor([0, 1, 0, 2, 1, 3])  # label 3 has no positive: not an anchor
    loss = category_supervised_contrastive_loss(feats, labels, temperature=0.1)
    assert loss.item() == pytest.approx(_slow_supcon(feats, labels, 0.1), rel=1e-10)


def test_supcon_is_lower_when_features_cluster_by_label():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-0.1, 1.0], [0.1, 1.0]]).unsqueeze(1)
    mixed = clustered[[0, 2, 1, 3]]
    assert category_supervised_contrastive_loss(clustered, labels) < category_supervised_contrastive_loss(mixed, labels)


def test_supcon_without_any_same_label_pair_is_zero_with_a_gradient():
    feats = _features(b=3).requires_grad_(True)
    loss = category_supervised_contrastive_loss(feats, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0 and torch.equal(feats.grad, torch.zeros_like(feats))


def test_supcon_passes_float64_gradcheck():
    labels = torch.tensor([0, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda f: category_supervised_contrastive_loss(f, labels, 0.1),
                                    (_features(b=4, t=2, d=3).requires_grad_(True),))


def test_supcon_rejects_labels_of_another_length():
    with pytest.raises(ValueError, match="do not match"):
        category_supervised_contrastive_loss(_features(b=4), torch.tensor([0, 1]))


def test_released_terms_match_the_slow_reference_loop():
    a, b, g1, g2 = (_features(b=3, seed=s) for s in range(4))
    ya, yb = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])
    terms = released_ccl_terms(a, ya, b, yb, g1, g2, temperature=0.08)
    slow = _slow_released_terms(a, ya, b, yb, g1, g2, 0.08)
    assert {k: v.item() for k, v in terms.items()} == pytest.approx(slow, rel=1e-9)


def test_released_loss_for_identical_features_has_the_closed_form_value():
    # All cosines 1, S = 1/0.08 = 12.5: different labels give (0.1*12.5 + 0.2*(3*12.5 + 12.2) + 0.1*13.5)/100.
    feats = torch.ones(2, 4, 8)
    assert released_ccl_loss(feats, torch.tensor([0, 1])).item() == pytest.approx(0.1254, abs=1e-6)
    assert released_ccl_loss(feats, torch.tensor([1, 1])).item() == pytest.approx(0.1014, abs=1e-6)


def test_released_views_are_permutations_with_one_segment_pair_swapped():
    feats = torch.arange(5 * 4, dtype=torch.float64).view(5, 4, 1).expand(5, 4, 2)
    a, ya, b, yb, g1, g2 = released_ccl_views(feats, torch.arange(5), torch.Generator().manual_seed(3))
    assert a.shape[0] == 3 and b.shape[0] == 2 and torch.equal(ya, torch.arange(3))  # torch.chunk sizes
    videos = {tuple(v[:, 0].tolist()) for v in feats}
    assert all(tuple(v[:, 0].tolist()) in videos for v in g1)
    swapped = [sorted(i for i in range(4) if v[i, 0] != v[:, 0].sort().values[i]) for v in g2]
    assert all(len(s) == 2 for s in swapped) and swapped[0] == swapped[1]  # same pair for the whole half


def test_released_loss_is_reproducible_with_a_seeded_generator():
    feats, labels = _features(b=4, t=4), torch.tensor([0, 1, 0, 1])
    first = released_ccl_loss(feats, labels, generator=torch.Generator().manual_seed(7))
    views = released_ccl_views(feats, labels, torch.Generator().manual_seed(7))
    assert first == released_ccl_loss(feats, labels, generator=torch.Generator().manual_seed(7))
    assert first == released_ccl_terms(*views, temperature=0.08)["total"]


def test_released_terms_pass_float64_gradcheck():
    ya, yb = torch.tensor([0, 1]), torch.tensor([1, 1])
    inputs = tuple(_features(b=2, t=2, d=3, seed=s).requires_grad_(True) for s in range(4))
    assert torch.autograd.gradcheck(
        lambda a, b, g1, g2: released_ccl_terms(a, ya, b, yb, g1, g2, 0.08)["total"], inputs)


def test_released_loss_needs_two_videos():
    with pytest.raises(ValueError, match="at least 2 videos"):
        released_ccl_loss(_features(b=1), torch.tensor([0]))


def test_instance_loss_matches_the_slow_nt_xent_loop():
    v1, v2 = _features(b=4, seed=1), _features(b=4, seed=2)
    loss = instance_contrastive_loss(v1, v2, temperature=0.2)
    assert loss.item() == pytest.approx(_slow_nt_xent(v1, v2, 0.2), rel=1e-10)


def test_instance_loss_on_one_clip_uses_even_and_odd_segments_as_views():
    feats = _features(b=3, t=4)
    assert torch.equal(instance_contrastive_loss(feats, temperature=0.1),
                       instance_contrastive_loss(feats[:, 0::2], feats[:, 1::2], temperature=0.1))


def test_instance_loss_passes_float64_gradcheck():
    inputs = tuple(_features(b=3, t=2, d=3, seed=s).requires_grad_(True) for s in (1, 2))
    assert torch.autograd.gradcheck(lambda a, b: instance_contrastive_loss(a, b, 0.5), inputs)
