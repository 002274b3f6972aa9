"""Decoding scales out: on a real multi-node Ray cluster (separate raylets on this machine) a `ray job submit` of
`actionray train` keeps its training worker on the "GPU" node and decodes on the CPU decode node only, and the
run's own records show each epoch whole (docs/cluster.md)."""

from __future__ import annotations

import json
import sys
import time

import pytest
import yaml

from local_cluster import LocalCluster
from test_train import tiny_config


@pytest.fixture(scope="module")
def cluster():
    """Head = the "GPU" node (1 CPU, resource ``trainer``), plus one CPU-only decode node (``actionray_decode``)."""
    local = LocalCluster()
    try:
        local.start(num_cpus=1, resources={"trainer": 1})
        local.add_node(num_cpus=2, resources={"actionray_decode": 1})
        yield local
    finally:
        local.stop()


def submit(cluster: LocalCluster, tree: dict, folder, uri: str) -> str:
    """`ray job submit` of `actionray train` on ``tree``; returns the job's logs (fails the test if the job did).

    No ``--working-dir``: every path is absolute, and the nodes of this one-machine cluster share one session
    folder, so a node that drops its copy of an uploaded working dir would delete the driver's (on a real
    cluster each node has its own disk)."""
    folder.mkdir()
    (folder / "run.yaml").write_text(yaml.safe_dump(tree))
    submission = f"actionray-multinode-{int(time.time() * 1000)}"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri}}
    done = cluster.ray("job", "submit", "--submission-id", submission,
                       "--runtime-env-json", json.dumps(runtime_env), "--",
                       sys.executable, "-m", "actionray", "train", str(folder / "run.yaml"), timeout=900)
    logs = cluster.ray("job", "logs", submission).stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return logs


@pytest.mark.slow
def test_decode_runs_on_the_cpu_decode_node_and_every_epoch_is_whole(cluster, synth_videos, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(synth_videos, tmp_path, data={"decode_tasks": "auto", "decode_nodes": "cpu_only"},
                      train={"epochs": 2}, scaling={"worker_resources": {"trainer": 1}})
    tree = cfg.to_dict()
    tree["tracking"]["uri"] = None  # from MLFLOW_TRACKING_URI in the job's runtime env
    logs = submit(cluster, tree, tmp_path / "job", uri)
    assert "[actionray] epoch 2/2" in logs

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("actionray").experiment_id])
    assert run.info.status == "FINISHED"
    decoded = json.loads(open(client.download_artifacts(run.info.run_id, "data/decoded_train.json",
                                                        str(tmp_path))).read())
    (decode_node,) = cluster.node_id_with("actionray_decode")
    (gpu_node,) = cluster.node_id_with("trainer")
    rows = len(synth_videos.train_list.read_text().splitlines())
    assert sorted(decoded) == ["1", "2"]
    for epoch in decoded.values():
        # every list entry decoded exactly once per epoch, and all of it on the decode node
        assert epoch["decoded"] == epoch["num_rows"] == rows and epoch["repeated"] == 0
        assert epoch["nodes"] == {decode_node: rows} and gpu_node not in epoch["nodes"]
    assert run.data.metrics["skipped_train"] == 0
