"""How many of this process's cores other work is using now, from two readings of ``/proc/stat``.

The one-minute load average lags by about a minute: right after one training run ends, the next
one started on the same machine would see the first one's load and take half its threads for
the whole run. Two readings a fraction of a second apart say what the cores are doing now.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

#: how long the two readings are apart
SAMPLE_SECONDS = 0.25
#: ``/proc/stat`` columns after the name: user nice system idle iowait irq softirq steal ...
_IDLE_COLUMNS = (3, 4)  # idle, iowait
_COUNTED_COLUMNS = 8  # guest time is already inside user and nice


def cpu_times(stat_text: str, cpus: Iterable[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cpus`` summed, from the text of ``/proc/stat``."""
    wanted = {f"cpu{n}" for n in cpus}
    busy = total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        ticks = [int(v) for v in rest.split()[:_COUNTED_COLUMNS]]
        idle = sum(ticks[i] for i in _IDLE_COLUMNS if i < len(ticks))
        busy += sum(ticks) - idle
        total += sum(ticks)
    return busy, total


def busy_cores(before: tuple[int, int], after: tuple[int, int], num_cpus: int) -> float:
    """Cores' worth of work done between two ``cpu_times`` readings (0 to ``num_cpus``)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return num_cpus * min(1.0, max(0.0, busy / total))


def cores_in_use(cpus: list[int], sample_s: float = SAMPLE_SECONDS) -> float | None:
    """Cores' worth of ``cpus`` busy over the next ``sample_s`` seconds (while this process
    waits), or None where ``/proc/stat`` cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            before = cpu_times(stat.read(), cpus)
        time.sleep(sample_s)
        with open("/proc/stat", encoding="ascii") as stat:
            after = cpu_times(stat.read(), cpus)
    except (OSError, ValueError):
        return None
    if after[1] <= before[1]:
        return None
    return busy_cores(before, after, len(cpus))


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))
