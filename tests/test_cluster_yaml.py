"""cluster.yaml: valid for the installed Ray's launcher schema, plus the rules the schema cannot express."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    import ray.autoscaler

    return json.loads(Path(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json").read_text())


def schema_errors(cfg: dict, schema: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(cfg)]


def test_cluster_yaml_matches_the_launcher_schema(cluster, schema):
    assert schema_errors(cluster, schema) == []


def test_schema_check_catches_fractional_resources(cluster, schema):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_g5"]["resources"]["GPU"] = 0.5
    assert any("0.5 is not of type 'integer'" in e for e in schema_errors(broken, schema))


def test_launcher_defaults_merge_and_validate(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_head_node_type_is_a_declared_node_type(cluster):
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_worker_limits_are_consistent(cluster):
    workers = {n: t for n, t in cluster["available_node_types"].items() if n != cluster["head_node_type"]}
    for name, node in workers.items():
        assert 0 <= node.get("min_workers", 0) <= node["max_workers"], name
    assert sum(node.get("min_workers", 0) for node in workers.values()) <= cluster["max_workers"]


def test_head_offers_driver_slots_and_no_gpu(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]["resources"]
    assert head["driver_slot"] >= 1 and head.get("GPU", 0) == 0


def test_cluster_has_gpu_workers_and_cpu_only_decode_workers(cluster):
    types = cluster["available_node_types"].values()
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types)
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"]["CPU"] >= 8 and "min_workers" in t for t in types)


def test_file_mounts_point_at_existing_local_folders(cluster):
    for remote, local in cluster["file_mounts"].items():
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} missing"


def test_setup_installs_this_project_with_the_pinned_constraints(cluster):
    commands = " ".join(cluster["setup_commands"])
    assert "-c ~/actionray/constraints.txt" in commands and "-e ~/actionray" in commands
    assert (REPO / "constraints.txt").is_file()


def test_head_starts_dashboard_for_all_hosts_and_an_mlflow_server(cluster):
    commands = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in commands and "ray start --head" in commands
    assert "mlflow server" in commands and "--port 5000" in commands


SCRIPTS = ["submit_train.sh", "submit_sweep.sh", "submit_ablation.sh", "fetch_results.sh"]


def dry_run(script: str, *args: str) -> str:
    import subprocess

    env = {**os.environ, "DRY_RUN": "1", "ACTIONRAY_MLFLOW_URI": "http://10.0.0.5:5000", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    done = subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_cluster_scripts_print_their_usage_header_on_help(script):
    import subprocess

    done = subprocess.run(["bash", str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert "Usage: scripts/" + script in done.stdout


def test_submit_sweep_wraps_ray_job_submit_with_the_mlflow_uri_for_the_cluster():
    out = dry_run("submit_sweep.sh", "configs/demo_tsn.yaml", "lr_schedule", "--num-samples", "8")
    assert out.startswith("ray job submit --address http://127.0.0.1:8265 --submission-id sweep-")
    assert "--working-dir ." in out and "MLFLOW_TRACKING_URI" in out and "http://10.0.0.5:5000" in out
    assert out.rstrip().endswith("-- python -m actionray tune configs/demo_tsn.yaml --space lr_schedule "
                                 "--num-samples 8 --set tracking.uri=http://10.0.0.5:5000")


def test_fetch_results_reads_job_logs_and_rerenders_the_table():
    out = dry_run("fetch_results.sh", "job-7", "--ablation", "gcnet-abl", "--out", "/tmp/x")
    assert "ray job logs --address http://127.0.0.1:8265 job-7" in out
    assert "python -m actionray report --ablation gcnet-abl" in out and "--html /tmp/x/ablation.html" in out
