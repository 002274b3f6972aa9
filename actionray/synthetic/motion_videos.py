"""Generated videos with background bias, for the DCLR claim (``actionray demo dclr``).

DCLR's motivation (Ding et al., ACM MM 2022, Sec. 1): two clips of one video share its static background, so
plain instance discrimination (MoCo on two clips) can be solved from the background and learns it instead of
the motion. This set makes that failure easy to reach and easy to measure:

- the class is only the motion of a foreground disc: moving up, moving down, growing or shrinking (none of
  them changes under the horizontal flip of the pre-training augmentation); a disc's colour, size, speed and
  position are random per video and carry no label, and the motions are periodic with a random phase, so no
  single frame tells the class;
- each video has its own strong static background (a random high-contrast texture: stripes, checks or blobs in
  random colours and scales), the same in every frame and random across videos, so two clips of a video are
  matched by their backgrounds alone.

A video is drawn from a generator seeded by ``(seed, split, class name, index)``; lists are TSN format
(``relative/path num_frames label``) with ``train.txt``, ``val.txt`` and ``test.txt``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actionray.synthetic.videos import run_jobs, write_mp4

__all__ = ["MOTION_CLASSES", "MotionSet", "generate_motion_set", "render_motion_video"]

MOTION_CLASSES: tuple[str, ...] = ("moving_up", "moving_down", "growing", "shrinking")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class MotionSet:
    """Where a generated motion set lives (list paths relative to ``root``)."""

    root: Path
    lists: dict[str, Path]
    class_index: Path


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random high-contrast static texture, float32 (H, W, 3) in 0..255."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colours = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
    kind = rng.integers(3)
    period = rng.uniform(3.0, 9.0)
    angle = rng.uniform(0, np.pi)
    if kind == 0:  # stripes at a random angle
        u = np.cos(angle) * xx + np.sin(angle) * yy
        index = (np.floor(u / period) % 3).astype(int)
    elif kind == 1:  # checks
        index = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(int) + (xx > w / 2)
    else:  # blobs: a coarse random grid upsampled by nearest neighbour
        cell = max(2, int(period))
        coarse = rng.integers(0, 3, size=(h // cell + 2, w // cell + 2))
        index = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]
    return colours[np.clip(index, 0, 2)]


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return np.clip(r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) + 0.5, 0.0, 1.0)


def render_motion_video(class_name: str, *, frames: int = 32, size: int = 32, seed: int = 0, split: str = "train",
                        index: int = 0) -> np.ndarray:
    """One video of ``class_name`` (``MOTION_CLASSES``) as uint8 (T, size, size, 3)."""
    if class_name not in MOTION_CLASSES:
        raise ValueError(f"unknown motion class {class_name!r}; classes: {', '.join(MOTION_CLASSES)}")
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed, zlib.crc32(split.encode()), zlib.crc32(class_name.encode()), index]))
    h = w = size
    background = _texture(rng, h, w)
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    if np.abs(colour - background.mean(axis=(0, 1))).sum() < 150:
        colour = 255.0 - colour
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.arange(frames, dtype=np.float32)
    if class_name in ("moving_up", "moving_down"):
        r = rng.uniform(0.14, 0.22) * size
        span = h + 2 * r  # wraps outside the frame, so the position is uniform over the period
        speed = rng.uniform(0.03, 0.06) * size * (-1.0 if class_name == "moving_up" else 1.0)
        y0, cx = rng.uniform(0, span), rng.uniform(r, w - r)
        centres = [((y0 + speed * s) % span - r, cx) for s in t]
        radii = np.full(frames, r)
    else:
        period = rng.uniform(0.6, 1.2) * frames
        phase = (rng.uniform() + t / period) % 1.0
        phase = phase if class_name == "growing" else 1.0 - phase
        r_min, r_max = 0.06 * size, rng.uniform(0.3, 0.42) * size
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        centres = [(cy, cx)] * frames
        radii = r_min + (r_max - r_min) * phase
    video = np.empty((frames, h, w, 3), dtype=np.uint8)
    for i in range(frames):
        mask = _disc(yy, xx, *centres[i], radii[i])[..., None]
        frame = background * (1.0 - mask) + colour * mask + rng.normal(0.0, 2.0, size=(h, w, 1))
        video[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def _make_one(job: tuple) -> None:
    path, class_name, frames, size, seed, split, index = job
    write_mp4(Path(path), render_motion_video(class_name, frames=frames, size=size, seed=seed, split=split,
                                              index=index))


def generate_motion_set(out_dir: str | Path, *, videos_per_class: dict[str, int] | None = None, frames: int = 32,
                        size: int = 32, seed: int = 0, workers: int | None = None) -> MotionSet:
    """Write the motion set (videos, train/val/test lists, classInd.txt) under ``out_dir``; returns its paths."""
    counts = videos_per_class or {"train": 48, "val": 12, "test": 24}
    if set(counts) != set(SPLITS) or any(n < 1 for n in counts.values()):
        raise ValueError(f"videos_per_class needs a positive count for each of {SPLITS}, got {counts}")
    if size % 2 or size < 16 or frames < 2:
        raise ValueError(f"size {size} must be even and >= 16, frames {frames} >= 2")
    root = Path(out_dir).resolve()
    jobs, lines = [], {split: [] for split in SPLITS}
    for split in SPLITS:
        for label, name in enumerate(MOTION_CLASSES):
            for i in range(counts[split]):
                rel = f"{split}/{name}/{name}_{i + 1:04d}.mp4"
                jobs.append((str(root / rel), name, frames, size, seed, split, i))
                lines[split].append(f"{rel} {frames} {label}")
    run_jobs(_make_one, jobs, workers)
    lists = {split: root / f"{split}.txt" for split in SPLITS}
    for split, path in lists.items():
        path.write_text("\n".join(lines[split]) + "\n")
    class_index = root / "classInd.txt"
    class_index.write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(MOTION_CLASSES)))
    return MotionSet(root=root, lists=lists, class_index=class_index)
