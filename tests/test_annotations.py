"""List files: TSN three-column and two-column lines, path resolution, errors that name file:line."""

from pathlib import Path

import pytest

from actionray.platform.data.annotations import UNKNOWN_FRAMES, ListFormatError, VideoRecord, read_list


def write(tmp_path: Path, text: str, name: str = "list.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_three_column_lines_give_path_frames_label(tmp_path):
    records = read_list(write(tmp_path, "a/v1.mp4 30 2\nb/v2.mp4 12 0\n"))
    assert records == [VideoRecord(str(tmp_path / "a/v1.mp4"), 30, 2, 1),
                       VideoRecord(str(tmp_path / "b/v2.mp4"), 12, 0, 2)]


def test_two_column_lines_mark_frames_unknown(tmp_path):
    (record,) = read_list(write(tmp_path, "clip.avi 7\n"))
    assert (record.num_frames, record.label) == (UNKNOWN_FRAMES, 7)


def test_relative_paths_join_onto_root_when_given(tmp_path):
    (record,) = read_list(write(tmp_path, "x/y.mp4 5 1\n"), root="/data/ucf")
    assert record.path == "/data/ucf/x/y.mp4"


def test_absolute_paths_are_kept(tmp_path):
    (record,) = read_list(write(tmp_path, "/abs/y.mp4 5 1\n"), root="/data/ucf")
    assert record.path == "/abs/y.mp4"


def test_blank_lines_and_comments_are_skipped_but_line_numbers_kept(tmp_path):
    records = read_list(write(tmp_path, "# header\n\nv.mp4 9 1\n"))
    assert [r.line for r in records] == [3]


def test_non_integer_label_names_file_and_line(tmp_path):
    path = write(tmp_path, "v.mp4 9 1\nw.mp4 9 one\n")
    with pytest.raises(ListFormatError, match=rf"{path}:2: label 'one' is not an integer"):
        read_list(path)


def test_non_integer_frame_count_is_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":1: num_frames '9.5' is not an integer"):
        read_list(write(tmp_path, "v.mp4 9.5 1\n"))


def test_missing_columns_are_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":1: expected 'path num_frames label'"):
        read_list(write(tmp_path, "lonely.mp4\n"))


def test_extra_columns_are_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":1: 4 columns"):
        read_list(write(tmp_path, "my video.mp4 9 1\n"))


def test_label_outside_num_classes_is_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":2: label 8 out of range 0..7"):
        read_list(write(tmp_path, "a.mp4 9 7\nb.mp4 9 8\n"), num_classes=8)


def test_negative_label_is_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":1: label -1 is negative"):
        read_list(write(tmp_path, "a.mp4 9 -1\n"))


def test_zero_frame_count_is_rejected(tmp_path):
    with pytest.raises(ListFormatError, match=r":1: num_frames 0 must be >= 1"):
        read_list(write(tmp_path, "a.mp4 0 1\n"))


def test_missing_or_empty_list_file_is_an_error(tmp_path):
    with pytest.raises(ListFormatError, match="list file not found"):
        read_list(tmp_path / "nope.txt")
    with pytest.raises(ListFormatError, match="no entries"):
        read_list(write(tmp_path, "\n# only a comment\n"))


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"good.mp4 9 1\n\xffbad.mp4 9 1\n")
    with pytest.raises(ListFormatError, match=rf"{path}:2: line is not valid UTF-8"):
        read_list(path)
