"""Frame-index samplers: MMAction2 SampleFrames (L = 1), TDN new_length (L > 1), dense, multi-clip test views."""

import numpy as np
import pytest

from actionray.platform.config import DataConfig
from actionray.platform.data.sampling import SamplingSpec, sample_clip

TSN = SamplingSpec(num_segments=8, frames_per_segment=1)
TDN = SamplingSpec(num_segments=8, frames_per_segment=5)

# K = 8; MMAction2 0-based test offsets, TDN 1-based starts of 5-frame groups.
MMACTION2_TEST = {100: [6, 18, 31, 43, 56, 68, 81, 93], 30: [1, 5, 9, 13, 16, 20, 24, 28],
                  12: [0, 2, 3, 5, 6, 8, 9, 11], 9: [0, 1, 2, 3, 5, 6, 7, 8]}
TDN_TEST_1BASED = {100: [7, 19, 31, 43, 55, 67, 79, 91], 30: [2, 5, 9, 12, 15, 18, 22, 25],
                   12: [1] * 8, 9: [1] * 8}


@pytest.mark.parametrize("n", sorted(MMACTION2_TEST))
def test_tsn_test_offsets_match_mmaction2_table(n):
    assert sample_clip(TSN, n, "val", 0, 0, 0).tolist() == MMACTION2_TEST[n]


@pytest.mark.parametrize("n", sorted(TDN_TEST_1BASED))
def test_tdn_test_starts_match_tdn_table_shifted_to_zero_based(n):
    starts = sample_clip(TDN, n, "val", 0, 0, 0).reshape(8, 5)[:, 0]
    assert (starts + 1).tolist() == TDN_TEST_1BASED[n]


def test_indices_are_int64_with_k_times_l_entries():
    idx = sample_clip(TDN, 100, "train", 0, 0, 0)
    assert idx.dtype == np.int64 and idx.shape == (40,)


