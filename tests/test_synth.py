"""Generated demo videos: real H.264 / JPEG files, TSN lists, determinism, and order-only class pairs."""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np
import pytest
from PIL import Image

from actionray.synthetic import videos as synth
from actionray.synthetic.videos import generate_dataset, object_masks, render_video

ORDER_PAIRS = [("moving_left", "moving_right"), ("growing", "shrinking"), ("appearing", "disappearing"),
               ("rotating_cw", "rotating_ccw")]


def _decode_all(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _read_list(path: Path) -> list[tuple[str, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        rel, frames, label = line.split(" ")
        rows.append((rel, int(frames), int(label)))
    return rows


def _state(name: str, masks: np.ndarray) -> np.ndarray:
    """Per-frame state of the object that an order pair shares: x position, area, or orientation."""
    t, h, w = masks.shape
    mass = masks.reshape(t, -1).sum(1) + 1e-6
    yy, xx = np.mgrid[0:h, 0:w]
    if name.startswith("moving"):
        return (masks * xx).reshape(t, -1).sum(1) / mass
    if name.startswith("rotating"):
        cx = (masks * xx).reshape(t, -1).sum(1) / mass
        cy = (masks * yy).reshape(t, -1).sum(1) / mass
        dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
        mu20, mu02, mu11 = ((masks * dx * dx).sum((1, 2)), (masks * dy * dy).sum((1, 2)),
                            (masks * dx * dy).sum((1, 2)))
        return 0.5 * np.arctan2(2 * mu11, mu20 - mu02)
    return mass  # growing/shrinking: area; appearing/disappearing: area x opacity


def _step_sign(name: str, state: np.ndarray) -> float:
    """Median direction of change between consecutive frames (wrap-arounds are rare, the median ignores them)."""
    diff = np.diff(state)
    if name.startswith("rotating"):
        diff = (diff + np.pi / 2) % np.pi - np.pi / 2
    return float(np.sign(np.median(diff)))


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def test_mp4_dataset_decodes_to_listed_frame_count_and_size(synth_videos):
    rows = _read_list(synth_videos.train_list) + _read_list(synth_videos.val_list)
    assert len(rows) == synth_videos.num_classes * 4
    for rel, frames, _ in rows[:: len(rows) // 6]:
        reader = decord.VideoReader(str(synth_videos.root / rel))
        assert len(reader) == frames == 24
        assert reader[frames - 1].shape == (48, 64, 3)


def test_lists_hold_relative_paths_and_every_label_in_both_splits(synth_videos):
    train, val = _read_list(synth_videos.train_list), _read_list(synth_videos.val_list)
    assert {label for _, _, label in train} == set(range(synth_videos.num_classes))
    assert {label for _, _, label in val} == set(range(synth_videos.num_classes))
    assert len(train) == 3 * synth_videos.num_classes  # 4 per class, val_fraction 0.25
    assert not {rel for rel, _, _ in train} & {rel for rel, _, _ in val}
    for rel, _, label in train + val:
        assert not Path(rel).is_absolute() and (synth_videos.train_list.parent / rel).is_file()
        assert f"/{synth_videos.class_names[label]}/" in f"/{rel}"


def test_class_index_is_one_based_id_name_in_label_order(synth_videos):
    lines = synth_videos.class_index.read_text().splitlines()
    assert lines == [f"{i + 1} {name}" for i, name in enumerate(synth_videos.class_names)]
    assert synth_videos.class_names == list(synth.DEFAULT_CLASSES)


def test_frame_folders_hold_one_based_jpegs_for_every_listed_frame(synth_frames):
    rows = _read_list(synth_frames.train_list)
    rel, frames, _ = rows[0]
    folder = synth_frames.root / rel
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"img_{k:05d}.jpg" for k in range(1, frames + 1)]
    assert Image.open(folder / names[-1]).size == (64, 48)


def test_same_seed_gives_identical_decoded_frames_and_other_seed_differs(tmp_path):
    # 64 px wide: decord2 3.4.0 cannot decode some tiny H.264 widths (32, 48, 96 px; docs/performance.md)
    kwargs = dict(classes=["growing", "striped"], videos_per_class=2, frames=8, size=(64, 32), workers=1)
    a = generate_dataset(tmp_path / "a", seed=3, **kwargs)
    b = generate_dataset(tmp_path / "b", seed=3, **kwargs)
    c = generate_dataset(tmp_path / "c", seed=4, **kwargs)
    rel = _read_list(a.train_list)[0][0]
    assert np.array_equal(_decode_all(a.root / rel), _decode_all(b.root / rel))
    assert not np.array_equal(_decode_all(a.root / rel), _decode_all(c.root / rel))


def test_a_video_does_not_depend_on_the_other_classes_requested():
    alone = render_video("shrinking", frames=6, size=(32, 32), seed=0, index=1)
    assert np.array_equal(alone, render_video("shrinking", frames=6, size=(32, 32), seed=0, index=1))
    assert not np.array_equal(alone, render_video("shrinking", frames=6, size=(32, 32), seed=0, index=2))


@pytest.mark.parametrize("pair", ORDER_PAIRS, ids=lambda p: p[0])
def test_single_frame_state_has_the_same_distribution_in_both_classes_of_an_order_pair(pair):
    frame = 5  # any fixed frame: what a single sampled frame shows
    states = {name: np.array([_state(name, object_masks(name, frames=12, size=(48, 32), index=i))[frame]
                              for i in range(40)]) for name in pair}
    a, b = states.values()
    assert _ks(a, b) < 0.35  # KS critical value for n = m = 40 at alpha = 0.05 is 0.30; generous for a fixed seed
    assert np.ptp(a) > 0.5 * max(np.ptp(b), 1e-6) and np.ptp(b) > 0.5 * max(np.ptp(a), 1e-6)


@pytest.mark.parametrize("pair", ORDER_PAIRS, ids=lambda p: p[0])
def test_frame_order_separates_the_classes_of_an_order_pair(pair):
    first, second = pair
    for i in range(10):
        signs = [_step_sign(name, _state(name, object_masks(name, frames=12, size=(48, 32), index=i)))
                 for name in pair]
        assert signs[0] == -signs[1] != 0, f"{first}/{second} video {i}: steps {signs}"


def test_kind_helpers_split_temporal_and_appearance_classes():
    names = list(synth.DEFAULT_CLASSES)
    temporal, appearance = synth.temporal_classes(names), synth.appearance_classes(names)
    assert [names[i] for i in appearance] == ["striped", "checkered"]
    assert sorted(temporal + appearance) == list(range(len(names)))
    assert synth.flip_label_map(names) == {0: 1, 1: 0}


def test_invalid_arguments_are_rejected_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic class"):
        generate_dataset(tmp_path, classes=["jumping"])
    with pytest.raises(ValueError, match="even"):
        generate_dataset(tmp_path, size=(33, 32))


def test_synth_section_of_a_config_generates_its_data_set(tmp_path):
    from actionray.config import build_config

    cfg = build_config({"method": {"name": "tsn"}, "data": {"synth": {"out_dir": str(tmp_path / "demo"), "classes": ["appearing", "checkered"],
                                           "videos_per_class": 2, "frames": 8, "width": 32, "height": 32}}})
    data = synth.generate_from_config(cfg.data.synth)
    assert data.class_names == ["appearing", "checkered"] and data.root == (tmp_path / "demo").resolve()
    assert len(data.train_list.read_text().splitlines()) == 2
