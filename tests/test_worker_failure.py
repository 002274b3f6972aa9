"""A training worker process dies in the middle of an epoch; FailureConfig restarts the group from the last
checkpoint and the run finishes with every epoch whole."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import test_train
from test_train import RecordStartState, assert_same_training_state, metric_steps, mlflow_artifact, tiny_config


class KillWorkerMidEpoch:
    """Worker hook: rank ``rank`` exits hard after its ``step``-th step of epoch ``epoch`` (1-based), once (the
    marker file), i.e. in the middle of an epoch, with part of it trained and nothing of it saved."""

    def __init__(self, epoch: int, step: int, rank: int, marker: Path) -> None:
        self.epoch, self.step, self.rank, self.marker = epoch, step, rank, marker

    def after_step(self, epoch: int, step: int, rank: int) -> None:
        if (epoch, step, rank) != (self.epoch, self.step, self.rank) or self.marker.exists():
            return
        import ray.train

        # report() returns once the checkpoint is uploaded, but the controller registers it asynchronously: wait
        # until it has, so the test checks restart semantics, not this race.
        ray.train.get_all_reported_checkpoints(timeout_s=120)
        self.marker.write_text(f"pid {os.getpid()} killed at step {step} of epoch {epoch}\n")
        os._exit(1)


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_restarts_from_the_checkpoint_and_loses_nothing(ray_local, synth_videos, workdir):
    from ray import cloudpickle

    from actionray.platform.train import fit

    from actionray.platform.checkpoint import load_state

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ modules
    cloudpickle.register_pickle_by_value(test_train)
    marker = workdir / "killed"
    recorder = RecordStartState(workdir / "started")
    Path(recorder.folder).mkdir()
    cfg = tiny_config(synth_videos, workdir, train={"epochs": 2, "val_every": 2},
                      scaling={"num_workers": 2, "max_failures": 1})
    # 24 clips / 2 workers / batch 4 = 3 steps per worker and epoch: rank 1 dies after step 2 of epoch 2
    summary = fit(cfg, worker_hooks=[KillWorkerMidEpoch(2, 2, 1, marker), recorder])
    assert "killed at step 2 of epoch 2" in marker.read_text()  # a worker really died, mid-epoch
    assert summary["start_epoch"] == 1  # the restarted group resumed after epoch 1 ...
    assert [h["epoch"] for h in summary["history"]] == [1, 2]  # ... and epoch 1's record survived
    assert summary["final"]["epoch"] == 2 and "val_top1" in summary["final"]
    # Both restarted workers trained epoch 2 from exactly the epoch-1 checkpoint's weights and optimizer state.
    states = [load_state(p) for p in Path(summary["run_path"]).rglob("state.pt")]
    checkpoint = next(s for s in states if s["epoch"] == 1)
    restarted = recorder.records(epoch=1)
    assert len(restarted) == 2 and len(recorder.records(epoch=0)) == 2
    for started in restarted:
        assert_same_training_state(started, checkpoint)
    # MLflow holds each epoch once: epoch 1 from before the failure, epoch 2 from the restarted group.
    assert metric_steps(cfg.tracking.uri, summary["mlflow_run_id"], "train_loss") == [1, 2]
    # val_every 2, and the first epoch of a start validates too (every report carries the score attribute)
    assert metric_steps(cfg.tracking.uri, summary["mlflow_run_id"], "val_top1") == [1, 2]
    # Every list entry of both epochs reached a decode task: the restarted pass of epoch 2 is whole.
    decoded = json.loads(Path(mlflow_artifact(cfg, summary["mlflow_run_id"], "data/decoded_train.json")).read_text())
    assert [decoded[e]["decoded"] for e in ("1", "2")] == [24, 24]
