"""``data check``: every kind of broken entry is reported as ``LIST:LINE: path: problem``, a clean list passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest

from actionray.platform.data.check import check_list, format_report


def _faststart_copy(src: Path, dst: Path) -> list[tuple[int, int]]:
    """Remux with the index (moov) first, as streamed downloads are; returns each packet's (offset, size)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    with av.open(str(dst)) as check:
        return [(p.pos, p.size) for p in check.demux(check.streams.video[0]) if p.pos is not None and p.pos >= 0]


@pytest.fixture(scope="module")
def broken(synth_videos, synth_frames, tmp_path_factory):
    """A list with one deliberately broken entry per problem kind; returns (list path, line of each kind, report)."""
    out = tmp_path_factory.mktemp("broken")
    rows = [line.split() for line in synth_videos.train_list.read_text().splitlines()]
    videos = [synth_videos.root / rel for rel, _, _ in rows]
    good = [out / f"good_{i}.mp4" for i in range(2)]
    for src, dst in zip(videos, good):
        shutil.copy(src, dst)
    (out / "empty.mp4").write_bytes(b"")
    (out / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    offsets = _faststart_copy(videos[2], out / "full.mp4")
    data = (out / "full.mp4").read_bytes()
    last_pos, last_size = offsets[-1]
    (out / "truncated.mp4").write_bytes(data[: last_pos + last_size // 2])  # the download stopped mid-frame
    (out / "short.mp4").write_bytes(data[:last_pos])  # ... or exactly between two frames
    frame_rel, frames, _ = synth_frames.train_list.read_text().splitlines()[0].split()
    holes = out / "holes"
    shutil.copytree(synth_frames.root / frame_rel, holes)
    (holes / "img_00005.jpg").unlink()
    lines = {
        "good": "good_0.mp4 24 0",
        "missing": "nowhere.mp4 24 0",
        "empty": "empty.mp4 24 1",
        "garbage": "garbage.mp4 24 1",
        "truncated": "truncated.mp4 24 2",
        "short": "short.mp4 24 2",
        "wrong_frames": "good_1.mp4 20 2",
        "label": "good_1.mp4 24 99",
        "malformed": "good_0.mp4 twenty 3",
        "duplicate": "good_0.mp4 24 0",
        "holes": f"holes {frames} 3",
    }
    list_file = out / "broken.txt"
    list_file.write_text("\n".join(lines.values()) + "\n")
    line_of = {kind: i + 1 for i, kind in enumerate(lines)}
    report = check_list(list_file, num_classes=8, workers=2)
    return list_file, line_of, report


def _messages(report, line: int) -> list[str]:
    return [p.message for p in report.problems if p.line == line]


def test_clean_generated_list_has_no_problems(synth_videos):
    report = check_list(synth_videos.val_list, num_classes=synth_videos.num_classes, workers=1)
    assert report.ok and report.entries == synth_videos.num_classes, format_report(report)


def test_clean_frame_folder_list_has_no_problems(synth_frames):
    report = check_list(synth_frames.train_list, num_classes=synth_frames.num_classes, fmt="frames", workers=1)
    assert report.ok, format_report(report)


def test_good_entry_in_a_broken_list_is_not_reported(broken):
    _, line, report = broken
    assert _messages(report, line["good"]) == []


def test_missing_file_is_reported(broken):
    _, line, report = broken
    assert _messages(report, line["missing"]) == ["file not found"]


def test_zero_byte_video_is_reported(broken):
    _, line, report = broken
    assert any("empty" in m and "0 bytes" in m for m in _messages(report, line["empty"]))


def test_undecodable_video_is_reported(broken):
    _, line, report = broken
    assert any("cannot open" in m for m in _messages(report, line["garbage"]))


def test_truncated_video_is_reported_by_decoding_its_last_frames(broken):
    _, line, report = broken
    assert any(m.startswith("truncated: last frames 21..23") for m in _messages(report, line["truncated"]))


def test_video_cut_between_frames_is_reported_as_shorter_than_listed(broken):
    _, line, report = broken
    assert _messages(report, line["short"]) == ["num_frames 24 in the list, but the video has 23 (truncated?)"]


def test_num_frames_disagreeing_with_the_video_is_reported(broken):
    _, line, report = broken
    assert _messages(report, line["wrong_frames"]) == ["num_frames 20 in the list, but the video has 24"]


def test_label_outside_the_class_range_is_reported(broken):
    _, line, report = broken
    assert any("label 99 out of range 0..7" in m for m in _messages(report, line["label"]))


def test_malformed_line_is_reported(broken):
    _, line, report = broken
    assert any("num_frames 'twenty' is not an integer" in m for m in _messages(report, line["malformed"]))


def test_duplicate_entry_is_reported_with_the_first_line(broken):
    _, line, report = broken
    assert _messages(report, line["duplicate"]) == [f"duplicate of line {line['good']}"]


def test_missing_frame_image_in_a_frame_folder_is_reported(broken):
    _, line, report = broken
    assert _messages(report, line["holes"]) == ["1 of 16 frame images missing: img_00005.jpg"]


def test_each_problem_line_names_list_line_and_path_then_a_summary(broken):
    list_file, line, report = broken
    text = format_report(report).splitlines()
    assert text[0] == f"{list_file}:{line['missing']}: {list_file.parent / 'nowhere.mp4'}: file not found"
    assert text[-1] == f"{list_file}: {len(line)} entries, {len(report.problems)} problem(s) on 10 line(s)"


def test_list_without_entries_is_a_problem(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    report = check_list(empty, workers=1)
    assert not report.ok and [p.message for p in report.problems] == ["no entries"]
