"""Load generators for ``bench.serve``: closed-loop async httpx clients and their statistics.

Each level runs ``concurrency`` workers; a worker sends its next request when the previous one has
finished. Times are taken on the client: time to first character (TTFC) is from sending the
request to the first event that carries text; time per output character (TPOC) is, streamed, the
time from the first to the last character divided by the characters after the first, and, not
streamed, the whole latency divided by the characters.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LevelResult:
    mode: str  # "generate", "stream" or "score"
    concurrency: int
    seconds: float = 0.0
    chars: int = 0
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    tpoc: list[float] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def chars_per_s(self) -> float:
        return self.chars / self.seconds if self.seconds else 0.0

    def errors(self) -> str:
        bad = {s: n for s, n in sorted(self.statuses.items()) if s != 200}
        return ", ".join(f"{s or 'no answer'}: {n}" for s, n in bad.items()) or "none"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank rule; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# status recorded for a request that got no HTTP answer (connection refused, reset, ...)
NO_ANSWER = 0


def make_client(base_url: str, connections: int = 1024) -> httpx.AsyncClient:
    # idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under us
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=3.0
    )
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=600)


class Clients:
    """One async httpx client per closed-loop worker, as separate users would each have one.

    All workers run in this one process and event loop. A single ``AsyncClient`` shared by many
    concurrent requests spends most of the client's CPU in its own connection pool (each request
    looks through every pooled connection): measured on the 2-core machine, 64 concurrent
    ``/health`` calls cost a shared client 6.7 ms of CPU each against 0.8 ms with a client per
    worker, and the client shares those two cores with the server it measures.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._clients: list[httpx.AsyncClient] = []

    def __getitem__(self, worker: int) -> httpx.AsyncClient:
        while len(self._clients) <= worker:
            self._clients.append(make_client(self.base_url, connections=2))
        return self._clients[worker]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients = []

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _one_generation(
    client: httpx.AsyncClient, body: dict[str, Any], result: LevelResult
) -> None:
    try:
        await _generation(client, body, result)
    except httpx.HTTPError:
        result.statuses[NO_ANSWER] += 1


async def _generation(client: httpx.AsyncClient, body: dict[str, Any], result: LevelResult) -> None:
    start = time.perf_counter()
    if not body.get("stream"):
        response = await client.post("/v1/generate", json=body)
        latency = time.perf_counter() - start
        result.statuses[response.status_code] += 1
        if response.status_code != 200:
            return
        chars = sum(c["num_chars"] for c in response.json()["completions"])
        result.ok += 1
        result.chars += chars
        result.latencies.append(latency)
        if chars:
            result.tpoc.append(latency / chars)
        return
    first_at = last_at = 0.0
    first_chars = chars = 0
    async with client.stream("POST", "/v1/generate", json=body) as response:
        result.statuses[response.status_code] += 1
        if response.status_code != 200:
            await response.aread()
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                result.statuses[599] += 1  # an error inside a 200 stream
                return
            text = event.get("text", "")
            if text:
                now = time.perf_counter()
                if not chars:
                    first_at, first_chars = now, len(text)
                last_at = now
                chars += len(text)
    latency = time.perf_counter() - start
    result.ok += 1
    result.chars += chars
    result.latencies.append(latency)
    if chars:
        result.ttfc.append(first_at - start)
    if chars > first_chars:
        result.tpoc.append((last_at - first_at) / (chars - first_chars))


async def generation_level(
    clients: Clients,
    model: str,
    concurrency: int,
    per_worker: int,
    max_chars: int,
    stream: bool,
    prompt: str = "The ",
) -> LevelResult:
    """``concurrency`` workers, ``per_worker`` completions each, distinct seeds."""
    result = LevelResult("stream" if stream else "generate", concurrency)

    async def worker(w: int) -> None:
        for i in range(per_worker):
            body = {
                "model": model,
                "prompt": prompt,
                "max_chars": max_chars,
                "temperature": 1.0,
                "seed": w * 1000 + i,
                "stream": stream,
            }
            await _one_generation(clients[w], body, result)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class BurstResult:
    sent: int
    statuses: Counter[int]
    rejected_latencies: list[float]
    retry_after: set[str]
    seconds: float


async def _raw_request(
    host: str, port: int, request: bytes, statuses: Counter[int], rejected: list[float],
    retry_after: set[str], go: asyncio.Event,
) -> None:  # fmt: skip
    """One request on a connection of its own, timed from the moment the connection is opened
    (before the TCP handshake) to the reply's headers: a refusal's time includes the wait to be
    accepted by a busy server, as a client sees it."""
    await go.wait()
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        statuses[NO_ANSWER] += 1
        return
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        elapsed = time.perf_counter() - start
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        await reader.readexactly(int(headers.get("content-length", "0")))
        statuses[status] += 1
        if status == 429:
            rejected.append(elapsed)
            retry_after.add(headers.get("retry-after", "missing"))
    except (OSError, asyncio.IncompleteReadError, ValueError):
        statuses[NO_ANSWER] += 1
    finally:
        writer.close()


async def burst(base_url: str, model: str, requests: int, max_chars: int) -> BurstResult:
    """``requests`` generation requests at once, each opening its own connection when the burst
    starts.

    A lean client (raw HTTP/1.1 over asyncio streams, no httpx) keeps the client's own cost out
    of the 429 reply times on a small machine; the requests are built before the burst starts.
    """
    host, port = base_url.removeprefix("http://").split(":")
    statuses: Counter[int] = Counter()
    rejected: list[float] = []
    retry_after: set[str] = set()
    go = asyncio.Event()
    tasks = []
    for i in range(requests):
        body = json.dumps({"model": model, "prompt": "The ", "max_chars": max_chars, "seed": i})
        request = (
            f"POST /v1/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()
        tasks.append(
            asyncio.create_task(
                _raw_request(host, int(port), request, statuses, rejected, retry_after, go)
            )
        )
    await asyncio.sleep(0)  # every task waits at the start line
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return BurstResult(requests, statuses, rejected, retry_after, time.perf_counter() - start)


async def open_connections(clients: Clients, count: int) -> None:
    """Open the keep-alive connections of the first ``count`` workers (cheap requests at once), so
    later timings measure request handling rather than TCP handshakes."""
    await asyncio.gather(*(clients[w].get("/health") for w in range(count)))
