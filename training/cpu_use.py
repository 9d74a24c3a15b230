"""How many of this process's cores other work is using now, from two readings of ``/proc/stat``.

The one-minute load average lags by about a minute: right after one training run ends, the next
one started on the same machine would see the first one's load and take half its threads for
the whole run. Two readings a fraction of a second apart say what the cores are doing now.
The ranks that torchrun starts beside a process are not other work: they share the cores out
among themselves, and while they start they would read as busy to each other.
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


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...), or None for
    a process that has ended or cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def process_ticks(pids: Iterable[int]) -> int:
    """User and system clock ticks the processes ``pids`` have used, summed (one that has ended
    counts nothing)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 12:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def sibling_pids() -> list[int]:
    """The other processes with this process's parent: under torchrun, the run's other ranks on
    this machine (empty where ``/proc`` cannot be read)."""
    parent, me = os.getppid(), os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    siblings = []
    for entry in entries:
        if entry.isdigit() and int(entry) != me:
            fields = _stat_fields(entry)
            if fields is not None and len(fields) > 1 and int(fields[1]) == parent:
                siblings.append(int(entry))
    return siblings


def read_sample(cpus: Iterable[int], pids: Iterable[int] = ()) -> tuple[int, int, int]:
    """(busy, total) ticks of ``cpus`` (``cpu_times``) and the ticks ``pids`` have used."""
    with open("/proc/stat", encoding="ascii") as stat:
        busy, total = cpu_times(stat.read(), cpus)
    return busy, total, process_ticks(pids)


def cores_in_use(
    cpus: list[int], sample_s: float = SAMPLE_SECONDS, exclude: Iterable[int] = ()
) -> float | None:
    """Cores' worth of ``cpus`` busy over the next ``sample_s`` seconds (while this process
    waits), less what the processes ``exclude`` used meanwhile; None where ``/proc/stat`` cannot
    be read."""
    exclude = list(exclude)
    try:
        before = read_sample(cpus, exclude)
        time.sleep(sample_s)
        after = read_sample(cpus, exclude)
    except (OSError, ValueError):
        return None
    if after[1] <= before[1]:
        return None
    others = after[0] - before[0] - (after[2] - before[2])  # less the excluded processes'
    return busy_cores((0, 0), (others, after[1] - before[1]), len(cpus))


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))
