"""A real multi-node Ray cluster on this machine for tests: ``ray start --head`` plus ``ray start --address`` nodes.

Every node is its own raylet (own node id, object store, agents) on 127.0.0.1 with ports of its own, so nothing
clashes with a Ray instance the test session runs. Nodes are stopped by their process group and, for the head,
by its private temp dir: never ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# The clusters' own token: `ray start` in token mode refuses to run without one and, unlike ray.init(), does not
# create ~/.ray/auth_token; a fresh machine has none.
TOKEN = secrets.token_hex(32)


# The GCS declares a node dead after missing this many health checks of this period: about 3 s instead of Ray's
# default of about 30, so that tests which kill a node do not wait for Ray to notice (on a real cluster the
# default holds; a preempted node is only noticed later, which changes the timing, not the outcome).
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def client_env() -> dict[str, str]:
    """Nodes and CLI clients of these token-auth clusters: RAY_AUTH_MODE=token with this session's token; never
    attach to a RAY_ADDRESS lying around."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    env.pop("RAY_ADDRESS", None)
    return env


def command_line(pid: int) -> str | None:
    """The command line of process ``pid`` (a Ray worker's shows its process title, e.g. ``ray::IDLE``), or None
    once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (e.g. a head's unique temp dir)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and text in (command_line(pid) or "")]


def session_processes(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (Linux /proc): a process started with ``start_new_session``
    (a driver, a ``ray start`` node) and everything it started. Ray puts each worker in a process group of its
    own (same session), so ``killpg`` on the first process's group leaves the workers running."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ..., session id
            pids.append(int(entry.name))
    return pids


@dataclass
class Node:
    process: subprocess.Popen
    log: Path
    resources: dict[str, float]


def _node_ports() -> list[str]:
    agent, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr = free_ports(6)
    return [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}", "--node-ip-address=127.0.0.1"]


class LocalCluster:
    """``start()`` the head (returns the job server address), ``add_node()`` more, ``kill()`` one, ``stop()`` all."""

    def __init__(self) -> None:
        # short: Ray's socket paths must stay < 108 characters
        self.temp = Path(tempfile.mkdtemp(prefix="arclu", dir="/tmp"))
        self.nodes: list[Node] = []
        self.gcs = self.address = ""

    def _spawn(self, command: list[str], name: str, resources: dict[str, float]) -> Node:
        log = self.temp / f"{name}.log"
        # A loaded machine can take over a minute to bring the dashboard (the job server) up; Ray's default is 60 s.
        env = dict(client_env(), RAY_DASHBOARD_STARTUP_TIMEOUT_S="300")
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        node = Node(process, log, resources)
        self.nodes.append(node)
        return node

    def start(self, num_cpus: int, resources: dict[str, float] | None = None, timeout: float = 360) -> str:
        gcs, dashboard, client = free_ports(3)
        resources = resources or {}
        command = [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
                   "--include-dashboard=true", f"--num-cpus={num_cpus}", f"--temp-dir={self.temp}",
                   f"--ray-client-server-port={client}", f"--resources={json.dumps(resources)}",
                   f"--system-config={json.dumps(FAST_NODE_DEATH)}", *_node_ports()]
        head = self._spawn(command, "head", resources)
        self.gcs, self.address = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            probe = self.ray("job", "list")
            if probe.returncode == 0:
                return self.address
            if head.process.poll() is not None:
                raise RuntimeError(f"ray start --head exited: {head.log.read_text()[-2000:]}")
            time.sleep(2)
        raise RuntimeError(f"job server at {self.address} did not come up: {probe.stderr[-2000:]}")

    def add_node(self, num_cpus: int, resources: dict[str, float] | None = None, timeout: float = 240) -> Node:
        """Start a worker node and wait until the cluster lists it alive."""
        resources = resources or {}
        before = len(self.alive_nodes())
        command = [RAY, "start", "--block", f"--address={self.gcs}", f"--num-cpus={num_cpus}",
                   f"--resources={json.dumps(resources)}", *_node_ports()]
        node = self._spawn(command, f"node{len(self.nodes)}", resources)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.alive_nodes()) > before:
                return node
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start --address exited: {node.log.read_text()[-2000:]}")
            time.sleep(2)
        raise RuntimeError(f"node did not join within {timeout:.0f} s: {node.log.read_text()[-2000:]}")

    def ray(self, group: str, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``ray GROUP COMMAND --address <this cluster> ARGS...`` (the address before a job's ``--`` entrypoint)."""
        return subprocess.run([RAY, group, command, "--address", self.address, *args], env=client_env(),
                              capture_output=True, text=True, timeout=timeout)

    def alive_nodes(self) -> list[dict]:
        """The State API's alive nodes: ``node_id``, ``resources_total``, ..."""
        listed = self.ray("list", "nodes", "--format", "json")
        try:
            nodes = json.loads(listed.stdout) if listed.returncode == 0 else []
        except ValueError:  # "No resource in the cluster" while the head registers
            nodes = []
        return [n for n in nodes if n.get("state") == "ALIVE"]

    def node_id_with(self, resource: str) -> list[str]:
        return [n["node_id"] for n in self.alive_nodes() if resource in (n.get("resources_total") or {})]

    def kill(self, node: Node) -> None:
        """Kill a node abruptly (raylet and its processes), as a preempted machine goes."""
        try:
            os.killpg(node.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.process.wait()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill(node)
        for pid in processes_mentioning(str(self.temp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)
