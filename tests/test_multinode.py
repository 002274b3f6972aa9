"""Decoding scales out and training survives lost nodes, on a real multi-node Ray cluster (separate raylets on this
machine), through `ray job submit` of `actionray train` (docs/cluster.md, docs/training.md):

- an elastic run (`scaling.num_workers: [1, 2]`) loses the node of one of its two workers mid-run and finishes
  with one, every epoch whole;
- the training worker stays on the "GPU" node and decoding runs on the CPU decode nodes only; one of the two is
  killed while it decodes, decoding goes on on the other, every epoch whole (one job shows both: each job costs
  ~70 s).

The run's own records (the pipeline monitor's data/decoded_train.json, MLflow) are the evidence."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from local_cluster import LocalCluster, command_line, session_processes
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


def submit(cluster: LocalCluster, tree: dict, folder, uri: str, *, during=None) -> str:
    """`ray job submit` of `actionray train` on ``tree``; returns the job's logs (fails the test if the job did).
    ``during``: called while the job runs, with the storage folder of its checkpoints (e.g. to kill a node).

    No ``--working-dir``: every path is absolute, and the nodes of this one-machine cluster share one session
    folder, so a node that drops its copy of an uploaded working dir would delete the driver's (on a real
    cluster each node has its own disk)."""
    folder.mkdir()
    (folder / "run.yaml").write_text(yaml.safe_dump(tree))
    submission = f"actionray-multinode-{int(time.time() * 1000)}"
    # A restarted group waits at most 20 s (Ray's default 60) for workers that cannot start: after a node is
    # lost, Train may first ask for the old size while the cluster still lists that node.
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20"}}
    started = cluster.ray("job", "submit", "--no-wait", "--submission-id", submission,
                          "--runtime-env-json", json.dumps(runtime_env), "--",
                          sys.executable, "-m", "actionray", "train", str(folder / "run.yaml"))
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    if during is not None:
        during(Path(tree["train"]["storage_path"]))
    status = wait_for_job(cluster, submission, timeout=900)
    logs = cluster.ray("job", "logs", submission).stdout
    assert status == "SUCCEEDED", logs[-6000:]
    return logs


def wait_for_job(cluster: LocalCluster, submission: str, timeout: float) -> str:
    """The job's final status (SUCCEEDED, FAILED, STOPPED) once it has one."""
    endings = {f"Job '{submission}' succeeded": "SUCCEEDED", f"Job '{submission}' failed": "FAILED",
               f"Job '{submission}' was stopped": "STOPPED"}  # `ray job status` (ray/dashboard/modules/job/cli.py)
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = cluster.ray("job", "status", submission)
        for text, status in endings.items():
            if text in listed.stdout + listed.stderr:
                return status
        time.sleep(3)
    raise AssertionError(f"job {submission} did not end within {timeout:.0f} s")


def kill_after_checkpoint(cluster: LocalCluster, node, world_size: int | None = None, timeout: float = 600):
    """A ``during`` callback: once the run has a complete checkpoint (of a group of ``world_size`` workers, when
    given), kill ``node``. Each checkpoint is read once, when it is complete."""
    from actionray.platform.checkpoint import checkpoint_folders, load_state

    def during(storage: Path) -> None:
        sizes: dict[Path, int] = {}  # complete checkpoint folder -> its group's world size
        deadline = time.time() + timeout
        while not any(world_size in (None, size) for size in sizes.values()):
            assert time.time() < deadline, f"no such checkpoint under {storage} within {timeout:.0f} s"
            time.sleep(0.5)
            runs = [run for run in storage.iterdir() if run.is_dir()] if storage.is_dir() else []
            for folder in (f for run in runs for f in checkpoint_folders(run) if f not in sizes):
                try:
                    sizes[folder] = load_state(folder).get("world_size", 0)
                except Exception:  # noqa: BLE001 -- not there yet, or still being copied into storage
                    continue
        cluster.kill(node)

    return during


def kill_while_decoding(cluster: LocalCluster, node, timeout: float = 600):
    """A ``during`` callback: kill ``node`` the moment one of its processes runs a decode task (its Ray process
    title names ``_decode_batch``, pipeline.py). A kill after a checkpoint instead may find decoding over: one
    execution streams every epoch and small blocks are held by their owner, so a few tiny epochs can all be
    decoded and safe before the first checkpoint (seen in CI), and the kill would prove nothing."""

    def during(_storage: Path) -> None:
        deadline = time.time() + timeout
        while not decoding_on(node):
            assert node.process.poll() is None, "the decode node exited before it decoded anything"
            assert time.time() < deadline, f"no decode task ran on the node within {timeout:.0f} s"
            time.sleep(0.05)
        cluster.kill(node)

    return during


def decoding_on(node) -> bool:
    """Whether a process of ``node`` (its raylet's session: workers keep it) is running a decode task now."""
    titles = (command_line(pid) or "" for pid in session_processes(node.process.pid))
    return any(title.startswith("ray::") and "_decode_batch" in title for title in titles)


