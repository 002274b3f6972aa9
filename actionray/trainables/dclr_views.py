"""DCLR views: which frames and crops a video gives (CPU, numpy), and the device-side augmentation and stacking.

CPU side (for Ray Data decode tasks; pure numpy, reproducible from a seed), after the DCLR repo's
dataset/ucf101_view.py and moco/loader.py ``RandomTwoClipSampler``: per video two different random windows of
``clip_len * stride`` consecutive frames (32), each subsampled by ``stride`` (16 frames); one static offset
``s ~ U{0..31}`` inside the window, shared by the two windows (the static frames are ``start_q + s`` and
``start_k + s``, not necessarily kept frames); four independent RandomResizedCrop(112, scale 0.2-1.0) boxes
for query RGB, key RGB, query static, key static. The static clip is its frame repeated ``clip_len`` times.

Device side (torch), after moco/loader.py ``MocoAugment_GPU`` (kornia ``VideoSequential``, parameters shared
by all frames of a clip, independent across clips): RandomGrayscale p 0.2, ColorJitter(0.4, 0.4, 0.4, 0.1)
p 0.8, horizontal flip p 0.5, Gaussian blur (kernel ``int(0.1 * crop)//2*2+1``) p 0.5, ImageNet
normalisation. As released, the blur sigma is drawn once, U(0.1, 2), when the augmenter is built and then
fixed. ``stack_views`` forms the dynamic view ``D = V - roll(V, 1, time)`` after normalisation (``D_0 = V_0 -
V_{T-1}`` wraps around, as released) and stacks ``[V, S, D]``.

Deviations: a video shorter than one window (the released VideoClips drops it) repeats its last frame;
crops are resized with the platform's antialiased bilinear ``resize`` (torchvision's RandomResizedCropVideo
interpolates without antialiasing) and the box fallback after 10 tries is the centre square; colour jitter
follows torchvision's definitions (multiplicative brightness, contrast towards the frame's mean grey,
saturation towards the pixel grey, hue rotation) with one random order of the four per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from actionray.platform.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Box, crop, random_resized_crop_box,
                                                resize)

__all__ = [
    "DCLRViewPlan", "sample_dclr_views", "apply_dclr_views", "clips_to_float", "DCLRAugment", "stack_views",
    "query_key_views", "blur_kernel_size",
]

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as kornia/torchvision rgb_to_grayscale


@dataclass(frozen=True)
class DCLRViewPlan:
    """Frame indices (clip_len,) of the query and key clips, their static frame indices, and four crop boxes
    (y, x, h, w) in the order query RGB, key RGB, query static, key static."""

    query_frames: np.ndarray
    key_frames: np.ndarray
    query_static: int
    key_static: int
    boxes: tuple[Box, Box, Box, Box]


def sample_dclr_views(num_frames: int, height: int, width: int, seed: int | Sequence[int], *, clip_len: int = 16,
                      stride: int = 2, scale: tuple[float, float] = (0.2, 1.0)) -> DCLRViewPlan:
    """The frames and crop boxes of one video's DCLR sample, reproducible from ``seed`` (e.g. [seed, epoch, index])."""
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"DCLR views: video must have frames and pixels, got {num_frames} x {height} x {width}")
    rng = np.random.default_rng(seed)
    window = clip_len * stride
    windows = max(1, num_frames - window + 1)  # VideoClips with step 1: every start with a full window
    starts = rng.choice(windows, size=2, replace=False) if windows >= 2 else np.zeros(2, dtype=np.int64)
    offset = int(rng.integers(window))  # static frame offset, shared by the two windows
    last = num_frames - 1
    frames = [np.minimum(int(s) + np.arange(0, window, stride), last) for s in starts]
    boxes = tuple(random_resized_crop_box(height, width, rng, area=scale) for _ in range(4))
    return DCLRViewPlan(frames[0], frames[1], min(int(starts[0]) + offset, last), min(int(starts[1]) + offset, last),
                        boxes)  # type: ignore[arg-type]


def apply_dclr_views(video: np.ndarray, plan: DCLRViewPlan, crop_size: int = 112) -> np.ndarray:
    """uint8 video (N, H, W, 3) -> uint8 (4, clip_len, crop, crop, 3): query RGB, key RGB, query static, key static."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"DCLR views: expected a uint8 (N, H, W, 3) video, got {video.dtype} {video.shape}")
    t = len(plan.query_frames)
    sources = (video[plan.query_frames], video[plan.key_frames],
               video[plan.query_static][None], video[plan.key_static][None])
    out = np.empty((4, t, crop_size, crop_size, 3), dtype=np.uint8)
    for i, (clip, box) in enumerate(zip(sources, plan.boxes)):
        out[i] = resize(crop(clip, box), crop_size, crop_size)  # a static frame broadcasts over time
    return out


def clips_to_float(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, 3, T, H, W) in [0, 1] on the same device."""
    if clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(f"DCLR views: expected uint8 (B, T, H, W, 3), got {tuple(clips.shape)}")
    return clips.permute(0, 4, 1, 2, 3).float().div_(255.0)


def blur_kernel_size(crop_size: int) -> int:
    """Odd Gaussian kernel side ``int(0.1 * crop)//2*2+1`` (moco/loader.py; 11 at 112 px)."""
    return int(0.1 * crop_size) // 2 * 2 + 1


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = (i.long() % 6).unsqueeze(1)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    channels = [torch.stack([table[j][c] for j in range(6)], 1).gather(1, sector) for c in range(3)]
    return torch.cat(channels, 1)


