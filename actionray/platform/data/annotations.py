"""List files: the first step of the data path.

list file -> ``VideoRecord`` rows -> sampled frame indices (sampling.py) -> decoded uint8 clip (decode.py)
-> transforms (transforms.py) -> Ray Data batch (pipeline.py) -> model.

A line is TSN-style ``path num_frames label`` (whitespace separated, label = last column, 0-based), or the
two-column ``path label`` form used by MMAction2's VideoDataset, where ``num_frames = -1`` means "count the
frames when the video is opened". Relative paths are joined onto ``root`` (or the list file's folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from actionray.errors import NoRetryError, UserError

__all__ = ["ListFormatError", "VideoRecord", "read_list", "list_lines", "parse_line", "validate_lists",
           "UNKNOWN_FRAMES"]

UNKNOWN_FRAMES = -1  # two-column lines: the frame count is taken from the video at load time


class ListFormatError(UserError, NoRetryError, ValueError):
    """A list file line that cannot be used; the message names ``file:line`` and what is wrong."""


@dataclass(frozen=True)
class VideoRecord:
    """One list line: absolute ``path``, ``num_frames`` (-1 = unknown), 0-based ``label``, 1-based ``line``."""

    path: str
    num_frames: int
    label: int
    line: int


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ListFormatError(f"{where}: {what} {text!r} is not an integer") from None


def list_lines(list_file: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every entry of a list file; blank lines and ``#`` comments are skipped.

    Undecodable bytes become U+FFFD so one bad line does not hide the others; ``parse_line`` rejects it. A UTF-8
    byte-order mark (Windows editors write one) is dropped, not glued onto the first path.
    """
    text = list_file.read_text(encoding="utf-8-sig", errors="replace")
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            yield line_no, raw


def parse_line(raw: str, where: str, base: Path, line_no: int, num_classes: int | None = None) -> VideoRecord:
    """One list line -> ``VideoRecord`` (relative paths joined onto ``base``); raises ``ListFormatError``
    prefixed with ``where`` (``file:line``)."""
    if "\ufffd" in raw:
        raise ListFormatError(f"{where}: line is not valid UTF-8")
    parts = raw.split()
    if len(parts) < 2:
        raise ListFormatError(f"{where}: expected 'path num_frames label' or 'path label', got {raw.strip()!r}")
    if len(parts) > 3:
        # Paths with spaces are not supported: the TSN format is whitespace separated.
        raise ListFormatError(f"{where}: {len(parts)} columns, expected 2 or 3 (spaces in paths are not allowed)")
    label = _parse_int(parts[-1], "label", where)
    num_frames = _parse_int(parts[1], "num_frames", where) if len(parts) == 3 else UNKNOWN_FRAMES
    if label < 0:
        raise ListFormatError(f"{where}: label {label} is negative (labels are 0-based)")
    if num_classes is not None and label >= num_classes:
        raise ListFormatError(f"{where}: label {label} out of range 0..{num_classes - 1} (num_classes={num_classes})")
    if len(parts) == 3 and num_frames < 1:
        raise ListFormatError(f"{where}: num_frames {num_frames} must be >= 1")
    path = Path(parts[0])
    if not path.is_absolute():
        path = base / path
    return VideoRecord(path=str(path), num_frames=num_frames, label=label, line=line_no)


def read_list(list_file: str | Path, root: str | Path | None = None,
              num_classes: int | None = None) -> list[VideoRecord]:
    """Parse a TSN-format list file; blank lines and ``#`` comments are skipped."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise ListFormatError(f"{list_file}: list file not found")
    base = Path(root) if root is not None else list_file.resolve().parent
    records = [parse_line(raw, f"{list_file}:{line_no}", base, line_no, num_classes)
               for line_no, raw in list_lines(list_file)]
    if not records:
        raise ListFormatError(f"{list_file}: no entries")
    return records


def validate_lists(lists: dict[str, str | Path | None], root: str | Path | None = None,
                   num_classes: int | None = None, min_entries: dict[str, int] | None = None) -> dict[str, int]:
    """Parse every list named by its config key (``{"data.train_list": path}``; None entries are skipped) and
    return the entry counts; raises ``ListFormatError`` naming the key and ``file:line`` of the first problem.

    The driver calls this before starting Ray: a list error cannot change on a retry, so it must never reach
    the training workers (whose failures Ray Train retries)."""
    counts: dict[str, int] = {}
    for key, path in lists.items():
        if path is None:
            continue
        try:
            records = read_list(path, root=root, num_classes=num_classes)
        except ListFormatError as error:
            raise ListFormatError(f"{key}: {error}") from None
        need = (min_entries or {}).get(key, 1)
        if len(records) < need:
            raise ListFormatError(f"{key}: {path} has {len(records)} entries, fewer than the {need} needed "
                                  f"(scaling.num_workers x data.batch_size: one full batch per worker)")
        counts[key] = len(records)
    return counts
