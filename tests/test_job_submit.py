"""`ray job submit` of `actionray train` to a real head node started for this test (docs/training.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def client_env() -> dict[str, str]:
    """CLI clients of a token-auth cluster need RAY_AUTH_MODE=token (platform_apis 5.3)."""
    env = dict(os.environ, RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def head():
    """A head node with its own ports and temp dir (no clash with the session's Ray); stopped by its pid only."""
    temp = Path(tempfile.mkdtemp(prefix="arjob", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    gcs, dashboard, agent, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr, client = free_ports(9)
    command = [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
               "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
               f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
               f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
               f"--ray-client-server-port={client}"]
    log = open(temp / "head.log", "w")
    # A loaded machine can take over a minute to bring the dashboard (the job server) up; Ray's default is 60 s.
    env = dict(client_env(), RAY_DASHBOARD_STARTUP_TIMEOUT_S="300")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 360
    while time.time() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=client_env(),
                               capture_output=True, text=True)
        if probe.returncode == 0:
            break
        if process.poll() is not None:
            pytest.fail(f"ray start --head exited: {(temp / 'head.log').read_text()[-2000:]}")
        time.sleep(2)
    else:
        pytest.fail(f"job server at {address} did not come up: {probe.stderr[-2000:]}")
    yield address
    # Stop only this head: SIGTERM to our --block process group (a clean stop drains ~30 s, so force after 10 s),
    # then any process still naming our private temp dir (daemons that left the group). Never `ray stop`.
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid in processes_mentioning(str(temp)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (our head's unique temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


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
