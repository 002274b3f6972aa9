"""`ray job submit` of `actionray train` to a real head node started for this test (docs/training.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from local_cluster import RAY, LocalCluster, client_env


@pytest.fixture(scope="module")
def head():
    """A head node with its own ports and temp dir (no clash with the session's Ray); stopped by its pid only."""
    cluster = LocalCluster()
    try:
        yield cluster.start(num_cpus=4)
    finally:
        cluster.stop()


@pytest.mark.slow
def test_submitted_training_job_succeeds_prints_progress_and_logs_to_mlflow(head, synth_videos, tmp_path):
    from mlflow.tracking import MlflowClient

    from test_train import tiny_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(synth_videos, tmp_path, tracking={"uri": None, "artifact_location": str(tmp_path / "art")})
    tree = cfg.to_dict()
    tree["tracking"]["uri"] = None  # taken from MLFLOW_TRACKING_URI in the job's runtime env
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "tiny.yaml").write_text(yaml.safe_dump(tree))
    submission = f"actionray-test-{int(time.time())}"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri}}
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", head, "--submission-id", submission, "--working-dir", str(job_dir),
         "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "-m", "actionray", "train", "tiny.yaml"],
        env=client_env(), capture_output=True, text=True, timeout=600)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    status = subprocess.run([RAY, "job", "status", "--address", head, submission], env=client_env(),
                            capture_output=True, text=True)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    logs = subprocess.run([RAY, "job", "logs", "--address", head, submission], env=client_env(),
                          capture_output=True, text=True).stdout
    assert "[actionray] epoch 1/1 | loss" in logs
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("actionray").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "val_top1" in runs[0].data.metrics
