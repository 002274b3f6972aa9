"""The pipeline monitor: a small named actor per dataset that counts skipped samples (with reasons) and train
stream starts, shared by the driver, the decode tasks and the training workers.

This module imports only Ray on purpose: the actor's process imports it to run ``PipelineMonitor``, and pulling
in the pipeline (torch, decord) would cost that process about 2 CPU-seconds and 200 MB at every run's start,
on the same cores as the first decode tasks (measured, docs/performance.md).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import ray

__all__ = ["PipelineMonitor", "new_monitor", "release_monitors", "on_this_node", "get_monitor", "monitor_of",
           "context_of", "MONITOR_KEY", "NAMESPACE"]

MONITOR_KEY = "actionray.pipeline_monitor"  # DataContext config key: the monitor actor's name
NAMESPACE = "actionray"
_OWNED_MONITORS: dict[str, Any] = {}  # monitors created by this process, kept referenced


@ray.remote(num_cpus=0)
class PipelineMonitor:
    """Per-dataset state: skipped rows, how many train streams (Ray Data executions) workers started, and which
    list entries each epoch's decode tasks took up, on which node (the run's proof that every epoch was whole)."""

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.stream_starts = 0
        self.skipped: dict[int, dict[int, str]] = {}  # epoch -> {index: "path: reason"}
        self.visits: dict[int, dict[int, int]] = {}  # epoch -> {index: times a decode task took it up}
        self.nodes: dict[int, dict[str, int]] = {}  # epoch -> {node id: rows decoded there}

    def stream_started(self) -> int:
        self.stream_starts += 1
        return self.stream_starts

    def starts(self) -> int:
        return self.stream_starts

    def record_skip(self, epoch: int, index: int, reason: str) -> None:
        self.skipped.setdefault(int(epoch), {})[int(index)] = reason

    def record_visits(self, node: str, epochs: list[int], indices: list[int]) -> None:
        for epoch, index in zip(epochs, indices):
            visits = self.visits.setdefault(int(epoch), {})
            visits[int(index)] = visits.get(int(index), 0) + 1
            per_node = self.nodes.setdefault(int(epoch), {})
            per_node[node] = per_node.get(node, 0) + 1

    def report(self, epoch: int) -> dict[str, Any]:
        """``decoded``: distinct entries decoded in ``epoch``; ``repeated``: extra decodes of an entry (a pass
        re-run after a lost task or node); ``nodes``: rows per node id."""
        skipped = self.skipped.get(int(epoch), {})
        visits = self.visits.get(int(epoch), {})
        return {"epoch": int(epoch), "num_rows": self.num_rows, "skipped": len(skipped),
                "reasons": dict(sorted(skipped.items())), "decoded": len(visits),
                "repeated": sum(count - 1 for count in visits.values()),
                "nodes": dict(sorted(self.nodes.get(int(epoch), {}).items()))}


def on_this_node() -> Any:
    """A scheduling strategy that keeps an actor on the calling process's node (the driver's): a run's
    bookkeeping actors must not live on a node that may be lost mid-run (a preempted worker or decode node) and
    take the run with them; the driver's node lives exactly as long as the run."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def new_monitor(split: str, num_rows: int) -> str:
    """Start a monitor for a dataset of ``num_rows`` list entries, on the caller's node; returns its actor name.
    It is owned by the calling process (the driver or a Tune trial), which keeps the handle until
    ``release_monitors`` ends it (or the process ends)."""
    name = f"actionray_pipeline_{split}_{uuid.uuid4().hex[:12]}"
    _OWNED_MONITORS[name] = PipelineMonitor.options(name=name, namespace=NAMESPACE,
                                                    scheduling_strategy=on_this_node()).remote(num_rows)
    return name


def release_monitors(datasets) -> None:
    """End the monitors of ``datasets`` that this process started, once whoever reads them is done (``fit`` after
    logging the skip counts, batch inference after its pass). Each monitor is an actor process (~130 MB, and a
    little CPU even when idle): kept for the driver's lifetime, a long-lived driver (a notebook, a test session)
    gathered one per dataset it ever built (45 in one test session, seen in CI)."""
    for dataset in datasets:
        name = context_of(dataset).get_config(MONITOR_KEY)
        handle = _OWNED_MONITORS.pop(name, None)
        if handle is not None and ray.is_initialized():  # after ray.shutdown() the monitors are gone already
            ray.kill(handle, no_restart=True)
    get_monitor.cache_clear()  # no cached handle of an ended monitor stays behind in this process


@functools.lru_cache(maxsize=64)
def get_monitor(name: str):
    """The handle of the monitor called ``name`` (cached per process)."""
    return ray.get_actor(name, namespace=NAMESPACE)


def context_of(shard) -> "ray.data.DataContext":
    """The DataContext of a dataset or of a DataIterator (a Train worker's shard)."""
    return shard.context if isinstance(shard, ray.data.Dataset) else shard.get_context()


def monitor_of(shard):
    """The pipeline monitor of a dataset or DataIterator built by ``build_clip_dataset``, or None."""
    name = context_of(shard).get_config(MONITOR_KEY)
    return get_monitor(name) if name is not None else None
