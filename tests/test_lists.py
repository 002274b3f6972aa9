"""List builders: folder trees and fake official UCF101 / HMDB51 / SSv1 split files over generated videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actionray.platform.data import lists
from actionray.platform.data.annotations import read_list


def _rows(path: Path) -> list[tuple[str, int, int]]:
    return [(p, int(n), int(label)) for p, n, label in (line.split() for line in path.read_text().splitlines())]


def _videos_by_class(synth) -> dict[str, list[str]]:
    """Class name -> sorted video file names of a generated mp4 set."""
    root = synth.root / "videos"
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(root.iterdir())}


def test_folder_tree_lists_every_video_with_alphabetical_class_labels(synth_videos, tmp_path):
    splits, names = lists.from_folder(synth_videos.root / "videos")
    result = lists.write_lists(splits, names, tmp_path, workers=2, progress=False)
    assert names == sorted(synth_videos.class_names)
    records = read_list(result.lists["all"])
    assert len(records) == 4 * len(names) and not result.failures
    for record in records:
        assert Path(record.path).is_file() and record.num_frames == 24
        assert Path(record.path).parent.name == names[record.label]
    assert result.class_index.read_text().splitlines()[0] == f"1 {names[0]}"


def test_folder_tree_val_fraction_splits_each_class_without_overlap(synth_videos):
    splits, names = lists.from_folder(synth_videos.root / "videos", val_fraction=0.25, seed=1)
    train, val = splits["train"], splits["val"]
    assert len(val) == len(names) and len(train) == 3 * len(names)  # 1 of 4 per class
    assert {i.label for i in val} == set(range(len(names)))
    assert not {i.path for i in train} & {i.path for i in val}


@pytest.fixture()
def ucf_split(synth_videos, tmp_path):
    """Fake UCF101 split files (classInd ids in a non-alphabetical order) over the generated videos."""
    by_class = _videos_by_class(synth_videos)
    order = list(reversed(sorted(by_class)))
    split_dir = tmp_path / "ucfTrainTestlist"
    split_dir.mkdir()
    (split_dir / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(order)))
    train = [f"{c}/{v} {order.index(c) + 1}" for c in order for v in by_class[c][:3]]
    test = [f"{c}/{v}" for c in order for v in by_class[c][3:]]
    (split_dir / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")  # the official files use CRLF
    (split_dir / "testlist01.txt").write_text("\n".join(test) + "\n")
    return split_dir, order


def test_ucf101_labels_are_class_ind_id_minus_one_and_test_class_comes_from_the_folder(synth_videos, ucf_split,
                                                                                       tmp_path):
    split_dir, order = ucf_split
    splits, names = lists.from_ucf101(split_dir, synth_videos.root / "videos", split=1)
    assert names == order
    result = lists.write_lists(splits, names, tmp_path / "out", workers=1, progress=False)
    for split, expected in (("train", 3), ("val", 1)):
        records = read_list(result.lists[split])
        assert len(records) == expected * len(order)
        assert all(Path(r.path).parent.name == order[r.label] for r in records)


def test_ucf101_train_id_disagreeing_with_its_folder_names_file_and_line(synth_videos, ucf_split):
    split_dir, order = ucf_split
    lines = (split_dir / "trainlist01.txt").read_text().splitlines()
    path, _ = lines[1].split()
    lines[1] = f"{path} {order.index(path.split('/')[0]) + 2}"
    (split_dir / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(lists.ListBuildError, match=r"trainlist01\.txt:2: class id \d+ does not match folder"):
        lists.from_ucf101(split_dir, synth_videos.root / "videos", split=1)


def test_hmdb51_flags_pick_train_test_and_unused_with_sorted_class_ids(synth_videos, tmp_path):
    by_class = _videos_by_class(synth_videos)
    split_dir = tmp_path / "testTrainMulti_7030_splits"
    split_dir.mkdir()
    for name, videos in by_class.items():
        flags = ["1", "1", "2", "0"]  # 2 train, 1 test, 1 unused per class
        (split_dir / f"{name}_test_split1.txt").write_text("".join(f"{v} {f} \n" for v, f in zip(videos, flags)))
        (split_dir / f"{name}_test_split2.txt").write_text("".join(f"{v} 2 \n" for v in videos))
    splits, names = lists.from_hmdb51(split_dir, synth_videos.root / "videos", split=1)
    assert names == sorted(by_class)
    assert len(splits["train"]) == 2 * len(names) and len(splits["val"]) == len(names)
    assert all(item.path.parent.name == names[item.label] for item in splits["train"] + splits["val"])
    assert not any(item.path.name == by_class[names[item.label]][3] for item in splits["train"] + splits["val"])


def test_something_v1_labels_index_sorted_names_and_frames_are_counted_from_files(synth_frames, tmp_path):
    source = sorted((synth_frames.root / "frames").rglob("*_0001"))[:3]
    frames_root, ann = tmp_path / "20bn-something-something-v1", tmp_path / "annotations"
    ann.mkdir()
    for i, folder in enumerate(source):  # SSv1 names frames 00001.jpg ... inside a folder named by video id
        target = frames_root / str(100 + i)
        target.mkdir(parents=True)
        for jpg in folder.iterdir():
            shutil.copy(jpg, target / jpg.name.removeprefix("img_"))
    labels = ["Pushing something from right to left", "Moving something up", "Dropping something"]
    (ann / "something-something-v1-labels.csv").write_text("\n".join(labels) + "\n")
    (ann / "something-something-v1-train.csv").write_text(f"100;{labels[0]}\n101;{labels[1]}\n")
    (ann / "something-something-v1-validation.csv").write_text(f"102;{labels[2]}\n")
    splits, names = lists.from_something_v1(ann, frames_root)
    assert names == sorted(labels)
    result = lists.write_lists(splits, names, tmp_path / "out", fmt="frames", frame_template="{:05d}.jpg",
                               workers=1, progress=False)
    assert [(Path(p).name, n, label) for p, n, label in _rows(result.lists["train"])] == [
        ("100", 16, names.index(labels[0])), ("101", 16, names.index(labels[1]))]
    assert result.class_index.read_text().splitlines()[0] == f"1 {sorted(labels)[0]}"


def test_unreadable_files_are_reported_with_their_source_line_and_left_out(synth_videos, ucf_split, tmp_path):
    split_dir, order = ucf_split
    videos = tmp_path / "videos"
    shutil.copytree(synth_videos.root / "videos", videos)
    first_test = (split_dir / "testlist01.txt").read_text().splitlines()[0]
    (videos / first_test).unlink()  # missing
    (videos / first_test.replace("_0004", "_0001")).write_bytes(b"")  # zero bytes, first train line of that class
    splits, names = lists.from_ucf101(split_dir, videos, split=1)
    result = lists.write_lists(splits, names, tmp_path / "out", workers=2, progress=False)
    assert sorted(reason for _, _, reason in result.failures) == ["file is empty (0 bytes)", "file not found"]
    missing = next(f for f in result.failures if f[2] == "file not found")
    assert missing[0] == f"{split_dir / 'testlist01.txt'}:1" and missing[1].endswith(first_test)
    assert result.counts == {"train": 3 * len(order) - 1, "val": len(order) - 1}


def test_diving48_official_json_lists_become_train_and_val_lists(synth_videos, tmp_path, capsys):
    import json

    from actionray.cli import main

    source = sorted((synth_videos.root / "videos").rglob("*.mp4"))[:3]
    videos, ann = tmp_path / "rgb", tmp_path / "annotations"
    videos.mkdir()
    ann.mkdir()
    for k, path in enumerate(source):
        shutil.copy(path, videos / f"clip_{k:05d}.mp4")
    train = [{"vid_name": "clip_00000", "label": 0, "start_frame": 0, "end_frame": 23},
             {"vid_name": "clip_00001", "label": 47, "start_frame": 0, "end_frame": 23}]
    (ann / "Diving48_V2_train.json").write_text(json.dumps(train))
    (ann / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "clip_00002", "label": 5,
                                                             "start_frame": 0, "end_frame": 23}]))
    assert main(["data", "list", "diving48", str(ann), "--videos", str(videos), "--out", str(tmp_path / "out"),
                 "--workers", "1", "--quiet"]) == 0
    rows = _rows(tmp_path / "out" / "diving48_train.txt")
    assert [(Path(p).name, n, label) for p, n, label in rows] == [("clip_00000.mp4", 24, 0), ("clip_00001.mp4", 24, 47)]
    assert [label for _, _, label in _rows(tmp_path / "out" / "diving48_val.txt")] == [5]
    assert len((tmp_path / "out" / "classInd.txt").read_text().splitlines()) == 48
    (ann / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "clip_00002", "label": 48}]))
    with pytest.raises(lists.ListBuildError, match=r"Diving48_V2_test\.json\[0\]: label 48 is not a class id 0\.\.47"):
        lists.from_diving48(ann, videos)
