"""A Ray cluster of two "nodes" on this machine, for the Ray runner's tests and benchmark.

Each node is a ``ray start --block`` process with its own ports and one CPU. Ray's processes start
sessions of their own, so a process group would miss some; the cluster's processes are the
descendants of those two, found through ``/proc`` while the tree is whole and then killed at once,
never another Ray on the machine. Nothing is downloaded and no dashboard is started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
START_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalCluster:
    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self, title: str = "") -> list[int]:
        """This cluster's processes whose command line (or title) contains ``title``."""
        found = []
        for pid in _descendants({node.pid for node in self.nodes}):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if title in cmdline.decode(errors="replace"):
                    found.append(pid)
        return found

    def stop(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            node.wait(timeout=30)

    def start(self, args: list[str], log: Path) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with log.open("wb") as handle:
            self.nodes.append(
                subprocess.Popen(
                    [RAY, "start", *args], stdout=handle, stderr=subprocess.STDOUT, env=env
                )
            )


def _descendants(roots: set[int]) -> list[int]:
    """``roots`` and every process below them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the parent pid is the 2nd field after the parenthesised command name
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _node_args(temp_dir: Path) -> list[str]:
    return [
        "--num-cpus", "1",
        "--object-store-memory", str(100 * 1024 * 1024),
        "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--block",
    ]  # fmt: skip


@contextlib.contextmanager
def two_node_cluster(temp_dir: Path) -> Iterator[LocalCluster]:
    """Start a head node and a second node of one CPU each; stop both afterwards."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cluster = LocalCluster(f"127.0.0.1:{port}", temp_dir)
    try:
        head = ["--head", "--port", str(port), "--include-dashboard", "false",
                "--temp-dir", str(temp_dir), *_node_args(temp_dir)]  # fmt: skip
        cluster.start(head, temp_dir / "head.log")
        _wait_for_nodes(cluster, 1)
        worker = ["--address", cluster.address, *_node_args(temp_dir)]
        cluster.start(worker, temp_dir / "worker.log")
        _wait_for_nodes(cluster, 2)
        yield cluster
    finally:
        cluster.stop()


def _wait_for_nodes(cluster: LocalCluster, count: int) -> None:
    import ray

    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if node.poll() is not None:
                raise RuntimeError(f"ray start exited: see the logs in {cluster.temp_dir}")
        try:
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            alive = sum(1 for n in ray.nodes() if n["Alive"])
        except (ConnectionError, RuntimeError):
            alive = 0
        finally:
            ray.shutdown()
        if alive >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray cluster did not start {count} nodes in {START_S} s")
