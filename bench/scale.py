"""Replicas behind the load balancer: balancing, a replica killed mid-run, a rolling restart.

Brings up the scaled compose stack (docker-compose.yml + docker-compose.scale.yml: N server
replicas behind HAProxy, only the balancer's port published on 127.0.0.1), then runs two phases
of mixed load (half scoring, a quarter whole generations, a quarter streams), each from
``--clients`` closed-loop clients:

1. ``--duration`` seconds during which one replica's server process gets ``kill -9`` (at 40% of
   the run; its restart policy brings it back). Printed: requests by kind and result, the share
   each replica served (by the balancer's ``X-Charlm-Replica-Address`` header), the balancer's
   retries. Targets: every replica serves between ``--min-share`` and ``--max-share`` of the
   requests; 0 failed requests (streams that were on the killed replica end cut: counted apart).
2. ``scripts/rolling_restart.sh`` replaces every replica, one at a time, under the same load.
   Target: 0 failed non-streamed requests.

    python -m bench.scale                                   # 3 replicas, 64 clients, 60 s
    python -m bench.scale --replicas 2 --duration 15 --clients 16 --check

Needs a Docker engine with compose (``source ../shared/ci/container-env.sh`` on a machine
without one). ``--check`` exits 1 when a target is missed. The stack is taken down at the end
(``--keep`` leaves it up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.scale_load import KINDS, LoadResult, run_load
from bench.scale_stack import Stack, free_port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def print_table(result: LoadResult) -> None:
    print(f"    {'kind':<9} {'sent':>6} {'ok':>6} {'failed':>6} {'cut':>4} {'aborted':>7}", end="")
    print(f" {'p50 ms':>7} {'p99 ms':>7}")
    for kind in (*KINDS, None):
        times = [o.seconds * 1000 for o in result.outcomes if kind in (None, o.kind)]
        counts = [result.count(kind, r) for r in ("ok", "failed", "cut", "aborted")]
        print(f"    {kind or 'all':<9} {result.count(kind):>6}", end="")
        print(" {:>6} {:>6} {:>4} {:>7}".format(*counts), end="")
        print(f" {percentile(times, 0.5):>7.0f} {percentile(times, 0.99):>7.0f}")
    for reason, n in result.failures().most_common():
        print(f"    failed: {n} x {reason}")


async def track_replicas(stack: Stack, names: dict[str, str], stop: asyncio.Event) -> None:
    """Keep ``names`` (address -> container) current while replicas come and go."""
    while not stop.is_set():
        # a replica that just left makes a round fail: the next one sees the rest
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            names.update(await asyncio.to_thread(stack.replicas))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.0)


async def wait_all_serving(stack: Stack, replicas: int, timeout: float = 120) -> None:
    """Until the balancer has sent requests to ``replicas`` different replicas."""
    import httpx

    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    async with httpx.AsyncClient(base_url=stack.url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get("/ready")
                seen.add(response.headers.get("x-charlm-replica-address", ""))
            except httpx.HTTPError:
                pass
            if len(seen - {""}) >= replicas:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the balancer reached {len(seen)} of {replicas} replicas in {timeout} s")


async def load_while(
    stack: Stack, args: argparse.Namespace, seed: int, stop_at: Callable[[], float]
) -> LoadResult:
    return await run_load(stack.url, args.model, args.clients, stop_at, seed)


async def kill_phase(stack: Stack, args: argparse.Namespace, names: dict[str, str]) -> bool:
    wall_start = time.time()
    start = time.monotonic()
    end = start + args.duration
    victim = sorted(names.items(), key=lambda item: item[1])[0]
    load = asyncio.create_task(load_while(stack, args, 1, lambda: end))
    await asyncio.sleep(args.duration * 0.4)
    kill_sent = time.monotonic()
    await asyncio.to_thread(stack.kill_server, victim[1])
    killed_at = time.monotonic()  # the process is dead once docker exec returns
    result = await load
    print(f"\n== {args.clients} clients for {args.duration:.0f} s; kill -9 of {victim[1]}'s")
    print(f"   server process at {kill_sent - start:.1f} s")
    print_table(result)
    served = result.served_by()
    total = sum(served.values())
    ok = True
    print("    share of the answered requests by replica:")
    for address, n in sorted(served.items(), key=lambda item: names.get(item[0], item[0])):
        share = n / total
        inside = args.min_share <= share <= args.max_share
        ok &= inside
        mark = "" if inside else f"  (outside {args.min_share:.0%}..{args.max_share:.0%})"
        print(f"      {names.get(address, address):<28} {n:>6}  {share:6.1%}{mark}")
    if len(served) < args.replicas:
        print(f"    only {len(served)} of {args.replicas} replicas served requests")
        ok = False
    back = [
        o.started + o.seconds - killed_at
        for o in result.outcomes
        if o.replica == victim[0] and o.started > killed_at and o.result == "ok"
    ]
    if back:
        print(f"    the killed replica served again {min(back):.1f} s after the kill")
    else:
        print("    the killed replica did not serve again before the end of the run")
    retried, redispatched = await asyncio.to_thread(stack.balancer_retries, wall_start)
    print(f"    balancer: {retried} requests retried, {redispatched} of them on another replica")
    failed = result.count(None, "failed")
    print(f"    failed requests: {failed} (target 0); cut streams: {result.count(None, 'cut')}")
    return ok and failed == 0


async def rolling_phase(stack: Stack, args: argparse.Namespace) -> bool:
    stop = [float("inf")]
    start = time.monotonic()
    load = asyncio.create_task(load_while(stack, args, 2, lambda: stop[0]))
    await asyncio.sleep(3)
    process = stack.rolling_restart()
    try:
        output, _ = await asyncio.to_thread(process.communicate, timeout=900)
    finally:
        stop[0] = time.monotonic() + 5  # the load goes on a little after the last replica
    result = await load
    print(f"\n== rolling restart of {args.replicas} replicas under {args.clients} clients")
    print(f"   ({time.monotonic() - start:.0f} s of load)")
    for line in output.splitlines():
        print(f"    {line}")
    print_table(result)
    failed = sum(result.count(kind, "failed") for kind in ("score", "generate"))
    print(f"    failed non-streamed requests: {failed} (target 0)")
    return process.returncode == 0 and failed == 0


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack(args.project, args.checkpoints, args.port or free_port())
    try:
        t0 = time.monotonic()
        stack.up(args.replicas, build=not args.no_build)
        await wait_all_serving(stack, args.replicas)
        print(f"stack: {args.replicas} replicas behind HAProxy at {stack.url}", end="")
        print(f" (project {args.project}), up in {time.monotonic() - t0:.0f} s")
        names = stack.replicas()
        stop = asyncio.Event()
        tracker = asyncio.create_task(track_replicas(stack, names, stop))
        ok = await kill_phase(stack, args, names)
        if not args.no_rolling:
            await wait_all_serving(stack, args.replicas)
            ok = await rolling_phase(stack, args) and ok
        stop.set()
        await tracker
        print(f"\ntargets {'met' if ok else 'MISSED'}")
        return 1 if args.check and not ok else 0
    finally:
        if not args.keep:
            stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the kill phase")
    parser.add_argument("--min-share", type=float, default=0.20)
    parser.add_argument("--max-share", type=float, default=0.46)
    parser.add_argument("--no-rolling", action="store_true", help="skip the rolling restart")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--project", default="charlm-scale", help="compose project name")
    parser.add_argument("--port", type=int, default=0, help="balancer's host port (0: free)")
    parser.add_argument("--checkpoints", type=Path, help="models folder (default: train one)")
    parser.add_argument("--model", default="tiny", help="model id the load asks for")
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas must be at least 2: one is killed")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
