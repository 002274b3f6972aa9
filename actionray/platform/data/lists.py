"""List builders: folder-per-class trees and the official UCF101 / HMDB51 / Something-Something V1 splits.

Every builder turns its source into ``Item``s (file, label, where it came from), then ``write_lists`` counts
frames in parallel, reports every file it cannot read, and writes TSN lists ``path num_frames label`` (0-based
labels) plus a ``classInd.txt`` (``id name``, 1-based ids as UCF101's). Written paths are relative to the output
folder, so the lists work with ``data.root`` unset (annotations.read_list joins them onto the list's folder).
"""

from __future__ import annotations

import json

import os
import random
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

from actionray.errors import UserError

__all__ = [
    "VIDEO_EXTENSIONS",
    "Item",
    "ListBuildError",
    "ListBuildResult",
    "from_folder",
    "from_hmdb51",
    "from_something_v1",
    "from_ucf101",
    "write_lists",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
Format = Literal["video", "frames"]


class ListBuildError(UserError, ValueError):
    """An official split file or data tree that cannot be turned into lists; names file:line."""


@dataclass(frozen=True)
class Item:
    """One video (file or frame folder) to list: absolute ``path``, 0-based ``label``, ``source`` file:line."""

    path: Path
    label: int
    source: str


@dataclass
class ListBuildResult:
    """What ``write_lists`` wrote: split -> list file, split -> rows written, and unreadable files."""

    lists: dict[str, Path]
    counts: dict[str, int]
    class_index: Path
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (source, path, reason)


# ------------------------------------------------------------------------------------------ frame counting


def _count_job(job: tuple[str, str, str]) -> tuple[int | None, str | None]:
    """(frames, None) or (None, reason): any unreadable file is reported, never fatal."""
    from actionray.platform.data.decode import DecodeError, count_frames

    path, fmt, template = job
    try:
        n = count_frames(path, fmt, template)
    except DecodeError as error:
        return None, error.reason
    except Exception as error:  # noqa: BLE001 - decoder crashes on odd files are reported like any failure
        return None, f"{type(error).__name__}: {error}".splitlines()[0]
    if n > 0:
        return n, None
    return None, f"no frames named like {template.format(1)!r}" if fmt == "frames" else "no frames"


def _count_all(items: Sequence[Item], fmt: Format, template: str, workers: int, progress: bool
               ) -> list[tuple[int | None, str | None]]:
    """Frame counts (or failure reasons) for every item, in order, over a process pool."""
    from tqdm import tqdm

    jobs = [(str(item.path), fmt, template) for item in items]
    bar = tqdm(total=len(jobs), desc="counting frames", unit="video", disable=not progress)
    results: list[tuple[int | None, str | None]] = []
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            results.append(_count_job(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_count_job, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers)))):
                results.append(result)
                bar.update()
    bar.close()
    return results


def write_lists(splits: dict[str, list[Item]], class_names: Sequence[str], out_dir: str | Path, *,
                fmt: Format = "video", frame_template: str = "img_{:05d}.jpg",
                list_names: dict[str, str] | None = None, workers: int | None = None, absolute: bool = False,
                progress: bool = True) -> ListBuildResult:
    """Count frames and write one TSN list per split (``<split>.txt`` unless ``list_names`` says otherwise)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, os.cpu_count() or 1)
    list_names = list_names or {}
    result = ListBuildResult(lists={}, counts={}, class_index=out_dir / "classInd.txt")
    for split, items in splits.items():
        lines = []
        for item, (frames, reason) in zip(items, _count_all(items, fmt, frame_template, workers, progress)):
            if reason is not None:
                result.failures.append((item.source, str(item.path), reason))
                continue
            path = str(item.path) if absolute else os.path.relpath(item.path, out_dir)
            if any(ch.isspace() for ch in path):
                reason = "path contains whitespace (TSN lists split on it)"
                result.failures.append((item.source, str(item.path), reason))
                continue
            lines.append(f"{path} {frames} {item.label}\n")
        target = out_dir / list_names.get(split, f"{split}.txt")
        target.write_text("".join(lines))
        result.lists[split], result.counts[split] = target, len(lines)
    result.class_index.write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(class_names)))
    return result


# ------------------------------------------------------------------------------------- folder-per-class tree


def _entries(class_dir: Path, fmt: Format) -> list[Path]:
    if fmt == "frames":
        return sorted(p for p in class_dir.iterdir() if p.is_dir())
    return sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def from_folder(root: str | Path, *, fmt: Format = "video", val_fraction: float = 0.0,
                seed: int = 0) -> tuple[dict[str, list[Item]], list[str]]:
    """``root/<class>/<video>`` (or ``root/<class>/<frame folder>/``) -> splits and alphabetical class names.

    With ``val_fraction`` > 0 each class is split at random (seeded) into ``train`` / ``val``; otherwise
    one ``all`` split holds everything.
    """
    root = Path(root)
    if not root.is_dir():
        raise ListBuildError(f"{root}: data folder not found")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise ListBuildError(f"{root}: no class folders (expected root/<class>/<video>)")
    if not 0.0 <= val_fraction < 1.0:
        raise ListBuildError(f"val_fraction={val_fraction}: must be in [0, 1)")
    rng = random.Random(seed)
    splits: dict[str, list[Item]] = {"train": [], "val": []} if val_fraction > 0 else {"all": []}
    for label, name in enumerate(class_names):
        entries = _entries(root / name, fmt)
        if not entries:
            kind = "frame folders" if fmt == "frames" else "videos"
            raise ListBuildError(f"{root / name}: no {kind} in class folder")
        items = [Item(p.resolve(), label, str(p)) for p in entries]
        if val_fraction > 0:
            rng.shuffle(items)
            n_val = min(max(1, round(len(items) * val_fraction)), len(items) - 1) if len(items) > 1 else 0
            splits["val"] += sorted(items[:n_val], key=lambda i: i.path)
            splits["train"] += sorted(items[n_val:], key=lambda i: i.path)
        else:
            splits["all"] += items
    return splits, class_names


# ------------------------------------------------------------------------------------------------- UCF101


def _read_lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    if not path.is_file():
        raise ListBuildError(f"{path}: split file not found")
    # utf-8-sig: a byte-order mark is dropped instead of becoming part of the first name.
    for line_no, raw in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        if raw.strip():
            yield line_no, raw.split()


def _locate(video_root: Path, rel: str, fmt: Format) -> Path:
    """A split file's ``Class/v_x.avi`` as a file, or as the frame folder ``Class/v_x`` for fmt='frames'."""
    path = video_root / rel
    return path.with_suffix("") if fmt == "frames" else path


