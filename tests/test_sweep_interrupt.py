"""An interrupted sweep: Ctrl+C (SIGINT) mid-sweep, then ``--resume`` finishes it without redoing finished trials.

Both runs are real ``actionray tune`` processes with their own local Ray, as a user would run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_tune import DEMO, tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray, never a cluster
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def children_of(client) -> tuple[object, list]:
    """The sweep's MLflow parent run and its child runs (None, [] before the parent exists)."""
    exp = client.get_experiment_by_name("actionray")
    if exp is None:
        return None, []
    parents = client.search_runs([exp.experiment_id], "tags.`actionray.kind` = 'sweep'")
    if not parents:
        return None, []
    parent = parents[0]
    return parent, client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


@pytest.mark.slow
def test_interrupted_sweep_resumes_and_keeps_finished_trials(synth_videos, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "lr_pair.yaml"
    space.write_text("description: two learning rates\noptim.lr: {grid: [0.003, 0.03]}\n")
    sets = [arg for o in tiny_overrides(synth_videos, tmp_path, uri) for arg in ("--set", o)]
    argv = [sys.executable, "-m", "actionray", "tune", DEMO, "--space", str(space), "--num-samples", "1",
            "--scheduler", "none", "--max-concurrent", "1", *sets]
    client = MlflowClient(uri)

    sweep = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 300
        finished, running = [], []
        while time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(2)
            if (tmp_path / "mlflow.db").exists():
                # Child statuses stay RUNNING until the sweep ends (the driver writes them), so "done" is the
                # epoch metric; with one trial at a time a second child exists only once the first is done.
                _, children = children_of(client)
                finished = [c for c in children if c.data.metrics.get("epoch") == 2]
                running = [c for c in children if c.data.metrics.get("epoch", 0) < 2]
                if finished and running:
                    break
        if not (finished and running):
            sweep.kill()
            pytest.fail("no moment with one trial finished and the next running:\n"
                        + sweep.communicate(timeout=60)[0][-4000:])
        # Ctrl+C while the second trial trains: Tune's clean-up marks that trial TERMINATED in the results it
        # returns, so only the saved experiment state tells that it did not finish.
        sweep.send_signal(signal.SIGINT)
        out, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, out[-3000:]
    assert "--resume" in out
    parent, children = children_of(client)
    assert parent.info.status == "KILLED"
    first = finished[0]
    statuses = {c.info.run_name: c.info.status for c in children}
    assert statuses == {first.info.run_name: "FINISHED", running[0].info.run_name: "KILLED"}, statuses

    resumed = subprocess.run([*argv, "--resume"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    parent_after, children = children_of(client)
    assert parent_after.info.run_id == parent.info.run_id and parent_after.info.status == "FINISHED"
    seen = [(c.info.run_name, c.info.status, c.data.metrics.get("epoch")) for c in children]
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}, (seen, resumed.stdout[-3000:])
    assert sorted(float(c.data.params["optim.lr"]) for c in children) == [0.003, 0.03]
    # the trial finished before the interruption was not trained again: same run, one value per epoch
    history = client.get_metric_history(first.info.run_id, "val_top1")
    assert [m.step for m in history] == [1, 2]
    assert "trial-" in resumed.stdout and "retrain it with" in resumed.stdout
