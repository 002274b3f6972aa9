"""Connect to Ray once per process: attach to a cluster when one is named, else start a right-sized local one."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from actionray.platform.config import ExperimentConfig
from actionray.platform.ray_compat import quiet_token_auth_enabled_notice, single_machine_node_ip, torch_backend_api

__all__ = ["QUIET_ENV", "set_quiet_env", "show_ray_progress", "local_num_cpus", "cluster_address", "ensure_ray",
           "loopback_node", "torch_config"]

# quiet logs without hiding user prints; Train forwards RAY_TRAIN_* to its workers.
QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Ray Data announces every pass ("Starting execution of Dataset ...") at INFO, burying the epoch lines;
    # workers started by a local instance inherit this. Warnings and errors still show.
    "RAY_DATA_LOG_LEVEL": "WARNING",
}


def set_quiet_env() -> None:
    """Default the log-noise variables (user settings win); call before ``import ray``."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not (sys.stderr.isatty() and sys.stdout.isatty()):
        # A log file or pipe gets the worker lines' "(pid=...)" prefixes without colour escape codes.
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if "ray.data" in sys.modules:
        # Ray Data read RAY_DATA_DISABLE_PROGRESS_BARS when it was imported; the datasets built from now on carry
        # this process's DataContext to the Train workers, which would draw (or log) progress otherwise.
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] != "1"


def show_ray_progress() -> None:
    """Turn Ray Data's progress bars back on (``--progress``); call before :func:`set_quiet_env`."""
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "0"


def local_num_cpus(cfg: ExperimentConfig) -> int:
    """Logical CPUs for a local instance: Train workers plus the decode pool (``auto``: this machine's CPUs), at
    least 4.

    Train reserves its workers' CPUs first and Ray Data gets only what is left; with none left the fit hangs
    silently. Logical CPUs may exceed physical cores (the decode tasks then share cores with training).
    """
    s = cfg.scaling
    data = cfg.data
    decode = min(data.decode_tasks_max, os.cpu_count() or 1) if data.decode_tasks == "auto" else data.decode_tasks
    return max(4, math.ceil(s.num_workers * s.cpus_per_worker) + decode)


def cluster_address() -> str | None:
    """The cluster to attach to: ``RAY_ADDRESS`` (set for ``ray job submit`` entrypoints too), else None."""
    return os.environ.get("RAY_ADDRESS") or None


def ensure_ray(cfg: ExperimentConfig) -> None:
    """Initialise Ray if this process has not: attach to ``RAY_ADDRESS`` or start a loopback-only local one."""
    set_quiet_env()
    import ray

    if ray.is_initialized():
        return
    address = cluster_address()
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    # address="local" always starts a new instance, even if a stale cluster address file exists (5.4).
    quiet_token_auth_enabled_notice()
    with loopback_node():
        ray.init(address="local", num_cpus=local_num_cpus(cfg), logging_level=logging.WARNING)


@contextmanager
def loopback_node() -> Iterator[None]:
    """While starting a local instance, make 127.0.0.1 its node IP, so that every server listens on loopback.

    Ray 2.60 binds GCS, raylet, object manager, workers and agents to all interfaces unless the node IP is a
    loopback address, and ``ray.init(_node_ip_address="127.0.0.1")`` is turned back into the routable IP (Ray
    repo, python/ray/_private/services.py, ``resolve_ip_for_localhost``). Ray's own Windows/macOS single-machine
    mode takes the loopback IP instead (``get_node_ip_address`` when ``ray_constants.ENABLE_RAY_CLUSTER`` is
    false): we flip that switch for the start only; once started, the node IP comes from the node. Not used for
    ``RAY_ADDRESS`` clusters. torch.distributed's TCPStore (rank-0 Train worker) still binds all interfaces.
    """
    with single_machine_node_ip():
        yield


# -- the torch.distributed rendezvous of a one-node worker group on loopback ----------------------------------------
_LOOPBACK_STORE: dict[str, object] = {}  # in the rank-0 worker: the listening socket and the TCPStore server


def torch_config(timeout_s: int = 1800):
    """Ray Train's ``TorchConfig`` whose process-group set-up keeps a one-node worker group on 127.0.0.1.

    Ray's torch backend (``ray.train.torch.config._TorchBackend.on_start``) points ``MASTER_ADDR`` at rank 0's
    node IP, and torch's rank 0 then serves the rendezvous store (``TCPStore``) on every interface (``*:port``,
    seen with ``ss -ltn``): torch binds that server without a host. When all workers share one node, this backend
    instead has rank 0 serve the store on a socket it bound to 127.0.0.1 (``TCPStore(master_listen_fd=...)``), the
    ranks reach it as torchelastic's agent store (``TORCHELASTIC_USE_AGENT_STORE``: every rank a client), and gloo
    is pinned to the loopback interface (``GLOO_SOCKET_IFNAME``, unless set); Ray's own
    ``_setup_torch_process_group`` still creates the group. Groups that span nodes get Ray's backend unchanged."""
    from ray.train.torch import TorchConfig

    ray_torch = torch_backend_api()

    class LoopbackTorchBackend(ray_torch.TorchBackend):
        def on_start(self, worker_group, backend_config) -> None:
            import ray

            nodes = set(worker_group.execute(_node_id))
            backend = backend_config.backend or ("nccl" if worker_group.get_resources_per_worker().get("GPU", 0)
                                                 else "gloo")
            if len(nodes) != 1 or backend not in ("gloo", "nccl") or backend_config.init_method != "env":
                return super().on_start(worker_group, backend_config)
            port = worker_group.execute_single(0, _serve_loopback_store, backend_config.timeout_s)
            worker_group.execute(_use_loopback_store, port=port, gloo=backend == "gloo")
            if not isinstance(worker_group, ray_torch.V1WorkerGroup):  # as Ray's on_start: LOCAL_RANK & co. (V2)
                worker_group.execute(ray_torch.set_torch_distributed_env_vars)
            ray.get([worker_group.execute_single_async(i, ray_torch.setup_torch_process_group, backend=backend,
                                                       world_rank=i, world_size=len(worker_group),
                                                       init_method="env://", timeout_s=backend_config.timeout_s)
                     for i in range(len(worker_group))])
            worker_group.execute(_agent_store_done)

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackTorchBackend

    return LoopbackTorchConfig(backend=None, timeout_s=timeout_s)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _serve_loopback_store(timeout_s: int) -> int:
    """Rank 0: the rendezvous store's server on a socket bound to 127.0.0.1; returns its port."""
    import datetime
    import socket

    from torch.distributed import TCPStore

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    store = TCPStore("127.0.0.1", port, None, True, datetime.timedelta(seconds=timeout_s), wait_for_workers=False,
                     master_listen_fd=listener.fileno())
    _LOOPBACK_STORE.update(listener=listener, store=store)  # both live as long as the worker
    return port


def _use_loopback_store(port: int, gloo: bool) -> None:
    """Every rank: reach the store as a client at 127.0.0.1:port; gloo's pairs on the loopback interface."""
    import socket

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    names = [name for _, name in socket.if_nameindex()]
    loopback = next((name for name in ("lo", "lo0") if name in names), None)
    if gloo and loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)


def _agent_store_done() -> None:
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)  # nothing else in the worker should take it for torchelastic