def _ucf_class_index(path: Path) -> list[str]:
    names: list[str] = []
    for line_no, parts in _read_lines(path):
        if len(parts) != 2 or not parts[0].isdigit():
            raise ListBuildError(f"{path}:{line_no}: expected 'id ClassName', got {' '.join(parts)!r}")
        if int(parts[0]) != len(names) + 1:
            raise ListBuildError(f"{path}:{line_no}: class id {parts[0]} out of order (expected {len(names) + 1})")
        names.append(parts[1])
    if not names:
        raise ListBuildError(f"{path}: no classes")
    return names


def from_ucf101(split_dir: str | Path, video_root: str | Path, *, split: int = 1,
                fmt: Format = "video") -> tuple[dict[str, list[Item]], list[str]]:
    """UCF101 official split ``split`` (classInd.txt, trainlist0k.txt, testlist0k.txt) -> train / val items.

    Labels are classInd id - 1; the test list has no ids, so its class comes from the ``Class/`` folder.
    """
    split_dir, video_root = Path(split_dir), Path(video_root)
    if split not in (1, 2, 3):
        raise ListBuildError(f"UCF101 split {split}: must be 1, 2 or 3")
    class_names = _ucf_class_index(split_dir / "classInd.txt")
    by_name = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for split_name, file_name in (("train", f"trainlist0{split}.txt"), ("val", f"testlist0{split}.txt")):
        path = split_dir / file_name
        for line_no, parts in _read_lines(path):
            where = f"{path}:{line_no}"
            rel = parts[0]
            folder = rel.split("/")[0]
            if folder not in by_name:
                raise ListBuildError(f"{where}: class folder {folder!r} of {rel!r} is not in classInd.txt")
            label = by_name[folder]
            if len(parts) >= 2:
                if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                    raise ListBuildError(f"{where}: class id {parts[1]} does not match folder {folder!r} "
                                         f"(classInd id {label + 1})")
            splits[split_name].append(Item(_locate(video_root, rel, fmt), label, where))
    return splits, class_names


# ------------------------------------------------------------------------------------------------- HMDB51

_HMDB_SPLIT = re.compile(r"^(?P<name>.+)_test_split(?P<k>\d)\.txt$")


def from_hmdb51(split_dir: str | Path, video_root: str | Path, *, split: int = 1,
                fmt: Format = "video") -> tuple[dict[str, list[Item]], list[str]]:
    """HMDB51 per-class split files ``<class>_test_split<k>.txt`` (flag 1 train, 2 test, 0 unused) -> items.

    Class ids follow the sorted class names (as MMAction2's parse_file_list does); videos live in
    ``video_root/<class>/<video>``.
    """
    split_dir, video_root = Path(split_dir), Path(video_root)
    if not split_dir.is_dir():
        raise ListBuildError(f"{split_dir}: split folder not found")
    files = {}
    for path in split_dir.iterdir():
        match = _HMDB_SPLIT.match(path.name)
        if match and int(match["k"]) == split:
            files[match["name"]] = path
    if not files:
        raise ListBuildError(f"{split_dir}: no '<class>_test_split{split}.txt' files")
    class_names = sorted(files)
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for label, name in enumerate(class_names):
        path = files[name]
        for line_no, parts in _read_lines(path):
            where = f"{path}:{line_no}"
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ListBuildError(f"{where}: expected 'video.avi FLAG' with FLAG 0, 1 or 2, got {' '.join(parts)!r}")
            if parts[1] == "0":
                continue
            item = Item(_locate(video_root, f"{name}/{parts[0]}", fmt), label, where)
            splits["train" if parts[1] == "1" else "val"].append(item)
    return splits, class_names


