"""Generated demo videos: classes that only temporal order separates next to classes that appearance separates.

Every order-dependent class is a periodic process with a random phase (positions wrap around, sizes and
opacities follow a sawtooth, angles wrap), so the state seen in any single frame is uniformly distributed and
identical for a class and its reversed twin: only the order of frames tells them apart. Appearance classes
(striped vs checkered textures) are separable from any one frame. Backgrounds, colours, sizes, speeds and
positions are random per video, drawn from a generator seeded by ``(seed, class name, video index)``.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

__all__ = [
    "ALL_CLASSES",
    "CLASS_KINDS",
    "DEFAULT_CLASSES",
    "SynthDataset",
    "appearance_classes",
    "flip_label_map",
    "generate_dataset",
    "generate_from_config",
    "object_masks",
    "render_video",
    "temporal_classes",
]

# kind of evidence that separates a class from its nearest neighbour
CLASS_KINDS: dict[str, str] = {
    "moving_left": "temporal",
    "moving_right": "temporal",
    "growing": "temporal",
    "shrinking": "temporal",
    "appearing": "temporal",
    "disappearing": "temporal",
    "rotating_cw": "temporal",
    "rotating_ccw": "temporal",
    "striped": "appearance",
    "checkered": "appearance",
}
ALL_CLASSES: tuple[str, ...] = tuple(CLASS_KINDS)
# The default demo set: 8 classes, matching DataConfig.num_classes' default (3 order pairs + 2 textures).
DEFAULT_CLASSES: tuple[str, ...] = (
    "moving_left", "moving_right", "growing", "shrinking", "appearing", "disappearing", "striped", "checkered",
)
# Classes a horizontal flip turns into each other (feed to DataConfig.flip_label_map, or disable flip).
_FLIP_PAIRS = (("moving_left", "moving_right"), ("rotating_cw", "rotating_ccw"))

FPS = 12
FRAME_TEMPLATE = "img_{:05d}.jpg"


@dataclass(frozen=True)
class SynthDataset:
    """Where a generated data set lives; list paths are relative to the list's folder (``root``)."""

    root: Path
    train_list: Path
    val_list: Path
    class_index: Path
    class_names: list[str] = field(default_factory=list)
    format: str = "mp4"

    @property
    def num_classes(self) -> int:
        """Number of classes (labels 0..num_classes-1)."""
        return len(self.class_names)


def temporal_classes(class_names: Sequence[str]) -> list[int]:
    """Label ids of the classes that only frame order separates from another class."""
    return [i for i, name in enumerate(class_names) if CLASS_KINDS.get(name) == "temporal"]


def appearance_classes(class_names: Sequence[str]) -> list[int]:
    """Label ids of the classes that a single frame's appearance separates."""
    return [i for i, name in enumerate(class_names) if CLASS_KINDS.get(name) == "appearance"]


def flip_label_map(class_names: Sequence[str]) -> dict[int, int]:
    """Label pairs swapped by a horizontal flip (moving_left <-> moving_right, rotating_cw <-> rotating_ccw)."""
    index = {name: i for i, name in enumerate(class_names)}
    mapping: dict[int, int] = {}
    for a, b in _FLIP_PAIRS:
        if a in index and b in index:
            mapping[index[a]] = index[b]
            mapping[index[b]] = index[a]
    return mapping


# ---------------------------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random colour gradient plus smooth noise blobs, float32 (H, W, 3) in 0..255."""
    c0, c1 = rng.uniform(30, 225, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    bg = c0 + (c1 - c0) * ramp[..., None]
    # low-frequency noise: a coarse random grid upsampled by nearest neighbour, then box-blurred
    coarse = rng.normal(0, 18, size=(h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    noise = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:h, :w]
    kernel = np.ones(7, dtype=np.float32) / 7
    noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), 0, noise)
    noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), 1, noise)
    return (bg + noise).astype(np.float32)


