"""Whole-clip transforms: decoded uint8 clip -> model-sized uint8 clip; ``normalize`` on the training device.

list file -> sampled frame indices -> decoded uint8 clip -> **transforms** -> batch -> model.

Every transform takes a clip ``(T, H, W, 3)`` uint8 and makes **one** random decision per clip (all frames
share the crop box and the flip), drawn from the ``np.random.Generator`` it is given, so a sample is
reproducible from (seed, epoch, index). Crop boxes are computed by separate ``*_box`` functions returning
``(y, x, h, w)`` so they can be tested and logged. Resizing uses torch's uint8 bilinear kernel with
antialiasing (measured 3-8x faster than per-frame PIL here; OpenCV is not installed and not needed).
``normalize`` turns a uint8 batch ``(B, N, H, W, 3)`` into float32 ``(B, N, 3, H, W)`` on any device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "Box", "resize", "resize_short_side", "crop", "multiscale_crop_box", "random_resized_crop_box",
    "center_crop_box", "three_crop_boxes", "hflip", "flip_label", "normalize", "build_clip_transform",
    "IMAGENET_MEAN", "IMAGENET_STD", "MULTISCALE_SCALES",
]

Box = tuple[int, int, int, int]  # (y, x, h, w) in pixels
# ImageNet statistics on the 0-255 scale (MMAction2 constants; TDN's /255 variant is the same numbers).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)  # TSN / TDN GroupMultiScaleCrop


# --- geometry ---------------------------------------------------------------------------------------------

def resize(clip: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased) resize of every frame: uint8 (T, H, W, 3) -> (T, height, width, 3)."""
    if clip.shape[1] == height and clip.shape[2] == width:
        return clip
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)  # channels-last view: fast uint8 path
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                                        antialias=True)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def resize_short_side(clip: np.ndarray, size: int) -> np.ndarray:
    """Resize so min(H, W) == ``size``, keeping the aspect: (T, H, W, 3) -> (T, H', W', 3)."""
    h, w = clip.shape[1:3]
    if min(h, w) == size:
        return clip
    if h <= w:
        return resize(clip, size, max(1, round(w * size / h)))
    return resize(clip, max(1, round(h * size / w)), size)


def crop(clip: np.ndarray, box: Box) -> np.ndarray:
    """Crop every frame to ``box`` = (y, x, h, w): (T, H, W, 3) -> (T, h, w, 3) (a view, no copy)."""
    y, x, h, w = box
    if y < 0 or x < 0 or y + h > clip.shape[1] or x + w > clip.shape[2]:
        raise ValueError(f"crop box {box} outside a {clip.shape[1]}x{clip.shape[2]} frame")
    return clip[:, y:y + h, x:x + w]


