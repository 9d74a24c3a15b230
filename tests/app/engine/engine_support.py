"""Helpers of the engine tests: a tiny real checkpoint, an engine run around a scenario, and
the plain sampling loop the engine's completions are compared with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from app.engine.engine import ModelEngine
from app.engine.generation import GenerationChunk
from app.engine.params import GenerationParams
from models.checkpoint import LoadedCheckpoint
from models.config import ModelConfig
from models.recurrent import GRULM, LSTMLM
from models.sampling import SamplingParams, generate
from models.vocab import CharVocab

T = TypeVar("T")
VOCAB = CharVocab(list("abcdefgh .\n"))


def make_checkpoint(arch: str = "lstm", cls: type[LSTMLM] | type[GRULM] = LSTMLM) -> Any:
    torch.manual_seed(1)
    config = ModelConfig(arch, len(VOCAB), embed_size=8, hidden_size=24, num_layers=2)
    model = cls(config).eval()
    return LoadedCheckpoint(Path("test.safetensors"), model, VOCAB, config)


def run(make: Callable[..., Awaitable[T]], checkpoint: Any = None, **limits: Any) -> T:
    """Start an engine, run ``make(engine)``, stop the engine."""

    async def main() -> T:
        engine = ModelEngine("test", checkpoint or make_checkpoint(), **limits)
        await engine.start()
        try:
            return await make(engine)
        finally:
            await engine.stop(grace_seconds=0)

    return asyncio.run(main())


def settings(
    max_chars: int,
    params: SamplingParams | None = None,
    seed: int | None = 0,
    stop: tuple[str, ...] = (),
) -> GenerationParams:
    """A request's settings from the sampler's own (as the plain loop of ``reference`` takes)."""
    p = params or SamplingParams()
    return GenerationParams(max_chars, p.temperature, p.top_k, p.top_p, stop, seed)


async def complete(
    engine: ModelEngine,
    prompt: str,
    max_chars: int,
    params: SamplingParams | None = None,
    seed: int | None = 0,
    stop: tuple[str, ...] = (),
) -> tuple[str, list[GenerationChunk]]:
    chunks = [c async for c in engine.generate(prompt, settings(max_chars, params, seed, stop))]
    return "".join(c.text for c in chunks), chunks


def reference(ckpt: Any, prompt: str, max_chars: int, params: SamplingParams, seed: int,
              stop: tuple[str, ...] = ()) -> tuple[str, str]:  # fmt: skip
    out = generate(ckpt.model, ckpt.vocab, prompt, max_chars, params, seed=seed, stop=stop)[0]
    return out.text, out.finish_reason
