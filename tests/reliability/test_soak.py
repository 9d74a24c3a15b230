"""The soak in short: ``bench/soak.py`` at twice the capacity for 20 seconds (the script's own
promises are the assertions: no 5xx, no broken answer, memory within 10% of warm-up, queue,
rows and open generations back to zero). ``python -m bench.soak`` runs it for 10 minutes."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import main as soak_main


def test_a_short_soak_keeps_every_promise(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    args = ["--duration", "20", "--warmup", "10", "--max-batch-size", "4", "--max-queue", "8"]
    code = soak_main([*args, "--json", str(report)])
    result = json.loads(report.read_text())
    assert code == 0, json.dumps(result["checks"], indent=1)
    assert result["totals"].get("200", 0) >= 20
    assert result["totals"].get("429", 0) > 0, "twice the capacity must be refused in part"
    kinds = result["requests"]
    assert all(kinds.get(k, {}).get("200", 0) > 0 for k in ("score", "stream", "disconnect"))
