"""Which frames a clip is made of: pure functions returning 0-based frame indices.

list file -> **sampled frame indices** -> decoded uint8 clip -> transforms -> batch -> model.

Every random draw comes from ``np.random.default_rng([seed, epoch, index, clip])``: a run repeats exactly,
each epoch gets new offsets, and a worker can recompute any sample from its (seed, epoch, index).
Output layout is segment-major: ``indices[t * L + l]`` is frame ``l`` of segment ``t`` (shape ``(K * L,)``).

- L == 1 ("TSN"): MMAction2 ``SampleFrames`` (clip_len 1, out-of-bound 'loop').
- L > 1 ("TDN"): the TDN repo's ``TSNDataSet`` start frames, then L consecutive frames whose pointer stops
  at the last frame (TDN is 1-based; we return 0-based).
- dense: an I3D-style window (MMAction2 ``DenseSampleFrames``) of ``window`` frames, stride window // K.

Multi-clip testing (``clips`` C > 1) of segment sampling: clip c of segment i takes the offset
``floor(i * avg + avg * (2c + 1) / (2C))``, i.e. the K*C-segment centre sampling split into C interleaved
clips; C = 1 gives the usual segment centre. (MMAction2's 2D tests raise the segment count instead; the
TDN repo's non-Kinetics ``clip_index`` runs are identical, which makes C > 1 useless there.)

Several training clips per video per epoch (``data.clips_per_video`` = ``train_clips``, VideoMoCo's and DCLR's
``-cpv``): clip c's offsets come from ``(seed, epoch, index, c)``; dense windows of one video's clips are distinct,
positions of one seeded permutation per (seed, epoch, index) (``dense_train_starts_distinct``, torchvision
``RandomClipSampler``). With one clip per video nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "SamplingSpec", "sample_clip", "clip_rng", "tsn_train_offsets", "tsn_test_offsets", "tdn_train_starts",
    "tdn_test_starts", "dense_train_starts", "dense_train_starts_distinct", "dense_test_starts", "expand_segments",
    "Split",
]

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample one clip: K segments of L frames (segment) or K frames in a window (dense)."""

    num_segments: int = 8
    frames_per_segment: int = 1
    mode: Literal["segment", "dense"] = "segment"
    dense_window: int = 64
    clips: int = 1  # test-time clips per video (val always uses 1)
    train_clips: int = 1  # training clips per video per epoch (data.clips_per_video), clip c in 0..train_clips-1

    def __post_init__(self) -> None:
        if min(self.num_segments, self.frames_per_segment, self.dense_window, self.clips, self.train_clips) < 1:
            raise ValueError(f"SamplingSpec: counts must be >= 1, got {self}")

    @property
    def clip_length(self) -> int:
        """Frames per clip, N = K * L."""
        return self.num_segments * self.frames_per_segment

    @classmethod
    def from_config(cls, data, clips: int = 1) -> "SamplingSpec":
        """Build from a ``DataConfig`` (``cfg.data``); ``clips`` is ``cfg.eval.clips`` for test views."""
        return cls(num_segments=data.num_segments, frames_per_segment=data.frames_per_segment,
                   mode=data.sampling, dense_window=data.dense_window, clips=clips,
                   train_clips=data.clips_per_video)


def clip_rng(seed: int, epoch: int, index: int, clip: int = 0) -> np.random.Generator:
    """The one random stream of a sample: distinct per (seed, epoch, index, clip)."""
    return np.random.default_rng([seed, epoch, index, clip])


# --- TSN / MMAction2 SampleFrames (clip_len = 1) ---------------------------------------------------------