class DCLRAugment:
    """Frame-shared DCLR augmentation of float clips (B, 3, T, H, W) in [0, 1] -> ImageNet-normalised clips."""

    def __init__(self, crop_size: int = 112, *, blur_sigma: float | None = None, seed: int = 0,
                 p_grey: float = 0.2, jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                 p_jitter: float = 0.8, p_flip: float = 0.5, p_blur: float = 0.5) -> None:
        if blur_sigma is None:  # drawn once per run, as released (moco/loader.py MocoAugment_GPU)
            blur_sigma = float(np.random.default_rng(seed).uniform(0.1, 2.0))
        self.blur_sigma, self.kernel_size = blur_sigma, blur_kernel_size(crop_size)
        self.p_grey, self.jitter, self.p_jitter, self.p_flip, self.p_blur = p_grey, jitter, p_jitter, p_flip, p_blur
        self.mean = tuple(m / 255.0 for m in IMAGENET_MEAN)  # the platform's 0-255 constants on the [0, 1] scale
        self.std = tuple(s / 255.0 for s in IMAGENET_STD)

    def _uniform(self, b: int, lo: float, hi: float, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(b, generator=g, device=g.device if g is not None else "cpu").to(x.device)
        return (lo + (hi - lo) * u).to(x.dtype).view(b, 1, 1, 1, 1)

    def _colour_jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b = x.shape[0]
        bright, contrast, sat, hue = self.jitter
        order = torch.randperm(4, generator=g, device=g.device if g is not None else "cpu").tolist()
        for op in order:
            if op == 0 and bright > 0:
                x = x * self._uniform(b, max(0.0, 1 - bright), 1 + bright, x, g)
            elif op == 1 and contrast > 0:
                c = self._uniform(b, max(0.0, 1 - contrast), 1 + contrast, x, g)
                x = c * x + (1 - c) * _grey(x).mean(dim=(3, 4), keepdim=True)  # per-frame mean grey
            elif op == 2 and sat > 0:
                s = self._uniform(b, max(0.0, 1 - sat), 1 + sat, x, g)
                x = s * x + (1 - s) * _grey(x)
            elif op == 3 and hue > 0:
                hsv = _rgb_to_hsv(x)
                shift = self._uniform(b, -hue, hue, x, g).squeeze(1)
                x = _hsv_to_rgb(torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], 1))
            x = x.clamp(0.0, 1.0)
        return x

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if k < 3:
            return x
        r = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
        w = torch.exp(-r.pow(2) / (2 * self.blur_sigma ** 2))
        w = w / w.sum()
        b, c, t, h, wd = x.shape
        planes = x.reshape(b * c * t, 1, h, wd)
        planes = F.pad(planes, (k // 2, k // 2, k // 2, k // 2), mode="reflect")  # kornia's default border
        planes = F.conv2d(F.conv2d(planes, w.view(1, 1, 1, k)), w.view(1, 1, k, 1))
        return planes.reshape(b, c, t, h, wd)

    def __call__(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) float in [0, 1] -> augmented, normalised (B, 3, T, H, W); one draw per clip."""
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"DCLRAugment expects (B, 3, T, H, W), got {tuple(clips.shape)}")
        g, b, x = generator, clips.shape[0], clips
        dev = g.device if g is not None else "cpu"

        def chosen(p: float) -> torch.Tensor:
            return (torch.rand(b, generator=g, device=dev) < p).to(x.device).view(b, 1, 1, 1, 1)

        x = torch.where(chosen(self.p_grey), _grey(x).expand_as(x), x)
        x = torch.where(chosen(self.p_jitter), self._colour_jitter(x, g), x)
        x = torch.where(chosen(self.p_flip), x.flip(-1), x)
        x = torch.where(chosen(self.p_blur), self._blur(x), x)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
        return (x - mean) / std


def stack_views(rgb: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Normalised RGB and static clips (B, C, T, H, W) -> stacked views [V, S, D] (B, 3, C, T, H, W)."""
    if rgb.shape != static.shape or rgb.dim() != 5:
        raise ValueError(f"stack_views: rgb {tuple(rgb.shape)} and static {tuple(static.shape)} must both be "
                         "(B, C, T, H, W)")
    dynamic = rgb - torch.roll(rgb, shifts=1, dims=2)  # D_t = V_t - V_{t-1}; D_0 = V_0 - V_{T-1} as released
    return torch.stack([rgb, static, dynamic], dim=1)


def query_key_views(clips: torch.Tensor, augment: DCLRAugment, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, 4, T, H, W, 3) from ``apply_dclr_views`` -> augmented stacked views q, k (B, 3, 3, T, H, W)."""
    if clips.dim() != 6 or clips.shape[1] != 4:
        raise ValueError(f"DCLR views: expected uint8 (B, 4, T, H, W, 3), got {tuple(clips.shape)}")
    b = clips.shape[0]
    x = augment(clips_to_float(clips.flatten(0, 1)), generator).view(b, 4, 3, *clips.shape[2:5])
    return stack_views(x[:, 0], x[:, 2]), stack_views(x[:, 1], x[:, 3])
