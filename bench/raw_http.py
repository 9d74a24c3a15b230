"""A minimal HTTP/1.1 client over asyncio streams, for measuring a server rather than a client.

An ``httpx`` request costs the client about 0.6 ms of CPU (the server measured on the same two
cores pays for it); a request written by hand on a kept-alive connection costs a few tens of
microseconds. This client speaks only what the benchmarks need: ``POST`` of a JSON body on one
connection, one request at a time, a response with ``Content-Length`` (what the server's JSON
routes send).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RawConnection:
    """One kept-alive connection to ``host:port``; ``open`` before use, ``close`` after."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
        self._reader = self._writer = None

    async def post_json(self, path: str, payload: Any) -> tuple[int, bytes]:
        """``POST path`` with ``payload`` as JSON; the status and the body."""
        assert self._reader is not None and self._writer is not None, "open() first"
        if self._reader.at_eof():  # the server closed it while idle (keep-alive timeout)
            await self.close()
            await self.open()
            assert self._reader is not None and self._writer is not None
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        header = await self._reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise ValueError(f"{path}: a response without Content-Length is not supported")
        return status, await self._reader.readexactly(length)


async def open_connections(host: str, port: int, count: int) -> list[RawConnection]:
    connections = [RawConnection(host, port) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in connections))
    return connections
