"""A training worker process dies mid-run; FailureConfig restarts the group from the last checkpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from test_train import tiny_config


class KillWorkerOnce:
    """Worker hook: rank ``rank`` exits hard right after reporting epoch ``epoch`` (once: the marker file)."""

    def __init__(self, epoch: int, rank: int, marker: Path) -> None:
        self.epoch, self.rank, self.marker = epoch, rank, marker

    def after_epoch(self, epoch: int, rank: int) -> None:
        if epoch != self.epoch or rank != self.rank or self.marker.exists():
            return
        import ray.train

        # report() returns once the checkpoint is uploaded, but the controller registers it asynchronously: wait
        # until it has, so the test checks restart semantics, not this race.
        ray.train.get_all_reported_checkpoints(timeout_s=120)
        self.marker.write_text(f"pid {os.getpid()} killed after epoch {epoch}\n")
        os._exit(1)


def test_killed_worker_restarts_from_checkpoint_and_finishes_every_epoch(ray_local, synth_videos, workdir):
    from ray import cloudpickle

    from actionray.platform.train import fit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ modules
    marker = workdir / "killed"
    cfg = tiny_config(synth_videos, workdir, train={"epochs": 2, "val_every": 2},
                      scaling={"num_workers": 2, "max_failures": 1}, tracking={"enabled": False})
    summary = fit(cfg, worker_hooks=[KillWorkerOnce(1, 1, marker)])
    assert marker.read_text().startswith("pid ")  # a worker really died
    assert summary["start_epoch"] == 1  # the restarted group resumed after epoch 1 ...
    assert [h["epoch"] for h in summary["history"]] == [1, 2]  # ... and epoch 1's record survived
    assert summary["final"]["epoch"] == 2 and "val_top1" in summary["final"]
