"""Hostile bytes at a live server: malformed JSON, wrong content types, huge bodies, slow clients.

Each gets a clear 4xx in the one error shape (or a 408 for a body that never arrives); the server
stays responsive to everyone else meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import API_KEY
from tests.support import LiveServer as Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BODY_TIMEOUT_S = 3.0  # CHARLM_BODY_TIMEOUT_S of keyed_server
MAX_BYTES = 200_000  # CHARLM_MAX_REQUEST_BYTES of keyed_server

# (body, status): 422 invalid_parameter for what the JSON reader parses (or finds invalid JSON),
# 400 bad_request for what it cannot take at all (bytes that are no UTF text, nesting too deep)
MALFORMED: list[tuple[bytes, int]] = [
    (b"", 422),
    (b"{", 422),
    (b'{"texts": ["a"]', 422),
    (b'{"texts": ["a"]} trailing', 422),
    (b'{"texts": ["a"],}', 422),
    (b"{'texts': ['a']}", 422),
    (b'{"texts": [NaN]}', 422),
    (b'{"texts": ["a"], "top_k": 1e999}', 422),
    (b'{"texts": ["a"], "texts": 5}', 422),
    (b"null", 422),
    (b"[]", 422),
    (b'"texts"', 422),
    (b'{"texts": ["\xff\xfe"]}', 400),
    (b'{"texts": ["a\\x00"]}', 422),
    (b'{"texts": ["\\ud800"]}', 422),
    (b"[" * 100_000 + b"]" * 100_000, 400),
    (b'{"texts": ' + b'["a", ' * 5_000 + b'"b"' + b"]" * 5_001 + b"}", 400),
]
CODES = {400: "bad_request", 422: "invalid_parameter"}


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error: dict[str, Any] = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["message"]
    return error


@pytest.mark.parametrize(("body", "status"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_json_is_a_clear_4xx(keyed_server: Server, body: bytes, status: int) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    response = httpx.post(keyed_server.url + "/v1/score", content=body, headers=headers, timeout=30)
    error = check_error(response, status)
    assert error["code"] == CODES[status]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"texts": ["a"]}'),
        ("application/x-www-form-urlencoded", b"texts=a"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="texts"'),
        ("application/xml", b"<texts>a</texts>"),
        ("garbage", b'{"texts": ["a"]}'),
    ],
)
def test_wrong_content_types_are_a_clear_4xx(
    keyed_server: Server, content_type: str, body: bytes
) -> None:
    """The body is not read as JSON, so it is not the object the route takes: 422 on the body."""
    headers = {**AUTH, "Content-Type": content_type}
    response = httpx.post(keyed_server.url + "/v1/score", content=body, headers=headers, timeout=30)
    error = check_error(response, 422)
    assert (error["code"], error["param"]) == ("invalid_parameter", "body")


def test_json_in_utf16_or_with_a_bom_is_read(keyed_server: Server) -> None:
    """JSON's other encodings (RFC 8259 allows UTF-8 only on the wire, RFC 4627 all UTFs) are
    decoded rather than refused: the text scored is the one sent."""
    headers = {**AUTH, "Content-Type": "application/json"}
    for body in ('{"texts": ["ab"]}'.encode("utf-16"), b'\xef\xbb\xbf{"texts": ["ab"]}'):
        response = httpx.post(keyed_server.url + "/v1/score", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["num_chars"] == 2


def raw_request(server: Server, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode("latin-1"))
    return sock


def read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def head(path: str, extra: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def test_a_huge_declared_body_is_refused_before_it_is_sent(keyed_server: Server) -> None:
    sock = raw_request(keyed_server, head("/v1/score", f"Content-Length: {10**12}\r\n"))
    started = time.monotonic()
    answer = read_response(sock, timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer
    assert time.monotonic() - started < 5


def test_a_huge_chunked_body_is_cut_off_early(keyed_server: Server) -> None:
    """The server answers 413 and closes once the limit is passed: of 64 MB the client manages
    to send only a small part (socket buffers) before the connection is gone."""
    total = 64 * 2**20
    sock = raw_request(keyed_server, head("/v1/score", "Transfer-Encoding: chunked\r\n"))
    sent = 0
    piece = b'{"texts": ["' + b"a" * 65_000
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    error: list[BaseException] = []

    def pump() -> None:
        nonlocal sent
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(piece)
        except OSError as exc:
            error.append(exc)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    answer = read_response(sock, timeout=20)
    thread.join(timeout=20)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert error, "the client sent every byte: the server read the whole body"
    assert sent < total // 4, f"the client sent {sent} bytes before the server hung up"


def test_slow_clients_get_a_408_and_others_are_served_meanwhile(keyed_server: Server) -> None:
    """Twenty clients trickle a body one byte at a time; each is answered 408 once the body
    timeout passes, while ordinary requests keep being served in well under a second each."""
    body = b'{"texts": ["alpha beta gamma"]}'
    sockets = [
        raw_request(keyed_server, head("/v1/score", f"Content-Length: {len(body)}\r\n"))
        for _ in range(20)
    ]
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        position = 0
        while not stop.is_set() and position < len(body) - 1:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(body[position : position + 1])
            position += 1
            stop.wait(0.25)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    latencies = []
    with httpx.Client(base_url=keyed_server.url, headers=AUTH, timeout=30) as client:
        while time.monotonic() - started < BODY_TIMEOUT_S:
            t0 = time.monotonic()
            response = client.post("/v1/score", json={"texts": ["delta 2 atled."]})
            latencies.append(time.monotonic() - t0)
            assert response.status_code == 200
            assert client.get("/health").status_code == 200
            time.sleep(0.1)
    answers = [read_response(sock, timeout=BODY_TIMEOUT_S + 10) for sock in sockets]
    stop.set()
    thread.join(timeout=5)
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()
    assert len(latencies) >= 3 and max(latencies) < 2.0, latencies
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
    assert elapsed < BODY_TIMEOUT_S + 10
