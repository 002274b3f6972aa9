"""Decoding: sampled frame indices -> uint8 clip ``(T, H, W, 3)`` (RGB).

list file -> sampled frame indices -> **decoded uint8 clip** -> transforms -> batch -> model.

Videos go through decord: one ``VideoReader`` per call with ``num_threads=1`` (parallelism comes from Ray
Data tasks, not decoder threads), the sorted unique indices in one ``get_batch`` call (one forward seek pass),
then re-expanded to the requested order and repeats. ``short_side`` resizes inside the decoder, which is much
cheaper than decoding full frames and resizing afterwards. After use the reader is rewound (``seek(0)``) and
dropped: some decord builds grow memory after ``get_batch`` otherwise (dmlc/decord#208).
The ``decord`` module must come from the ``decord2`` distribution (https://github.com/johnnynunez/decord2, a
maintained fork with the same API); the old ``decord`` 0.6.0 wheel provides the same module name, so importing
this module checks which distribution installed the ``decord`` package found first and fails in one line
otherwise (``check_decord_distribution``; docs/performance.md, "decord2").
Frame folders are read with PIL; file names are 1-based (``img_00001.jpg`` is frame index 0).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np

from actionray.errors import ActionRayError

__all__ = ["DecodeError", "decode_clip", "count_frames", "open_video", "VideoClipReader", "scaled_size",
           "check_decord_distribution", "decord_distributions"]

DECORD_DISTRIBUTION = "decord2"
DECORD_FIX = "pip uninstall -y decord decord2 && pip install -c constraints.txt decord2"
# Opt-out for measuring the old wheel side by side (docs/performance.md); never set it for training.
ALLOW_OTHER_DECORD_ENV = "ACTIONRAY_ALLOW_OTHER_DECORD"


def decord_distributions() -> tuple[str | None, list[str]]:
    """(folder of the ``decord`` package Python imports, names of the distributions installed there that own it).

    Only the site folder holding the package found first on ``sys.path`` is read (its dist-info
    ``top_level.txt``, else ``RECORD``): about 15 ms, against about 250 ms for
    ``importlib.metadata.packages_distributions()`` over the whole path, in every process that decodes.
    """
    spec = importlib.util.find_spec("decord")
    if spec is None or not spec.origin:
        return None, []
    package = Path(spec.origin).parent
    owners = []
    for dist in importlib.metadata.distributions(path=[str(package.parent)]):
        top_level = dist.read_text("top_level.txt")
        if top_level is not None:
            owns = "decord" in top_level.split()
        else:
            owns = "decord/__init__.py," in (dist.read_text("RECORD") or "")
        if owns:
            owners.append(dist.metadata["Name"])
    return str(package), sorted(set(owners))


def check_decord_distribution() -> None:
    """Raise ImportError (one line with the fix) unless ``decord`` is installed by decord2 and by nothing else."""
    if os.environ.get(ALLOW_OTHER_DECORD_ENV) == "1":
        return
    package, owners = decord_distributions()
    if package is None:
        raise ImportError(f"the decord module is not installed; fix: {DECORD_FIX}")
    if owners != [DECORD_DISTRIBUTION]:
        found = " and ".join(owners) if owners else "no known distribution"
        raise ImportError(f"the decord module at {package} comes from {found}, not only from "
                          f"{DECORD_DISTRIBUTION}; fix: {DECORD_FIX}")


check_decord_distribution()


class DecodeError(ActionRayError, RuntimeError):
    """A video or frame folder that cannot be read; carries the ``path`` and the ``reason``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keep (path, reason) when the error crosses a Ray task boundary
        return (DecodeError, (self.path, self.reason))


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(W, H) with the short side set to ``short_side`` and the aspect kept (None = unchanged)."""
    if short_side is None:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


@functools.lru_cache(maxsize=65536)
def _video_size(path: str) -> tuple[int, int]:
    """(W, H) of the first video stream from the container header (PyAV; decodes nothing)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError, OSError) as error:
        raise DecodeError(path, f"cannot read video header: {error}") from None


def _check_indices(path: str, indices: np.ndarray, num_frames: int) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise DecodeError(path, "no frame indices requested")
    bad = indices[(indices < 0) | (indices >= num_frames)]
    if bad.size:
        raise DecodeError(path, f"frame indices {bad[:5].tolist()} outside 0..{num_frames - 1}")
    return indices


