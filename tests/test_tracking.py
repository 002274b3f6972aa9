"""MLflow tracking never ends a run: an unreachable server costs a warning, not the training."""

from __future__ import annotations

import socket
import time

import pytest

from actionray.platform.system_metrics import node_metric_key, start_node_monitor, stop_node_monitor
from actionray.platform.tracking import Tracker, configure_http_env, start_run


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here once the socket is closed


@pytest.fixture
def fast_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def test_http_defaults_are_short_but_user_values_win(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    values = configure_http_env()
    assert values["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1" and values["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"


def test_unreachable_server_warns_once_and_turns_tracking_off(fast_http, capsys):
    tracker = Tracker(closed_port_uri(), "some-run")
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_metrics({"loss": 0.5}, step=2)
    tracker.end()
    err = capsys.readouterr().err
    assert err.count("WARNING: MLflow") == 1 and "training continues" in err
    assert not tracker.active


def test_start_run_with_unreachable_server_returns_an_inactive_tracker(fast_http, workdir, capsys):
    from actionray.config import build_config

    cfg = build_config({"method": {"name": "tsn"}, "tracking": {"uri": closed_port_uri()}})
    tracker = start_run(cfg, "run")
    assert not tracker.active and tracker.run_id is None
    assert "create run failed" in capsys.readouterr().err


def test_start_run_logs_flattened_config_params_and_provenance_tags(workdir):
    from mlflow.tracking import MlflowClient

    from actionray.config import build_config

    cfg = build_config({"method": {"name": "tsn"}, "name": "cfgname", "optim": {"lr": 0.02}})
    tracker = start_run(cfg, "run-a", parent_run_id="parent123", tags={"variant": "gtm1-ccl0"})
    run = MlflowClient(cfg.tracking.uri).get_run(tracker.run_id)
    assert run.data.params["optim.lr"] == "0.02" and run.data.params["data.num_segments"] == "8"
    assert len(run.data.params) == len(cfg.flat())
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == "parent123" and tags["variant"] == "gtm1-ccl0"
    assert tags["config"] == "cfgname" and tags["method"] == "tsn" and "torch.version" in tags
    assert run.info.artifact_uri.startswith((workdir / "mlartifacts").as_uri())


@pytest.mark.slow
def test_node_monitor_logs_system_series_under_its_node_and_stops_at_once(workdir):
    """MLflow's system-metrics monitor on a real run: CPU/memory series under system/node<k>/, a stop that does
    not wait for the sampling interval, and no monitor at all when tracking or the interval is off."""
    from mlflow.tracking import MlflowClient

    from actionray.config import build_config

    cfg = build_config({"method": {"name": "tsn"}})
    run_id = start_run(cfg, "system-metrics").run_id
    assert start_node_monitor(cfg.tracking.uri, run_id, 0, None) is None
    assert start_node_monitor(None, run_id, 0, 1.0) is None
    monitor = start_node_monitor(cfg.tracking.uri, run_id, 3, 0.2)
    time.sleep(1.5)
    stop_node_monitor(monitor)
    client = MlflowClient(cfg.tracking.uri)
    cpu = client.get_metric_history(run_id, node_metric_key(3, "cpu_utilization_percentage"))
    memory = client.get_metric_history(run_id, node_metric_key(3, "system_memory_usage_megabytes"))
    assert len(cpu) >= 2 and sorted(m.step for m in cpu) == list(range(len(cpu)))
    assert all(0.0 <= m.value <= 100.0 for m in cpu) and all(m.value > 0 for m in memory)
    assert {key.split("/")[1] for key in client.get_run(run_id).data.metrics if key.startswith("system/")} == {"node3"}

    slow = start_node_monitor(cfg.tracking.uri, run_id, 3, 60.0)
    time.sleep(0.2)
    start = time.perf_counter()
    stop_node_monitor(slow)
    assert time.perf_counter() - start < 2.0  # the thread wakes at once, not after the 60 s interval
    stop_node_monitor(slow)  # a second stop is harmless


def test_training_finishes_when_the_tracking_server_is_down(ray_local, synth_videos, workdir, fast_http):
    from test_train import tiny_config

    from actionray.platform.train import fit

    cfg = tiny_config(synth_videos, workdir, tracking={"uri": closed_port_uri()})
    summary = fit(cfg)
    assert summary["final"]["epoch"] == 1 and summary["mlflow_run_id"] is None


@pytest.mark.slow
def test_ui_serves_the_embedded_store_on_localhost(workdir):
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    for _ in range(3):  # a free port can be taken before the server binds it: retry on a conflict
        port = int(closed_port_uri().rsplit(":", 1)[1])
        log = open(workdir / "ui.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "actionray", "ui", "--port", str(port)], cwd=workdir,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline, body = time.time() + 240, ""  # MLflow server start-up: ~20 s idle, minutes on a loaded box
            while time.time() < deadline and process.poll() is None:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read().decode()
                    break
                except OSError:
                    time.sleep(1)
            if body == "OK" and process.poll() is None:  # alive: the answer was ours, not a port thief's
                assert (workdir / "mlflow.db").exists()  # the embedded store in the working directory
                printed = (workdir / "ui.log").read_text()
                assert "runs of experiment 'actionray'" in printed and "'Columns'" in printed  # where, and how
                return
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            log.close()
        if "in use" not in (workdir / "ui.log").read_text().lower():
            break
    pytest.fail((workdir / "ui.log").read_text()[-3000:])
