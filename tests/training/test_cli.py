from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from models.registry import available_architectures, model_class
from models.scoring import score_texts
from training.checkpoint_cli import eval_main, sample_main
from training.cli import RESUMABLE, _train_parser, build_train_config, train_main
from training.config import TrainConfig, field_choices
from training.distributed import DEVICES
from training.presets import PRESETS


def _train(corpus_file: Path, out: Path, cache_dir: Path, *extra: str) -> int:
    return train_main(
        [
            "--data", str(corpus_file), "--out", str(out), "--cache-dir", str(cache_dir),
            "--preset", "tiny", "--hidden-size", "32", "--batch-size", "4", "--seq-len", "16",
            "--max-steps", "30", "--eval-interval", "15", "--sample-chars", "10",
            "--device", "cpu", *extra,
        ]
    )  # fmt: skip


@pytest.fixture
def checkpoint(tmp_path: Path, corpus_file: Path, cache_dir: Path) -> Path:
    out = tmp_path / "ck" / "model.safetensors"
    assert _train(corpus_file, out, cache_dir) == 0
    return out


def test_train_writes_checkpoint_metrics_plot_and_resume(checkpoint: Path) -> None:
    folder = checkpoint.parent
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "model.metrics.jsonl",
        "model.png",
        "model.resume.safetensors",
        "model.safetensors",
    ]
    records = [json.loads(line) for line in (folder / "model.metrics.jsonl").read_text().split("\n")
               if line]  # fmt: skip
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert {"step", "time", "train_loss", "lr", "chars_per_sec"} <= set(train[0])
    assert [r["step"] for r in evals] == [15, 30]
    loaded = load_checkpoint(checkpoint)
    assert loaded.config.hidden_size == 32 and loaded.config.embed_size == 32  # preset + flag
    assert loaded.train_config["max_steps"] == 30


def test_eval_prints_the_scoring_figures(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = tmp_path / "held_out.txt"
    text = "gamma 3 ammag.\nbeta 5 ateb. ∑\n"
    held_out.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint), "--data", str(held_out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"bits_per_char", "nats_per_char", "perplexity", "num_chars", "num_unknown"} <= set(
        report
    )
    assert report["num_chars"] == len(text) and report["num_unknown"] == 1
    assert report["likelihood"] == "exact"
    loaded = load_checkpoint(checkpoint)
    (score,) = score_texts(loaded.model, loaded.vocab, [text])
    assert report["nats_per_char"] == pytest.approx(score.nats_per_char, rel=1e-9)
    assert report["bits_per_char"] == pytest.approx(score.bits_per_char, rel=1e-9)


