"""DCLR's decode-side frame remap (``DCLRRows``, issue 23 part 3a): the clips in a row are the frames its
``frame_indices`` name. The rows decode only the frames the four views use and index that subset, so a wrong
remap (plan indices used on the subset, or a shifted ``searchsorted``) would put other frames into the clips.

The video is a JPEG frame folder whose frame t is uniform grey of value 5 t (JPEG keeps uniform colours within
1-2 levels; neighbouring frames differ by 5), so every decoded pixel says which frame it came from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from actionray.platform.config import DataConfig
from actionray.platform.data.pipeline import DecodeJob
from actionray.platform.data.sampling import SamplingSpec
from actionray.trainables.dclr import DCLRRows

STEP = 5  # grey value per frame


@pytest.fixture(scope="module")
def grey_ramp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dclr_rows") / "ramp"
    folder.mkdir()
    for t in range(48):
        Image.fromarray(np.full((24, 32, 3), STEP * t, np.uint8)).save(folder / f"img_{t + 1:05d}.jpg", quality=95)
    return folder


def frame_of(clip: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uniform frames -> the frame index each one shows."""
    values = clip.reshape(len(clip), -1).astype(np.float64)
    assert (values.max(1) - values.min(1) <= 3).all(), "a decoded frame should stay uniform"
    return values.mean(1) / STEP


@pytest.mark.parametrize("num_frames", [48, 40, 20])  # 20 < one 32-frame window: the last frame repeats
def test_every_view_shows_the_frames_its_frame_indices_name(grey_ramp, num_frames):
    job = DecodeJob(data=DataConfig(format="frames"), split="train", spec=SamplingSpec(), seed=11, on_error="raise",
                    monitor="")
    rows = DCLRRows(clip_len=16, stride=2, crop_size=16)
    starts = set()
    for index, epoch in [(0, 0), (3, 0), (3, 1), (7, 2), (12, 5)]:
        row = rows(job, str(grey_ramp), num_frames, 2, index, epoch)
        video, indices = row["video"][0], row["frame_indices"][0]
        assert video.shape == (4, 16, 16, 16, 3) and indices.shape == (34,)
        query, key, (q_static, k_static) = indices[:16], indices[16:32], indices[32:]
        assert indices.max() < num_frames
        # the decoded pixels are the named frames (tolerance: JPEG, under half a frame step)
        assert np.abs(frame_of(video[0]) - query).max() < 0.5
        assert np.abs(frame_of(video[1]) - key).max() < 0.5
        assert np.abs(frame_of(video[2]) - q_static).max() < 0.5  # the static clip repeats its one frame
        assert np.abs(frame_of(video[3]) - k_static).max() < 0.5
        # and the names follow the released sampler: 16 frames of a 32-frame window with stride 2, one static
        # offset shared by both windows
        last = num_frames - 1
        q0, k0 = int(query[0]), int(key[0])
        assert (query == np.minimum(q0 + np.arange(0, 32, 2), last)).all()
        assert (key == np.minimum(k0 + np.arange(0, 32, 2), last)).all()
        if num_frames > 32:
            assert q0 != k0  # two different windows
            offset = q_static - q0
            assert 0 <= offset < 32 and k_static == min(k0 + offset, last)
        starts.add((q0, k0))
    assert len(starts) > 1 or num_frames <= 32  # rows of other videos/epochs draw other windows
