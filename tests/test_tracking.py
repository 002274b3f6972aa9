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


def _lists(folder, train_lines: str, val_lines: str = "v1.mp4 20 0\nv2.mp4 20 1\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train_lines)
    (folder / "val.txt").write_text(val_lines)
    return {"train_list": str(folder / "train.txt"), "val_list": str(folder / "val.txt"), "num_classes": 2}


def test_start_run_logs_the_lists_it_reads_as_mlflow_dataset_inputs(workdir):
    """Data provenance (issue 23): each list a run reads is an MLflow dataset input with a content digest (of the
    file and data.root), its counts (entries; rows per epoch with data.clips_per_video) and its context."""
    import json

    from mlflow.tracking import MlflowClient

    from actionray.config import build_config
    from actionray.platform.data.source import content_digest

    data = _lists(workdir / "lists", "a.mp4 30 0\nb.mp4 30 1\nc.mp4 30 0\n")
    cfg = build_config({"method": {"name": "tsn"}, "data": {**data, "clips_per_video": 2}})
    run = MlflowClient(cfg.tracking.uri).get_run(start_run(cfg, "run-a").run_id)
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation"}
    train, val = inputs["train"], inputs["validation"]
    assert (train.name, val.name) == ("train.txt", "val.txt")
    assert train.digest == content_digest(data["train_list"]) and len(train.digest) == 16
    assert json.loads(train.profile) == {"entries": 3, "rows_per_epoch": 6}
    assert json.loads(val.profile) == {"entries": 2, "rows_per_epoch": 2}
    assert json.loads(train.source)["uri"] == data["train_list"]
    # one changed line is other data; the same content elsewhere is the same data
    (workdir / "copy").mkdir()
    (workdir / "copy" / "train.txt").write_text("a.mp4 30 0\nb.mp4 30 1\nc.mp4 30 0\n")
    (workdir / "copy" / "edited.txt").write_text("a.mp4 30 0\nb.mp4 30 1\nc.mp4 31 0\n")
    assert content_digest(workdir / "copy" / "train.txt") == train.digest
    assert content_digest(workdir / "copy" / "edited.txt") != train.digest
    assert content_digest(data["train_list"], {"root": "/data/a"}) != content_digest(data["train_list"],
                                                                                     {"root": "/data/b"})


def test_report_says_when_the_rows_of_a_table_used_different_data(workdir):
    """`actionray report` (platform.report.report) compares the dataset-input digests of the child runs: an
    ablation whose cells read the same lists gets no note; one whose cell read an edited list is named."""
    from actionray.config import build_config
    from actionray.platform.report import KIND_TAG, report
    from actionray.platform.tracking import create_run

    same = _lists(workdir / "same", "a.mp4 30 0\nb.mp4 30 1\n")
    edited = _lists(workdir / "edited", "a.mp4 30 0\nb.mp4 30 1\nc.mp4 30 1\n")

    def ablation(name, cells):
        base = build_config({"method": {"name": "tsn"}, "data": same})
        t = base.tracking
        parent = create_run(t.uri, t.experiment, t.artifact_location, name,
                            {KIND_TAG: "ablation", "actionray.metrics": '["val_top1"]',
                             "actionray.percent": '["val_top1"]', "actionray.primary": "val_top1"})
        for k, (variant, data) in enumerate(cells):
            cfg = build_config({"method": {"name": "tsn"}, "data": data})
            child = start_run(cfg, f"{name}-{variant}", parent_run_id=parent.run_id,
                              tags={"variant": variant, "seed": 0, "actionray.cell": k})
            child.log_metrics({"val_top1": 0.5 + 0.1 * k}, step=1)
            child.end("FINISHED")
        parent.end("FINISHED")
        return report("ablation", parent.run_id, tracking_uri=t.uri, experiment=t.experiment)

    agreed = ablation("abl-same", [("base", same), ("gtm1", same)])
    assert "val_top1" in agreed and "different data" not in agreed
    differs = ablation("abl-diff", [("base", same), ("gtm1", edited)])
    assert "WARNING: the rows of this table used different data" in differs
    lines = [line for line in differs.splitlines() if line.startswith("- ")]
    assert len(lines) == 2 and any(line.endswith(": gtm1 seed 0") for line in lines)
    assert any(line.endswith(": base seed 0") for line in lines)


def test_a_feature_sets_inputs_digest_gt_json_with_the_runs_split(tmp_path):
    """ACM-Net/FTCL runs read gt.json + a split: the digest covers the chosen videos, so another holdout seed or
    the test selection is other data, and the counts are the split's videos."""
    from actionray.config import build_config
    from actionray.platform.data.feature_source import FeatureSource
    from actionray.synthetic.features import write_synthetic_feature_set

    root = tmp_path / "features"
    write_synthetic_feature_set(root, num_classes=4, train_videos=20, test_videos=6, feature_dim=16, min_snippets=30,
                                max_snippets=40, instance_snippets=(4, 8), seed=0)

    def inputs(**method):
        cfg = build_config({"method": {"name": "acmnet", "feature_root": str(root), "feature_dim": 16, **method},
                            "data": {"num_classes": 4}})
        return {i.context: i for i in FeatureSource(cfg).inputs()}

    holdout, again, other_seed, test = inputs(), inputs(), inputs(split_seed=1), inputs(selection="test")
    assert holdout["train"].counts["videos"] == 18 and holdout["validation"].counts["videos"] == 2
    assert holdout["train"].source == str(root / "gt.json")
    assert {k: v.digest for k, v in holdout.items()} == {k: v.digest for k, v in again.items()}
    assert holdout["validation"].digest != other_seed["validation"].digest
    assert test["validation"].name.endswith("gt.json:test") and test["validation"].counts["videos"] == 6
    assert len({holdout["train"].digest, other_seed["train"].digest, test["train"].digest}) == 3