def test_eval_labels_a_bidirectional_figure_as_pseudo_likelihood(
    tmp_path: Path, corpus_file: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bi.safetensors"
    assert _train(corpus_file, out, cache_dir, "--arch", "bilstm", "--max-steps", "5") == 0
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(out), "--data", str(corpus_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "bilstm" and report["likelihood"] == "pseudo"


def test_eval_reports_bad_input_clearly(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\xc3(")
    with pytest.raises(SystemExit) as info:
        eval_main(["--checkpoint", str(checkpoint), "--data", str(bad)])
    assert info.value.code == 2
    assert f"{bad}: invalid UTF-8 at byte offset 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--data", str(bad)])
    assert "no such checkpoint" in capsys.readouterr().err


def test_sample_same_seed_same_text(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--checkpoint", str(checkpoint), "--prompt", "alpha", "--length", "60"]
    outputs = []
    for seed in ("7", "7", "8"):
        capsys.readouterr()
        assert sample_main([*args, "--seed", seed, "--temperature", "1.0"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].startswith("alpha") and len(outputs[0]) == len("alpha") + 60 + 1
    capsys.readouterr()
    sample_main([*args, "--temperature", "0"])
    greedy = capsys.readouterr().out
    sample_main([*args, "--temperature", "0", "--seed", "99"])
    assert capsys.readouterr().out == greedy  # greedy ignores the seed


def test_train_errors_exit_2_with_a_message(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("just a few characters here\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        _train(short, tmp_path / "m.safetensors", cache_dir)
    assert info.value.code == 2
    assert "too short" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SystemExit):
        _train(empty, tmp_path / "m.safetensors", cache_dir)
    assert "empty" in capsys.readouterr().err


def test_flags_override_preset_and_arch_options_parse() -> None:
    parser = _train_parser()
    args = vars(
        parser.parse_args(
            ["--data", "x", "--out", "y", "--preset", "medium", "--lr", "0.01", "--max-time", "60",
             "--arch", "gru", "--arch-option", "periods=[1, 2, 4]", "--arch-option", "mode=fast"]
        )
    )  # fmt: skip
    config = build_train_config(args)
    assert config.preset == "medium" and config.lr == 0.01
    assert config.hidden_size == PRESETS["medium"]["hidden_size"]
    assert config.max_time == 60 and config.max_steps is None
    assert config.arch == "gru"
    assert config.arch_options == {"periods": [1, 2, 4], "mode": "fast"}
    arch_action = next(a for a in parser._actions if a.dest == "arch")
    assert list(arch_action.choices or []) == available_architectures()


def test_resume_refuses_changed_model_flags(
    checkpoint: Path, corpus_file: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _train(corpus_file, checkpoint, cache_dir, "--resume", "--hidden-size", "64")
    assert "--hidden-size differ" in capsys.readouterr().err
    # a longer budget is allowed, and the run continues from step 30
    assert _train(corpus_file, checkpoint, cache_dir, "--resume", "--max-steps", "40") == 0
    assert load_checkpoint(checkpoint).training["step"] in (30, 40)


def test_train_flags_are_generated_from_the_config_fields() -> None:
    parser = _train_parser()
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        action = actions[f.name]
        assert f.metadata["help"] in (action.help or ""), f.name
        assert action.choices == field_choices(f), f.name
    assert "--arch-option" in actions["arch_options"].option_strings
    # the help shows the defaults, from the presets where they set the value
    assert "(default: 0.01)" in (actions["state_reset"].help or "")
    assert "small 512" in (actions["hidden_size"].help or "")
    # the budgets and reporting settings, and only they, may change on resume
    assert {"max_steps", "max_time", "patience", "device", "precision"} <= RESUMABLE
    assert not {"hidden_size", "lr", "arch", "seed", "seq_len"} & RESUMABLE


def test_every_cli_offers_the_same_devices(capsys: pytest.CaptureFixture[str]) -> None:
    for main in (eval_main, sample_main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "{" + ",".join(DEVICES) + "}" in capsys.readouterr().out
    device = next(a for a in _train_parser()._actions if a.dest == "device")
    assert device.choices == DEVICES


def test_a_tie_weights_flag_turns_the_boolean_on_and_off() -> None:
    parser = _train_parser()
    on = vars(parser.parse_args(["--data", "x", "--out", "y", "--tie-weights"]))
    off = vars(parser.parse_args(["--data", "x", "--out", "y", "--no-tie-weights"]))
    assert build_train_config(on).tie_weights and not build_train_config(off).tie_weights
    assert "tie_weights" not in vars(parser.parse_args(["--data", "x", "--out", "y"]))


def test_the_regulariser_flags_train_and_are_kept_in_the_checkpoint(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    out = tmp_path / "reg.safetensors"
    flags = ["--embed-dropout", "0.1", "--weight-drop", "0.2", "--locked-dropout",
             "--dropout", "0.2", "--max-steps", "6", "--eval-interval", "3"]  # fmt: skip
    assert _train(corpus_file, out, cache_dir, *flags) == 0
    loaded = load_checkpoint(out)
    config = loaded.config
    assert (config.embed_dropout, config.weight_drop, config.locked_dropout) == (0.1, 0.2, True)
    assert loaded.train_config["weight_drop"] == 0.2
    (score,) = score_texts(loaded.model, loaded.vocab, ["alpha beta\n"])
    assert score.num_chars == 11 and bool(score.logprobs.isfinite().all())


def test_an_architecture_without_a_regulariser_is_a_clean_error(
    tmp_path: Path, corpus_file: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _train(corpus_file, tmp_path / "m.safetensors", cache_dir, "--arch", "clockwork",
               "--weight-drop", "0.2")  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'clockwork' does not support weight_drop" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "arch", [a for a in available_architectures() if not model_class(a).can_tie_weights]
)
def test_an_architecture_that_cannot_tie_weights_is_a_clean_error(
    arch: str,
    tmp_path: Path,
    corpus_file: Path,
    cache_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "m.safetensors"
    with pytest.raises(SystemExit) as info:
        _train(corpus_file, out, cache_dir, "--arch", arch, "--tie-weights")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.splitlines()[-1]  # the whole message, on one line
    assert line.startswith(f"charlm-train: error: architecture {arch!r} does not support")
    assert "tie_weights" in line and line.endswith("it applies to gru, lstm, rnn")
    assert not out.exists()


def test_tied_weights_train_through_validations_and_resume(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    out = tmp_path / "tied.safetensors"
    tied = ["--embed-size", "32", "--tie-weights", "--max-steps", "4", "--eval-interval", "2"]
    assert _train(corpus_file, out, cache_dir, *tied) == 0
    assert _train(corpus_file, out, cache_dir, *tied, "--resume", "--max-steps", "6") == 0
    loaded = load_checkpoint(out)
    assert loaded.config.tie_weights and loaded.training["step"] in (4, 6)
    assert loaded.model.head.weight.data_ptr() == loaded.model.embedding.weight.data_ptr()
