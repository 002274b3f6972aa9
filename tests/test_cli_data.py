"""``actionray data ...`` end to end: synth, list, extract-frames, check and preview through the real CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from actionray.cli import main
from actionray.config import build_config
from actionray.platform.data.preview import denormalize, model_clips
from actionray.platform.data.transforms import normalize


def test_every_data_command_has_help():
    out = subprocess.run([sys.executable, "-m", "actionray", "data", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("synth", "list", "extract-frames", "check", "preview"):
        assert command in out.stdout
        with pytest.raises(SystemExit) as exit_info:
            main(["data", command, "--help"])
        assert exit_info.value.code == 0


def test_synth_command_writes_videos_lists_and_names_the_class_kinds(tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path), "--classes", "growing", "shrinking", "striped",
                 "--videos-per-class", "2", "--frames", "8", "--size", "32x32", "--seed", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "1: shrinking (temporal order)" in out and "2: striped (appearance)" in out
    assert len((tmp_path / "train.txt").read_text().splitlines()) == 3
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 6


def test_synth_command_rejects_an_odd_size(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "33x32"]) == 2
    assert "even" in capsys.readouterr().err


def test_list_folder_command_exits_nonzero_on_unreadable_files_unless_allowed(synth_videos, tmp_path, capsys):
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True)
        (tree / name / "good.mp4").write_bytes((synth_videos.root / "videos/growing/growing_0001.mp4").read_bytes())
    (tree / "b" / "broken.mp4").write_bytes(b"\x00" * 64)
    args = ["data", "list", "folder", str(tree), "--out", str(tmp_path / "lists"), "--quiet"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{tree / 'b' / 'broken.mp4'}: " in out and "all: 2 entries" in out
    assert main([*args, "--allow-missing"]) == 0
    assert (tmp_path / "lists" / "all.txt").read_text().splitlines() == [
        "../tree/a/good.mp4 24 0", "../tree/b/good.mp4 24 1"]


def test_check_command_exits_zero_on_a_clean_list_and_one_on_a_broken_one(synth_videos, tmp_path, capsys):
    assert main(["data", "check", str(synth_videos.val_list), "--num-classes", "8", "--quiet"]) == 0
    broken = tmp_path / "broken.txt"
    broken.write_text(f"{synth_videos.root / 'videos/growing/growing_0001.mp4'} 24 8\n")
    assert main(["data", "check", str(broken), "--num-classes", "8", "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith(f"{broken}:1: ") and "label 8 out of range" in out[-2]


def test_extract_frames_writes_short_side_jpeg_folders_and_a_list_that_checks_clean(synth_videos, tmp_path):
    source = tmp_path / "val.txt"
    source.write_text("".join(line.replace("videos/", f"{synth_videos.root}/videos/") + "\n"
                              for line in synth_videos.val_list.read_text().splitlines()[:3]))
    out = tmp_path / "frames"
    assert main(["data", "extract-frames", str(source), "--out", str(out), "--short-side", "32", "--quiet"]) == 0
    rows = [line.split() for line in (out / "val.txt").read_text().splitlines()]
    assert len(rows) == 3 and all(int(n) == 24 for _, n, _ in rows)
    folder = out / rows[0][0]
    assert sorted(p.name for p in folder.iterdir())[0] == "img_00001.jpg"
    assert Image.open(folder / "img_00024.jpg").size == (43, 32)  # 64x48 -> short side 32
    assert main(["data", "check", str(out / "val.txt"), "--format", "frames", "--quiet"]) == 0


def test_preview_command_draws_one_row_per_clip_and_one_column_per_frame(synth_videos, tmp_path, capsys):
    png = tmp_path / "sheet.png"
    code = main(["data", "preview", str(synth_videos.train_list), "--out", str(png), "--num-clips", "3",
                 "--set", "data.num_segments=4", "--set", "data.input_size=32", "--set", "data.scale_size=40"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if line.startswith("#")]) == 3
    width, height = Image.open(png).size
    assert height == 3 * (112 + 4) + 4 and width == 180 + 4 * (112 + 4)


def test_preview_clips_are_the_normalised_model_input_turned_back_into_pixels(synth_videos):
    cfg = build_config({"method": {"name": "tsn"}, "data": {"train_list": str(synth_videos.train_list), "val_list": str(synth_videos.val_list),
                                 "num_segments": 4, "input_size": 32, "scale_size": 40, "flip": False}})
    clip = model_clips(cfg, "val", num_clips=1)[0]
    assert clip.frames.shape == (4, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.name == synth_videos.class_names[clip.label]
    model_input = normalize(torch.from_numpy(clip.frames)[None])
    assert np.array_equal(denormalize(model_input)[0], clip.frames)


def test_preview_shows_the_label_after_a_flip_swaps_it(synth_videos):
    tree = {"method": {"name": "tsn"},
            "data": {"train_list": str(synth_videos.train_list), "val_list": str(synth_videos.val_list),
                     "num_segments": 2, "input_size": 32, "flip_label_map": {0: 1}}}
    rows = synth_videos.train_list.read_text().splitlines()
    clips = model_clips(build_config(tree), "train", num_clips=len(rows))
    swap = {0: 1, 1: 0}  # the map given one way also swaps back
    assert any(c.flipped and int(rows[c.index].split()[2]) in swap for c in clips)
    for c in clips:
        listed = int(rows[c.index].split()[2])
        assert c.label == (swap.get(listed, listed) if c.flipped else listed)
        assert c.name == synth_videos.class_names[c.label]


def test_extract_frames_from_a_class_tree_labels_folders_by_sorted_class(synth_videos, tmp_path):
    tree = tmp_path / "tree"
    for name in ("zebra", "ant"):
        (tree / name).mkdir(parents=True)
        (tree / name / "clip.mp4").write_bytes((synth_videos.root / "videos/striped/striped_0001.mp4").read_bytes())
    assert main(["data", "extract-frames", str(tree), "--out", str(tmp_path / "f"), "--short-side", "0",
                 "--quiet"]) == 0
    assert (tmp_path / "f" / "all.txt").read_text().splitlines() == ["ant/clip 24 0", "zebra/clip 24 1"]
    assert (tmp_path / "f" / "classInd.txt").read_text() == "1 ant\n2 zebra\n"
    assert Image.open(tmp_path / "f" / "ant/clip/img_00001.jpg").size == (64, 48)
