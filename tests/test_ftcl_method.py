"""ACM-Net and FTCL as platform methods: feature shards, training steps, 2-worker Ray Train runs, eval and mAP.

Everything runs on one tiny generated feature set (64-d snippets, T = 64, 4 classes); the Ray Train runs are
module-scoped fixtures shared by the assertions (a run costs 15-25 s on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actionray.config import build_config

DIM, T = 64, 64


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from actionray.synthetic.features import write_synthetic_feature_set

    root = tmp_path_factory.mktemp("wtal") / "features"
    return write_synthetic_feature_set(root, num_classes=4, train_videos=40, test_videos=12, feature_dim=DIM,
                                       min_snippets=40, max_snippets=100, instance_snippets=(4, 12), seed=0)


def wtal_config(features, workdir: Path, kind: str = "acmnet", **sections):
    tree = {
        "name": f"tiny_{kind}",
        "method": {"name": kind, "feature_root": str(features.root), "feature_dim": DIM, "num_segments": T},
        "data": {"num_classes": 4, "batch_size": 4, "decode_tasks": 1},
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 5e-5, "clip_grad_norm": None},
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "storage_path": str(workdir / "runs"), "log_every": 1},
        "scaling": {"num_workers": 2, "max_failures": 0, "torch_threads": 1},
        "eval": {"output_dir": str(workdir / "eval")},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return build_config(tree)


# -- data ---------------------------------------------------------------------------------------------------------
def test_worker_shards_of_every_epoch_are_disjoint_equal_and_reshuffled():
    from actionray.platform.data.feature_source import shard_positions

    shards = [shard_positions(23, seed=0, rank=r, world=3, rows=6, first_epoch=0, epochs=2) for r in range(3)]
    for epoch in (0, 1):
        items = [s[s[:, 0] == epoch, 1] for s in shards]
        assert [len(i) for i in items] == [6, 6, 6]
        assert len(set(np.concatenate(items).tolist())) == 18  # disjoint
    assert not np.array_equal(shards[0][:6, 1], shards[0][6:, 1])  # a new order each epoch
    resumed = shard_positions(23, seed=0, rank=1, world=3, rows=6, first_epoch=1, epochs=2)
    assert np.array_equal(resumed, shards[1][6:])  # a resumed shard streams what the epoch would have


def test_holdout_validation_is_carved_from_the_training_videos_and_test_selection_is_labelled(features, tmp_path):
    from actionray.platform.data.feature_source import feature_splits

    splits = feature_splits(wtal_config(features, tmp_path, method={"val_fraction": 0.25}))
    assert len(splits.val_videos) == 10 and len(splits.train_videos) == 30
    assert not set(splits.val_videos) & set(splits.train_videos)
    assert splits.val_set.split == "train"
    reference = feature_splits(wtal_config(features, tmp_path, method={"selection": "test"}))
    assert reference.val_set.split == "test" and len(reference.train_videos) == 40


def test_ftcl_items_are_the_reference_pairs_of_the_training_videos(features, tmp_path):
    from actionray.platform.data.feature_source import feature_splits

    splits = feature_splits(wtal_config(features, tmp_path, "ftcl"))
    labels = splits.train_set.labels
    assert set(splits.pairs[:, :2].ravel()) <= set(splits.train_videos.tolist())
    for i, j, y in splits.pairs:
        assert y == int(np.array_equal(labels[i], labels[j]))
        assert y or not (labels[i] * labels[j]).any()
    assert (splits.pairs[:, 2] == 1).sum() == (splits.pairs[:, 2] == 0).sum()


def test_a_class_count_other_than_the_feature_sets_is_a_config_error(features, tmp_path):
    from actionray.config import ConfigError
    from actionray.platform.data.feature_source import feature_splits

    with pytest.raises(ConfigError, match="data.num_classes is 5 but the feature set"):
        feature_splits(wtal_config(features, tmp_path, data={"num_classes": 5}))


# -- training steps -----------------------------------------------------------------------------------------------
def test_a_bad_feature_root_or_init_checkpoint_fails_before_ray_starts(features, tmp_path):
    from actionray.config import ConfigError
    from actionray.platform.train import check_inputs

    with pytest.raises(ConfigError, match=r"method\.feature_root: .*no gt\.json"):
        check_inputs(wtal_config(features, tmp_path, method={"feature_root": str(tmp_path)}))
    run = tmp_path / "runs" / "acm-run"
    run.mkdir(parents=True)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    for path, why in ((tmp_path / "nothing", "no such file"), (run, "without state.pt"),
                      (run / "checkpoint_manager_snapshot.json", "a JSON file")):
        with pytest.raises(ConfigError, match=rf"method\.init_checkpoint: .*{why}"):
            check_inputs(wtal_config(features, tmp_path, "ftcl", method={"init_checkpoint": str(path)}))


def test_ftcl_refuses_to_start_without_the_acmnet_checkpoint_unless_from_scratch(features, tmp_path):
    from actionray.config import ConfigError
    from actionray.platform.train import check_inputs

    with pytest.raises(ConfigError) as error:
        check_inputs(wtal_config(features, tmp_path, "ftcl"))
    message = str(error.value)
    assert "\n" not in message and "method.init_checkpoint" in message
    assert "actionray train configs/acmnet_thumos14.yaml" in message and "method.from_scratch" in message
    check_inputs(wtal_config(features, tmp_path, "ftcl", method={"from_scratch": True}))  # starts


def _fixed_batch(features, cfg, pairs: bool):
    from actionray.platform.data.feature_source import _light, _load_train_rows, feature_splits

    s = feature_splits(cfg)
    items = np.arange(8)
    rows = _load_train_rows({"epoch": np.zeros(8, dtype=np.int64), "item": items}, fs=_light(s.train_set),
                            videos=s.train_videos, pairs=s.pairs, num_segments=T, seed=0, frozen=True)
    return {k: torch.from_numpy(v) for k, v in rows.items()}


@pytest.fixture
def one_thread():
    """torch on one thread: on a loaded 2-core machine two OpenMP threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["acmnet", "ftcl"])
