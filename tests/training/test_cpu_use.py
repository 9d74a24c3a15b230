import multiprocessing
import os
import sys
import time

import pytest

from training import cpu_use, distributed

STAT = """cpu  500 0 300 1000 100 0 0 0 0 0
cpu0 100 0 100 500 50 0 0 0 0 0
cpu1 400 0 200 500 50 0 0 0 0 0
intr 12345
"""


def test_cpu_times_sums_the_cpus_asked_for() -> None:
    assert cpu_use.cpu_times(STAT, [0]) == (200, 750)
    assert cpu_use.cpu_times(STAT, [1]) == (600, 1150)
    assert cpu_use.cpu_times(STAT, [0, 1]) == (800, 1900)
    assert cpu_use.cpu_times(STAT, [7]) == (0, 0)  # not there: nothing counted


def test_busy_cores_scales_the_busy_share_to_the_cpus() -> None:
    assert cpu_use.busy_cores((0, 0), (50, 100), 2) == pytest.approx(1.0)
    assert cpu_use.busy_cores((0, 0), (100, 100), 4) == pytest.approx(4.0)
    assert cpu_use.busy_cores((10, 10), (10, 10), 2) == 0.0  # no time passed


def _spin(cpu: int, seconds: float) -> None:
    os.sched_setaffinity(0, {cpu})
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_cores_busy_with_other_work_are_seen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARLM_NUM_THREADS", raising=False)
    cpus = cpu_use.allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two cores")
    spinners = [
        multiprocessing.get_context("spawn").Process(target=_spin, args=(cpu, 30.0))
        for cpu in cpus[: (len(cpus) + 1) // 2]
    ]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(1.0)  # the spinners are running (spawn imports a fresh interpreter)
        in_use = cpu_use.cores_in_use(cpus)
        assert in_use is not None and in_use >= 0.8 * len(spinners)
        assert distributed.machine_is_busy(cpus)
        assert distributed.choose_num_threads() == max(1, len(cpus) // 2)
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def test_an_explicit_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARLM_NUM_THREADS", "3")
    assert distributed.choose_num_threads() == 3


def test_process_ticks_reads_a_process_and_skips_one_that_is_gone() -> None:
    assert cpu_use.process_ticks([os.getpid()]) > 0  # this interpreter has run
    assert cpu_use.process_ticks([2**22 + 12345]) == 0  # above pid_max's default: no process


def _rank(cpus: list[int], out: "multiprocessing.Queue[tuple[list[int], float, float]]") -> None:
    """A process started beside a busy one: the cores it sees busy, with and without its
    siblings, over one window."""
    siblings = cpu_use.sibling_pids()
    before = cpu_use.read_sample(cpus, siblings)
    time.sleep(0.5)
    after = cpu_use.read_sample(cpus, siblings)
    busy, total = after[0] - before[0], after[1] - before[1]
    all_work = cpu_use.busy_cores((0, 0), (busy, total), len(cpus))
    others = cpu_use.busy_cores((0, 0), (busy - (after[2] - before[2]), total), len(cpus))
    out.put((siblings, all_work, others))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_s_own_ranks_are_not_counted_as_other_work() -> None:
    cpus = cpu_use.allowed_cpus()
    context = multiprocessing.get_context("spawn")
    spinner = context.Process(target=_spin, args=(cpus[0], 30.0))  # a sibling rank at work
    spinner.start()
    try:
        time.sleep(1.0)
        out: multiprocessing.Queue[tuple[list[int], float, float]] = context.Queue()
        rank = context.Process(target=_rank, args=(cpus, out))
        rank.start()
        siblings, all_work, others = out.get(timeout=60)
        rank.join()
        assert spinner.pid in siblings and os.getpid() not in siblings
        # the spinner's work is seen, and taking the siblings' own ticks out removes it (at
        # least a quarter of a core however loaded the machine is)
        assert all_work >= 0.6
        assert all_work - others >= 0.25
    finally:
        spinner.terminate()
        spinner.join()