def decoded_epochs(client, run_id: str, folder) -> dict[str, dict]:
    """The run's data/decoded_train.json: per epoch, list entries decoded, rows per node."""
    return json.loads(open(client.download_artifacts(run_id, "data/decoded_train.json", str(folder))).read())


def the_run(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("actionray").experiment_id])
    return client, run


def multinode_tree(synth_videos, tmp_path, **sections) -> dict:
    tree = tiny_config(synth_videos, tmp_path, **sections).to_dict()
    tree["tracking"]["uri"] = None  # from MLFLOW_TRACKING_URI in the job's runtime env
    return tree


@pytest.mark.slow
def test_an_elastic_run_loses_a_training_node_and_finishes_with_fewer_workers(cluster, synth_videos, tmp_path):
    """Two "GPU" nodes hold one worker each; the second is killed (raylet and all) after epoch 1's checkpoint.
    The group restarts with the one worker left, from that checkpoint, with the same per-worker batch and
    lr x 1/2 (docs/training.md, "Elastic training"), and every epoch is whole."""
    spare = cluster.add_node(num_cpus=1, resources={"trainer": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    epochs = 4
    # The group may start with the one worker that fits first and grow at the next resize check (every 5 s here):
    # the kill waits for a checkpoint of the full group.
    tree = multinode_tree(synth_videos, tmp_path, data={"decode_nodes": "cpu_only"}, train={"epochs": epochs},
                          scaling={"num_workers": [1, 2], "worker_resources": {"trainer": 1}, "max_failures": 3,
                                   "resize_interval_s": 5})
    logs = submit(cluster, tree, tmp_path / "job", uri, during=kill_after_checkpoint(cluster, spare, world_size=2))
    assert f"[actionray] epoch {epochs}/{epochs}" in logs
    assert "elastic: training with 1 of 2 workers" in logs

    client, run = the_run(uri)
    assert run.info.status == "FINISHED"
    sizes = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "world_size")}
    # Each epoch logged once, none missing; some on two workers, the last on the one left.
    assert sorted(sizes) == list(range(1, epochs + 1)) and 2 in sizes.values() and sizes[epochs] == 1
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == list(range(1, epochs + 1))
    rows = len(synth_videos.train_list.read_text().splitlines())
    decoded = decoded_epochs(client, run.info.run_id, tmp_path)
    assert sorted(decoded, key=int) == [str(e) for e in range(1, epochs + 1)]
    for epoch in decoded.values():
        assert epoch["decoded"] == rows  # every list entry reached the workers in every epoch
    # The learning rate followed the world size: lr x 2/2 on two workers, x 1/2 on one (constant schedule).
    lrs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    assert all(lrs[epoch] == pytest.approx(0.01 * size / 2) for epoch, size in sizes.items())


@pytest.mark.slow
def test_decode_runs_on_the_cpu_decode_nodes_only_and_a_killed_one_leaves_decoding_to_the_other(
        cluster, synth_videos, tmp_path):
    """Two CPU decode nodes and the "GPU" head: no clip is decoded on the head; one decode node is killed (raylet
    and all) while it runs a decode task, early in the stream of epochs; the run finishes, no epoch short, the
    survivor decoding the rest (a task lost with the node runs again there)."""
    doomed = cluster.add_node(num_cpus=2, resources={"actionray_decode": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    epochs = 4
    tree = multinode_tree(synth_videos, tmp_path, data={"decode_tasks": "auto", "decode_nodes": "cpu_only"},
                          train={"epochs": epochs},
                          scaling={"worker_resources": {"trainer": 1}, "max_failures": 2})
    decode_nodes = set(cluster.node_id_with("actionray_decode"))
    (gpu_node,) = cluster.node_id_with("trainer")
    logs = submit(cluster, tree, tmp_path / "job", uri, during=kill_while_decoding(cluster, doomed))
    assert f"[actionray] epoch {epochs}/{epochs}" in logs
    assert doomed.process.poll() is not None  # the killed node stayed dead: one decode node was left

    client, run = the_run(uri)
    assert run.info.status == "FINISHED"
    rows = len(synth_videos.train_list.read_text().splitlines())
    decoded = decoded_epochs(client, run.info.run_id, tmp_path)
    (survivor,) = cluster.node_id_with("actionray_decode")
    assert sorted(decoded, key=int) == [str(e) for e in range(1, epochs + 1)]
    for epoch in decoded.values():
        assert epoch["decoded"] == rows  # every list entry reached the worker in every epoch
        assert set(epoch["nodes"]) <= decode_nodes and gpu_node not in epoch["nodes"]  # nothing on the "GPU"
    # The doomed node died in one of its first tasks: the last epoch, streamed last, is the survivor's.
    assert decoded[str(epochs)]["nodes"] == {survivor: rows}
    assert run.data.metrics["skipped_train"] == 0
