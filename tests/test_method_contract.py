"""The method contract: a method that is not a classifier, defined only in this file, trains, checkpoints,
resumes, is tracked and can be swept through the platform, with nothing in ``actionray/platform`` changed.

The toy method regresses each clip's mean intensity (a target every clip carries, no labels used) with a
two-layer head on per-channel means: its loss is a mean squared error and its primary metric ``val_mse`` is
minimised, the opposite direction of every classifier's ``val_top1``.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from actionray.config import METHODS
from actionray.platform.config import ConfigError, MethodConfig, build_config
from actionray.platform.data.source import ClipSource
from actionray.platform.method import Evaluation, Method, MetricSpec, StepOutput, all_parameters


class BrightnessConfig(MethodConfig):
    name: Literal["brightness"] = "brightness"
    hidden: int = Field(8, ge=1)


class BrightnessRegressor(nn.Module):
    """(B, N, 3, H, W) clips -> (B,) predicted mean intensity, from the clip's per-channel means."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(video.mean(dim=(1, 3, 4))).squeeze(1)


def target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["video"].mean(dim=(1, 2, 3, 4))


class Brightness:
    """The whole method: config section, model, data, step, validation and metrics."""

    name = "brightness"
    config_class = BrightnessConfig
    find_unused_parameters = False

    def metrics(self, cfg) -> MetricSpec:
        return MetricSpec(primary="val_mse", mode="min", reported=("train_loss", "train_mse", "val_mse"),
                          progress=("val_mse",))

    def build_model(self, cfg) -> nn.Module:
        return BrightnessRegressor(cfg.method.hidden)

    def data(self, cfg) -> ClipSource:
        return ClipSource(cfg)

    def param_groups(self, model: nn.Module, cfg) -> list[dict[str, Any]]:
        return all_parameters(model)

    def train_step(self, model: nn.Module, batch, cfg) -> StepOutput:
        loss = F.mse_loss(model(batch["video"]), target(batch))
        return StepOutput(loss, {"mse": loss.detach()}, batch_size=len(batch["video"]))

    @torch.no_grad()
    def validate(self, model: nn.Module, batches: Iterable, cfg) -> Evaluation:
        model.eval()
        errors = torch.cat([(model(b["video"]) - target(b)) ** 2 for b in batches])
        return Evaluation({"val_mse": float(errors.mean())}, {"val_errors.json": errors.tolist()})


BRIGHTNESS = Brightness()
CATALOG = METHODS.with_method(BRIGHTNESS)