def _sawtooth(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Phase in [0, 1) per frame: random start, random period of 0.75..1.5 clip lengths."""
    period = rng.uniform(0.75, 1.5) * frames
    return (rng.uniform(0, 1) + np.arange(frames) / period) % 1.0


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour; far from ``avoid`` (the background mean) so the object stays visible."""
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    if avoid is not None and np.abs(colour - avoid).sum() < 120:
        colour = np.where(avoid > 127, colour * 0.3, 255 - (255 - colour) * 0.3).astype(np.float32)
    return colour


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Anti-aliased disc mask (H, W) in 0..1."""
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(r - dist + 0.5, 0.0, 1.0)


def _render_moving(rng, t_count, h, w, bg, direction: int):
    r = rng.uniform(0.12, 0.2) * h
    span = w + 2 * r  # wrap around outside the frame so position is uniform over the whole range
    speed = rng.uniform(0.012, 0.03) * w  # px/frame; < span / 2 per sampled step, so no aliasing
    x0 = rng.uniform(0, span)
    cy = rng.uniform(r, h - r)
    colour = _colour(rng, bg)

    def draw(t, yy, xx):
        cx = (x0 + direction * speed * t) % span - r
        return _disc(yy, xx, cy, cx, r), colour

    return draw


def _render_growing(rng, t_count, h, w, bg, direction: int):
    phase = _sawtooth(rng, t_count)
    r_min, r_max = 0.04 * h, rng.uniform(0.25, 0.4) * h
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.3, 0.7) * w
    colour = _colour(rng, bg)

    def draw(t, yy, xx):
        p = phase[t] if direction > 0 else 1.0 - phase[t]
        return _disc(yy, xx, cy, cx, r_min + (r_max - r_min) * p), colour

    return draw


def _render_appearing(rng, t_count, h, w, bg, direction: int):
    phase = _sawtooth(rng, t_count)
    r = rng.uniform(0.12, 0.22) * h
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    colour = _colour(rng, bg)

    def draw(t, yy, xx):
        alpha = phase[t] if direction > 0 else 1.0 - phase[t]
        return _disc(yy, xx, cy, cx, r) * alpha, colour

    return draw


def _render_rotating(rng, t_count, h, w, bg, direction: int):
    # image y points down, so a clockwise turn on screen increases the angle
    speed = np.deg2rad(rng.uniform(3.0, 8.0))  # per frame; a bar is 180-degree symmetric, keep steps < 90
    theta0 = rng.uniform(0, np.pi)
    half_len, half_wid = rng.uniform(0.25, 0.4) * h, rng.uniform(0.04, 0.07) * h
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.35, 0.65) * w
    colour = _colour(rng, bg)

    def draw(t, yy, xx):
        theta = theta0 + direction * speed * t
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        mask = np.clip(half_len - np.abs(u) + 0.5, 0, 1) * np.clip(half_wid - np.abs(v) + 0.5, 0, 1)
        return mask, colour

    return draw


def _render_texture(rng, t_count, h, w, bg, checker: bool):
    bh, bw = rng.uniform(0.35, 0.6) * h, rng.uniform(0.3, 0.5) * w
    cy, cx = rng.uniform(bh / 2, h - bh / 2), rng.uniform(bw / 2, w - bw / 2)
    period = rng.uniform(0.06, 0.1) * h
    colour_a, colour_b = _colour(rng), _colour(rng)
    if np.abs(colour_a - colour_b).sum() < 150:  # keep the texture visible
        colour_b = 255.0 - colour_a
    vertical = rng.uniform() < 0.5
    # a slow random drift in either direction, so "static" is not the cue and direction carries no label
    vy, vx = rng.uniform(-0.3, 0.3, size=2)

    def draw(t, yy, xx):
        oy, ox = cy + vy * t, cx + vx * t
        inside = (np.abs(yy - oy) < bh / 2) & (np.abs(xx - ox) < bw / 2)
        sy, sx = np.floor((yy - oy) / period), np.floor((xx - ox) / period)
        if checker:
            pattern = (sy + sx) % 2
        else:
            pattern = (sx if vertical else sy) % 2
        texture = np.where(pattern[..., None] > 0, colour_a, colour_b)
        return inside.astype(np.float32), texture

    return draw


_RENDERERS: dict[str, Callable] = {
    "moving_left": lambda rng, t, h, w, bg: _render_moving(rng, t, h, w, bg, -1),
    "moving_right": lambda rng, t, h, w, bg: _render_moving(rng, t, h, w, bg, +1),
    "growing": lambda rng, t, h, w, bg: _render_growing(rng, t, h, w, bg, +1),
    "shrinking": lambda rng, t, h, w, bg: _render_growing(rng, t, h, w, bg, -1),
    "appearing": lambda rng, t, h, w, bg: _render_appearing(rng, t, h, w, bg, +1),
    "disappearing": lambda rng, t, h, w, bg: _render_appearing(rng, t, h, w, bg, -1),
    "rotating_cw": lambda rng, t, h, w, bg: _render_rotating(rng, t, h, w, bg, +1),
    "rotating_ccw": lambda rng, t, h, w, bg: _render_rotating(rng, t, h, w, bg, -1),
    "striped": lambda rng, t, h, w, bg: _render_texture(rng, t, h, w, bg, checker=False),
    "checkered": lambda rng, t, h, w, bg: _render_texture(rng, t, h, w, bg, checker=True),
}


def _video_seed(seed: int, class_name: str, index: int) -> np.random.SeedSequence:
    # keyed by the class *name*, so a video does not change when the class list is reordered or subset
    return np.random.SeedSequence([seed, zlib.crc32(class_name.encode()), index])


def _render(class_name: str, frames: int, size: tuple[int, int], seed: int, index: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Video uint8 (T, H, W, 3) and the object's coverage float32 (T, H, W) in 0..1."""
    if class_name not in _RENDERERS:
        raise ValueError(f"unknown synthetic class {class_name!r}; built-in classes: {', '.join(ALL_CLASSES)}")
    w, h = size
    rng = np.random.default_rng(_video_seed(seed, class_name, index))
    background = _background(rng, h, w)
    draw = _RENDERERS[class_name](rng, frames, h, w, background.mean(axis=(0, 1)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    video = np.empty((frames, h, w, 3), dtype=np.uint8)
    masks = np.empty((frames, h, w), dtype=np.float32)
    for t in range(frames):
        mask, colour = draw(t, yy, xx)
        frame = background * (1.0 - mask[..., None]) + colour * mask[..., None]
        frame += rng.normal(0.0, 3.0, size=frame.shape[:2] + (1,))  # sensor-like flicker, per frame
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
        masks[t] = mask
    return video, masks


def render_video(class_name: str, *, frames: int = 48, size: tuple[int, int] = (128, 96), seed: int = 0,
                 index: int = 0) -> np.ndarray:
    """Render one video of a built-in class as uint8 (T, H, W, 3); ``size`` is (width, height)."""
    return _render(class_name, frames, size, seed, index)[0]


def object_masks(class_name: str, *, frames: int = 48, size: tuple[int, int] = (128, 96), seed: int = 0,
                 index: int = 0) -> np.ndarray:
    """The moving object's per-pixel coverage (opacity included) for the same video, float32 (T, H, W)."""
    return _render(class_name, frames, size, seed, index)[1]


# ------------------------------------------------------------------------------------------------ writing


def write_mp4(path: Path, video: np.ndarray, fps: int = FPS) -> None:
    """Encode uint8 (T, H, W, 3) as H.264/yuv420p .mp4 (H and W must be even)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = video.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # one thread per encoder (parallelism is across videos, and keeps output byte-identical);
        # short GOP so decord's random access does not decode long runs of frames
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "g": "12", "bf": "0"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: Path, video: np.ndarray, quality: int = 92) -> None:
    """Write uint8 (T, H, W, 3) as img_00001.jpg ... (1-based, the MMAction2/TSN convention)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(folder / FRAME_TEMPLATE.format(t + 1), quality=quality)


def _make_one(job: tuple) -> str:
    out_path, class_name, frames, size, seed, index, fmt = job
    video = render_video(class_name, frames=frames, size=size, seed=seed, index=index)
    if fmt == "mp4":
        write_mp4(Path(out_path), video)
    else:
        write_frames(Path(out_path), video)
    return out_path


def run_jobs(make: Callable[[tuple], object], jobs: list[tuple], workers: int | None = None) -> None:
    """Run ``make(job)`` for every job, over ``workers`` processes (default: one per core, at most one per job)."""
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(make, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        for job in jobs:
            make(job)


def generate_dataset(out_dir: str | Path, *, classes: Sequence[str] | None = None, videos_per_class: int = 24,
                     frames: int = 48, size: tuple[int, int] = (128, 96), seed: int = 0,
                     format: Literal["mp4", "frames"] = "mp4", val_fraction: float = 0.25,
                     workers: int | None = None) -> SynthDataset:
    """Write a generated data set (videos, train.txt, val.txt, classInd.txt) under ``out_dir``.

    List lines are ``relative/path num_frames label`` (TSN format, 0-based labels, paths relative to
    ``out_dir``); classInd.txt lines are ``id name`` with 1-based ids, as UCF101's classInd.txt.
    """
    names = list(classes) if classes else list(DEFAULT_CLASSES)
    unknown = [c for c in names if c not in CLASS_KINDS]
    if unknown:
        raise ValueError(f"unknown synthetic class(es) {unknown}; built-in classes: {', '.join(ALL_CLASSES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {names}")
    w, h = size
    if w % 2 or h % 2 or w < 16 or h < 16:
        raise ValueError(f"size {w}x{h}: width and height must be even and >= 16 (H.264 yuv420p)")
    if videos_per_class < 2:
        raise ValueError(f"videos_per_class={videos_per_class}: need at least 2 (one train, one val)")
    if frames < 2:
        raise ValueError(f"frames={frames}: need at least 2")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in (0, 1)")
    if format not in ("mp4", "frames"):
        raise ValueError(f"format={format!r}: expected 'mp4' or 'frames'")

    root = Path(out_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    n_val = min(max(1, round(videos_per_class * val_fraction)), videos_per_class - 1)
    jobs, train_lines, val_lines = [], [], []
    for label, name in enumerate(names):
        for i in range(videos_per_class):
            stem = f"{name}_{i + 1:04d}"
            rel = f"videos/{name}/{stem}.mp4" if format == "mp4" else f"frames/{name}/{stem}"
            jobs.append((str(root / rel), name, frames, (w, h), seed, i, format))
            # the last n_val videos of each class are validation; videos are i.i.d. so any fixed rule works
            (val_lines if i >= videos_per_class - n_val else train_lines).append(f"{rel} {frames} {label}")

    run_jobs(_make_one, jobs, workers)

    train_list, val_list, class_index = root / "train.txt", root / "val.txt", root / "classInd.txt"
    train_list.write_text("\n".join(train_lines) + "\n")
    val_list.write_text("\n".join(val_lines) + "\n")
    class_index.write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(names)))
    return SynthDataset(root=root, train_list=train_list, val_list=val_list, class_index=class_index,
                        class_names=names, format=format)


def generate_from_config(synth_cfg) -> SynthDataset:
    """``generate_dataset`` from a ``SynthConfig`` (``cfg.data.synth``)."""
    return generate_dataset(synth_cfg.out_dir, classes=synth_cfg.classes, videos_per_class=synth_cfg.videos_per_class,
                            frames=synth_cfg.frames, size=(synth_cfg.width, synth_cfg.height), seed=synth_cfg.seed,
                            format=synth_cfg.format)


def prepare_data(cfg) -> None:
    """Generate the demo videos when ``data.synth`` is set and the train list does not exist yet, after checking
    that the lists it writes are the config's lists and its classes number ``data.num_classes`` (a mismatch is
    refused before any video is written)."""
    synth = cfg.data.synth
    if synth is None or Path(cfg.data.train_list).exists():
        return
    from actionray.platform.config import ConfigError

    root = Path(synth.out_dir).resolve()
    for key, name in (("train_list", "train.txt"), ("val_list", "val.txt")):
        given = getattr(cfg.data, key)
        if given is not None and Path(given).resolve() != root / name:
            raise ConfigError(f"data.{key} is {given} but data.synth writes {root / name}; point data.train_list/"
                              f"val_list at data.synth.out_dir ({synth.out_dir}), or drop data.synth")
    classes = len(synth.classes) if synth.classes else len(DEFAULT_CLASSES)
    if classes != cfg.data.num_classes:
        raise ConfigError(f"data.num_classes is {cfg.data.num_classes} but data.synth generates {classes} classes "
                          f"({'data.synth.classes' if synth.classes else 'the default demo set'})")
    generate_from_config(synth)
