"""DCLR views: frame plan, crops, frame-shared augmentation, [V, S, D] stacking.

Reference: DCLR repo, dataset/ucf101_view.py and moco/loader.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actionray.trainables.dclr_views import (DCLRAugment, apply_dclr_views, blur_kernel_size, clips_to_float,
                                             query_key_views, sample_dclr_views, stack_views)
from actionray.trainables.dclr_views import _hsv_to_rgb, _rgb_to_hsv


def _frame_coded_video(n: int, h: int = 24, w: int = 30) -> np.ndarray:
    # Every pixel of frame t holds t, so a view's values tell which frames it came from.
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


def test_two_different_windows_of_32_frames_subsampled_by_2():
    for seed in range(20):
        plan = sample_dclr_views(100, 24, 30, [seed, 0, 3])
        for frames in (plan.query_frames, plan.key_frames):
            assert len(frames) == 16 and np.all(np.diff(frames) == 2)
            assert frames[0] >= 0 and frames[0] + 31 <= 99
        assert plan.query_frames[0] != plan.key_frames[0]


def test_static_index_is_one_offset_shared_by_both_windows():
    offsets = set()
    for seed in range(30):
        plan = sample_dclr_views(100, 24, 30, seed)
        off_q = plan.query_static - plan.query_frames[0]
        off_k = plan.key_static - plan.key_frames[0]
        assert off_q == off_k and 0 <= off_q < 32
        offsets.add(int(off_q))
    assert any(o % 2 == 1 for o in offsets)  # drawn from the raw 32-frame window, not only kept frames


def test_plan_is_reproducible_from_its_seed():
    a, b = sample_dclr_views(80, 24, 30, [1, 2, 3]), sample_dclr_views(80, 24, 30, [1, 2, 3])
    c = sample_dclr_views(80, 24, 30, [1, 2, 4])
    assert np.array_equal(a.query_frames, b.query_frames) and a.boxes == b.boxes
    assert not (np.array_equal(a.query_frames, c.query_frames) and a.boxes == c.boxes)


def test_four_crop_boxes_are_independent_and_inside_the_frame():
    plan = sample_dclr_views(80, 24, 30, 7)
    assert len(set(plan.boxes)) == 4
    for y, x, h, w in plan.boxes:
        assert 0 <= y and 0 <= x and y + h <= 24 and x + w <= 30 and h * w >= 0.2 * 24 * 30 * 0.9


def test_short_video_uses_one_window_and_repeats_its_last_frame():
    plan = sample_dclr_views(10, 24, 30, 0, clip_len=8, stride=2)
    assert np.array_equal(plan.query_frames, plan.key_frames)
    assert plan.query_frames.max() == 9 and plan.query_static <= 9


def test_apply_views_takes_the_planned_frames_and_a_constant_static_clip():
    video = _frame_coded_video(60)
    plan = sample_dclr_views(60, 24, 30, 5, clip_len=4, stride=2)
    views = apply_dclr_views(video, plan, crop_size=16)
    assert views.shape == (4, 4, 16, 16, 3) and views.dtype == np.uint8
    assert np.array_equal(views[0, :, 0, 0, 0], plan.query_frames)
    assert np.array_equal(views[1, :, 0, 0, 0], plan.key_frames)
    assert np.all(views[2] == plan.query_static) and np.all(views[3] == plan.key_static)


def test_dynamic_view_is_frame_difference_with_wrap_around():
    rgb = torch.randn(2, 3, 5, 4, 4)
    static = torch.randn(2, 3, 5, 4, 4)
    views = stack_views(rgb, static)
    assert views.shape == (2, 3, 3, 5, 4, 4)
    assert torch.equal(views[:, 0], rgb) and torch.equal(views[:, 1], static)
    assert torch.allclose(views[:, 2, :, 1:], rgb[:, :, 1:] - rgb[:, :, :-1])
    assert torch.allclose(views[:, 2, :, 0], rgb[:, :, 0] - rgb[:, :, -1])


def test_augmentation_is_shared_by_all_frames_so_a_static_clip_stays_constant():
    frame = torch.rand(6, 3, 1, 16, 16)
    out = DCLRAugment(16, seed=1)(frame.expand(6, 3, 4, 16, 16).contiguous(), torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)


def test_augmentation_with_all_probabilities_zero_only_normalises():
    x = torch.rand(2, 3, 2, 8, 8)
    aug = DCLRAugment(8, p_grey=0, p_jitter=0, p_flip=0, p_blur=0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    assert torch.allclose(aug(x), (x - mean) / std, atol=1e-5)


def test_greyscale_and_flip_when_certain():
    x = torch.rand(2, 3, 2, 8, 8)
    aug = DCLRAugment(8, p_grey=1, p_jitter=0, p_flip=1, p_blur=0)
    mean = torch.tensor(aug.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(aug.std).view(1, 3, 1, 1, 1)
    raw = aug(x) * std + mean
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    grey = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(raw[:, 0], grey.flip(-1), atol=1e-5)


def test_augmentation_draws_differ_across_clips():
    x = torch.rand(1, 3, 2, 16, 16).expand(8, 3, 2, 16, 16).contiguous()
    out = DCLRAugment(16, seed=0)(x, torch.Generator().manual_seed(3))
    assert len({round(float(v), 4) for v in out.mean(dim=(1, 2, 3, 4))}) > 1


def test_blur_kernel_and_sigma_follow_the_reference():
    assert blur_kernel_size(112) == 11 and blur_kernel_size(32) == 3
    sigmas = {DCLRAugment(112, seed=s).blur_sigma for s in range(5)}
    assert len(sigmas) == 5 and all(0.1 <= s <= 2.0 for s in sigmas)  # one per run, U(0.1, 2)


def test_blur_preserves_a_constant_image_and_smooths_noise():
    aug = DCLRAugment(32, blur_sigma=1.5)
    flat = torch.full((1, 3, 1, 12, 12), 0.3)
    assert torch.allclose(aug._blur(flat), flat, atol=1e-6)
    noise = torch.rand(1, 3, 1, 12, 12)
    assert aug._blur(noise).std() < noise.std()


def test_hsv_round_trip_and_hue_rotation():
    x = torch.rand(2, 3, 2, 5, 5)
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1, 1)
    hsv = _rgb_to_hsv(red)
    hsv[:, 0] = (hsv[:, 0] + 1 / 3) % 1.0
    assert torch.allclose(_hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)


def test_query_key_views_stack_rgb_static_and_dynamic():
    video = np.random.default_rng(0).integers(0, 256, (40, 24, 30, 3), dtype=np.uint8)
    clips = np.stack([apply_dclr_views(video, sample_dclr_views(40, 24, 30, s, clip_len=4), 16) for s in (0, 1)])
    q, k = query_key_views(torch.from_numpy(clips), DCLRAugment(16), torch.Generator().manual_seed(0))
    assert q.shape == k.shape == (2, 3, 3, 4, 16, 16)
    assert torch.allclose(q[:, 2], q[:, 0] - torch.roll(q[:, 0], 1, dims=2))
    assert torch.allclose(q[:, 1], q[:, 1, :, :1].expand_as(q[:, 1]), atol=1e-6)  # static view constant in time


def test_bad_shapes_raise_with_the_shape():
    with pytest.raises(ValueError, match="uint8"):
        apply_dclr_views(np.zeros((4, 8, 8), np.uint8), sample_dclr_views(4, 8, 8, 0))
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        clips_to_float(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
