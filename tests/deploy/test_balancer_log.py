"""bench.scale counts the balancer's retries from HAProxy's access log (lines of a real run)."""

from __future__ import annotations

from bench.scale_stack import count_retries

# lines of a real run: state messages, a check, requests redispatched to another replica; the
# last one's counter is changed to a retry on the same replica (no "+")
LOG = "\n".join(
    [
        "[WARNING]  (1) : replicas/replica1 changed its IP from (none) to 172.23.0.3"
        " by docker/dockerdns.",
        "172.23.0.1:50254 [29/Nov/2026:04:00:19.231] charlm replicas/replica1"
        ' 0/0/0/1/1 200 221 - - ---- 1/1/0/0/0 0/0 "GET /ready HTTP/1.1"',
        "Server replicas/replica1 is DOWN, reason: Layer4 connection problem, info:"
        ' "Connection refused", check duration: 3ms. 1 active and 0 backup servers left.',
        "172.23.0.1:37764 [29/Nov/2026:04:00:24.283] charlm replicas/replica2"
        ' 0/46/0/57/103 200 547 - - ---- 8/8/6/6/+1 0/0 "POST /v1/score HTTP/1.1"',
        "172.23.0.1:37678 [29/Nov/2026:04:00:24.049] charlm replicas/replica2"
        ' 0/231/0/106/337 200 428 - - ---- 9/9/4/4/+1 0/0 "POST /v1/generate HTTP/1.1"',
        "172.23.0.1:37752 [29/Nov/2026:04:00:24.342] charlm replicas/replica2"
        ' 0/1/0/49/50 200 445 - - ---- 8/8/2/1/2 0/0 "POST /v1/generate HTTP/1.1"',
    ]
)


def test_counts_retried_and_redispatched_requests() -> None:
    assert count_retries(LOG) == (3, 2)


def test_no_request_lines_no_retries() -> None:
    assert count_retries("") == (0, 0)
    assert count_retries(LOG.splitlines()[2]) == (0, 0)  # a health-check message with quotes