# ------------------------------------------------------------------------------------ Something-Something V1


def from_something_v1(annotation_dir: str | Path, frames_root: str | Path
                      ) -> tuple[dict[str, list[Item]], list[str]]:
    """Something-Something V1 CSVs (``id;label`` lines) -> train / val items of frame folders ``frames_root/<id>``.

    Labels index the alphabetically sorted label names (as the TDN/GCNet list generators do).
    """
    annotation_dir, frames_root = Path(annotation_dir), Path(frames_root)
    labels_file = annotation_dir / "something-something-v1-labels.csv"
    if not labels_file.is_file():
        raise ListBuildError(f"{labels_file}: label file not found")
    raw_names = [line.strip() for line in labels_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    class_names = sorted(raw_names)
    by_name = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for split_name, suffix in (("train", "train"), ("val", "validation")):
        path = annotation_dir / f"something-something-v1-{suffix}.csv"
        if not path.is_file():
            raise ListBuildError(f"{path}: split file not found")
        for line_no, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line_no}"
            parts = raw.split(";")
            if len(parts) != 2:
                raise ListBuildError(f"{where}: expected 'id;label', got {raw!r}")
            video_id, name = parts[0].strip(), parts[1].strip()
            if name not in by_name:
                raise ListBuildError(f"{where}: label {name!r} is not in {labels_file.name}")
            splits[split_name].append(Item(frames_root / video_id, by_name[name], where))
    return splits, class_names


# ------------------------------------------------------------------------------------------------- Diving-48

DIVING48_CLASSES = 48


def _read_json(path: Path) -> object:
    """A JSON annotation file; ListBuildError naming it when it is missing or not JSON."""
    if not path.is_file():
        raise ListBuildError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ListBuildError(f"{path}: not valid JSON ({error})") from None


def _diving48_names(vocab: Path) -> list[str]:
    """Class names from ``Diving48_vocab.json`` (48 lists [takeoff, somersault, twist, flight], joined by " / "),
    or ``class_00`` .. ``class_47`` when the vocabulary file is absent."""
    if not vocab.is_file():
        return [f"class_{k:02d}" for k in range(DIVING48_CLASSES)]
    raw = _read_json(vocab)
    if not isinstance(raw, list) or len(raw) != DIVING48_CLASSES:
        raise ListBuildError(f"{vocab}: expected a list of {DIVING48_CLASSES} class descriptions, got "
                             f"{len(raw) if isinstance(raw, list) else type(raw).__name__}")
    return [" / ".join(map(str, entry)) if isinstance(entry, list) else str(entry) for entry in raw]


def from_diving48(annotation_dir: str | Path, video_root: str | Path, *, fmt: Format = "video",
                  version: str = "V2") -> tuple[dict[str, list[Item]], list[str]]:
    """Diving-48 official annotations -> train / val items.

    ``Diving48_<version>_train.json`` / ``_test.json`` are JSON lists of ``{"vid_name", "label", "start_frame",
    "end_frame"}`` with 0-based labels 0..47 (the layout MMAction2's Diving48 preparation expects); videos are
    ``video_root/<vid_name>.mp4`` (frame folders ``video_root/<vid_name>`` for fmt='frames'). The test file
    becomes the val list. Class names come from ``Diving48_vocab.json`` when it is there.
    """
    annotation_dir, video_root = Path(annotation_dir), Path(video_root)
    class_names = _diving48_names(annotation_dir / "Diving48_vocab.json")
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for split_name, suffix in (("train", "train"), ("val", "test")):
        path = annotation_dir / f"Diving48_{version}_{suffix}.json"
        entries = _read_json(path)
        if not isinstance(entries, list):
            raise ListBuildError(f"{path}: expected a JSON list of entries, got {type(entries).__name__}")
        for k, entry in enumerate(entries):
            where = f"{path}[{k}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("vid_name"), str):
                raise ListBuildError(f"{where}: expected an object with a string 'vid_name', got {entry!r:.80}")
            label = entry.get("label")
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < DIVING48_CLASSES:
                raise ListBuildError(f"{where}: label {label!r} is not a class id 0..{DIVING48_CLASSES - 1}")
            name = entry["vid_name"]
            target = video_root / name if fmt == "frames" else video_root / f"{name}.mp4"
            splits[split_name].append(Item(target, label, where))
    return splits, class_names
