"""Multi-view test as Ray Data batch inference; view fusion rules; score-file aggregation; reference weights."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from actionray.platform.config import ConfigError
from actionray.platform.evaluate import (aggregate, combine_views, parse_views, read_scores, softmax,
                                         write_scores)


def test_parse_views_reads_clips_by_crops():
    assert parse_views("10x3") == (10, 3) and parse_views("1X1") == (1, 1)
    with pytest.raises(ConfigError, match="CLIPSxCROPS"):
        parse_views("ten")
    with pytest.raises(ConfigError, match="crops 1 or 3"):
        parse_views("2x2")


def test_mean_prob_averages_softmax_over_views_of_each_video():
    index, labels = np.array([0, 0, 1]), np.array([2, 2, 0])
    scores = np.array([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    fused, video_labels, videos = combine_views(index, labels, scores, "mean_prob")
    assert videos.tolist() == [0, 1] and video_labels.tolist() == [2, 0]
    np.testing.assert_allclose(fused[0], (softmax(scores[:1]) + softmax(scores[1:2]))[0] / 2)


def test_max_takes_the_highest_softmax_probability_per_class_over_views():
    scores = np.array([[0.0, 2.0], [5.0, 0.0]])
    fused, _, _ = combine_views(np.array([7, 7]), np.array([1, 1]), scores, "max")
    np.testing.assert_allclose(fused[0], softmax(scores).max(axis=0))


def test_views_of_one_video_with_different_labels_are_rejected():
    with pytest.raises(ValueError, match="different labels"):
        combine_views(np.array([0, 0]), np.array([1, 2]), np.zeros((2, 3)))


def test_aggregate_of_split_score_files_equals_fusing_them_together(tmp_path):
    rng = np.random.default_rng(0)
    index, view = np.repeat(np.arange(6), 4), np.tile(np.arange(4), 6)
    labels, scores = np.repeat(rng.integers(0, 5, 6), 4), rng.normal(size=(24, 5))
    first = write_scores(tmp_path / "a.parquet", index[view < 2], view[view < 2], labels[view < 2], scores[view < 2])
    second = write_scores(tmp_path / "b.parquet", index[view >= 2], view[view >= 2], labels[view >= 2],
                          scores[view >= 2])
    report = aggregate([str(first), str(second)], combine="mean_prob", tracking=False)
    fused, video_labels, _ = combine_views(index, labels, scores)
    assert report["videos"] == 6 and report["views_total"] == 24
    from actionray.platform.metrics import top_k_accuracy

    assert report["top1"] == top_k_accuracy(fused, video_labels, 1)


@pytest.fixture(scope="module")
def weights(synth_videos, tmp_path_factory):
    """A randomly initialised tiny TSN saved both as our checkpoint and in the reference (TDN-repo) layout."""
    import torch

    from actionray.models.checkpoints import reference_key_candidates
    from actionray.platform.checkpoint import save_state
    from test_train import tiny_config

    folder = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(synth_videos, folder, eval={"output_dir": str(folder / "scores")})
    torch.manual_seed(0)
    model = cfg.recipe.build_model(cfg)
    ours = save_state(folder / "ckpt", {"model": model.state_dict(), "epoch": 1}).parent
    reference = {"module." + reference_key_candidates(k, "tsn")[0]: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": reference}, folder / "reference.pth.tar")
    return cfg, folder, ours, folder / "reference.pth.tar"


def test_evaluate_scores_every_clip_and_crop_view_and_logs_to_mlflow(ray_local, weights, synth_videos):
    from mlflow.tracking import MlflowClient

    from actionray.platform.evaluate import evaluate

    cfg, _, ours, _ = weights
    report = evaluate(cfg, checkpoint=str(ours), clips=2, crops=3)
    index, view, labels, scores = read_scores(report["scores"])
    videos = len(synth_videos.val_list.read_text().split("\n")) - 1
    assert len(index) == 6 * videos and sorted(set(view.tolist())) == list(range(6))
    assert scores.shape == (6 * videos, synth_videos.num_classes)
    assert report["videos"] == videos and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    run = MlflowClient(cfg.tracking.uri).get_run(report["mlflow_run_id"])
    assert run.data.metrics["test_top1"] == report["top1"] and run.data.params["views"] == "2x3"


def test_reference_layout_checkpoint_evaluates_to_the_same_scores_via_the_cli(ray_local, weights):
    from actionray.cli import main

    cfg, folder, ours, reference = weights
    config_file = folder / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    a, b = folder / "ours.parquet", folder / "ref.parquet"
    assert main(["eval", str(config_file), "--checkpoint", str(ours), "--views", "1x1", "--output", str(a)]) == 0
    assert main(["eval", str(config_file), "--checkpoint", str(reference), "--reference-layout", "auto",
                 "--views", "1x1", "--output", str(b)]) == 0
    np.testing.assert_allclose(read_scores(a)[3], read_scores(b)[3], rtol=1e-5, atol=1e-5)
