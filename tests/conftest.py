"""Shared fixtures: one fresh local Ray instance per test session and small generated video data sets."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from actionray.synthetic.videos import SynthDataset

# Quiet, deterministic Ray for tests; set before ray is imported anywhere.
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
# Train V2's controller polls its workers every 2 s by default, so a finished run is noticed up to 2 s late:
# measured ~2 s of wall time per fit (a test suite runs dozens); failures are noticed sooner too.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


@pytest.fixture(scope="session")
def ray_local():
    """A fresh local Ray instance (never an existing cluster): 4 logical CPUs so Train workers leave room
    for Ray Data decode tasks."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False,
             logging_level=logging.WARNING, object_store_memory=1 << 30)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory) -> "SynthDataset":
    """A small generated mp4 data set (every built-in class, 4 videos each, 24 frames, 64x48)."""
    from actionray.synthetic.videos import generate_dataset

    out = tmp_path_factory.mktemp("synth_mp4")
    return generate_dataset(out, videos_per_class=4, frames=24, size=(64, 48), seed=0, format="mp4")


@pytest.fixture(scope="session")
def synth_frames(tmp_path_factory) -> "SynthDataset":
    """The same kind of data set stored as JPEG frame folders (img_00001.jpg ...)."""
    from actionray.synthetic.videos import generate_dataset

    out = tmp_path_factory.mktemp("synth_frames")
    return generate_dataset(out, videos_per_class=2, frames=16, size=(64, 48), seed=1, format="frames")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run a test inside its own folder so embedded defaults (mlflow.db, runs/) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
