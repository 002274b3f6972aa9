"""Snippet-feature sets: sampling rules and FTCL pairs (FTCL repo, dataset/dataset_class.py), the generated set,
``data check``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from actionray.cli import data as data_cli
from actionray.platform.data.features import (THUMOS14_CLASSES, check_feature_set, epoch_rng, ftcl_pairs,
                                              load_feature_set, sample_indices)
from actionray.synthetic import write_synthetic_feature_set


def main(argv: list[str]) -> int:
    """Run ``actionray data ...`` through its own register(), independent of other command modules."""
    parser = argparse.ArgumentParser(prog="actionray")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    return write_synthetic_feature_set(root, num_classes=3, train_videos=9, test_videos=4, feature_dim=64, seed=1)


def test_random_sampling_of_a_short_video_stretches_with_sorted_repeats():
    idx = sample_indices(10, 750, "random", np.random.default_rng(0))
    assert idx.shape == (750,) and (np.diff(idx) >= 0).all() and idx.min() >= 0 and idx.max() <= 9


def test_random_sampling_of_a_long_video_picks_one_index_per_bin():
    length, t = 2000, 750
    idx = sample_indices(length, t, "random", np.random.default_rng(0))
    lo = np.floor(np.arange(t) * length / t).astype(int)
    assert idx.shape == (t,) and (np.diff(idx) >= 0).all()
    assert (idx[:-1] >= lo[:-1]).all() and (idx[:-1] <= lo[1:]).all()
    assert idx[-2] <= idx[-1] <= length - 1


def test_random_sampling_at_exact_length_is_the_identity():
    assert (sample_indices(750, 750, "random", np.random.default_rng(0)) == np.arange(750)).all()


def test_uniform_sampling_keeps_short_videos_and_subsamples_long_ones():
    assert (sample_indices(300, 750, "uniform") == np.arange(300)).all()
    assert sample_indices(10, 4, "uniform").tolist() == [0, 2, 5, 7]
    assert sample_indices(1, 750, "uniform").tolist() == [0, 0]


def test_single_snippet_video_in_random_mode_repeats_it():
    assert (sample_indices(1, 750, "random", np.random.default_rng(0)) == 0).all()


def test_epoch_seeds_redraw_per_epoch_and_repeat_per_key():
    a = sample_indices(100, 750, "random", epoch_rng(0, 0, 3))
    assert (a == sample_indices(100, 750, "random", epoch_rng(0, 0, 3))).all()
    assert not (a == sample_indices(100, 750, "random", epoch_rng(0, 1, 3))).all()


def test_ftcl_pairs_keep_identical_and_disjoint_labels_only():
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
    pairs = ftcl_pairs(labels, seed=0)
    positives = [(i, j) for i, j, y in pairs if y == 1]
    negatives = [(i, j) for i, j, y in pairs if y == 0]
    assert positives == [(0, 1)]
    assert len(negatives) == 1 and negatives[0] in [(0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (3, 4)]
    assert ftcl_pairs(labels, seed=0) == pairs  # frozen for a seed


def test_synthetic_set_loads_with_multi_hot_labels_and_matching_lengths(synth):
    train = load_feature_set(synth.root, "train")
    assert train.videos == synth.train_videos and train.classes == synth.classes
    assert train.labels.shape == (9, 3) and (train.labels.sum(1) >= 1).all()
    gt = json.loads((synth.root / "gt.json").read_text())
    for i, video in enumerate(train.videos):
        labels = {a["label"] for a in gt["database"][video]["annotations"]}
        assert labels == {synth.classes[c] for c in np.nonzero(train.labels[i])[0]}
    item = train.sample(0, num_segments=50, seed=0, epoch=2)
    assert item["features"].shape == (50, 64) and item["features"].dtype == np.float32


def test_synthetic_segments_are_separable_from_background(synth):
    train = load_feature_set(synth.root, "train")
    ann = train.gt["database"][train.videos[0]]["annotations"][0]
    feats = train.features(0)
    s, e = (round(t / 0.64) for t in ann["segment"])
    inside = feats[s:e].mean(0)
    outside = np.delete(feats, np.s_[s:e], axis=0).mean(0)
    assert np.linalg.norm(inside - outside) > 0.5 * np.linalg.norm(outside)


def test_frozen_samples_are_drawn_once(synth):
    train = load_feature_set(synth.root, "train")
    first, second = train.frozen_samples(40, seed=0), train.frozen_samples(40, seed=0)
    assert all((a == b).all() for a, b in zip(first, second)) and first[0].shape == (40, 64)


def test_synthetic_set_passes_the_check(synth):
    assert check_feature_set(synth.root, feature_dim=64) == []


def test_broken_feature_set_fails_the_check_naming_each_file(tmp_path):
    data = write_synthetic_feature_set(tmp_path, num_classes=2, train_videos=4, test_videos=2, feature_dim=8)
    train = tmp_path / "train"
    (train / f"{data.train_videos[0]}.npy").unlink()
    np.save(train / f"{data.train_videos[1]}.npy", np.zeros((100, 7), np.float32))
    bad = np.load(train / f"{data.train_videos[2]}.npy")
    bad[3, 1] = np.nan
    np.save(train / f"{data.train_videos[2]}.npy", bad)
    np.save(train / f"{data.train_videos[3]}.npy", np.ones((3, 8), np.float32))
    (tmp_path / "test" / f"{data.test_videos[0]}.npy").write_bytes(b"not an npy")
    gt = json.loads((tmp_path / "gt.json").read_text())
    gt["database"][data.test_videos[1]]["annotations"][0]["label"] = "Juggling"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    problems = check_feature_set(tmp_path, feature_dim=8)
    text = "\n".join(problems)
    assert f"{data.train_videos[0]}.npy: missing" in text
    assert f"{data.train_videos[1]}.npy: shape (100, 7)" in text
    assert f"{data.train_videos[2]}.npy: 1 NaN/inf" in text
    assert f"{data.train_videos[3]}.npy: 3 snippets, but duration" in text
    assert f"{data.test_videos[0]}.npy: unreadable" in text
    assert "label 'Juggling' not in the class list" in text
    assert len(problems) == 6


def test_real_gt_without_classes_key_uses_thumos14_order(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"database": {"v": {"duration": 6.4, "subset": "test",
                                                                     "annotations": [{"segment": [1, 2],
                                                                                      "label": "Diving"}]}}}))
    (tmp_path / "split_test.txt").write_text("v\n")
    (tmp_path / "split_train.txt").write_text("")
    test = load_feature_set(tmp_path, "test")
    assert test.classes == list(THUMOS14_CLASSES) and test.labels[0, 7] == 1.0


def test_data_commands_write_and_check_a_feature_set(tmp_path, capsys):
    out = tmp_path / "feats"
    assert main(["data", "synth-features", "--out", str(out), "--classes", "2", "--train-videos", "3",
                 "--test-videos", "2", "--feature-dim", "16"]) == 0
    assert main(["data", "check", str(out), "--feature-dim", "16"]) == 0
    assert "no problem(s)" in capsys.readouterr().out
    assert main(["data", "check", str(out), "--feature-dim", "32"]) == 1
    assert "expected (L, 32)" in capsys.readouterr().out


# -- bad feature files: refused before Ray starts, skipped and counted at run time -----------------------------------
def _acmnet_tree(root, workdir, **sections) -> dict:
    tree = {"name": "tiny_acmnet",
            "method": {"name": "acmnet", "feature_root": str(root), "feature_dim": 16, "num_segments": 16,
                       "val_fraction": 0.34},
            "data": {"num_classes": 2, "batch_size": 2, "decode_tasks": 1},
            "optim": {"name": "adam", "lr": 1e-3}, "schedule": {"name": "constant"},
            "train": {"epochs": 1, "storage_path": str(workdir / "runs")},
            "scaling": {"num_workers": 1, "max_failures": 2},
            "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}",
                         "artifact_location": str(workdir / "mlartifacts")}}
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return tree


@pytest.fixture
def small_set(tmp_path):
    return write_synthetic_feature_set(tmp_path / "feats", num_classes=2, train_videos=12, test_videos=4,
                                       feature_dim=16, min_snippets=20, max_snippets=40, instance_snippets=(3, 6),
                                       seed=3)


def test_a_missing_feature_file_is_one_error_line_naming_it_before_ray_starts(small_set, tmp_path, capsys):
    import yaml

    import ray

    from actionray.cli import main as cli_main

    gone = small_set.root / "train" / f"{small_set.train_videos[4]}.npy"
    gone.unlink()
    config = tmp_path / "acm.yaml"
    config.write_text(yaml.safe_dump(_acmnet_tree(small_set.root, tmp_path)))
    was_running = ray.is_initialized()
    assert cli_main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: method.feature_root: 1 problem(s)"), err
    assert f"{gone}: missing" in lines[0] and "Traceback" not in err
    assert ray.is_initialized() == was_running  # Ray was not started for it
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_set_that_passed_is_not_read_again_until_a_file_changes(small_set):
    from actionray.platform.data.features import check_feature_set_once

    assert check_feature_set_once(small_set.root, 16) == []
    assert (small_set.root / ".actionray_checked.json").is_file()
    victim = small_set.root / "train" / f"{small_set.train_videos[0]}.npy"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated: size (and mtime) change the digest
    problems = check_feature_set_once(small_set.root, 16)
    assert len(problems) == 1 and problems[0].startswith(f"{victim}: unreadable")


def test_a_feature_file_lost_after_the_check_is_skipped_and_counted_at_run_time(ray_local, small_set, tmp_path,
                                                                               caplog):
    """The real Ray Data train and val streams of the feature source: a file removed after the pre-check is
    skipped with a warning naming it (within data.max_skip_fraction), and refused past it, naming it."""
    from actionray.config import build_config
    from actionray.platform.data.feature_source import FeatureSource, eval_dataset, feature_splits, train_dataset
    from actionray.platform.data.features import FeatureFileError
    from actionray.platform.data.ingest import TooManySkippedError

    cfg = build_config(_acmnet_tree(small_set.root, tmp_path, data={"max_skip_fraction": 0.5,
                                                                    "on_error_eval": "skip"}))
    splits = feature_splits(cfg)
    lost_train = splits.train_set.path(int(splits.train_videos[0]))
    lost_val = splits.train_set.path(int(splits.val_videos[0]))
    lost_train.unlink()
    lost_val.unlink()
    source = FeatureSource(cfg)
    steps = source.steps_per_epoch(1)
    with caplog.at_level("WARNING", logger="actionray.platform.data.feature_source"):
        batches = list(source.batches(train_dataset(cfg), "train", epoch=0, device=torch_cpu()))
        videos = list(source.batches(eval_dataset(cfg, "val"), "val", epoch=0, device=torch_cpu()))
    source.close()
    assert len(batches) == steps  # every worker keeps the same number of steps
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert int(splits.train_videos[0]) not in seen.tolist()
    assert all(torch_finite(b["features"]) for b in batches)
    assert len(videos) == len(splits.val_videos) - 1
    text = caplog.text
    assert f"train epoch 0: skipped 1 of {steps * 2} feature rows: {lost_train}: missing" in text
    assert f"val epoch 0: skipped 1 of {len(splits.val_videos)} feature rows: {lost_val}: missing" in text

    strict = build_config(_acmnet_tree(small_set.root, tmp_path, data={"max_skip_fraction": 0.0}))
    with pytest.raises(TooManySkippedError, match=rf"train epoch 0: skipped 1 of .*{lost_train}: missing"):
        list(FeatureSource(strict).batches(train_dataset(strict), "train", epoch=0, device=torch_cpu()))
    # data.on_error_eval: raise (the default): the first bad validation file ends the pass, named
    with pytest.raises(FeatureFileError, match=rf"val epoch 0: {lost_val}: missing"):
        list(FeatureSource(strict).batches(eval_dataset(strict, "val"), "val", epoch=0, device=torch_cpu()))


def torch_cpu():
    import torch

    return torch.device("cpu")


def torch_finite(tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())
