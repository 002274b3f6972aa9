"""Per-node system metrics of a training run, in the run's MLflow run (MLflow 3's system-metrics monitor).

On every node that runs Train workers, the worker with local rank 0 starts one
``mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`` on the run (the class behind
``mlflow.start_run(log_system_metrics=True)``; the platform's runs are created by the driver through
``MlflowClient``, so the loop starts the monitor itself, with the run id and tracking URI it was given). It
samples every ``tracking.system_metrics_interval_s`` seconds (10 by default; MLflow's own
``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it where set) and logs, per node ``node<k>`` (Ray Train's
node rank, MLflow's ``node_id``):

    system/node<k>/cpu_utilization_percentage, system_memory_usage_megabytes, system_memory_usage_percentage,
    disk_usage_megabytes, disk_usage_percentage, disk_available_megabytes, network_receive_megabytes,
    network_transmit_megabytes and, on a node with NVIDIA GPUs (nvidia-ml-py), gpu_<i>_utilization_percentage,
    gpu_<i>_memory_usage_megabytes, gpu_<i>_memory_usage_percentage, gpu_<i>_power_usage_watts/_percentage

with MLflow's own step counter (one step per sample, continued after a restart: ``resume_logging``), beside the
loop's per-epoch ``data_wait_frac`` and ``clips_per_s`` (docs/training.md, "System metrics"). Upstream:
https://github.com/mlflow/mlflow (mlflow/system_metrics). Like all tracking here it is never fatal: a monitor
that cannot start warns once and training goes on. Stopping wakes the sampling thread at once (no wait for the
interval); the samples of the last, unfinished interval are not logged (MLflow's monitor drops them).
"""

from __future__ import annotations

import sys
from typing import Any

from actionray.platform.tracking import configure_http_env

__all__ = ["start_node_monitor", "stop_node_monitor", "node_metric_key"]


def node_metric_key(node_rank: int, name: str) -> str:
    """The MLflow key of system metric ``name`` of node ``node_rank`` (``system/node0/cpu_utilization_percentage``)."""
    return f"system/node{node_rank}/{name}"


def start_node_monitor(uri: str | None, run_id: str | None, node_rank: int, interval_s: float | None) -> Any:
    """Start sampling this node's CPU, memory, disk, network (and NVIDIA GPU) into run ``run_id``; returns the
    running monitor, or None when tracking is off, ``interval_s`` is None or the monitor cannot start (warned)."""
    if not (uri and run_id and interval_s):
        return None
    try:
        configure_http_env()
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True,
                                       node_id=f"node{node_rank}", tracking_uri=uri)
        monitor.start()
    except Exception as error:  # noqa: BLE001 -- tracking must never end a training run
        print(f"[actionray] WARNING: MLflow system metrics of node {node_rank} are off ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:200] if str(error) else ''}); training continues.",
              file=sys.stderr, flush=True)
        return None
    return monitor


def stop_node_monitor(monitor: Any) -> None:
    """Stop the sampling thread at once and write what it has logged but not flushed; never raises."""
    if monitor is None:
        return
    try:
        monitor.finish()
    except Exception:  # noqa: BLE001 -- a failed flush loses samples, never the run
        pass
