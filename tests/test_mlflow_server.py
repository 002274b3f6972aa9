"""A real ``mlflow server`` (SQLite, 127.0.0.1, free port, 1 worker): an ablation logs to it over HTTP, and its
REST API shows the parent/child structure, flat params, metric curves and proxied artifacts."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from actionray.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo_tsn.yaml")

pytestmark = pytest.mark.slow  # a server process and Ray Train runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, endpoint: str, **query) -> dict:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}" if query else f"{base}{endpoint}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def post(base: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start_server(root: Path, port: int) -> tuple[subprocess.Popen | None, str]:
    """``mlflow server`` on ``port``: (process, base URL) once it answers /health, or (None, log) when it exits
    first (e.g. the port was taken between ``free_port`` and the server's bind)."""
    log_file = root / f"server-{port}.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                # Alive after answering: the answer came from our server, not a process that took the port.
                if response.read().strip() == b"OK" and process.poll() is None:
                    return process, base
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    process.wait()
    return None, log_file.read_text()[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free port (a new one if another process took it first); yields its base URL;
    stopped (this process only) at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    for _ in range(3):
        process, base = start_server(root, free_port())
        if process is not None or "in use" not in base.lower():
            break
    if process is None:
        pytest.fail(f"mlflow server did not start: {base}")
    yield base
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def logged(server, ray_local, synth_videos, tmp_path_factory):
    """A one-axis, two-cell ablation (one seed) logged to the server; returns REST views of parent and children."""
    from test_tune import tiny_overrides

    root = tmp_path_factory.mktemp("server_ablation")
    overrides = [o for o in tiny_overrides(synth_videos, root, server) if not o.startswith("tracking.artifact")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ablate", DEMO, "--grid", "method.label_smoothing=0.0,0.1", "--name", "ls-server",
                     *[a for o in overrides for a in ("--set", o)]])
    exp = get(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="actionray")["experiment"]
    found = post(server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]], "filter": "tags.`actionray.kind` = 'ablation'"})["runs"]
    parent = found[0]
    children = post(server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]],
        "filter": f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'"})["runs"]
    return {"code": code, "parent": parent, "children": children, "base": server, "out": out.getvalue()}


def as_dict(items: list[dict]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def test_server_shows_one_parent_with_a_child_per_cell(logged):
    assert logged["code"] == 0, logged["out"]
    assert logged["parent"]["info"]["run_name"] == "ls-server"
    variants = {as_dict(c["data"]["tags"])["variant"] for c in logged["children"]}
    assert variants == {"label_smoothing0.0", "label_smoothing0.1"}


def test_children_carry_flat_config_params_and_identical_metric_names(logged):
    for child in logged["children"]:
        params = as_dict(child["data"]["params"])
        assert params["method.name"] == "tsn" and params["method.label_smoothing"] in ("0.0", "0.1")
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert metrics >= {"val_top1", "val_top5", "val_mean_class_acc", "val_loss", "train_loss", "epoch"}


def test_metric_history_has_one_point_per_epoch(logged):
    child = logged["children"][0]
    history = get(logged["base"], "/api/2.0/mlflow/metrics/get-history", run_id=child["info"]["run_id"],
                  metric_key="val_top1").get("metrics", [])
    assert sorted(m["step"] for m in history) == [1, 2]  # train.epochs = 2


def test_parent_artifacts_are_proxied_by_the_server_and_listed(logged):
    parent = logged["parent"]
    assert parent["info"]["artifact_uri"].startswith("mlflow-artifacts:")  # uploaded through the server
    files = get(logged["base"], "/api/2.0/mlflow/artifacts/list", run_id=parent["info"]["run_id"],
                path="ablation")["files"]
    assert {f["path"] for f in files} >= {"ablation/table.md", "ablation/table.csv", "ablation/table.html",
                                          "ablation/val_top1.png"}


def test_parent_tags_let_the_ui_filter_the_group(logged):
    tags = as_dict(logged["parent"]["data"]["tags"])
    assert tags["actionray.kind"] == "ablation" and tags["actionray.group"] == "ls-server"
    assert tags["axis.label_smoothing"] == "0.0,0.1" and tags["actionray.baseline"] == "label_smoothing0.0"
