"""``actionray data preview``: a contact sheet of clips exactly as the model receives them.

Each clip goes through the training data path's own functions -- ``sample_clip`` (indices), ``open_video``
(decode), ``build_clip_transform`` with the pipeline's per-sample generator (crop, flip), ``flip_label`` and
``normalize`` -- and is then de-normalised for display, so a wrong mean/std, crop or flip shows up on the
sheet. One row per clip (its label name, after any flip swap), one column per frame, segment-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["PreviewClip", "denormalize", "load_class_names", "model_clips", "render_sheet", "preview"]


@dataclass
class PreviewClip:
    """One sampled clip: list ``index``, label after flip, frame indices (N,), and the image uint8 (N, S, S, 3)."""

    index: int
    label: int
    name: str
    flipped: bool
    frame_indices: np.ndarray
    frames: np.ndarray = field(repr=False)


def load_class_names(path: str | Path | None, num_classes: int) -> list[str]:
    """Names from a classInd-style file (``id name`` or one name per line); ``label N`` when there is none."""
    if path is None or not Path(path).is_file():
        return [f"label {i}" for i in range(num_classes)]
    names = []
    for raw in Path(path).read_text(encoding="utf-8-sig").splitlines():  # a BOM is not part of the first name
        parts = raw.strip().split(maxsplit=1)
        if not parts:
            continue
        names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else raw.strip())
    return names + [f"label {i}" for i in range(len(names), num_classes)]


def denormalize(video, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Model input float32 (B, N, 3, H, W) -> displayable uint8 (B, N, H, W, 3) (inverse of ``normalize``)."""
    import torch

    from actionray.platform.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    m = torch.tensor(mean or IMAGENET_MEAN, dtype=torch.float32).view(1, 1, 3, 1, 1)
    s = torch.tensor(std or IMAGENET_STD, dtype=torch.float32).view(1, 1, 3, 1, 1)
    x = video.detach().float().cpu() * s + m
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()


def model_clips(cfg, split: str = "train", *, num_clips: int = 4, epoch: int = 0,
                list_file: str | None = None) -> list[PreviewClip]:
    """Sample, decode, augment and normalise ``num_clips`` clips spread evenly over the split's list."""
    import torch

    from actionray.platform.data.annotations import read_list
    from actionray.platform.data.decode import open_video
    from actionray.platform.data.pipeline import list_for_split, transform_rng
    from actionray.platform.data.sampling import SamplingSpec, sample_clip
    from actionray.platform.data.transforms import build_clip_transform, flip_label, normalize

    data = cfg.data
    list_path = Path(list_file or list_for_split(cfg, split))
    records = read_list(list_path, root=data.root, num_classes=data.num_classes)
    # a classInd.txt beside the list (written by `data synth` / `data list`) names the labels by default
    names = load_class_names(data.class_names or list_path.parent / "classInd.txt", data.num_classes)
    spec = SamplingSpec.from_config(data)
    transform = build_clip_transform(data, split)
    seed = cfg.train.seed
    chosen = np.unique(np.linspace(0, len(records) - 1, num=min(num_clips, len(records))).round().astype(int))
    clips = []
    for index in chosen.tolist():
        record = records[index]
        with open_video(record.path, data.format, frame_template=data.frame_template,
                        short_side=data.decode_short_side,
                        num_frames=record.num_frames if record.num_frames > 0 else None) as reader:
            indices = sample_clip(spec, len(reader), split, seed, epoch, index)
            clip = reader.get(indices)
        clip, flipped = transform(clip, transform_rng(seed, epoch, index, 0))
        model_input = normalize(torch.from_numpy(clip)[None])  # (1, N, 3, S, S), what the model sees
        label = flip_label(record.label, flipped, data.flip_label_map)
        clips.append(PreviewClip(index, label, names[label], flipped, indices, denormalize(model_input)[0]))
    return clips


def render_sheet(clips: Sequence[PreviewClip], out: str | Path, *, cell: int = 112,
                 frames_per_segment: int = 1) -> Path:
    """Draw one row per clip (label text, then its frames) into a PNG; a gap separates segments."""
    from PIL import Image, ImageDraw

    if not clips:
        raise ValueError("render_sheet: no clips to draw")
    n = max(len(c.frames) for c in clips)
    text_w, gap, seg_gap = 180, 4, 6 if frames_per_segment > 1 else 0
    segments = -(-n // frames_per_segment)
    width = text_w + n * (cell + gap) + segments * seg_gap
    height = len(clips) * (cell + gap) + gap
    sheet = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for row, clip in enumerate(clips):
        y = gap + row * (cell + gap)
        caption = f"#{clip.index}\n{clip.name}\nlabel {clip.label}" + ("\n(flipped)" if clip.flipped else "")
        draw.multiline_text((6, y + 4), caption, fill=(240, 240, 240))
        for col, frame in enumerate(clip.frames):
            x = text_w + col * (cell + gap) + (col // frames_per_segment) * seg_gap
            sheet.paste(Image.fromarray(frame).resize((cell, cell), Image.BILINEAR), (x, y))
            draw.text((x + 3, y + cell - 14), f"t={int(clip.frame_indices[col])}", fill=(255, 255, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def preview(cfg, out: str | Path, *, split: str = "train", num_clips: int = 4, epoch: int = 0,
            list_file: str | None = None) -> tuple[Path, list[PreviewClip]]:
    """Render the contact sheet of ``num_clips`` model-ready clips of ``split`` into ``out``."""
    clips = model_clips(cfg, split, num_clips=num_clips, epoch=epoch, list_file=list_file)
    return render_sheet(clips, out, frames_per_segment=cfg.data.frames_per_segment), clips
