"""``actionray data extract-frames``: videos -> JPEG frame folders (``img_00001.jpg`` ..., 1-based) and a new list.

Frame folders trade disk for decode speed: a sampled frame is one small JPEG read instead of a seek plus
decode from the previous key frame. The source is a TSN list (labels kept) or a folder-per-class tree
(labels from the sorted class folders, as ``data list folder``).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ExtractResult", "extract_frames", "extract_video"]

FRAME_TEMPLATE = "img_{:05d}.jpg"


@dataclass
class ExtractResult:
    """The list written, how many videos were extracted, and (path, reason) for each that failed."""

    list_file: Path
    class_index: Path | None
    extracted: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def extract_video(video: str | Path, folder: str | Path, *, short_side: int | None = 256,
                  template: str = FRAME_TEMPLATE, quality: int = 90, chunk: int = 32) -> int:
    """Decode every frame of ``video`` (resized so its short side is ``short_side``) into ``folder``; returns T."""
    from PIL import Image

    from actionray.platform.data.decode import VideoClipReader

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with VideoClipReader(video, short_side=short_side) as reader:
        n = len(reader)
        for start in range(0, n, chunk):  # bounded memory for long videos
            frames = reader.get(list(range(start, min(n, start + chunk))))
            for offset, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / template.format(start + offset + 1), quality=quality)
    return n


def _extract_job(job: tuple[str, str, int | None, str]) -> tuple[int | None, str | None]:
    from actionray.platform.data.decode import DecodeError

    video, folder, short_side, template = job
    try:
        return extract_video(video, folder, short_side=short_side, template=template), None
    except DecodeError as error:
        return None, error.reason
    except Exception as error:  # noqa: BLE001 - one bad video must not stop a data-set-wide extraction
        return None, f"{type(error).__name__}: {error}".splitlines()[0]


def _sources(src: Path) -> tuple[list[tuple[Path, str, int]], list[str] | None]:
    """(video, folder name relative to the output, label) for a list file or a folder-per-class tree."""
    from actionray.platform.data.annotations import read_list
    from actionray.platform.data.lists import from_folder

    if src.is_file():
        base = src.resolve().parent
        out = []
        for record in read_list(src):
            path = Path(record.path)
            try:
                rel = path.relative_to(base)
            except ValueError:  # outside the list's folder: keep the last two parts (class/video)
                rel = Path(*path.parts[-2:])
            out.append((path, str(rel.with_suffix("")), record.label))
        return out, None
    splits, class_names = from_folder(src, fmt="video")
    return [(item.path, str(item.path.relative_to(src.resolve()).with_suffix("")), item.label)
            for item in splits["all"]], class_names


def extract_frames(src: str | Path, out_dir: str | Path, *, short_side: int | None = 256,
                   template: str = FRAME_TEMPLATE, workers: int | None = None,
                   progress: bool = True) -> ExtractResult:
    """Extract every video of a list (or class tree) into ``out_dir/<relative path>/``; write ``out_dir/<list>``."""
    from tqdm import tqdm

    src, out_dir = Path(src), Path(out_dir).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such list file or folder")
    videos, class_names = _sources(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(path), str(out_dir / rel), short_side, template) for path, rel, _ in videos]
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    list_file = out_dir / (src.name if src.is_file() else "all.txt")
    if src.is_file() and list_file == src.resolve():  # never overwrite the source list
        list_file = out_dir / f"{src.stem}_frames{src.suffix}"
    result = ExtractResult(list_file, None, 0)
    lines = []
    with ProcessPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc="extracting frames", unit="video", disable=not progress) as bar:
        for (path, rel, label), (frames, reason) in zip(videos, pool.map(_extract_job, jobs)):
            bar.update()
            if reason is not None:
                result.failures.append((str(path), reason))
                continue
            lines.append(f"{rel} {frames} {label}\n")
            result.extracted += 1
    result.list_file.write_text("".join(lines))
    if class_names is not None:
        result.class_index = out_dir / "classInd.txt"
        result.class_index.write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(class_names)))
    return result
