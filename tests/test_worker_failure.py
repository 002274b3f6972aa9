"""A training worker process dies mid-run; FailureConfig restarts the group from the last checkpoint."""

from __future__ import annotations

from test_train import tiny_config


def test_killed_worker_restarts_from_checkpoint_and_finishes_every_epoch(ray_local, synth_videos, workdir,
                                                                         monkeypatch):
    from actionray.platform.train import fit

    marker = workdir / "killed"
    # Fault injection: rank 1 calls os._exit(1) right after reporting epoch 1 (once: the marker file).
    monkeypatch.setenv("ACTIONRAY_FAULT_AFTER_EPOCH", "1")
    monkeypatch.setenv("ACTIONRAY_FAULT_RANK", "1")
    monkeypatch.setenv("ACTIONRAY_FAULT_MARKER", str(marker))
    cfg = tiny_config(synth_videos, workdir, train={"epochs": 2, "val_every": 2},
                      scaling={"num_workers": 2, "max_failures": 1}, tracking={"enabled": False})
    summary = fit(cfg)
    assert marker.read_text().startswith("pid ")  # a worker really died
    assert summary["start_epoch"] == 1  # the restarted group resumed after epoch 1 ...
    assert [h["epoch"] for h in summary["history"]] == [1, 2]  # ... and epoch 1's record survived
    assert summary["final"]["epoch"] == 2 and "val_top1" in summary["final"]
