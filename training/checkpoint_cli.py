"""``charlm-eval`` and ``charlm-sample``: the command-line tools that read a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from models.adapt import (
    DEFAULT_RATE,
    DEFAULT_SEGMENT,
    AdaptSettings,
    adaptive_score_id_sequences,
    check_adaptable,
)
from models.checkpoint import CheckpointError, load_checkpoint
from models.sampling import SamplingParams, generate, random_seed
from training import distributed
from training.data import CorpusError, read_text_file, resolve_files
from training.distributed import DEVICES
from training.evaluate import EvalResult, evaluate_docs


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of ``charlm-eval``: one JSON object on stdout."""
    p = argparse.ArgumentParser(
        prog="charlm-eval",
        description="Score UTF-8 text with a checkpoint; each file is one text, as the server"
        " scores it (BOS first, every character scored, state carried through the file)."
        ' Bidirectional models give a pseudo-log-likelihood ("likelihood": "pseudo").',
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint")
    p.add_argument("--data", nargs="+", required=True, help="files, folders or globs to score")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run (cpu)")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="adaptive scoring (dynamic evaluation): a copy of the model takes a gradient step"
        " after each segment of a file, so it adapts to the file as it reads it",
    )
    p.add_argument(
        "--adapt-rate", type=float, help=f"with --adapt: the step size ({DEFAULT_RATE:g})"
    )
    p.add_argument(
        "--adapt-segment",
        type=int,
        help=f"with --adapt: characters between two steps ({DEFAULT_SEGMENT})",
    )
    args = p.parse_args(argv)
    if not args.adapt and (args.adapt_rate is not None or args.adapt_segment is not None):
        p.error("--adapt-rate and --adapt-segment need --adapt")
    try:
        adapt = _adapt_settings(args) if args.adapt else None
        device = distributed.choose_device(args.device)
        torch.set_num_threads(distributed.choose_num_threads())
        loaded = load_checkpoint(args.checkpoint, device=device)
        if adapt is not None:
            check_adaptable(loaded.model)
        files = resolve_files(args.data)
        docs = [loaded.vocab.encode_array(read_text_file(f)) for f in files]
    except (CheckpointError, CorpusError, ValueError) as exc:
        p.exit(2, f"charlm-eval: error: {exc}\n")
    if adapt is None:
        result = evaluate_docs(loaded.model, docs)
    else:
        scores = adaptive_score_id_sequences(loaded.model, docs, settings=adapt)
        total = -sum(s.logprob for s in scores)
        chars, unknown = sum(s.num_chars for s in scores), sum(s.num_unknown for s in scores)
        result = EvalResult(total, chars, unknown)
    if result.num_chars == 0:
        p.exit(2, "charlm-eval: error: the text to score is empty\n")
    report: dict[str, object] = {
        **result.to_dict(),
        "num_files": len(files),
        "checkpoint": str(args.checkpoint),
        "arch": loaded.config.arch,
        # a bidirectional model also sees each character's right context: its figure is a
        # pseudo-log-likelihood, not comparable with a left-to-right model's
        "likelihood": "exact" if loaded.model.can_generate else "pseudo",
    }
    if adapt is not None:
        report["adapt"] = {"rate": adapt.rate, "segment": adapt.segment, "method": adapt.method}
    print(json.dumps(report))
    return 0


def _adapt_settings(args: argparse.Namespace) -> AdaptSettings:
    """``--adapt-rate`` and ``--adapt-segment`` over the defaults (``ValueError`` when out of
    bounds)."""
    defaults = AdaptSettings()
    rate = args.adapt_rate if args.adapt_rate is not None else defaults.rate
    segment = args.adapt_segment if args.adapt_segment is not None else defaults.segment
    return dataclasses.replace(defaults, rate=rate, segment=segment)


def sample_main(argv: list[str] | None = None) -> int:
    """Entry point of ``charlm-sample``: the prompt and its continuation on stdout."""
    p = argparse.ArgumentParser(
        prog="charlm-sample", description="Generate text from a checkpoint."
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new text)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (500)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (0.8)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest characters, 0 = all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus probability mass (1.0)")
    p.add_argument("--seed", type=int, help="same seed, same text (default: random, printed)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run (cpu)")
    args = p.parse_args(argv)
    if args.length < 0:
        p.error("--length must be >= 0")
    try:
        params = SamplingParams(args.temperature, args.top_k, args.top_p)
        device = distributed.choose_device(args.device)
        loaded = load_checkpoint(args.checkpoint, device=device)
        seed = args.seed if args.seed is not None else random_seed()
        (gen,) = generate(loaded.model, loaded.vocab, args.prompt, args.length, params, seed)
    except (CheckpointError, ValueError) as exc:
        p.exit(2, f"charlm-sample: error: {exc}\n")
    if args.seed is None:
        print(f"seed {seed}", file=sys.stderr)
    sys.stdout.write(args.prompt + gen.text + "\n")
    return 0
