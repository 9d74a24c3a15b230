"""The side-by-side benchmark runs end to end on a small generated corpus (tiny budget)."""

import json

from bench.architectures import main, sized_config
from models.registry import build_model


def test_sized_config_matches_the_parameter_budget() -> None:
    for arch in ("rnn", "clockwork", "bilstm"):
        cfg = sized_config(arch, 40, 20_000)
        count = build_model(cfg).num_parameters(trainable_only=True)
        assert abs(count - 20_000) < 2_500, (arch, count)
    esn = sized_config("esn", 40, 20_000)
    assert abs((esn.hidden_size + 40) * 40 + 40 - 20_000) < 200


def test_benchmark_prints_and_writes_every_row(tiny_corpus: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus * 4, encoding="utf-8")
    out = tmp_path / "rows.json"
    plot = tmp_path / "plot.png"
    args = ["--corpus", str(corpus), "--archs", "rnn", "clockwork", "esn", "bigru"]
    args += ["--budget", "0.5", "--params", "3000", "--batch", "4", "--steps", "16"]
    args += ["--val-chars", "300", "--gen-chars", "8", "--json", str(out), "--plot", str(plot)]
    assert main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["arch"] for r in rows] == ["rnn", "clockwork", "esn", "bigru"]
    assert rows[3]["bpc_kind"].startswith("pll") and "gen_1_chars_per_s" not in rows[3]
    assert all(r["train_chars"] > 0 and r["val_bpc"] > 0 for r in rows)
    assert plot.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "(pll, not comparable)" in printed and "cannot generate" in printed


def test_benchmark_skips_without_the_corpus(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--corpus", str(tmp_path / "absent.txt")]) == 0
    assert "skipped" in capsys.readouterr().out
