"""``actionray data check``: find every problem in a list file before a long run trips over it.

Line problems (malformed lines, labels out of range, duplicates) come from parsing; file problems (missing,
empty, undecodable, truncated, frame count disagreeing with the list, missing frame images) come from opening
each video in a process pool and decoding its last few frames -- a truncated download usually still opens and
reports its full length, and only fails where the data stops.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["CheckReport", "Problem", "check_list", "format_report"]

Format = Literal["video", "frames"]


@dataclass(frozen=True)
class Problem:
    """One problem at ``list_file:line`` for ``path`` (the path as resolved, or the raw line if unparsable)."""

    list_file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.list_file}:{self.line}: {self.path}: {self.message}"


@dataclass
class CheckReport:
    """Entries read from a list and the problems found, in line order."""

    list_file: str
    entries: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def summary(self) -> str:
        """One line: how many entries, how many problems on how many lines."""
        lines = len({p.line for p in self.problems})
        if self.ok:
            return f"{self.list_file}: {self.entries} entries, no problems"
        return (f"{self.list_file}: {self.entries} entries, {len(self.problems)} problem(s) on {lines} line(s)")


_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def _clean(reason: str) -> str:
    """Drop decord's ``[hh:mm:ss] /src/file.cc:123:`` prefixes so the reason reads as one short line."""
    return _DECORD_PREFIX.sub("", reason).strip().splitlines()[0] if reason.strip() else reason


def _silence_stderr() -> None:
    """Pool initializer: FFmpeg logs straight to fd 2; the report carries the reasons instead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _check_video(path: str, listed: int, tail: int) -> list[str]:
    from actionray.platform.data.decode import DecodeError, VideoClipReader

    try:
        reader = VideoClipReader(path)
    except DecodeError as error:
        return [_clean(error.reason)]
    with reader:
        n = len(reader)
        problems = []
        if listed > 0 and listed != n:
            # decord counts the packets it can index, so a download cut at a packet boundary just looks short
            hint = " (truncated?)" if n < listed else ""
            problems.append(f"num_frames {listed} in the list, but the video has {n}{hint}")
        first = 0 if tail <= 0 else max(0, n - tail)
        try:
            for start in range(first, n, 32):  # bounded memory when every frame is decoded (tail 0)
                reader.get(list(range(start, min(n, start + 32))))
        except DecodeError as error:
            what = "decoding failed" if tail <= 0 else f"truncated: last frames {first}..{n - 1} cannot be decoded"
            problems.append(f"{what} ({_clean(error.reason)})")
    return problems


def _check_frames(path: str, listed: int, template: str, tail: int) -> list[str]:
    from actionray.platform.data.decode import DecodeError, FrameFolderReader

    if not os.path.isdir(path):
        return ["frame folder not found"]
    names = set(os.listdir(path))
    upper = len(names) + max(listed, 0) + 1  # wide enough to see past holes
    present = [k for k in range(1, upper) if template.format(k) in names]
    if not present:
        return [f"no frames named like {template.format(1)!r}"]
    last = present[-1]  # the folder's length, holes included
    problems = []
    if listed > 0 and listed != last:
        problems.append(f"num_frames {listed} in the list, but the folder has {last} frames")
    expected = min(listed, last) if listed > 0 else last
    missing = [template.format(k) for k in range(1, expected + 1) if template.format(k) not in names]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        problems.append(f"{len(missing)} of {expected} frame images missing: {shown}")
    readable = [k for k in present if k <= expected]
    reader = FrameFolderReader(path, template, num_frames=expected)
    for k in readable if tail <= 0 else readable[-tail:]:
        try:
            reader.get([k - 1])
        except DecodeError as error:
            problems.append(f"{template.format(k)} cannot be decoded ({_clean(error.reason)})")
    return problems


def _check_entry(job: tuple[str, int, str | None, str, int]) -> list[str]:
    path, listed, fmt, template, tail = job
    kind = fmt or ("frames" if os.path.isdir(path) else "video")
    if kind == "frames":
        return _check_frames(path, listed, template, tail)
    if os.path.isdir(path):
        return ["is a folder, but --format video expects a video file"]
    return _check_video(path, listed, tail)


def check_list(list_file: str | Path, *, root: str | Path | None = None, num_classes: int | None = None,
               fmt: Format | None = None, frame_template: str = "img_{:05d}.jpg", tail_frames: int = 3,
               workers: int | None = None, progress: bool = False) -> CheckReport:
    """Check every line and every file of a TSN list; ``fmt=None`` treats folders as frames, files as videos.

    ``tail_frames`` is how many frames at the end of each video are decoded (0 = every frame).
    """
    from tqdm import tqdm

    from actionray.platform.data.annotations import ListFormatError, list_lines, parse_line

    list_file = Path(list_file)
    report = CheckReport(str(list_file))
    if not list_file.is_file():
        report.problems.append(Problem(str(list_file), 0, str(list_file), "list file not found"))
        return report
    base = Path(root) if root is not None else list_file.resolve().parent
    records, seen = [], {}
    for line_no, raw in list_lines(list_file):
        report.entries += 1
        where = f"{list_file}:{line_no}"
        try:
            record = parse_line(raw, where, base, line_no, num_classes)
        except ListFormatError as error:
            message = str(error).removeprefix(f"{where}: ")
            report.problems.append(Problem(str(list_file), line_no, raw.split()[0], message))
            continue
        key = os.path.normpath(record.path)
        if key in seen:
            report.problems.append(Problem(str(list_file), line_no, record.path, f"duplicate of line {seen[key]}"))
            continue
        seen[key] = line_no
        records.append(record)
    if not report.entries:  # read_list refuses such a list, so a training run would stop on it
        report.problems.append(Problem(str(list_file), 0, str(list_file), "no entries"))

    jobs = [(r.path, r.num_frames, fmt, frame_template, tail_frames) for r in records]
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    bar = tqdm(total=len(jobs), desc="checking", unit="video", disable=not progress)
    # a pool even for one worker: a decoder crash or FFmpeg's stderr chatter stays out of this process
    with ProcessPoolExecutor(max_workers=workers, initializer=_silence_stderr) as pool:
        chunk = max(1, min(32, len(jobs) // (8 * workers)))
        for record, messages in zip(records, pool.map(_check_entry, jobs, chunksize=chunk)):
            report.problems += [Problem(str(list_file), record.line, record.path, m) for m in messages]
            bar.update()
    bar.close()
    report.problems.sort(key=lambda p: p.line)
    return report


def format_report(report: CheckReport) -> str:
    """One line per problem (``LIST:LINE: path: problem``), then the summary line."""
    return "\n".join([*(str(p) for p in report.problems), report.summary()])
