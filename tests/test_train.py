"""Ray Train end to end on generated videos: a 2-worker gloo fit, resume, fresh-run protection, CLI defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actionray.config import ConfigError, build_config


def tiny_config(synth, workdir: Path, **sections) -> "ExperimentConfig":
    """ResNet-18 TSN at 32 px, 4 segments, on the session's synth videos; every path inside ``workdir``."""
    tree = {
        "name": "tiny",
        "method": {"name": "tsn", "backbone": "resnet18", "dropout": 0.0},
        "data": {"train_list": str(synth.train_list), "val_list": str(synth.val_list),
                 "num_classes": synth.num_classes, "num_segments": 4, "input_size": 32, "scale_size": 36,
                 "batch_size": 4, "decode_tasks": 2, "flip": False},
        "optim": {"lr": 0.01},
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "storage_path": str(workdir / "runs"), "log_every": 1},
        "scaling": {"num_workers": 1, "max_failures": 0},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return build_config(tree)


@pytest.fixture(scope="module")
def two_worker_run(ray_local, synth_videos, tmp_path_factory):
    """One 2-worker, 1-epoch fit shared by the assertions below (a Ray Train run costs 15-25 s)."""
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("two_worker")
    cfg = tiny_config(synth_videos, workdir, train={"run_name": "tiny-run"}, scaling={"num_workers": 2})
    return cfg, workdir, fit(cfg)


def test_two_worker_fit_runs_ddp_and_reports_every_contract_metric(two_worker_run):
    _, _, summary = two_worker_run
    assert summary["world_size"] == 2
    final = summary["final"]
    for key in ("epoch", "train_loss", "train_top1", "lr", "clips_per_s", "data_wait_frac", "val_top1", "val_top5",
                "val_mean_class_acc", "val_loss"):
        assert key in final, key
    assert final["epoch"] == 1
    assert 0.0 <= final["val_top1"] <= final["val_top5"] <= 1.0
    assert final["clips_per_s"] > 0 and 0.0 <= final["data_wait_frac"] <= 1.0


def test_fit_keeps_a_loadable_best_checkpoint(two_worker_run):
    from actionray.platform.checkpoint import load_state

    cfg, _, summary = two_worker_run
    state = load_state(summary["best_checkpoint"])
    assert state["epoch"] == 1 and state["config"]["name"] == cfg.name
    assert {"model", "optimizer", "scheduler", "rng"} <= set(state)


def test_fit_logs_one_mlflow_run_with_params_metrics_and_artifacts(two_worker_run):
    from mlflow.tracking import MlflowClient

    cfg, _, summary = two_worker_run
    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.01" and run.data.tags["method"] == "tsn"
    assert {"train_loss", "val_top1", "val_mean_class_acc", "step_loss", "step_lr", "clips_per_s"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"checkpoints.json", "plots/confusion_matrix.png", "plots/training_curves.png"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "checkpoints.json")
    paths = json.loads(Path(local).read_text())
    assert paths["best_checkpoint"] == summary["best_checkpoint"]


def test_fresh_run_refuses_to_reuse_an_existing_run_name(two_worker_run):
    from actionray.platform.train import fit

    cfg, _, _ = two_worker_run
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        fit(cfg)


def test_resume_continues_at_the_next_epoch_in_the_same_mlflow_run(two_worker_run):
    from actionray.platform.train import fit

    cfg, _, first = two_worker_run
    cfg = build_config(cfg.to_dict(), ["train.epochs=2", "scaling.num_workers=1"])
    summary = fit(cfg, resume=True)
    assert summary["start_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["history"][0] == first["history"][0]  # epoch 1 came from the checkpoint, not re-run
    assert summary["mlflow_run_id"] == first["mlflow_run_id"]


def test_resuming_a_finished_run_trains_nothing_and_reports_its_final_metrics(two_worker_run):
    """A Tune trial stopped after its last epoch is restarted on resume: it must still report a finished run."""
    from actionray.platform.train import fit

    cfg, _, _ = two_worker_run
    cfg = build_config(cfg.to_dict(), ["train.epochs=2", "scaling.num_workers=1"])
    fit(cfg, resume=True)  # finishes epoch 2 unless the test above already did
    again = fit(cfg, resume=True)
    assert again["start_epoch"] == 2 and [h["epoch"] for h in again["history"]] == [1, 2]
    assert again["last_report"]["epoch"] == 2 and "val_top1" in again["last_report"]


def test_resume_without_a_previous_run_is_a_clear_error(ray_local, synth_videos, workdir):
    from actionray.platform.train import fit

    with pytest.raises(ConfigError, match="no run of config 'tiny'"):
        fit(tiny_config(synth_videos, workdir), resume=True)


def test_build_run_returns_a_torch_trainer_with_the_run_settings(ray_local, synth_videos, workdir):
    from ray.train.torch import TorchTrainer

    from actionray.platform.train import build_run

    cfg = tiny_config(synth_videos, workdir, scaling={"num_workers": 2, "max_failures": 3},
                      tracking={"enabled": False})
    run = build_run(cfg, run_name="named", mlflow_tags={"variant": "x"})
    trainer = run.trainer
    assert isinstance(trainer, TorchTrainer) and run.name == "named"
    run_config = trainer.run_config
    assert run_config.name == "named" and run_config.storage_path == str(workdir / "runs")
    assert run_config.failure_config.max_failures == 3
    assert run_config.checkpoint_config.checkpoint_score_attribute == "val_top1"
    assert trainer.scaling_config.num_workers == 2


def test_torch_threads_none_keeps_rays_setting_and_zero_splits_the_nodes_cores():
    import os

    import torch

    from actionray.platform.loop import set_torch_threads

    before = torch.get_num_threads()
    try:
        set_torch_threads(None, 1)
        assert torch.get_num_threads() == before
        set_torch_threads(0, 2)
        assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // 2)
        set_torch_threads(3, 1)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="scaling.torch_threads"):
        build_config({"method": {"name": "tsn"}, "scaling": {"torch_threads": -1}})


def test_deterministic_single_worker_runs_repeat_exactly(ray_local, synth_videos, tmp_path):
    """train.deterministic: two 1-worker runs with the same seed give bit-identical losses and weights."""
    import torch

    from actionray.platform.checkpoint import load_state
    from actionray.platform.train import fit

    summaries = []
    for name in ("repeat-a", "repeat-b"):
        cfg = tiny_config(synth_videos, tmp_path, train={"run_name": name, "deterministic": True, "log_every": 1},
                          data={"decode_tasks": 2, "decode_batch_size": 2}, tracking={"enabled": False})
        summaries.append(fit(cfg))
    a, b = summaries
    assert a["final"]["train_loss"] == b["final"]["train_loss"]
    assert a["final"]["val_loss"] == b["final"]["val_loss"]
    weights_a = load_state(a["best_checkpoint"])["model"]
    weights_b = load_state(b["best_checkpoint"])["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
