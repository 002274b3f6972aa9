"""Whole-clip transforms: crop boxes, one decision per clip, flip label swap, eval crops, normalisation."""

import numpy as np
import pytest
import torch

from actionray.platform.config import DataConfig
from actionray.platform.data.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, build_clip_transform, center_crop_box, crop, flip_label, hflip,
    multiscale_crop_box, normalize, random_resized_crop_box, resize, resize_short_side, three_crop_boxes,
)


def ramp_clip(t: int = 4, h: int = 60, w: int = 80) -> np.ndarray:
    """A clip whose pixels encode their own (x, y) position, identical in every frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([xx * 3 % 256, yy * 4 % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    return np.repeat(frame[None], t, axis=0)


def test_multiscale_box_sides_come_from_scale_pairs_at_most_one_apart():
    # base 256: sides int(256 * (1, .875, .75, .66)) = 256, 224, 192, 168
    sides = [256, 224, 192, 168]
    rng = np.random.default_rng(0)
    for _ in range(300):
        y, x, h, w = multiscale_crop_box(256, 340, 224, rng)
        assert abs(sides.index(h) - sides.index(w)) <= 1


def test_multiscale_snaps_sides_within_three_pixels_to_the_input_size():
    # base 250: 0.875 * 250 = 218 (not snapped), base 258: 225 -> 224 (snapped)
    rng = np.random.default_rng(1)
    seen = {multiscale_crop_box(258, 300, 224, rng)[2] for _ in range(300)}
    assert 224 in seen and 225 not in seen


def test_multiscale_uses_all_thirteen_fixed_positions():
    rng = np.random.default_rng(2)
    positions = set()
    for _ in range(3000):
        y, x, h, w = multiscale_crop_box(240, 320, 224, rng)
        if (h, w) == (240, 240):
            positions.add((y, x))
    # w_step = (320 - 240) // 4 = 20, h_step = 0: 13 offsets collapse onto x in {0, 20, 40, 60, 80}
    assert {x for _, x in positions} == {0, 20, 40, 60, 80}


def test_multiscale_five_offsets_are_corners_and_centre():
    rng = np.random.default_rng(3)
    boxes = [multiscale_crop_box(240, 320, 224, rng, offsets=5) for _ in range(2000)]
    # full-height 240x240 boxes: w_step = 20, corners at x = 0 or 80, centre at x = 40; never 20 or 60
    assert {x for y, x, h, w in boxes if (h, w) == (240, 240)} == {0, 40, 80}


def test_random_resized_box_respects_area_and_aspect_bounds():
    rng = np.random.default_rng(4)
    for _ in range(300):
        y, x, h, w = random_resized_crop_box(120, 160, rng)
        assert 0 <= y and y + h <= 120 and 0 <= x and x + w <= 160
        assert 0.08 * 120 * 160 * 0.9 <= h * w <= 120 * 160
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_random_resized_box_falls_back_to_the_centre_square():
    assert random_resized_crop_box(100, 160, np.random.default_rng(5), area=(3.0, 4.0)) == (0, 30, 100, 100)


def test_three_crops_run_along_the_long_side():
    assert three_crop_boxes(256, 340, 256) == [(0, 0, 256, 256), (0, 84, 256, 256), (0, 42, 256, 256)]
    assert three_crop_boxes(340, 256, 256) == [(0, 0, 256, 256), (84, 0, 256, 256), (42, 0, 256, 256)]


def test_center_crop_box_is_centred():
    assert center_crop_box(256, 340, 224) == (16, 58, 224, 224)


def test_crop_outside_the_frame_is_rejected():
    with pytest.raises(ValueError, match="outside a 60x80 frame"):
        crop(ramp_clip(), (0, 70, 20, 20))


def test_resize_short_side_keeps_aspect():
    assert resize_short_side(ramp_clip(), 30).shape == (4, 30, 40, 3)
    assert resize_short_side(ramp_clip(h=80, w=60), 30).shape == (4, 40, 30, 3)


def test_resize_keeps_uint8_and_constant_images_exact():
    clip = np.full((2, 50, 70, 3), 77, np.uint8)
    out = resize(clip, 32, 32)
    assert out.dtype == np.uint8 and out.shape == (2, 32, 32, 3) and (out == 77).all()


def test_hflip_mirrors_columns():
    clip = ramp_clip()
    np.testing.assert_array_equal(hflip(clip)[:, :, 0], clip[:, :, -1])


def test_flip_label_swaps_pairs_both_ways_and_keeps_others():
    pairs = {86: 87}
    assert flip_label(86, True, pairs) == 87 and flip_label(87, True, pairs) == 86
    assert flip_label(5, True, pairs) == 5 and flip_label(86, False, pairs) == 86


def test_train_transform_makes_one_decision_for_all_frames():
    data = DataConfig(input_size=32, train_crop="multiscale")
    transform = build_clip_transform(data, "train")
    for seed in range(20):
        out, flipped = transform(ramp_clip(), np.random.default_rng(seed))
        assert out.shape == (4, 32, 32, 3)
        assert all((out[t] == out[0]).all() for t in range(4))


def test_train_transform_repeats_with_the_same_generator_seed():
    transform = build_clip_transform(DataConfig(input_size=32, train_crop="random_resized"), "train")
    a, fa = transform(ramp_clip(), np.random.default_rng(9))
    b, fb = transform(ramp_clip(), np.random.default_rng(9))
    assert fa == fb and (a == b).all()


def test_train_flip_happens_about_half_the_time_and_can_be_disabled():
    flips = [build_clip_transform(DataConfig(input_size=32), "train")(ramp_clip(), np.random.default_rng(s))[1]
             for s in range(200)]
    assert 70 < sum(flips) < 130
    no_flip = build_clip_transform(DataConfig(input_size=32, flip=False), "train")
    assert not any(no_flip(ramp_clip(), np.random.default_rng(s))[1] for s in range(50))


def test_val_transform_is_short_side_then_centre_crop():
    data = DataConfig(input_size=32, scale_size=40)
    out, flipped = build_clip_transform(data, "val")(ramp_clip(), None)
    expected = resize_short_side(ramp_clip(), 40)[:, 4:36, 10:42]  # 40x53 -> centre 32x32
    assert not flipped and out.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(out, expected)


def test_three_crop_view_returns_scale_size_squares():
    data = DataConfig(input_size=32, scale_size=40)
    views = [build_clip_transform(data, "test", view_crop=c)(ramp_clip(), None)[0] for c in range(3)]
    assert all(v.shape == (4, 40, 40, 3) for v in views)
    assert not (views[0] == views[1]).all()


def test_normalize_gives_float_b_n_3_h_w_with_imagenet_statistics():
    video = torch.zeros(2, 3, 8, 8, 3, dtype=torch.uint8)
    video[..., 0] = 255
    out = normalize(video)
    assert out.shape == (2, 3, 3, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out[:, :, 0], torch.tensor((255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))
    assert torch.allclose(out[:, :, 2], torch.tensor(-IMAGENET_MEAN[2] / IMAGENET_STD[2]))


def test_normalize_rejects_channel_first_input():
    with pytest.raises(ValueError, match=r"expects \(B, N, H, W, 3\)"):
        normalize(torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8))


def test_normalize_leaves_a_float_input_unchanged():
    video = torch.full((1, 2, 4, 4, 3), 128.0)
    normalize(video)
    assert (video == 128.0).all()


def test_eval_resize_none_centre_crops_the_decoded_frames_as_videomoco_eval():
    """data.eval_resize: none (VideoMoCo repo, eval.py: CenterCropVideo(112) on the decoded frames): the val/test
    clip is the centre input_size square of the frames at their decoded size, for any scale_size; the default
    still resizes the short side first (a different field of view)."""
    clip = ramp_clip(h=60, w=80)
    expected = clip[:, 14:46, 24:56]  # centre 32x32 of 60x80
    for split in ("val", "test"):
        for scale in (40, 256):
            data = DataConfig(input_size=32, scale_size=scale, eval_resize="none")
            out, flipped = build_clip_transform(data, split)(clip, None)
            assert not flipped and (out == expected).all()
    default, _ = build_clip_transform(DataConfig(input_size=32, scale_size=40), "val")(clip, None)
    assert DataConfig().eval_resize == "short_side"
    assert not (default == expected).all()
    # three crops without a resize: input_size squares along the long side of the decoded frame
    three = [build_clip_transform(DataConfig(input_size=32, eval_resize="none"), "test", c)(clip, None)[0]
             for c in range(3)]
    assert [v.shape for v in three] == [(4, 32, 32, 3)] * 3
    assert (three[0] == clip[:, 14:46, 0:32]).all() and (three[1] == clip[:, 14:46, 48:80]).all()


def test_dclr_downstream_configs_follow_videomoco_eval_crop_and_clips_per_video():
    from pathlib import Path

    from actionray.config import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("dclr_finetune_ucf101", "dclr_finetune_hmdb51", "dclr_probe_ucf101", "dclr_probe_hmdb51"):
        cfg = load_config(configs / f"{name}.yaml")
        assert cfg.data.eval_resize == "none" and cfg.data.input_size == 112, name
        assert cfg.data.clips_per_video == 10, name  # -cpv 10 (DCLR README; VideoMoCo eval.py)
    other = load_config(configs / "tsn_ucf101.yaml")
    assert other.data.eval_resize == "short_side" and other.data.clips_per_video == 1
