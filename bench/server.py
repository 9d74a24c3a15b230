"""A real ``charlm-serve`` process on 127.0.0.1 for the serving benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


class Server:
    """One ``charlm-serve`` process (``python -m app.cli``) on a free port of 127.0.0.1.

    Starting returns at once, so several servers can import and load side by side; call
    ``wait_ready`` before sending requests. ``env`` holds the ``CHARLM_*`` settings: those of the
    calling environment are dropped.
    """

    def __init__(self, models_dir: Path, env: dict[str, str], log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARLM_")}
        environ.update(env)
        args = [sys.executable, "-m", "app.cli", "--models-dir", str(models_dir)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=REPO, env=environ, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log.read_text()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()


def start_servers(specs: list[tuple[Path, dict[str, str], Path]]) -> list[Server]:
    """Start every server at once and wait until all are ready (all stopped if one fails)."""
    servers = [Server(*spec) for spec in specs]
    try:
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
