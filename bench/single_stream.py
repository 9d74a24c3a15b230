"""Where one stream's time per character goes, at batch 1, in this process (no HTTP).

For each model (by default an untrained ``small`` preset, a 1x512 LSTM): the eager bare step of
``bench.baselines`` (``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear``, softmax, multinomial),
charlm's reference ``forward`` for one id, its fused ``model.step``, its sampler
(``choose_next_rows``) and a whole completion through the engine (``ModelEngine.generate``, the
worker thread and the publisher included), with the fused step and with ``forward``. Each part is
timed in turn, round after round, so that a slow period falls on all of them; medians of the
rounds. ``bench.serve`` measures the same stream through HTTP.

    python -m bench.single_stream               # about a minute on a 2-core CPU
    python -m bench.single_stream --smoke       # seconds: tiny-2x128, few steps
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from app.engine.engine import ModelEngine
from app.engine.params import GenerationParams
from bench.baselines import BareLSTM, load_bare_lstm, onednn, sampling_loop
from bench.machine import machine_line
from bench.serve_inprocess import build_models
from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.sampling import RowSettings, SamplingParams, choose_next_rows

#: the batch of the batched-against-one-at-a-time comparison (``bench.serve --unbatched-levels``)
WIDE = 32


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls, after a few untimed ones."""
    for _ in range(min(10, calls)):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


async def engine_seconds_per_char(ckpt: LoadedCheckpoint, chars: int, fast: bool) -> float:
    """One completion of ``chars`` characters alone on an engine, per character."""
    ckpt.model.fast_step = fast
    engine = ModelEngine("bench", ckpt, max_queue=4, max_batch_size=4)
    await engine.start()
    try:
        params = GenerationParams(max_chars=chars, seed=0)
        async for _ in engine.generate("", params):  # warm-up
            pass
        start, produced = time.perf_counter(), 0
        async for chunk in engine.generate("", params):
            produced = chunk.num_chars
        return (time.perf_counter() - start) / max(1, produced)
    finally:
        await engine.stop()
        ckpt.model.fast_step = True


@torch.inference_mode()
def model_parts(ckpt: LoadedCheckpoint, calls: int) -> dict[str, float]:
    """Seconds per call at batch 1 of charlm's forward, fused step and sampler."""
    model = ckpt.model
    ids = torch.ones(1, 1, dtype=torch.long)
    state = model(ids)[1]
    logits = model(ids, state)[0][:, -1]  # (1, V)
    settings = RowSettings.of([SamplingParams()], logits.device)
    uniforms = torch.rand(1)

    def sample() -> object:
        return choose_next_rows(logits, settings, uniforms)

    wide_ids = ids.expand(WIDE, 1).contiguous()
    wide_state = model(wide_ids)[1]
    with onednn(False):  # as the engine's decode steps run
        return {
            "forward": seconds_per_call(lambda: model(ids, state), calls),
            "step": seconds_per_call(lambda: model.step(ids, state), calls),
            "sampler": seconds_per_call(sample, calls),
            "step_wide": seconds_per_call(lambda: model.step(wide_ids, wide_state), calls),
        }


@torch.inference_mode()
def products_seconds(bare: BareLSTM, calls: int) -> float:
    """Seconds of the step's matrix products alone at batch 1 (every layer's recurrent and input
    products and the head, as ``(1, n) @ (n, m)`` on contiguous transposed weights, the fastest
    layout here): what no implementation of the exact fp32 step can go below."""
    weights = [
        p.detach().T.contiguous()
        for name, p in bare.rnn.named_parameters()
        if name.startswith("weight_hh") or (name.startswith("weight_ih") and not name.endswith("0"))
    ]
    weights.append(bare.head.weight.detach().T.contiguous())
    rows = [torch.randn(1, w.shape[0]) for w in weights]

    def products() -> None:
        for row, weight in zip(rows, weights, strict=True):
            torch.mm(row, weight)

    return seconds_per_call(products, calls)


def measure(path: Path, args: argparse.Namespace) -> dict[str, float]:
    ckpt, bare = load_checkpoint(path), load_bare_lstm(path)
    rounds: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        parts = {"bare_step": sampling_loop(bare, 1, args.chars).seconds_per_step}
        parts["bare_step_wide"] = sampling_loop(bare, WIDE, args.chars).seconds_per_step
        parts.update(model_parts(ckpt, args.chars))
        parts["products"] = products_seconds(bare, args.chars)
        for fast in (True, False):
            name = "engine_step" if fast else "engine_forward"
            parts[name] = asyncio.run(engine_seconds_per_char(ckpt, args.chars, fast))
        for name, seconds in parts.items():
            rounds.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in rounds.items()}


def report(model: str, figures: dict[str, float]) -> list[str]:
    bare = figures["bare_step"]

    def us(name: str) -> str:
        return f"{figures[name] * 1e6:.0f} us ({figures[name] / bare:.2f}x)"

    rest = figures["engine_step"] - figures["step"] - figures["sampler"]
    return [
        f"## {model}: time per character at batch 1, and its ratio to the eager bare step",
        f"- eager bare step (nn.LSTM, softmax, multinomial): {bare * 1e6:.0f} us",
        f"- charlm forward, one id: {us('forward')}; fused model.step: {us('step')}",
        f"- charlm sampler (choose_next_rows): {us('sampler')}",
        f"- engine, one completion alone: {us('engine_step')} with model.step, "
        f"{us('engine_forward')} with forward",
        f"- engine beyond the step and the sampler: {rest * 1e6:.0f} us "
        "(worker loop, text, publisher, the event loop's share)",
        f"- the step's matrix products alone (the floor of an exact fp32 step): {us('products')}",
        f"- what {WIDE} streams can gain over one at a time, from the step's cost alone: fused"
        f" step {WIDE} x {figures['step'] * 1e6:.0f} us / {figures['step_wide'] * 1e6:.0f} us ="
        f" {WIDE * figures['step'] / figures['step_wide']:.1f}x; eager bare loop {WIDE} x"
        f" {bare * 1e6:.0f} us / {figures['bare_step_wide'] * 1e6:.0f} us ="
        f" {WIDE * bare / figures['bare_step_wide']:.1f}x",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--models-dir", type=Path, help="use these checkpoints (default: build untrained ones)")
    add("--models", default="small", help="model ids (file stems) or shapes to build")
    add("--chars", type=int, default=400, help="steps per timing, characters per completion")
    add("--rounds", type=int, default=5, help="rounds of every timing (medians are shown)")
    add("--threads", type=int, default=1, help="torch threads")
    add("--smoke", action="store_true", help="seconds: tiny-2x128, 20 steps, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.chars, args.rounds = "tiny-2x128", 20, 1
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory(prefix="charlm-bench-step-") as tmp:
        names = args.models.split(",")
        folder = args.models_dir or build_models(Path(tmp), names)
        for name in names:
            print("\n".join(report(name, measure(folder / f"{name}.safetensors", args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