def test_the_real_training_step_drives_the_loss_down_on_a_fixed_batch(features, tmp_path, method, one_thread):
    torch.manual_seed(0)
    cfg = wtal_config(features, tmp_path, method, method={"dropout": 0.0})
    recipe = cfg.recipe
    model = recipe.build_model(cfg)
    batch = _fixed_batch(features, cfg, method == "ftcl")
    optimizer = torch.optim.Adam(recipe.param_groups(model, cfg), lr=1e-3, weight_decay=5e-5)
    losses = []
    for _ in range(25):
        out = recipe.train_step(model, batch, cfg)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert set(out.metrics) == {k.removeprefix("train_") for k in recipe.metrics(cfg).reported
                                if k.startswith("train_") and k != "train_loss"}
    assert losses[-1] < losses[0] - 0.5, losses[::5]


def test_without_fsd_feature_trans_gets_a_zero_gradient_and_no_weight_decay(features, tmp_path):
    cfg = wtal_config(features, tmp_path, "acmnet")
    recipe = cfg.recipe
    model = recipe.build_model(cfg)
    before = model.feature_trans.weight.detach().clone()
    groups = recipe.param_groups(model, cfg)
    assert [g["name"] for g in groups] == ["all", "feature_trans"] and groups[1]["weight_decay"] == 0.0
    optimizer = torch.optim.Adam(groups, lr=1e-2, weight_decay=5e-5)
    out = recipe.train_step(model, _fixed_batch(features, cfg, False), cfg)
    out.loss.backward()
    assert model.feature_trans.weight.grad is not None and not model.feature_trans.weight.grad.any()
    optimizer.step()
    assert torch.equal(model.feature_trans.weight, before)
    ftcl = wtal_config(features, tmp_path, "ftcl")
    assert len(ftcl.recipe.param_groups(model, ftcl)) == 1