class VideoClipReader:
    """An opened video: ``len(reader)`` frames, ``reader.get(indices)`` -> uint8 (T, H, W, 3); close after use."""

    def __init__(self, path: str | os.PathLike, short_side: int | None = None):
        import decord

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DecodeError(self.path, "file not found")
        if os.path.getsize(self.path) == 0:
            raise DecodeError(self.path, "file is empty (0 bytes)")
        size = (-1, -1)
        if short_side is not None:
            size = scaled_size(*_video_size(self.path), short_side)
        try:
            self._reader = decord.VideoReader(self.path, ctx=decord.cpu(0), width=size[0], height=size[1],
                                              num_threads=1)
            self.num_frames = len(self._reader)
        except (decord.DECORDError, RuntimeError) as error:
            raise DecodeError(self.path, f"decord cannot open it: {str(error).splitlines()[0]}") from None
        if self.num_frames < 1:
            raise DecodeError(self.path, "video has no frames")

    def __len__(self) -> int:
        return self.num_frames

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (T, H, W, 3)."""
        indices = _check_indices(self.path, indices, self.num_frames)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            frames = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as error:  # noqa: BLE001 - decord raises bare DECORDError/RuntimeError on corrupt packets
            raise DecodeError(self.path, f"decoding frames failed: {str(error).splitlines()[0]}") from None
        if frames.shape[0] != unique.size:
            raise DecodeError(self.path, f"decoder returned {frames.shape[0]} frames, asked for {unique.size}")
        return frames[inverse]

    def close(self) -> None:
        """Rewind and drop the decord reader (bounds decord's memory growth)."""
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            try:
                reader.seek(0)
            except Exception:  # noqa: BLE001 - a reader on a broken file may fail to seek; it is dropped anyway
                pass

    def __enter__(self) -> "VideoClipReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameFolderReader:
    """A folder of 1-based JPEG/PNG frames with the same interface as ``VideoClipReader``."""

    def __init__(self, path: str | os.PathLike, template: str = "img_{:05d}.jpg", short_side: int | None = None,
                 num_frames: int | None = None):
        self.path, self.template, self.short_side = str(path), template, short_side
        if not os.path.isdir(self.path):
            raise DecodeError(self.path, "frame folder not found")
        known = num_frames is not None and num_frames > 0
        self.num_frames = num_frames if known else _count_folder(self.path, template)
        if self.num_frames < 1:
            raise DecodeError(self.path, f"no frames named like {template.format(1)!r}")

    def __len__(self) -> int:
        return self.num_frames

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image

        file = os.path.join(self.path, self.template.format(index + 1))
        try:
            with Image.open(file) as image:
                if self.short_side is not None:
                    w, h = scaled_size(*image.size, self.short_side)
                    image.draft("RGB", (w, h))  # JPEG DCT-domain downscale: decodes fewer pixels
                    image = image.convert("RGB")
                    if image.size != (w, h):
                        image = image.resize((w, h), Image.BILINEAR)
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise DecodeError(file, f"cannot read frame {index} (file {index + 1}): {error}") from None

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Frames at ``indices`` -> uint8 (T, H, W, 3); each distinct file is read once."""
        indices = _check_indices(self.path, indices, self.num_frames)
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = [self._load(int(i)) for i in unique]
        if len({f.shape for f in frames}) != 1:
            raise DecodeError(self.path, f"frames differ in size: {sorted({f.shape for f in frames})}")
        return np.stack(frames)[inverse]

    def close(self) -> None:
        """Nothing to release (files are closed after each read)."""

    def __enter__(self) -> "FrameFolderReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _count_folder(path: str, template: str) -> int:
    """Number of consecutive 1-based frame files; a gap followed by more frames raises (no silent truncation)."""
    names = set(os.listdir(path))
    count = 0
    while template.format(count + 1) in names:
        count += 1
    # at most len(names) files exist, so a later frame lies within len(names) indices past the gap
    later = next((k for k in range(count + 2, count + 2 + len(names)) if template.format(k) in names), None)
    if later is not None:
        raise DecodeError(path, f"{template.format(count + 1)} is missing but {template.format(later)} exists "
                                f"(frames must be numbered 1, 2, ... without gaps)")
    return count


def open_video(path: str | os.PathLike, fmt: str = "video", *, frame_template: str = "img_{:05d}.jpg",
               short_side: int | None = None, num_frames: int | None = None):
    """Open a video file (``fmt="video"``) or frame folder (``"frames"``) for ``len()`` and ``get(indices)``."""
    if fmt == "video":
        return VideoClipReader(path, short_side)
    if fmt == "frames":
        return FrameFolderReader(path, frame_template, short_side, num_frames)
    raise ValueError(f"fmt must be 'video' or 'frames', got {fmt!r}")


def decode_clip(path: str | os.PathLike, indices: np.ndarray, *, fmt: str = "video",
                frame_template: str = "img_{:05d}.jpg", short_side: int | None = None) -> np.ndarray:
    """Decode frames ``indices`` (T,) of one video -> uint8 (T, H, W, 3) RGB."""
    with open_video(path, fmt, frame_template=frame_template, short_side=short_side) as reader:
        return reader.get(indices)


def count_frames(path: str | os.PathLike, fmt: str = "video", frame_template: str = "img_{:05d}.jpg") -> int:
    """Frames in a video (decord's length) or a frame folder (1-based files; a gap raises ``DecodeError``)."""
    if fmt == "frames":
        if not Path(path).is_dir():
            raise DecodeError(path, "frame folder not found")
        return _count_folder(str(path), frame_template)
    with open_video(path, fmt) as reader:
        return len(reader)