def test_tsn_train_draws_one_frame_inside_each_segment():
    for index in range(50):
        idx = sample_clip(TSN, 100, "train", 0, 0, index)
        assert ((idx // 12) == np.arange(8)).all()  # avg = 100 // 8 = 12: offset i*12 + U{0..11}


def test_tsn_train_with_fewer_frames_than_segments_spreads_rounded_positions():
    # MMAction2: avg = 0 and N < K -> round(i * N / K), no randomness.
    assert sample_clip(TSN, 5, "train", 0, 0, 0).tolist() == np.around(np.arange(8) * 5 / 8).astype(int).tolist()


def test_tsn_test_with_fewer_frames_than_segments_repeats_frames():
    assert sample_clip(TSN, 4, "val", 0, 0, 0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_tdn_segment_is_l_consecutive_frames():
    idx = sample_clip(TDN, 100, "train", 3, 1, 7).reshape(8, 5)
    assert (np.diff(idx, axis=1) == 1).all()


def test_tdn_train_starts_stay_in_their_segment():
    avg = (100 - 5 + 1) // 8
    for index in range(30):
        starts = sample_clip(TDN, 100, "train", 0, 0, index).reshape(8, 5)[:, 0]
        assert ((starts // avg) == np.arange(8)).all()


def test_tdn_pointer_stops_at_the_last_frame():
    # N = 3 <= K + L - 1: every segment starts at frame 0; the pointer then sticks at the last frame (2).
    spec = SamplingSpec(num_segments=2, frames_per_segment=5)
    assert sample_clip(spec, 3, "val", 0, 0, 0).tolist() == [0, 1, 2, 2, 2, 0, 1, 2, 2, 2]


def test_tdn_short_video_in_train_starts_all_segments_at_zero():
    assert sample_clip(TDN, 8, "train", 0, 0, 0).reshape(8, 5)[:, 0].tolist() == [0] * 8


def test_same_seed_epoch_index_repeats_exactly():
    a = sample_clip(TSN, 300, "train", 5, 2, 11)
    b = sample_clip(TSN, 300, "train", 5, 2, 11)
    assert a.tolist() == b.tolist()


def test_epochs_give_new_offsets():
    draws = {tuple(sample_clip(TSN, 300, "train", 5, epoch, 11)) for epoch in range(5)}
    assert len(draws) == 5


def test_indices_and_seeds_give_different_offsets():
    assert sample_clip(TSN, 300, "train", 0, 0, 1).tolist() != sample_clip(TSN, 300, "train", 0, 0, 2).tolist()
    assert sample_clip(TSN, 300, "train", 0, 0, 1).tolist() != sample_clip(TSN, 300, "train", 1, 0, 1).tolist()


def test_val_and_test_ignore_seed_and_epoch():
    assert sample_clip(TDN, 90, "val", 0, 0, 0).tolist() == sample_clip(TDN, 90, "test", 9, 4, 3).tolist()


def test_multi_clip_test_views_interleave_inside_each_segment():
    spec = SamplingSpec(num_segments=4, clips=3)
    views = np.stack([sample_clip(spec, 120, "test", 0, 0, 0, clip=c) for c in range(3)])
    # segment width 30: clip c takes offset floor(30 * (2c + 1) / 6) = 5, 15, 25 inside every segment
    assert views.tolist() == [[5, 35, 65, 95], [15, 45, 75, 105], [25, 55, 85, 115]]


def test_single_test_clip_is_the_segment_centre():
    spec = SamplingSpec(num_segments=8, clips=1)
    assert sample_clip(spec, 100, "test", 0, 0, 0).tolist() == MMACTION2_TEST[100]


def test_clip_outside_the_view_count_is_rejected():
    with pytest.raises(ValueError, match="clip 1 outside 0..0"):
        sample_clip(TSN, 100, "val", 0, 0, 0, clip=1)


def test_dense_train_window_has_fixed_stride_and_random_start():
    spec = SamplingSpec(num_segments=8, mode="dense", dense_window=64)
    starts = set()
    for index in range(20):
        idx = sample_clip(spec, 200, "train", 0, 0, index)
        assert (np.diff(idx) == 8).all() and 0 <= idx[0] <= 200 - 65  # MMAction2: U{0..N-window-1}
        starts.add(int(idx[0]))
    assert len(starts) > 1


def test_dense_train_start_is_zero_one_frame_past_the_window():
    # MMAction2 randint(0, N - window) with N = window + 1 can only give 0.
    spec = SamplingSpec(num_segments=8, mode="dense", dense_window=64)
    assert {int(sample_clip(spec, 65, "train", 0, 0, i)[0]) for i in range(30)} == {0}


def test_dense_short_video_starts_at_zero_and_wraps():
    spec = SamplingSpec(num_segments=8, mode="dense", dense_window=64)
    assert sample_clip(spec, 40, "train", 0, 0, 0).tolist() == [0, 8, 16, 24, 32, 0, 8, 16]


def test_dense_test_clips_start_on_a_linspace():
    spec = SamplingSpec(num_segments=4, mode="dense", dense_window=64, clips=10)
    starts = [int(sample_clip(spec, 200, "test", 0, 0, 0, clip=c)[0]) for c in range(10)]
    assert starts == np.linspace(0, 136, 10).astype(int).tolist()


def test_spec_from_data_config_copies_sampling_fields():
    data = DataConfig(num_segments=16, frames_per_segment=5, sampling="dense", dense_window=32)
    assert SamplingSpec.from_config(data, clips=2) == SamplingSpec(16, 5, "dense", 32, 2)


def test_empty_video_is_rejected():
    with pytest.raises(ValueError, match="num_frames=0"):
        sample_clip(TSN, 0, "train", 0, 0, 4)


def test_training_clips_of_one_video_are_seeded_by_their_clip_index():
    """data.clips_per_video: clip c of a video draws from (seed, epoch, index, c); dense windows of one video's
    clips are distinct (torchvision RandomClipSampler, VideoMoCo eval.py); one clip per video is unchanged."""

    one = SamplingSpec(num_segments=4, mode="dense", dense_window=8)
    ten = SamplingSpec(num_segments=4, mode="dense", dense_window=8, train_clips=10)
    clips = [sample_clip(ten, 40, "train", 0, 0, 5, c) for c in range(10)]
    assert len({int(c[0]) for c in clips}) == 10  # distinct windows
    assert all((a == b).all() for a, b in zip(clips, [sample_clip(ten, 40, "train", 0, 0, 5, c) for c in range(10)]))
    assert [int(c[0]) for c in clips] != [int(sample_clip(ten, 40, "train", 0, 1, 5, c)[0]) for c in range(10)]
    with pytest.raises(ValueError, match="clip 10"):
        sample_clip(ten, 40, "train", 0, 0, 5, 10)
    with pytest.raises(ValueError, match="clip 1"):
        sample_clip(one, 40, "train", 0, 0, 5, 1)
    segment = SamplingSpec(num_segments=8, train_clips=3)
    drawn = [sample_clip(segment, 200, "train", 0, 0, 5, c) for c in range(3)]
    assert (drawn[0] == sample_clip(SamplingSpec(num_segments=8), 200, "train", 0, 0, 5)).all()
    assert not (drawn[0] == drawn[1]).all() and not (drawn[1] == drawn[2]).all()