def test_ftcl_repo_checkpoints_load_through_load_reference_checkpoint(features, tmp_path):
    from actionray.models import load_reference_checkpoint

    cfg = wtal_config(features, tmp_path)
    source, target = cfg.recipe.build_model(cfg), cfg.recipe.build_model(cfg)
    torch.save({"epoch": 7, "model_state_dict": source.state_dict()}, tmp_path / "THUMOS_best.pth")
    load_reference_checkpoint(target, tmp_path / "THUMOS_best.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    broken = {k: v for k, v in source.state_dict().items() if not k.startswith("feature_trans")}
    torch.save({"epoch": 7, "model_state_dict": broken}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing.*feature_trans"):
        load_reference_checkpoint(target, tmp_path / "partial.pth")


# -- Ray Train runs, evaluation -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acm_run(ray_local, features, tmp_path_factory):
    """ACM-Net, 2 workers, 4 short epochs (4 steps of 4 videos per worker each)."""
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("acm_run")
    cfg = wtal_config(features, workdir, train={"epochs": 4, "run_name": "acm"})
    return cfg, workdir, fit(cfg)


@pytest.fixture(scope="module")
def ftcl_run(acm_run, features):
    """FTCL, 2 workers, 1 epoch, initialised from the ACM-Net run's best checkpoint."""
    from actionray.platform.train import fit

    _, workdir, acm = acm_run
    cfg = wtal_config(features, workdir, "ftcl", method={"init_checkpoint": acm["best_checkpoint"]},
                      data={"batch_size": 8}, optim={"lr": 1e-4}, train={"run_name": "ftcl"})
    return cfg, fit(cfg)


def test_acmnet_trains_on_two_workers_and_reports_detection_map(acm_run):
    _, _, summary = acm_run
    assert summary["world_size"] == 2 and [h["epoch"] for h in summary["history"]] == list(range(1, 5))
    final = summary["final"]
    assert {"train_loss", "train_inst", "train_guide", "train_feat", "val_map_avg", "val_map_0.5",
            "val_map_0.9"} <= set(final)
    assert 0.0 <= final["val_map_avg"] <= 1.0
    assert summary["best"]["metric"] == "val_map_avg"
    assert "holdout" in summary["val_detection"]["protocol"]


def test_ftcl_trains_on_two_workers_from_the_acmnet_checkpoint(ftcl_run, acm_run):
    from actionray.platform.checkpoint import load_state
    from actionray.trainables.ftcl import load_init_checkpoint

    cfg, summary = ftcl_run
    assert summary["world_size"] == 2
    final = summary["final"]
    assert {"train_acm", "train_lcs", "train_fsd", "val_map_avg"} <= set(final)
    model = cfg.recipe.build_model(cfg)  # init_checkpoint loaded: equal to the stage-1 weights
    stage1 = load_state(acm_run[2]["best_checkpoint"])["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stage1.items())
    assert load_init_checkpoint(model, acm_run[2]["best_checkpoint"]) == "ours"


def test_actionray_eval_on_the_demo_config_writes_predictions_and_the_map_table(acm_run, features):
    from actionray.cli import main

    cfg, workdir, summary = acm_run
    overrides = [f"method.feature_root={features.root}", f"method.feature_dim={DIM}", f"method.num_segments={T}",
                 "data.num_classes=4", f"eval.output_dir={workdir / 'demo_eval'}", "scaling.torch_threads=1",
                 f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}"]
    args = ["eval", "configs/demo_acmnet.yaml", "--checkpoint", summary["best_checkpoint"]]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 0
    predictions = json.loads((workdir / "demo_eval" / "demo_acmnet_predictions.json").read_text())
    assert set(predictions["results"]) == set(features.test_videos)
    segment = next(s for v in predictions["results"].values() for s in v)
    assert {"label", "score", "segment"} <= set(segment) and segment["label"] in features.classes
    table = (workdir / "demo_eval" / "demo_acmnet_map.txt").read_text()
    assert table.startswith("tIoU") and "mAP(%)" in table and "avg(0.1-0.7)" in table


def test_a_short_fit_beats_the_untrained_model_on_test_map(acm_run, tmp_path):
    from actionray.platform.checkpoint import save_state

    cfg, _, summary = acm_run
    torch.manual_seed(0)
    save_state(tmp_path / "untrained", {"model": cfg.recipe.build_model(cfg).state_dict()})
    untrained = cfg.recipe.test(cfg, checkpoint=str(tmp_path / "untrained"), reference_layout=None,
                                output=str(tmp_path / "untrained_predictions.json"))
    trained = cfg.recipe.test(cfg, checkpoint=summary["best_checkpoint"], reference_layout=None,
                              output=str(tmp_path / "trained_predictions.json"))
    assert trained.metrics["test_map_avg"] > untrained.metrics["test_map_avg"] + 0.1, (
        trained.metrics["test_map_avg"], untrained.metrics["test_map_avg"])
