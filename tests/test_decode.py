"""Decoding sampled indices from generated mp4 files (decord) and JPEG frame folders (PIL)."""

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from actionray.platform.data.annotations import read_list
from actionray.platform.data.decode import (DecodeError, count_frames, decode_clip, decord_distributions,
                                            scaled_size)


@pytest.fixture(scope="module")
def video(synth_videos) -> str:
    return read_list(synth_videos.train_list)[0].path


@pytest.fixture(scope="module")
def folder(synth_frames) -> str:
    return read_list(synth_frames.train_list)[0].path


def test_decoded_clip_is_uint8_t_h_w_3(video):
    clip = decode_clip(video, [0, 5, 10])
    assert clip.dtype == np.uint8 and clip.shape == (3, 48, 64, 3)


def test_requested_order_and_repeats_are_kept(video):
    clip = decode_clip(video, [9, 2, 9, 2, 4])
    singles = {i: decode_clip(video, [i])[0] for i in (2, 4, 9)}
    for got, want in zip(clip, [9, 2, 9, 2, 4]):
        np.testing.assert_array_equal(got, singles[want])


def test_decord_frames_equal_pyav_frames_of_the_same_video(video):
    """decord (from decord2) and PyAV (the same FFmpeg decode, rgb24) give identical frames, in any order."""
    with av.open(video) as container:
        reference = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    indices = [len(reference) - 1, 0, 7, 12, 13, 7]
    np.testing.assert_array_equal(decode_clip(video, indices), reference[indices])
    assert count_frames(video) == len(reference)


def test_decord_comes_from_the_decord2_distribution():
    package, owners = decord_distributions()
    assert owners == ["decord2"] and Path(package).name == "decord"


def _fake_decord_site(root: Path, owners: list[str]) -> Path:
    """A site folder whose ``decord`` package is owned by ``owners`` (dist-info folders, as pip leaves them)."""
    (root / "decord").mkdir(parents=True)
    (root / "decord" / "__init__.py").write_text("")
    for name in owners:
        info = root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text("decord\n")
    return root


@pytest.mark.parametrize("owners", [["decord"], ["decord", "decord2"], []])
def test_import_fails_in_one_line_when_decord_is_not_only_decord2(tmp_path, owners):
    site = _fake_decord_site(tmp_path / "site", owners)
    env = {k: v for k, v in os.environ.items() if k != "ACTIONRAY_ALLOW_OTHER_DECORD"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", "import actionray.platform.data.decode"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the decord module at ") and str(site) in last
    assert "fix: pip uninstall -y decord decord2 && pip install -c constraints.txt decord2" in last
    assert (" and ".join(owners) if owners else "no known distribution") in last


def test_distinct_frames_differ(video):
    clip = decode_clip(video, [0, 12])
    assert np.abs(clip[0].astype(int) - clip[1].astype(int)).mean() > 1.0


def test_short_side_resize_keeps_aspect_in_the_decoder(video):
    assert decode_clip(video, [0, 1], short_side=32).shape == (2, 32, 43, 3)  # 64x48 -> 43x32 (round)


def test_scaled_size_handles_portrait_and_none():
    assert scaled_size(48, 64, 24) == (24, 32)
    assert scaled_size(64, 48, None) == (64, 48)


def test_index_past_the_end_raises_decode_error(video):
    with pytest.raises(DecodeError, match=r"frame indices \[24\] outside 0..23"):
        decode_clip(video, [3, 24])


def test_zero_byte_file_raises_decode_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="0 bytes") as info:
        decode_clip(empty, [0])
    assert info.value.path == str(empty)


def test_truncated_file_raises_decode_error(video, tmp_path):
    broken = tmp_path / "truncated.mp4"
    broken.write_bytes(Path(video).read_bytes()[:2000])
    with pytest.raises(DecodeError, match="truncated.mp4"):
        decode_clip(broken, [0, 1])


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        decode_clip(tmp_path / "nope.mp4", [0])


def test_count_frames_of_a_video_is_its_decoded_length(video):
    assert count_frames(video) == 24


def test_frame_folder_index_k_reads_one_based_file_k_plus_1(folder):
    clip = decode_clip(folder, [2, 0], fmt="frames")
    want = np.asarray(Image.open(Path(folder) / "img_00003.jpg").convert("RGB"))
    np.testing.assert_array_equal(clip[0], want)
    assert clip.shape == (2, 48, 64, 3)


def test_frame_folder_short_side_resize(folder):
    assert decode_clip(folder, [0], fmt="frames", short_side=24).shape == (1, 24, 32, 3)


def test_count_frames_of_a_folder_counts_consecutive_files(folder):
    assert count_frames(folder, "frames") == 16


def test_frame_past_the_folder_end_raises_decode_error(folder):
    with pytest.raises(DecodeError, match=r"outside 0..15"):
        decode_clip(folder, [16], fmt="frames")


def test_corrupt_frame_file_raises_decode_error(folder, tmp_path):
    broken = tmp_path / "clip"
    broken.mkdir()
    for k in (1, 2):
        (broken / f"img_{k:05d}.jpg").write_bytes((Path(folder) / f"img_{k:05d}.jpg").read_bytes())
    (broken / "img_00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DecodeError, match="cannot read frame 1"):
        decode_clip(broken, [0, 1], fmt="frames")


def test_frame_folder_with_a_gap_is_an_error_not_a_shorter_video(folder, tmp_path):
    holes = tmp_path / "holes"
    holes.mkdir()
    for k in (1, 2, 4):
        (holes / f"img_{k:05d}.jpg").write_bytes((Path(folder) / f"img_{k:05d}.jpg").read_bytes())
    with pytest.raises(DecodeError, match="img_00003.jpg is missing but img_00004.jpg exists"):
        count_frames(holes, "frames")
