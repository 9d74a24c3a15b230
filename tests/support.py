"""What the tests share: a generated corpus, a tiny model trained on it in seconds, and a real
``charlm-serve``.

Every server listens on 127.0.0.1 on a free port; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from models.base import CharLM
from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import BOS_ID, CharVocab

REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 90.0  # a loaded machine imports torch slowly


def make_corpus(lines: int = 300) -> str:
    """A small generated text: a few words, digits and punctuation, repeated with variation."""
    words = ["alpha", "beta", "gamma", "delta"]
    rows = [f"{words[i % 4]} {i % 7} {words[i % 4][::-1]}." for i in range(lines)]
    return "\n".join(rows) + "\n"


def train_tiny_model(
    corpus: str,
    steps: int = 300,
    hidden_size: int = 48,
    seed: int = 0,
    arch: str = "lstm",
    lr: float = 0.02,
) -> tuple[CharLM, CharVocab]:
    """A one-layer model (embed 16) fitted for ``steps`` Adam steps on random BOS-led windows of
    ``corpus``, in eval mode. Logits row ``t`` predicts input ``t + 1`` in every architecture
    (left-to-right and bidirectional alike), so one next-character loss trains them all."""
    torch.manual_seed(seed)
    vocab = CharVocab.from_text(corpus)
    config = ModelConfig(
        arch=arch, vocab_size=len(vocab), embed_size=16, hidden_size=hidden_size, num_layers=1
    )
    model = build_model(config)
    data = torch.tensor(vocab.encode(corpus), dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    window, batch = 32, 16
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,))
        rows = torch.stack([data[s : s + window + 1] for s in starts.tolist()])  # (B, T+1)
        inputs = torch.cat([torch.full((batch, 1), BOS_ID), rows[:, :-1]], dim=1)  # (B, T+1)
        logits, _ = model(inputs, model.initial_state(batch))  # (B, T+1, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), rows.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, vocab


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running ``charlm-serve`` process and where its output goes."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_server(models_dir: Path, log_path: Path, **env: str) -> LiveServer:
    """``charlm-serve`` (``python -m app.cli``) on a free port of 127.0.0.1; waits for /ready.

    ``env`` adds ``CHARLM_*`` settings; those of the calling environment are dropped.
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARLM_")}
    environ.update({"CHARLM_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1", **env})
    args = [sys.executable, "-m", "app.cli", "--models-dir", str(models_dir)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as handle:
        process = subprocess.Popen(
            args, cwd=REPO, env=environ, stdout=handle, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")


def stop_server(server: LiveServer, timeout_s: float = 20.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
    if server.process.poll() is None:
        server.process.terminate()
    try:
        return server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait(timeout=10)


def write_random_checkpoint(path: Path, alphabet: str, seed: int = 0) -> str:
    """A tiny random-weight LSTM over ``alphabet`` saved (atomically) at ``path``; returns the
    file's SHA-256. Models over different alphabets have different vocabulary sizes."""
    torch.manual_seed(seed)
    vocab = CharVocab.from_text(alphabet)
    config = ModelConfig(
        arch="lstm", vocab_size=len(vocab), embed_size=8, hidden_size=16, num_layers=1
    )
    save_checkpoint(path, build_model(config), vocab)
    return hashlib.sha256(path.read_bytes()).hexdigest()
