"""Every benchmark script runs end to end in its ``--smoke`` mode and prints its figures.

The figures in the docs come from full runs; these runs only prove, in seconds each, that the
scripts behind them still run on loopback with tiny models and budgets, and print the tables,
ratios and verdicts the docs quote, as finite numbers. Each script runs in this process through
its ``main(argv)``. A new script under ``bench/`` must get a case here (the first test fails
until it has one).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import (
    adaptive,
    architectures,
    clockwork_paper,
    fuzz,
    kill_resume,
    recipe,
    recipe_report,
    serve,
    soak,
    train,
)

BENCH = Path(__file__).resolve().parents[2] / "bench"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(text)]


def line_with(output: str, start: str) -> str:
    """The first printed line that starts with ``start`` (list items without their dash)."""
    for line in output.splitlines():
        if line.removeprefix("- ").startswith(start):
            return line
    raise AssertionError(f"no line starts with {start!r} in:\n{output}")


def finite_figures(line: str) -> list[float]:
    values = numbers(line)
    assert values and all(math.isfinite(v) for v in values), line
    return values


def scripts_with_main() -> set[str]:
    return {
        path.stem
        for path in BENCH.glob("*.py")
        if re.search(r"^def main\(", path.read_text(encoding="utf-8"), re.MULTILINE)
    }


# ---------------------------------------------------------------------------- per script
def check_train(output: str, code: int, tmp: Path) -> None:
    assert code == 0
    dtypes = re.search(r"arithmetic: charlm (\S+) \(precision .*\), reference (\S+);", output)
    assert dtypes, output
    assert dtypes.group(1) == dtypes.group(2), "both loops must compute in the same format"
    assert "charlm state_reset 0.01;" in output, "charlm runs with its default stream restarts"
    assert re.search(r"^auto: \d+x\d+ lstm ", output, re.M), "charlm runs the auto preset"
    assert "| loop | best val nats/char | best val bits/char | chars/s | parameters | steps |" in (
        output
    )
    for name in ("charlm", "reference"):
        nats, bits, cps, params, steps = finite_figures(line_with(output, f"| {name} |"))
        assert 0 < nats < 10 and bits == pytest.approx(nats / math.log(2), abs=1e-3)
        assert cps > 0 and params > 0 and steps >= 1
    finite_figures(line_with(output, "charlm - reference:"))


def check_serve(output: str, code: int, tmp: Path) -> None:
    assert code == 0
    assert serve.TABLE_HEAD in output
    for row in (
        "| batched | generate | 4 |",
        "| batched | stream | 4 |",
        "| batched | score | 4 |",
    ):
        finite_figures(line_with(output, row))
    for row in ("| unbatched | generate | 4 |", "| unbatched | stream | 4 |"):
        assert "| none |" in line_with(output, row)
    assert line_with(output, "| bare loop (oneDNN").count("| 4 |") == 1
    for start in (
        "HTTP generation / bare loop at 4 streams",
        "batched / CHARLM_MAX_BATCH_SIZE=1 at 4 streams",
        "single stream time per character",
        "in-process scoring of 64 texts of 200 chars",
        "HTTP scoring, 64 concurrent requests",
        "HTTP scoring, one request of the 64 texts",
        "HTTP scoring, 64 concurrent requests of one text from a hand-written",
        "HTTP scoring, 64 clients of the hand-written client",
    ):
        line = line_with(output, start)
        finite_figures(line)
        assert "target" in line
    report = json.loads((tmp / "serve.json").read_text())
    summary = report["models"]["tiny-2x128"]
    ratios = [
        *summary["vs_bare_loop"]["4"].values(),
        *summary["vs_unbatched"]["4"].values(),
        summary["single_stream_over_bare_step"],
        summary["inprocess_over_bare_forward"],
        summary["http_score_over_inprocess"],
        summary["http_score_one_request_over_inprocess"],
        summary["http_score_raw_over_inprocess"],
        summary["http_score_closed_loop_over_inprocess"],
    ]
    assert all(isinstance(r, list) or (math.isfinite(r) and r > 0) for r in ratios), ratios
    over = report["overload"]
    # 3 bursts of 16 at capacity 4 (2 rows + 2 queued): each burst is refused in part, and
    # every burst's refusals are in the figures, the first included
    assert over["bursts"] == 3 and over["sent"] == 48 and over["server_errors"] == 0
    assert over["rejected"] == over["statuses"]["429"] > 0
    assert len(over["rejected_max_ms_by_burst"]) == 3
    assert all(math.isfinite(v) for v in over["rejected_max_ms_by_burst"])
    finite_figures(line_with(output, "429 reply time from connection opening"))


def check_architectures(output: str, code: int, tmp: Path) -> None:
    assert code == 0
    assert "| arch | hidden | trainable params | val bpc | train chars/s |" in output
    rows = json.loads((tmp / "architectures.json").read_text())
    assert [r["arch"] for r in rows] == architectures.ARCHS
    assert all(math.isfinite(r["val_bpc"]) and r["train_chars_per_s"] > 0 for r in rows)
    for arch in architectures.ARCHS:
        finite_figures(line_with(output, f"| {arch} |"))


def check_clockwork_paper(output: str, code: int, tmp: Path) -> None:
    assert code == 0
    assert "| model (init) | weights | optimiser, rate | NMSE mean ± std | min | max |" in output
    for model in ("Simple RNN (N(0, 0.1))", "LSTM (PyTorch default)", "Clockwork RNN (N(0"):
        finite_figures(line_with(output, f"| {model}"))


def check_fuzz(output: str, code: int, tmp: Path) -> None:
    assert code == 0, output
    assert "run           examples/op   cases   exit   seconds" in output
    for run in ("with-key", "without-key"):
        cases = finite_figures(line_with(output, run))[1]
        assert cases > 0
    assert output.count("[PASS]") == 5 and "[FAIL]" not in output


def check_kill_resume(output: str, code: int, tmp: Path) -> None:
    assert code == 0, output
    assert re.search(r"^kill 1: SIGKILL at step \d+, last save at step \d+", output, re.M)
    finite_figures(line_with(output, "reference run:"))
    assert output.count("[PASS]") == 5 and "[FAIL]" not in output


def check_soak(output: str, code: int, tmp: Path) -> None:
    result = json.loads((tmp / "soak.json").read_text())
    # two seconds of load are too short to judge memory growth; every other promise holds
    checks = {c["check"].split(" (")[0]: c["ok"] for c in result["checks"]}
    assert checks["no 5xx"] and checks["no broken answer or transport error"], checks
    assert checks["some requests served"], checks
    assert code == (0 if all(checks.values()) else 1)
    assert re.search(r"^soak: \d+ clients for 2s after 1s warm-up", output, re.M)
    finite_figures(line_with(output, "all "))
    assert result["totals"].get("200", 0) > 0


def check_adaptive(output: str, code: int, tmp: Path) -> None:
    assert code == 0, output
    assert adaptive.TABLE_HEAD in output
    for start in ("| static |", "| adaptive | rms |", "| adaptive default (whole) |"):
        finite_figures(line_with(output, start))
    finite_figures(line_with(output, "cost per character:"))
    assert "target >= 0.05" in line_with(output, "adaptive (defaults) vs static")
    figures = json.loads((tmp / "adaptive.json").read_text())
    assert figures["results"] and all(math.isfinite(r["cost_ratio"]) for r in figures["results"])


def check_recipe(output: str, code: int, tmp: Path) -> None:
    assert code == 0, output
    # the default preset, as a user runs it: no flag beyond the data, the budget, the seed (the
    # smoke run trains two) and the file
    for seed in (1, 2):
        command = rf"^\$ \S*charlm-train --data \S+ --max-time 3 --seed {seed} --out \S+$"
        assert re.search(command, output, re.M)
    assert recipe_report.TABLE_HEAD in output and recipe_report.ADAPT_HEAD in output
    row = line_with(output, "| 3 (seed 1) |")
    assert re.search(r"\| \d+x\d+ lstm \(.*weights\); dropout ", row), "what auto chose"
    finite_figures(row)
    finite_figures(line_with(output.split(recipe_report.ADAPT_HEAD)[1], "| 3 (seed 2) |"))
    report = json.loads((tmp / "recipe.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [1, 2]
    held_out = int(numbers(line_with(output, "corpus smoke-corpus.txt:"))[1])
    trained = re.search(r"([\d,]+) validation characters", output)
    assert trained and int(trained.group(1).replace(",", "")) == held_out
    for figures in report["runs"]:
        for kind in ("static", "adaptive"):
            scores = figures[kind]
            assert scores["num_chars"] == held_out, "charlm-eval scores the text training held out"
            assert 0 < scores["nats_per_char"] < 10 and math.isfinite(scores["seconds_per_char"])
        assert figures["adaptive_minus_static_bits_per_char"] == pytest.approx(
            figures["adaptive"]["bits_per_char"] - figures["static"]["bits_per_char"]
        )
        assert figures["curve"] and all(w > 0 and 0 < v < 10 for w, v in figures["curve"])
    # the two seeds' summary
    assert recipe_report.SEEDS_HEAD in output
    (summary,) = report["seeds"]
    values = [r["static"]["nats_per_char"] for r in report["runs"]]
    assert summary["runs"] == 2 and summary["mean"] == pytest.approx(sum(values) / 2)
    assert summary["min"] == min(values) and summary["max"] == max(values)
    assert figures["wall_seconds"] > 0 and figures["verdict"] == "-", "no target here"
    assert (tmp / "mine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


Check = Callable[[str, int, Path], None]
CASES: dict[str, tuple[Callable[[list[str]], int], list[str], Check]] = {
    "train": (train.main, ["--threads", "1"], check_train),
    "adaptive": (adaptive.main, ["--json", "{tmp}/adaptive.json"], check_adaptive),
    "recipe": (recipe.main, ["--out", "{tmp}", "--json", "{tmp}/recipe.json"], check_recipe),
    "serve": (serve.main, ["--json", "{tmp}/serve.json"], check_serve),
    "architectures": (
        architectures.main,
        ["--json", "{tmp}/architectures.json"],
        check_architectures,
    ),
    "clockwork_paper": (clockwork_paper.main, [], check_clockwork_paper),
    "fuzz": (fuzz.main, [], check_fuzz),
    "kill_resume": (kill_resume.main, [], check_kill_resume),
    "soak": (soak.main, ["--json", "{tmp}/soak.json"], check_soak),
}


#: scripts that cannot run on loopback in seconds, each with the reason (reported as a skip)
ELSEWHERE = {
    "scale": "bench/scale.py brings up the compose stack: it needs a Docker engine, not loopback",
}

#: scripts whose smoke run is tested in a file of its own beside this one
OWN_FILE = {
    "evaluation": "test_evaluation_smoke.py",
    "hot_swap": "test_hot_swap_smoke.py",
    "markov": "test_markov.py",
    "score_corpus": "test_score_corpus_smoke.py",
    "single_stream": "test_single_stream_smoke.py",
}


def test_every_benchmark_script_has_a_smoke_case() -> None:
    missing = scripts_with_main() - set(CASES) - set(ELSEWHERE) - set(OWN_FILE)
    assert not missing, f"bench scripts without a smoke case here: {sorted(missing)}"
    for name in [*CASES, *OWN_FILE]:
        assert '"--smoke"' in (BENCH / f"{name}.py").read_text(encoding="utf-8"), name
    for name, test_file in OWN_FILE.items():
        text = (Path(__file__).parent / test_file).read_text(encoding="utf-8")
        assert '"--smoke"' in text and f"{name}.main(" in text, test_file


@pytest.mark.parametrize("name", sorted(ELSEWHERE))
def test_scripts_without_a_loopback_smoke_run_are_reported(name: str) -> None:
    assert (BENCH / f"{name}.py").is_file(), f"{name} is gone: remove it from ELSEWHERE"
    pytest.skip(ELSEWHERE[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_mode_prints_the_figures(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, extra, check = CASES[name]
    argv = ["--smoke", *(arg.format(tmp=tmp_path) for arg in extra)]
    code = main(argv)
    output = capsys.readouterr().out
    check(output, code, tmp_path)
