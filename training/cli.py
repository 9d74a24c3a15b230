"""``charlm-train``, ``charlm-eval`` and ``charlm-sample``: flags in, config and loop calls out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
import typing
from pathlib import Path
from typing import Any

import torch

from models.scoring import bits_per_char
from training import auto, distributed
from training.batches import StreamError
from training.budget import startup_seconds
from training.config import TrainConfig, config_from_preset, field_choices
from training.data import CorpusError, load_corpus
from training.esn import train_esn
from training.loop import Trainer
from training.presets import DEFAULT_PRESET, PRESETS
from training.report import ProgressReporter, Reporter
from training.resume import ResumeError, load_resume, resume_path

# flags of the run that are not training settings: where the data and the files are
_DATA_FLAGS = {"data", "val_data", "cache_dir", "out", "resume"}
#: settings a resumed run may change (budgets and reporting); the others must match
RESUMABLE = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"])
# how the few settings that are not one plain value each are written on the command line
_SPELLING: dict[str, dict[str, Any]] = {
    "arch_options": {"flag": "--arch-option", "action": "append", "metavar": "KEY=VALUE"},
}


def _arch_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word is a string


def _shown(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "none", False: "off", True: "on"}[value]
    return str(value)


def _describe(f: dataclasses.Field[Any]) -> str:
    """The field's help, with its default: the presets' values where the presets set it."""
    if any(f.name in values for values in PRESETS.values()):
        shown = ", ".join(
            f"{p} {_shown(values.get(f.name, f.default))}" for p, values in PRESETS.items()
        )
        return f"{f.metadata['help']} (default by preset: {shown})"
    if f.default is dataclasses.MISSING:  # a collection: empty by default
        return str(f.metadata["help"])
    return f"{f.metadata['help']} (default: {_shown(f.default)})"


def _flag_kwargs(f: dataclasses.Field[Any], kind: Any) -> dict[str, Any]:
    """``add_argument`` settings for one field: its type, choices and help from the dataclass."""
    kwargs: dict[str, Any] = {"dest": f.name, "help": _describe(f).replace("%", "%%")}
    choices = field_choices(f)
    if choices is not None:
        kwargs["choices"] = choices
    elif kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind is dict or typing.get_origin(kind) is dict:
        kwargs["type"] = _arch_option
    else:  # int, float, or one of them or None: the flag takes the value
        kwargs["type"] = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
    kwargs.update(_SPELLING.get(f.name, {}))
    return kwargs


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="charlm-train",
        description="Train a character-level language model on UTF-8 text.",
        argument_default=argparse.SUPPRESS,  # only flags given explicitly override the preset
    )
    groups = {name: p.add_argument_group(name) for name in ("data", "model", "optimisation", "run")}
    data = groups["data"]
    data.add_argument("--data", nargs="+", required=True, help="training files, folders or globs")
    data.add_argument("--val-data", nargs="+", help="validation files (default: the end of --data)")
    kinds = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kwargs = _flag_kwargs(f, kinds[f.name])
        flag = kwargs.pop("flag", "--" + f.name.replace("_", "-"))
        groups[f.metadata["group"]].add_argument(flag, **kwargs)
    data.add_argument(
        "--cache-dir",
        type=Path,
        help="where encoded corpora are cached (default $CHARLM_CACHE_DIR or ~/.cache/charlm)",
    )
    output = p.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        required=True,
        help="checkpoint path (.safetensors); the best model is kept here, resume"
        " state, metrics and a plot beside it",
    )
    output.add_argument("--resume", action="store_true", help="continue the run saved beside --out")
    return p


def build_train_config(args: dict[str, Any]) -> TrainConfig:
    """Preset values, then explicitly given flags (``args`` holds only those)."""
    overrides = {k: v for k, v in args.items() if k not in _DATA_FLAGS and k != "preset"}
    if "arch_options" in overrides:
        overrides["arch_options"] = dict(overrides["arch_options"])
    if "max_time" in overrides and "max_steps" not in overrides:
        overrides["max_steps"] = None  # an explicit time budget replaces the preset's step budget
    if overrides.get("algorithm", "bptt") != "bptt" and "dropout" not in overrides:
        overrides["dropout"] = 0.0  # RTRL and EKF train networks without dropout
    return config_from_preset(args.get("preset", DEFAULT_PRESET), **overrides)


def resumed_config(
    saved: dict[str, Any],
    explicit: TrainConfig,
    args: dict[str, Any],
    *,
    saved_world_size: int = 1,
    world_size: int = 1,
) -> TrainConfig:
    """The saved config, with the budget and reporting flags given now; others must agree.

    On another number of processes than the run had, the per-process batch is the one that
    keeps the run's global batch (``distributed.resumed_batch_size``).
    """
    config = TrainConfig.from_dict(saved)
    if world_size != saved_world_size:
        batch_size = distributed.resumed_batch_size(config.batch_size, saved_world_size, world_size)
        config = config.replace(batch_size=batch_size)
    given = {k for k in args if k not in _DATA_FLAGS}
    changes = {k: getattr(explicit, k) for k in given & RESUMABLE}
    if "max_time" in given and "max_steps" not in given:
        changes["max_steps"] = config.max_steps
    clashes = sorted(
        k for k in given - RESUMABLE - {"preset"} if getattr(explicit, k) != getattr(config, k)
    )
    if clashes:
        flags = ", ".join("--" + k.replace("_", "-") for k in clashes)
        raise ValueError(f"{flags} differ from the run being resumed; only budgets may change")
    return config.replace(**changes)


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``charlm-train`` (and of ``torchrun -m training``)."""
    entered = time.perf_counter()
    parser = _train_parser()
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out: Path = args["out"]
    try:
        config = build_train_config(args)
        if args.get("resume"):
            saved = load_resume(resume_path(out))
            config = resumed_config(
                saved.info["train_config"],
                config,
                args,
                saved_world_size=int(saved.info["world_size"]),
                world_size=distributed.launched_world_size(),
            )
        context = distributed.setup(config.device)
    except (ValueError, ResumeError) as exc:
        parser.error(str(exc))
    try:
        corpus = _load_corpus_ranked(args, config, context)
        if not args.get("resume"):
            explicit = {k for k in args if k not in _DATA_FLAGS}
            config, chosen = auto.resolve(
                config, explicit, len(corpus.train_ids), len(corpus.vocab), context
            )
            if chosen and context.is_main:
                print(chosen)
        if config.arch == "esn":  # the readout is fitted in closed form: no training loop
            return _train_esn(config, corpus, out, context)
        reporter = ProgressReporter() if context.is_main else Reporter()
        trainer = Trainer(
            config, corpus, out, context=context, reporter=reporter, resume=bool(args.get("resume"))
        )
        if not args.get("resume"):  # --max-time counts the start-up too
            trainer.clock.before = startup_seconds(entered, argv is None)
        if context.is_main:
            print(
                f"{config.arch}: {trainer.model.num_parameters():,} parameters, vocabulary"
                f" {len(corpus.vocab)}, {len(corpus.train_ids):,} training and"
                f" {corpus.num_val_chars:,} validation characters, {context.world_size} process(es)"
                f", {torch.get_num_threads()} threads on {context.device}"
                f", {'bf16 mixed' if trainer.autocast_dtype else 'fp32'} precision"
            )
        result = trainer.run()
    except (CorpusError, StreamError, ResumeError, ValueError) as exc:
        distributed.teardown(context)
        parser.exit(2, f"charlm-train: error: {exc}\n")
    except OSError as exc:  # a full disk, a read-only folder: files are written atomically
        distributed.teardown(context)
        parser.exit(
            2,
            f"charlm-train: error: {exc.filename or out}: {exc.strerror or exc}; files saved"
            " before are intact: fix the cause, then continue with --resume\n",
        )
    distributed.teardown(context, wait_for_all=True)
    if context.is_main:
        best = (
            f"best validation {bits_per_char(result.best_val_nats):.4f} bits/char"
            f" ({result.best_val_nats:.4f} nats/char) at step {result.best_step}"
            if result.best_step >= 0
            else "no validation text"
        )
        share = result.eval_seconds / result.wall_seconds if result.wall_seconds > 0 else 0.0
        print(
            f"stopped ({result.stop_reason}) at step {result.step} after"
            f" {result.wall_seconds:.0f}s: {result.train_seconds:.0f}s of training steps at"
            f" {result.chars_per_sec:,.0f} chars/s, {result.eval_seconds:.1f}s ({share:.1%}) in"
            f" {result.num_evals} validation(s); {best}; checkpoint {out}"
        )
        if result.stop_reason == "interrupted":
            print("continue with the same command and --resume")
    return 130 if result.stop_reason == "interrupted" else 0


def _train_esn(config: TrainConfig, corpus: Any, out: Path, context: Any) -> int:
    if context.world_size > 1:
        raise ValueError("the esn fit runs in one process; launch it without torchrun")
    _, summary = train_esn(config, corpus, out)
    distributed.teardown(context)
    bpc = summary["best_val_bits_per_char"]
    print(
        f"esn: ridge readout on {summary['train_chars']:,} characters in"
        f" {summary['train_seconds']:.0f}s; validation"
        f" {'n/a' if bpc is None else f'{bpc:.4f}'} bits/char; checkpoint {out}"
    )
    return 0


def _load_corpus_ranked(args: dict[str, Any], config: TrainConfig, context: Any) -> Any:
    """Rank 0 encodes (and caches) first, so the other ranks read the cache."""

    def load() -> Any:
        return load_corpus(
            args["data"],
            val_data=args.get("val_data"),
            val_fraction=config.val_fraction,
            min_char_count=config.min_char_count,
            cache_dir=args.get("cache_dir"),
        )

    if not context.enabled:
        return load()
    import torch.distributed as dist

    corpus = load() if context.is_main else None
    dist.barrier()
    return corpus if corpus is not None else load()