def tsn_train_offsets(num_frames: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Random offset per segment (K,); MMAction2 ``_get_train_clips`` with clip_len 1, before the 'loop' mod."""
    avg = num_frames // k
    if avg > 0:
        return np.arange(k) * avg + rng.integers(0, avg, size=k)
    # N < K. (MMAction2's sorted-random branch for avg == 0 and N > K cannot occur with clip_len 1.)
    return np.around(np.arange(k) * (num_frames / k)).astype(np.int64)


def tsn_test_offsets(num_frames: int, k: int, clip: int = 0, clips: int = 1) -> np.ndarray:
    """Segment centres (K,) (MMAction2 ``_get_test_clips``); clip c of C shifts within the segment."""
    avg = num_frames / k
    return (np.arange(k) * avg + avg * (2 * clip + 1) / (2 * clips)).astype(np.int64)


# --- TDN TSNDataSet (new_length = L) ---------------------------------------------------------------------

def tdn_train_starts(num_frames: int, k: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """0-based segment starts (K,) of the TDN train sampler (``_sample_indices`` minus 1)."""
    avg = (num_frames - length + 1) // k
    if avg > 0:
        return np.arange(k) * avg + rng.integers(0, avg, size=k)
    if num_frames > k:
        # TDN draws from U{0..N-L}; max(1, .) keeps very short videos (N < L) from crashing numpy.
        return np.sort(rng.integers(0, max(1, num_frames - length + 1), size=k))
    return np.zeros(k, dtype=np.int64)


def tdn_test_starts(num_frames: int, k: int, length: int, clip: int = 0, clips: int = 1) -> np.ndarray:
    """0-based segment starts (K,) of TDN val/test (``_get_val_indices``): tick centres, else all 0."""
    if num_frames > k + length - 1:
        tick = (num_frames - length + 1) / k
        return (tick * (2 * clip + 1) / (2 * clips) + np.arange(k) * tick).astype(np.int64)
    return np.zeros(k, dtype=np.int64)


# --- dense (MMAction2 DenseSampleFrames) -----------------------------------------------------------------

def dense_train_starts(num_frames: int, k: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """K positions (K,) with stride window // K from a random start in U{0..N-window-1} (0 if N <= window)."""
    # MMAction2 DenseSampleFrames: randint(0, sample_position - 1) with sample_position = N - window + 1.
    start = 0 if num_frames <= window else int(rng.integers(0, num_frames - window))
    return (start + np.arange(k) * max(1, window // k)) % num_frames


def dense_train_starts_distinct(num_frames: int, k: int, window: int, clip: int, seed: int, epoch: int,
                                index: int) -> np.ndarray:
    """Clip ``clip`` of several training clips of one video: the windows of a video's clips are distinct (a seeded
    permutation of the start positions of ``dense_train_starts``, drawn once per (seed, epoch, index)), as
    torchvision's ``RandomClipSampler`` draws ``randperm(windows)[:clips_per_video]`` (VideoMoCo repo, eval.py).
    A video with fewer start positions than clips repeats them in the same order."""
    positions = max(1, num_frames - window)  # the range dense_train_starts draws from (0 only if N <= window)
    order = np.random.default_rng([seed, epoch, index, 3]).permutation(positions)
    start = int(order[clip % positions]) if num_frames > window else 0
    return (start + np.arange(k) * max(1, window // k)) % num_frames


def dense_test_starts(num_frames: int, k: int, window: int, clip: int = 0, clips: int = 1) -> np.ndarray:
    """Clip c of ``linspace(0, max(0, N - window), C)`` starts; a single clip uses the centred window."""
    last = max(0, num_frames - window)
    # MMAction2 uses 10 starts from linspace; with one clip linspace would give start 0, the centre is fairer.
    start = last // 2 if clips == 1 else int(np.linspace(0, last, clips).astype(np.int64)[clip])
    return (start + np.arange(k) * max(1, window // k)) % num_frames


def expand_segments(starts: np.ndarray, length: int, num_frames: int) -> np.ndarray:
    """Starts (K,) -> (K * L,) segment-major indices, each pointer stopping at the last frame (TDN rule)."""
    frames = starts[:, None] + np.arange(length)[None, :]
    return np.minimum(frames, num_frames - 1).reshape(-1).astype(np.int64)


def sample_clip(spec: SamplingSpec, num_frames: int, split: Split, seed: int, epoch: int, index: int,
                clip: int = 0) -> np.ndarray:
    """0-based frame indices (K * L,) int64 for clip ``clip`` of sample ``index`` in ``epoch``."""
    if num_frames < 1:
        raise ValueError(f"sample_clip: video {index} has num_frames={num_frames}; need >= 1")
    if split not in ("train", "val", "test"):
        raise ValueError(f"sample_clip: split must be train|val|test, got {split!r}")
    k, length = spec.num_segments, spec.frames_per_segment
    clips = spec.clips if split == "test" else spec.train_clips if split == "train" else 1
    if not 0 <= clip < clips:
        raise ValueError(f"sample_clip: clip {clip} outside 0..{clips - 1} for split {split!r}")
    train = split == "train"
    rng = clip_rng(seed, epoch, index, clip) if train else None
    if spec.mode == "dense" and train and spec.train_clips > 1:
        starts = dense_train_starts_distinct(num_frames, k, spec.dense_window, clip, seed, epoch, index)
    elif spec.mode == "dense":
        starts = (dense_train_starts(num_frames, k, spec.dense_window, rng) if train
                  else dense_test_starts(num_frames, k, spec.dense_window, clip, clips))
    elif length == 1:
        starts = tsn_train_offsets(num_frames, k, rng) if train else tsn_test_offsets(num_frames, k, clip, clips)
        starts = starts % num_frames  # MMAction2 out_of_bound_opt='loop'
    else:
        starts = (tdn_train_starts(num_frames, k, length, rng) if train
                  else tdn_test_starts(num_frames, k, length, clip, clips))
    return expand_segments(np.asarray(starts, dtype=np.int64), length, num_frames)