def toy_config(synth, workdir, **sections):
    tree = {
        "name": "toy",
        "method": {"name": "brightness", "hidden": 8},
        "data": {"train_list": str(synth.train_list), "val_list": str(synth.val_list),
                 "num_classes": synth.num_classes, "num_segments": 2, "input_size": 32, "scale_size": 36,
                 "batch_size": 4, "decode_tasks": 2, "flip": False},
        "optim": {"lr": 0.05},
        "schedule": {"name": "constant"},
        "train": {"epochs": 3, "storage_path": str(workdir / "runs"), "log_every": 1, "run_name": "toy-run"},
        "scaling": {"num_workers": 1, "max_failures": 0},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return build_config(tree, methods=CATALOG)


def test_the_toy_satisfies_the_method_protocol():
    assert isinstance(BRIGHTNESS, Method)


def test_its_config_section_is_validated_with_its_key_path(tmp_path):
    with pytest.raises(ConfigError, match=r"method\.hidden: .*greater than or equal to 1"):
        build_config({"method": {"name": "brightness", "hidden": 0}}, methods=CATALOG)
    with pytest.raises(ConfigError, match=r"not a metric brightness reports; choose one of .*val_mse"):
        build_config({"method": {"name": "brightness"}, "train": {"checkpoint_metric": "val_top1"}}, methods=CATALOG)


def test_its_primary_metric_and_direction_select_checkpoints(tmp_path):
    cfg = build_config({"method": {"name": "brightness"}}, methods=CATALOG)
    assert cfg.checkpoint_metric == ("val_mse", "min")


def test_the_real_training_step_drives_its_loss_down_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = build_config({"method": {"name": "brightness"}, "optim": {"lr": 0.05}}, methods=CATALOG)
    model = BRIGHTNESS.build_model(cfg)
    batch = {"video": torch.randn(8, 2, 3, 16, 16) * torch.linspace(0.1, 2.0, 8)[:, None, None, None, None]
             + torch.linspace(-1, 1, 8)[:, None, None, None, None]}
    optimizer = torch.optim.SGD(BRIGHTNESS.param_groups(model, cfg), lr=0.05, momentum=0.9)
    first = None
    for _ in range(60):
        out = BRIGHTNESS.train_step(model, batch, cfg)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else float(out.loss.detach())
    assert float(out.loss.detach()) < 0.05 * first


@pytest.fixture(scope="module")
def toy_run(ray_local, synth_videos, tmp_path_factory):
    """Two epochs of the toy on Ray Train (one worker), then ``--resume`` to a third."""
    from ray import cloudpickle

    from actionray.platform.train import fit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/ modules
    workdir = tmp_path_factory.mktemp("toy")
    first = fit(toy_config(synth_videos, workdir, train={"epochs": 2}))
    resumed = fit(toy_config(synth_videos, workdir, train={"epochs": 3}), resume=True)
    return workdir, first, resumed


def test_it_trains_and_its_validation_error_falls(toy_run):
    _, first, resumed = toy_run
    history = resumed["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_mse"] < history[0]["val_mse"]
    assert {"train_loss", "train_mse", "val_mse", "lr", "clips_per_s"} <= set(history[-1])
    assert "train_top1" not in history[-1]  # nothing of a classifier was invented for it


def test_it_resumes_from_its_checkpoint_with_the_checkpointed_state(toy_run):
    from actionray.platform.checkpoint import load_state

    _, first, resumed = toy_run
    assert resumed["start_epoch"] == 2 and resumed["history"][:2] == first["history"]
    state = load_state(first["latest_checkpoint"])
    assert state["epoch"] == 2 and set(state["model"]) == {"head.0.weight", "head.0.bias", "head.2.weight",
                                                           "head.2.bias"}
    assert resumed["best"]["metric"] == "val_mse"
    assert resumed["best"]["value"] == min(h["val_mse"] for h in resumed["history"])


def test_it_is_tracked_in_one_mlflow_run_with_one_value_per_epoch(toy_run):
    from mlflow.tracking import MlflowClient

    workdir, first, resumed = toy_run
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert resumed["mlflow_run_id"] == first["mlflow_run_id"]
    run = client.get_run(resumed["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "brightness"
    assert run.data.params["method.hidden"] == "8"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_mse")]
    assert steps == [1, 2, 3]
    assert "val_errors.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_it_can_be_swept_on_its_own_knob_and_metric(ray_local, synth_videos, tmp_path):
    from ray import cloudpickle

    from actionray.platform.tune import run_sweep
    from actionray.search_spaces.spec import space_from_mapping

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # two trials at once: each needs 0.5 + 1 decode CPU + its driver's 0.25 of the session's 4
    cfg = toy_config(synth_videos, tmp_path, train={"epochs": 1, "run_name": None}, data={"decode_tasks": 1},
                     scaling={"cpus_per_worker": 0.5})
    space = space_from_mapping("toy_hidden", {"method.hidden": {"grid": [2, 16]}}, "<test>", catalog=CATALOG)
    summary = run_sweep(cfg, space, num_samples=1, scheduler="fifo", max_concurrent=2, echo=lambda _: None)
    table = summary["table"]
    assert sorted(table["method.hidden"].tolist()) == ["16", "2"]
    assert "val_mse" in table.columns and table["val_mse"].notna().all()
    assert summary["best"]["metrics"]["val_mse"] == table["val_mse"].min()  # min: the method's direction
