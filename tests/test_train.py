"""Ray Train end to end on generated videos: a 2-worker gloo fit, resume, fresh-run protection, CLI defaults."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actionray.config import ConfigError, build_config

if TYPE_CHECKING:
    from actionray.platform.config import ExperimentConfig


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


class RecordStartState:
    """Worker hook: saves the model and optimizer state each worker starts training from, as
    ``folder/rank<r>-epoch<e>-pid<p>.pt`` (``e`` = the epoch it resumes after, 0 for a fresh start).

    Hooks are only called after epochs and never see the model, so on being unpickled in a worker (before the
    loop builds anything) it wraps the loop's ``_build_training`` there. Pass it pickled by value."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def __setstate__(self, state: dict) -> None:
        import os

        import torch

        from actionray.platform import loop

        self.__dict__.update(state)
        build, folder = getattr(loop._build_training, "__wrapped__", loop._build_training), self.folder

        def recording(cfg, method, restored, world, steps_per_epoch, device):
            built = build(cfg, method, restored, world, steps_per_epoch, device)
            if Path(folder).is_dir():  # the driver never trains; a later test's worker may outlive the folder
                import ray.train

                model, optimizer = built[0], built[1]
                rank, epoch = ray.train.get_context().get_world_rank(), restored["epoch"] if restored else 0
                model = model.module if hasattr(model, "module") else model
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                           Path(folder) / f"rank{rank}-epoch{epoch}-pid{os.getpid()}.pt")
            return built

        recording.__wrapped__ = build
        loop._build_training = recording

    def records(self, epoch: int) -> list[dict]:
        """The states recorded by workers that resumed after ``epoch``."""
        import torch

        return [torch.load(p, weights_only=False) for p in sorted(Path(self.folder).glob(f"rank*-epoch{epoch}-*.pt"))]


def assert_same_training_state(started: dict, checkpoint: dict) -> None:
    """Model weights and optimizer state (momentum buffers, groups' lr) equal, bit for bit."""
    import torch

    assert started["model"].keys() == checkpoint["model"].keys()
    assert all(torch.equal(started["model"][k], checkpoint["model"][k]) for k in checkpoint["model"])
    saved, got = checkpoint["optimizer"], started["optimizer"]
    assert got["param_groups"] == saved["param_groups"]
    assert got["state"].keys() == saved["state"].keys() and saved["state"]  # momentum exists after an epoch
    for index, buffers in saved["state"].items():
        assert all(torch.equal(got["state"][index][k], v) for k, v in buffers.items()), index


def metric_steps(tracking_uri: str, run_id: str, name: str) -> list[int]:
    """The steps MLflow holds for one metric of a run, in order (duplicates kept)."""
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, name))


