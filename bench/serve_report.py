"""What ``bench.serve`` reports: the ratios against the targets and the table of levels."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from bench.baselines import LoopTiming
from bench.serve_load import LevelResult, percentile

TABLE_HEAD = (
    "| server | mode | conc. | req/s | TTFC p50 / p99 ms | TPOC p50 / p99 us | chars/s | errors |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds == seconds else "-"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}" if seconds == seconds else "-"


def table_row(server: str, r: LevelResult) -> str:
    return (
        f"| {server} | {r.mode} | {r.concurrency} | {r.requests_per_s:.1f} "
        f"| {ms(percentile(r.ttfc, 0.5))} / {ms(percentile(r.ttfc, 0.99))} "
        f"| {us(percentile(r.tpoc, 0.5))} / {us(percentile(r.tpoc, 0.99))} "
        f"| {r.chars_per_s:,.0f} | {r.errors()} |"
    )


def bare_row(t: LoopTiming) -> str:
    """The bare sampling loop as a row of the table: its step time is its time per character."""
    kernel = "oneDNN on" if t.onednn else "oneDNN off"
    step = us(t.seconds_per_step)
    return (
        f"| bare loop ({kernel}) | loop | {t.batch_size} | - | - | {step} / {step} "
        f"| {t.chars_per_s:,.0f} | none |"
    )


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def at_least(value: float, target: float) -> str:
    return f"{value:.2f}x (target >= {target:g}x: {verdict(value >= target)})"


def ratio_lines(s: dict[str, Any]) -> list[str]:
    """The targets of the serving benchmark for one model, each with its figures and verdict."""
    lines = []
    for level, r in sorted(s["vs_bare_loop"].items()):
        lines.append(
            f"HTTP generation / bare loop at {level} streams: non-streamed "
            f"{r['generate_chars_per_s']:,.0f} / {r['bare_chars_per_s']:,.0f} chars/s = "
            f"{at_least(r['generate'], 0.8)}; streamed {r['stream_chars_per_s']:,.0f} / "
            f"{r['bare_chars_per_s']:,.0f} = {at_least(r['stream'], 0.6)}"
        )
    for level, r in sorted(s["vs_unbatched"].items()):
        lines.append(
            f"batched / CHARLM_MAX_BATCH_SIZE=1 at {level} streams: non-streamed "
            f"{at_least(r['generate'], 8)}; streamed {at_least(r['stream'], 8)}"
        )
    single = s["single_stream_over_bare_step"]
    lines.append(
        f"single stream time per character {us(s['single_stream_tpoc_s'])} us / eager bare step "
        f"{us(s['bare_step_s'])} us = {single:.2f} (target <= 0.6: {verdict(single <= 0.6)})"
    )
    texts = s["score_texts"]
    lines.append(
        f"in-process scoring of {len(texts)} texts of {max(texts)} chars "
        f"{ms(s['inprocess_score_s'])} ms / one bare forward over the same padded batch "
        f"{ms(s['bare_forward_s'])} ms: chars/s {at_least(s['inprocess_over_bare_forward'], 0.8)}"
    )
    lines.append(
        f"HTTP scoring, {len(texts)} concurrent requests of one text, "
        f"{s['http_score_chars_per_s']:,.0f} chars/s / in-process "
        f"{s['inprocess_score_chars_per_s']:,.0f} chars/s: "
        f"{at_least(s['http_score_over_inprocess'], 0.7)}; CPU per request: server "
        f"{ms(s['http_score_server_cpu_s_per_request'])} ms (model included), client "
        f"{ms(s['http_score_client_cpu_s_per_request'])} ms"
    )
    lines.append(
        f"HTTP scoring, {len(texts)} concurrent requests of one text from a hand-written HTTP/1.1"
        f" client, one burst, {s['http_score_raw_chars_per_s']:,.0f} chars/s / in-process: "
        f"{at_least(s['http_score_raw_over_inprocess'], 0.7)}"
    )
    lines.append(
        f"HTTP scoring, {len(texts)} clients of the hand-written client each scoring its text "
        f"{s['score_rounds']} times in a closed loop, "
        f"{s['http_score_closed_loop_chars_per_s']:,.0f} chars/s / in-process: "
        f"{at_least(s['http_score_closed_loop_over_inprocess'], 0.7)}"
    )
    lines.append(
        f"HTTP scoring, one request of the {len(texts)} texts, "
        f"{s['http_score_one_request_chars_per_s']:,.0f} chars/s / in-process: "
        f"{at_least(s['http_score_one_request_over_inprocess'], 0.7)}"
    )
    return lines


def chars_per_s(
    results: list[tuple[str, LevelResult]], server: str, mode: str, level: int
) -> float:
    for name, r in results:
        if name == server and r.mode == mode and r.concurrency == level:
            return r.chars_per_s
    return float("nan")


def summarize(
    results: list[tuple[str, LevelResult]],
    loops: dict[int, list[LoopTiming]],
    paired: dict[str, Any],
    unbatched_levels: list[int],
) -> dict[str, Any]:
    vs_bare = {}
    for level, timings in loops.items():
        bare = statistics.median(t.chars_per_s for t in timings)
        gen = chars_per_s(results, "batched", "generate", level)
        stream = chars_per_s(results, "batched", "stream", level)
        vs_bare[level] = {
            "bare_chars_per_s": bare,
            "bare_onednn": [t.onednn for t in timings],
            "generate_chars_per_s": gen,
            "stream_chars_per_s": stream,
            "generate": gen / bare,
            "stream": stream / bare,
        }
    vs_unbatched = {
        level: {
            mode: chars_per_s(results, "batched", mode, level)
            / chars_per_s(results, "unbatched", mode, level)
            for mode in ("generate", "stream")
        }
        for level in unbatched_levels
    }
    return {
        **paired,
        "vs_bare_loop": vs_bare,
        "vs_unbatched": vs_unbatched,
        "single_stream_over_bare_step": paired["single_stream_tpoc_s"] / paired["bare_step_s"],
        "inprocess_over_bare_forward": paired["bare_forward_s"] / paired["inprocess_score_s"],
        "http_score_over_inprocess": paired["http_score_chars_per_s"]
        / paired["inprocess_score_chars_per_s"],
        "http_score_one_request_over_inprocess": paired["http_score_one_request_chars_per_s"]
        / paired["inprocess_score_chars_per_s"],
        "http_score_raw_over_inprocess": paired["http_score_raw_chars_per_s"]
        / paired["inprocess_score_chars_per_s"],
        "http_score_closed_loop_over_inprocess": paired["http_score_closed_loop_chars_per_s"]
        / paired["inprocess_score_chars_per_s"],
        "levels": [{"server": n, **asdict(r), "statuses": dict(r.statuses)} for n, r in results],
    }
