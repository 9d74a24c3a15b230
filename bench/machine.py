"""What a benchmark's figures came from: the processor, its cores and load, torch's version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown processor"


def machine_line(threads: int) -> str:
    """One line naming the machine, its load and the torch build a run used."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {load:.2f}; "
        f"torch {torch.__version__}, {threads} thread(s)"
    )
