"""A local Ray instance started by ``ensure_ray`` listens on loopback only (issue 12)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actionray.platform.raysession import loopback_node

# A separate driver process: ensure_ray must start its own instance (the test session's shared Ray is
# started by the conftest fixture, not by ensure_ray).
_DRIVER = textwrap.dedent("""
    import sys
    from actionray.platform.config import ExperimentConfig
    from actionray.platform.raysession import ensure_ray

    ensure_ray(ExperimentConfig.model_construct())
    import ray
    import ray.data

    @ray.remote
    def plus_one(x: int) -> int:
        return x + 1

    assert ray.get(plus_one.remote(1)) == 2
    rows = ray.data.range(16).map_batches(lambda b: {"id": b["id"] * 2}).take_all()
    assert sorted(r["id"] for r in rows) == list(range(0, 32, 2))
    print("READY", ray.util.get_node_ip_address(), flush=True)
    sys.stdin.readline()  # the test lists sockets now; any line ends the driver
    ray.shutdown()
""")


def _process_tree(root: int) -> set[int]:
    """``root`` and all its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in tree]
        tree.update(children)
        todo.extend(children)
    return tree


def _decode(hex_address: str) -> tuple[str, int]:
    """/proc/net/tcp{,6} 'ADDR:PORT' (host-order 32-bit words in hex) -> (ip, port)."""
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port_hex, 16)


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int, str]]:
    """Every TCP socket in LISTEN state owned by one of ``pids``: (ip, port, pid, process name)."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[len("socket:["):-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:  # 0A = TCP_LISTEN; field 9 = inode
                pid = owner[fields[9]]
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append((*_decode(fields[1]), pid, name))
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from dual-stack gRPC listeners
    return (mapped or address).is_loopback


@pytest.mark.slow
def test_local_ray_started_by_ensure_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), "driver did not get ready:\n" + "".join(lines[-30:])
        node_ip = lines[-1].split()[1]
        sockets = listening_sockets(_process_tree(driver.pid))
        # GCS, raylet (node manager + object manager), the driver and workers, dashboard and agents.
        names = {name for *_, name in sockets}
        assert "gcs_server" in names and "raylet" in names, sockets
        exposed = sorted(s for s in sockets if not _is_loopback(s[0]))
        assert not exposed, f"listening beyond loopback (ip, port, pid, process): {exposed}"
        assert _is_loopback(node_ip), node_ip
    finally:
        if driver.poll() is None:
            driver.stdin.write("\n")
            driver.stdin.flush()
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()


def test_the_loopback_switch_holds_only_while_the_instance_starts():
    from actionray.platform.ray_compat import cluster_mode_enabled

    before = cluster_mode_enabled()
    with pytest.raises(RuntimeError, match="start failed"):
        with loopback_node():
            assert cluster_mode_enabled() is False
            raise RuntimeError("start failed")
    assert cluster_mode_enabled() == before  # restored even when ray.init raises
