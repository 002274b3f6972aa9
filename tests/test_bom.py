"""List and class files saved with a UTF-8 byte-order mark (Windows editors) read like plain UTF-8 (issue 12)."""

from __future__ import annotations

import codecs
from pathlib import Path

from actionray.platform.data.annotations import read_list
from actionray.platform.data.lists import from_ucf101
from actionray.platform.data.preview import load_class_names


def write_with_bom(path: Path, text: str) -> Path:
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    return path


def test_list_file_with_bom_gives_a_clean_first_path(tmp_path):
    records = read_list(write_with_bom(tmp_path / "train.txt", "a/v1.mp4 30 2\nb/v2.mp4 12 0\n"))
    assert records[0].path == str(tmp_path / "a/v1.mp4")
    assert all("\ufeff" not in r.path for r in records)


def test_class_file_with_bom_gives_a_clean_first_name(tmp_path):
    path = write_with_bom(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    assert load_class_names(path, 2) == ["ApplyEyeMakeup", "ApplyLipstick"]


def test_ucf101_split_files_with_bom_are_read(tmp_path):
    split_dir, videos = tmp_path / "splits", tmp_path / "videos"
    split_dir.mkdir()
    for name in ("ApplyEyeMakeup", "Archery"):
        (videos / name).mkdir(parents=True)
        (videos / name / f"v_{name}_g01_c01.avi").write_bytes(b"")
    write_with_bom(split_dir / "classInd.txt", "1 ApplyEyeMakeup\n2 Archery\n")
    write_with_bom(split_dir / "trainlist01.txt",
                   "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n")
    write_with_bom(split_dir / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\n")
    splits, class_names = from_ucf101(split_dir, videos, split=1)
    assert class_names == ["ApplyEyeMakeup", "Archery"]
    assert [(item.path.name, item.label) for item in splits["train"]] == [
        ("v_ApplyEyeMakeup_g01_c01.avi", 0), ("v_Archery_g01_c01.avi", 1)]
    assert [(item.path.name, item.label) for item in splits["val"]] == [("v_Archery_g01_c01.avi", 1)]