def mlflow_artifact(cfg, run_id: str, path: str) -> str:
    """A local copy of one artifact of an MLflow run."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.tracking.uri).download_artifacts(run_id, path)


@pytest.fixture(scope="module")
def two_worker_run(ray_local, synth_videos, tmp_path_factory):
    """One 2-worker, 1-epoch fit shared by the assertions below (a Ray Train run costs 15-25 s)."""
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("two_worker")
    cfg = tiny_config(synth_videos, workdir, train={"run_name": "tiny-run"}, scaling={"num_workers": 2},
                      tracking={"system_metrics_interval_s": 0.5})
    terminal = Terminal()
    before = frozenset(pipeline_monitors())
    summary = fit(cfg, progress_stream=terminal)
    return cfg, workdir, summary, terminal, pipeline_monitors(expect=set(), before=before)


def pipeline_monitors(expect: set[str] | None = None, before: frozenset[str] = frozenset(),
                      settle_s: float = 10.0) -> set[str]:
    """Names of the pipeline monitor actors (data/monitor.py) alive in this Ray, less ``before``. With ``expect``
    the answer is asked again for up to ``settle_s`` until it matches (a killed actor may stay listed a moment)."""
    import time

    import ray

    from actionray.platform.data.monitor import NAMESPACE

    deadline = time.monotonic() + settle_s
    while True:
        alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == NAMESPACE and a["name"].startswith("actionray_pipeline_")} - before
        if expect is None or alive == expect or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


class Terminal(io.StringIO):
    """A text stream that says it is a terminal (what a console user's stderr is)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_a_terminal_gets_a_live_progress_bar_fed_by_rank_0(two_worker_run):
    *_, terminal, _ = two_worker_run
    shown = terminal.getvalue()
    # 24 clips / 2 workers / batch 4 = 3 steps per epoch; the bar is redrawn in place and erased at the end
    assert "\r[actionray] epoch 1/1 |" in shown and "| step 3/3" in shown
    assert shown.endswith("\r") and "\n" not in shown


@pytest.mark.slow
def test_two_worker_fit_runs_ddp_and_reports_every_contract_metric(two_worker_run):
    _, _, summary, *_ = two_worker_run
    assert summary["world_size"] == 2
    final = summary["final"]
    for key in ("epoch", "train_loss", "train_top1", "lr", "clips_per_s", "data_wait_frac", "val_top1", "val_top5",
                "val_mean_class_acc", "val_loss"):
        assert key in final, key
    assert final["epoch"] == 1
    assert 0.0 <= final["val_top1"] <= final["val_top5"] <= 1.0
    assert final["clips_per_s"] > 0 and 0.0 <= final["data_wait_frac"] <= 1.0


@pytest.mark.slow
def test_a_finished_fit_leaves_none_of_its_pipeline_monitors_running(two_worker_run):
    """Each dataset's monitor is an actor process (~130 MB): a driver that runs many fits must not gather them."""
    *_, left = two_worker_run
    assert left == set()


@pytest.mark.slow
def test_fit_keeps_a_loadable_best_checkpoint(two_worker_run):
    from actionray.platform.checkpoint import load_state

    cfg, _, summary, *_ = two_worker_run
    state = load_state(summary["best_checkpoint"])
    assert state["epoch"] == 1 and state["config"]["name"] == cfg.name
    assert {"model", "optimizer", "scheduler", "rng"} <= set(state)


@pytest.mark.slow
def test_fit_logs_one_mlflow_run_with_params_metrics_and_artifacts(two_worker_run):
    from mlflow.tracking import MlflowClient

    cfg, _, summary, *_ = two_worker_run
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


@pytest.mark.slow
def test_fit_logs_system_metrics_of_its_one_node_beside_the_data_wait(two_worker_run):
    """Two workers on one node: one monitor (local rank 0), CPU and memory series under system/node0/."""
    from mlflow.tracking import MlflowClient

    cfg, _, summary, *_ = two_worker_run
    client = MlflowClient(cfg.tracking.uri)
    run_id = summary["mlflow_run_id"]
    keys = set(client.get_run(run_id).data.metrics)
    assert {"system/node0/cpu_utilization_percentage", "system/node0/system_memory_usage_megabytes",
            "data_wait_frac"} <= keys
    assert {key.split("/")[1] for key in keys if key.startswith("system/")} == {"node0"}
    cpu = client.get_metric_history(run_id, "system/node0/cpu_utilization_percentage")
    assert len(cpu) >= 2 and sorted(m.step for m in cpu) == list(range(len(cpu)))  # one monitor, one series


def test_fresh_run_refuses_to_reuse_an_existing_run_name(two_worker_run):
    from actionray.platform.train import fit

    cfg, *_ = two_worker_run
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        fit(cfg)


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_in_the_same_mlflow_run(two_worker_run):
    from actionray.platform.train import fit

    import sys

    from ray import cloudpickle

    from actionray.platform.checkpoint import load_state

    cfg, workdir, first, *_ = two_worker_run
    checkpoint = load_state(first["latest_checkpoint"])
    assert checkpoint["epoch"] == 1
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ modules
    recorder = RecordStartState(workdir / "resume-started")
    Path(recorder.folder).mkdir()
    cfg = build_config(cfg.to_dict(), ["train.epochs=2", "scaling.num_workers=1"])
    summary = fit(cfg, resume=True, worker_hooks=[recorder])
    assert summary["start_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["history"][0] == first["history"][0]  # epoch 1 came from the checkpoint, not re-run
    assert summary["mlflow_run_id"] == first["mlflow_run_id"]
    started = recorder.records(epoch=1)
    assert len(started) == 1 and not recorder.records(epoch=0)  # one worker, and it did not start from scratch
    assert_same_training_state(started[0], checkpoint)
    for name in ("train_loss", "val_top1", "lr"):  # one value per epoch: none lost, none logged twice
        assert metric_steps(cfg.tracking.uri, summary["mlflow_run_id"], name) == [1, 2], name


@pytest.mark.slow
def test_resuming_a_finished_run_trains_nothing_and_reports_its_final_metrics(two_worker_run):
    """A Tune trial stopped after its last epoch is restarted on resume: it must still report a finished run."""
    from actionray.platform.train import fit

    cfg, *_ = two_worker_run
    cfg = build_config(cfg.to_dict(), ["train.epochs=2", "scaling.num_workers=1"])
    fit(cfg, resume=True)  # finishes epoch 2 unless the test above already did
    again = fit(cfg, resume=True)
    assert again["start_epoch"] == 2 and [h["epoch"] for h in again["history"]] == [1, 2]
    assert again["last_report"]["epoch"] == 2 and "val_top1" in again["last_report"]
    assert metric_steps(cfg.tracking.uri, again["mlflow_run_id"], "train_loss") == [1, 2]  # nothing re-logged


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