def multiscale_crop_box(height: int, width: int, input_size: int, rng: np.random.Generator, *,
                        offsets: int = 13, scales: Sequence[float] = MULTISCALE_SCALES, max_distort: int = 1) -> Box:
    """TSN/TDN MultiScaleCrop box: side lengths from ``scales`` x min(H, W) (within 3 px of the input size
    snapped to it), a (w, h) pair with scale indices at most ``max_distort`` apart, and one of 5 or 13 fixed
    positions on a quarter grid."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    crop_h = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    crop_w = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(cw, ch) for i, ch in enumerate(crop_h) for j, cw in enumerate(crop_w) if abs(i - j) <= max_distort]
    cw, ch = pairs[int(rng.integers(len(pairs)))]
    cw, ch = min(cw, width), min(ch, height)  # a snapped side can exceed a frame smaller than input_size
    ws, hs = (width - cw) // 4, (height - ch) // 4
    positions = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if offsets == 13:
        positions += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                      (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    elif offsets != 5:
        raise ValueError(f"multiscale offsets must be 5 or 13, got {offsets}")
    x, y = positions[int(rng.integers(len(positions)))]
    return y, x, ch, cw


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, *,
                            area: tuple[float, float] = (0.08, 1.0),
                            aspect: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> Box:
    """Inception-style box: area fraction U(area), log-uniform aspect w/h, ``tries`` attempts, else the
    centre square (MMAction2 RandomResizedCrop)."""
    log_lo, log_hi = np.log(aspect[0]), np.log(aspect[1])
    ratios = np.exp(rng.uniform(log_lo, log_hi, size=tries))
    areas = rng.uniform(area[0], area[1], size=tries) * height * width
    ws = np.round(np.sqrt(areas * ratios)).astype(np.int64)
    hs = np.round(np.sqrt(areas / ratios)).astype(np.int64)
    for w, h in zip(ws, hs):
        if 0 < w <= width and 0 < h <= height:
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            return y, x, int(h), int(w)
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def center_crop_box(height: int, width: int, size: int) -> Box:
    """Centred ``size`` x ``size`` box (clamped to the frame)."""
    h, w = min(size, height), min(size, width)
    return (height - h) // 2, (width - w) // 2, h, w


def three_crop_boxes(height: int, width: int, size: int) -> list[Box]:
    """MMAction2 ThreeCrop: three ``size`` squares along the long side, order (start, end, middle)."""
    side = min(size, height, width)
    if width >= height:
        step = (width - side) // 2
        y = (height - side) // 2
        return [(y, 0, side, side), (y, 2 * step, side, side), (y, step, side, side)]
    step = (height - side) // 2
    x = (width - side) // 2
    return [(0, x, side, side), (2 * step, x, side, side), (step, x, side, side)]


def hflip(clip: np.ndarray) -> np.ndarray:
    """Mirror every frame left-right: (T, H, W, 3) -> (T, H, W, 3)."""
    return np.ascontiguousarray(clip[:, :, ::-1])


def flip_label(label: int, flipped: bool, label_map: dict[int, int]) -> int:
    """The label after a horizontal flip: swapped through ``label_map`` (made symmetric), else unchanged."""
    if not flipped or not label_map:
        return label
    if label in label_map:
        return int(label_map[label])
    inverse = {v: k for k, v in label_map.items()}  # a map given one way (86->87) also swaps back
    return int(inverse.get(label, label))


# --- normalisation (training device) ----------------------------------------------------------------------

def normalize(video: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, N, H, W, 3) -> float32 (B, N, 3, H, W), ImageNet-normalised, on ``video``'s device."""
    if video.dim() != 5 or video.shape[-1] != 3:
        raise ValueError(f"normalize expects (B, N, H, W, 3), got {tuple(video.shape)}")
    m = torch.tensor(mean, dtype=torch.float32, device=video.device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=video.device).view(1, 1, 3, 1, 1)
    x = video.permute(0, 1, 4, 2, 3).to(torch.float32, copy=True)  # copy: the in-place ops never touch ``video``
    return x.sub_(m).div_(s)


# --- per-split composition --------------------------------------------------------------------------------

ClipTransform = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, bool]]


def build_clip_transform(data, split: str, view_crop: int | None = None, *,
                         scale_size: int | None = None) -> ClipTransform:
    """A callable (clip uint8 (T, H, W, 3), rng) -> (clip (T, S, S, 3), flipped) for ``split``.

    train: MultiScaleCrop or RandomResizedCrop to ``input_size`` (at the decoded resolution, as TDN), then a
    flip with p = 0.5. val/test: short side -> ``scale_size`` (default ``data.scale_size``), then a centre
    ``input_size`` crop, or with ``view_crop`` in 0..2 the ThreeCrop square of side ``scale_size``. With
    ``data.eval_resize: none`` the frames keep their decoded size (VideoMoCo repo, eval.py: CenterCropVideo on the
    decoded frames) and the ThreeCrop squares have side ``input_size``.
    """
    size = data.input_size
    if split == "train":
        def train_transform(clip: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
            h, w = clip.shape[1:3]
            if data.train_crop == "multiscale":
                box = multiscale_crop_box(h, w, size, rng, offsets=data.multiscale_offsets)
            else:
                box = random_resized_crop_box(h, w, rng)
            out = resize(crop(clip, box), size, size)
            flipped = bool(data.flip and rng.random() < 0.5)
            return (hflip(out) if flipped else out), flipped
        return train_transform
    if split not in ("val", "test"):
        raise ValueError(f"split must be train|val|test, got {split!r}")
    resize_short = data.eval_resize == "short_side"
    short = (scale_size or data.scale_size) if resize_short else size
    if view_crop is not None and not 0 <= view_crop < 3:
        raise ValueError(f"view_crop must be 0, 1 or 2 (ThreeCrop), got {view_crop}")

    def eval_transform(clip: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, bool]:
        if resize_short:
            clip = resize_short_side(clip, short)
        h, w = clip.shape[1:3]
        if view_crop is None:
            out = crop(clip, center_crop_box(h, w, size))
            if out.shape[1:3] != (size, size):  # frames smaller than the crop: stretch to the model size
                out = resize(out, size, size)
        else:
            out = crop(clip, three_crop_boxes(h, w, short)[view_crop])
        return np.ascontiguousarray(out), False
    return eval_transform
