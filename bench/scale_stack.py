"""The scaled compose stack for ``bench.scale``: bring it up, find its replicas, kill one.

Everything goes through the ``docker`` command line (the engine named by ``DOCKER_HOST`` or the
default one), so the benchmark drives the stack exactly as its users do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "hat")
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.scale.yml")

# Kills the server process of a replica from inside its container: the process whose command
# line names charlm-serve, not the container's init (PID 1), which then exits with it.
_KILL_SERVER = """
import os, signal
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) in (1, os.getpid()):
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"charlm-serve" in cmd:
        os.kill(int(pid), signal.SIGKILL)
        print(pid)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_tiny_checkpoint(folder: Path) -> None:
    """A few seconds of training: the stack needs a real checkpoint, not a good one."""
    import random

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "hat"]
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "." for _ in range(600)
    ]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train = Path(sys.executable).with_name("charlm-train")
    args = "--preset tiny --embed-size 16 --hidden-size 32 --seq-len 32 --batch-size 16"
    args += " --max-steps 30 --eval-interval 30 --sample-chars 0 --seed 0 --device cpu"
    out = folder / "tiny.safetensors"
    subprocess.run(
        [str(train), "--data", str(corpus), "--out", str(out), *args.split()],
        check=True,
        capture_output=True,
        timeout=600,
    )
    corpus.unlink()
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)


class Stack:
    """A ``docker compose`` project made of docker-compose.yml and docker-compose.scale.yml."""

    def __init__(self, project: str, checkpoints: Path | None, port: int) -> None:
        self.project = project
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._own_checkpoints: tempfile.TemporaryDirectory[str] | None = None
        if checkpoints is None:
            self._own_checkpoints = tempfile.TemporaryDirectory(prefix="charlm-scale-", dir="/tmp")
            checkpoints = Path(self._own_checkpoints.name)
            train_tiny_checkpoint(checkpoints)
        self.env = {
            **os.environ,
            "CHARLM_CHECKPOINTS": str(checkpoints),
            "CHARLM_PUBLISH_PORT": str(port),
            # several replicas share the cores: one torch thread each unless told otherwise
            "CHARLM_TORCH_THREADS": os.environ.get("CHARLM_TORCH_THREADS", "1"),
        }

    @property
    def compose_options(self) -> list[str]:
        options = ["-p", self.project]
        for name in COMPOSE_FILES:
            options += ["-f", name]
        return options

    def _run(self, args: list[str], timeout: float = 120) -> str:
        done = subprocess.run(
            args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def compose(self, *args: str, timeout: float = 120) -> str:
        return self._run(["docker", "compose", *self.compose_options, *args], timeout=timeout)

    def up(self, replicas: int, build: bool) -> None:
        args = ["up", "-d", "--wait", "--wait-timeout", "300", "--scale", f"server={replicas}"]
        self.compose(*args, *(["--build"] if build else []), timeout=1200)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
        if self._own_checkpoints is not None:
            self._own_checkpoints.cleanup()

    def replicas(self) -> dict[str, str]:
        """Address on the project's network -> container name, for every running replica."""
        ids = self.compose("ps", "-q", "server").split()
        if not ids:
            return {}
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}{{.Name}}"
        found: dict[str, str] = {}
        for line in self._run(["docker", "inspect", "-f", template, *ids]).splitlines():
            *addresses, name = line.split()
            for address in addresses:
                found[address] = name.lstrip("/")
        return found

    def kill_server(self, container: str) -> None:
        """``kill -9`` of the replica's server process; its restart policy brings it back.

        The exec's own exit status is not read: once the server dies the container may stop
        before the exec has returned, which ends the exec with an error although the kill was
        done. The pids it printed say whether a server was found and killed."""
        args = ["docker", "exec", container, "python", "-c", _KILL_SERVER]
        done = subprocess.run(
            args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if not any(line.strip().isdigit() for line in done.stdout.splitlines()):
            raise RuntimeError(
                f"no charlm-serve process killed in {container}:\n{done.stdout}{done.stderr}"
            )

    def rolling_restart(self) -> subprocess.Popen[str]:
        script = ROOT / "scripts" / "rolling_restart.sh"
        return subprocess.Popen(
            ["bash", str(script), *self.compose_options],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def balancer_retries(self, since: float) -> tuple[int, int]:
        """``count_retries`` of the balancer's access log since ``since`` (a Unix time)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since)) + "Z"
        return count_retries(
            self.compose("logs", "--no-color", "--no-log-prefix", "--since", stamp, "lb")
        )


def count_retries(log: str) -> tuple[int, int]:
    """(requests retried, of which redispatched to another replica) in HAProxy's HTTP access
    log: the last counter of ``actconn/feconn/beconn/srv_conn/retries``, which has a "+" in
    front when the request was redispatched. Other lines (warnings, state changes) are skipped.
    """
    retried = redispatched = 0
    for line in log.splitlines():
        if '"' not in line:
            continue
        # the timers (Tq/Tw/Tc/Tr/Ta) and the connection counters both have five fields; the
        # counters come last before the request line
        counters = [f for f in line.split('"')[0].split() if f.count("/") == 4]
        if len(counters) < 2:
            continue
        retries = counters[-1].rsplit("/", 1)[1]
        if retries.lstrip("+") not in ("", "0"):
            retried += 1
            redispatched += retries.startswith("+")
    return retried, redispatched
