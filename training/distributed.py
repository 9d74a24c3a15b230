"""Process layout: device choice, thread count, and DistributedDataParallel set-up under torchrun.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in every
process it starts, on one machine (``--nproc-per-node N``) or on several (``--nnodes M``, one
torchrun per machine meeting at a ``--rdzv-endpoint``); each rank then trains its own streams and
only rank 0 writes files. The backend is gloo on CPU and NCCL on CUDA.

A run saved with one number of processes resumes on another as long as that number divides the
run's streams (``batch_size`` x ``world_size``, the global batch): see ``resumed_batch_size``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from training import cpu_use

logger = logging.getLogger(__name__)

#: the share of the cores that other work must keep busy for a run to take half the threads
BUSY_SHARE = 0.45
#: what ``--device`` accepts: ``auto`` is CUDA when present, else the CPU
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return torch.device("cpu")


def choose_num_threads(local_world_size: int = 1) -> int:
    """CPU threads per process: the cores this process may use, shared by the local ranks.

    Where other work already keeps at least half of those cores busy, half as many: OpenMP's
    threads wait for each other at every operation, and one that is descheduled stalls the
    others (measured here: a step of the small LSTM took 2-10x longer with 2 threads than with
    1 on a loaded 2-core machine). How busy the cores are is read over a quarter of a second
    (``training.cpu_use``), not from the load average, which still counts a run that ended a
    minute ago. ``CHARLM_NUM_THREADS`` overrides; torchrun sets ``OMP_NUM_THREADS=1`` on its
    own, which is why that variable is not followed.
    """
    override = os.environ.get("CHARLM_NUM_THREADS")
    if override:
        return max(1, int(override))
    cpus = cpu_use.allowed_cpus()
    threads = max(1, len(cpus) // max(1, local_world_size))
    if threads > 1 and machine_is_busy(cpus, beside_ranks=local_world_size > 1):
        threads //= 2
        logger.info("the machine is busy: using %d threads", threads)
    return threads


def machine_is_busy(cpus: list[int], beside_ranks: bool = False) -> bool:
    """Whether other work keeps at least half of ``cpus`` busy now (the load average where
    ``/proc/stat`` cannot be read). With ``beside_ranks`` (torchrun started this process and
    others on this machine), the processes started beside this one are not counted."""
    exclude = cpu_use.sibling_pids() if beside_ranks else []
    in_use = cpu_use.cores_in_use(cpus, exclude=exclude)
    if in_use is not None:  # a little under half: one busy core of two reads 0.9-1.0 in ticks
        return in_use >= BUSY_SHARE * len(cpus)
    try:
        return os.getloadavg()[0] >= len(cpus)
    except OSError:
        return False


def launched_world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resumed_batch_size(batch_size: int, saved_world_size: int, world_size: int) -> int:
    """The per-process batch that keeps a saved run's global batch on ``world_size`` processes.

    The run's ``batch_size * saved_world_size`` streams are its data layout (``training.batches``):
    they stay, and are shared out anew. ``ValueError`` when they cannot be shared out evenly.
    """
    streams = batch_size * saved_world_size
    if streams % world_size:
        raise ValueError(
            f"the run trains {streams} streams ({batch_size} per process x {saved_world_size}"
            f" processes), which {world_size} processes cannot share evenly; resume it on a"
            f" number of processes that divides {streams}"
        )
    return streams // world_size


def setup(device_name: str) -> DistContext:
    """Read the torchrun environment (if any), join the process group and set threads."""
    world_size = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = choose_device(device_name, local_rank)
    torch.set_num_threads(choose_num_threads(local_world_size))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined (%s)", rank, world_size, backend)
    return DistContext(rank, world_size, local_rank, local_world_size, device)


def teardown(context: DistContext, *, wait_for_all: bool = False) -> None:
    """Leave the process group; after a normal end (``wait_for_all``), once every rank is here.

    The closing barrier matters: gloo's worker threads drop their hold on a collective's tensors
    just after the collective returns, and that needs the GIL. A rank that went straight on to
    exit (the other ranks, while rank 0 still writes its files) could reach interpreter shutdown
    first, and the thread then aborts the process ("terminate called without an active
    exception", SIGABRT; seen here on about 1 run in 10 of two nodes on a busy machine). The
    barrier's own work holds no tensors. After an error there is no barrier: the other ranks
    may be inside another collective.
    """
    if context.enabled and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, context: DistContext) -> bool:
    """True on every rank when ``flag`` is true on at least one (stop requests, early stops)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The mean of ``value`` over every rank (a new tensor; every rank must call)."""
    if not context.enabled:
        return value.clone()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / context.world_size


def broadcast_float(value: float, context: DistContext) -> float:
    """Rank 0's value on every rank."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def gather_rows(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (same on every rank)."""
    if not context.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
