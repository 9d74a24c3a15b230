"""Closed-form training of an echo state network's readout (Jaeger & Haas 2004).

One pass over the corpus: the text is cut into ``streams`` contiguous parallel streams, the
reservoir runs over them ``chunk`` steps at a time, and each chunk's features ``Z = [x_t; u_t; 1]``
(M, F + 1) and one-hot next characters ``Y`` (M, V) are summed into ``Z^T Z`` and ``Z^T Y``.
Memory stays bounded by one chunk plus two (F + 1)-wide matrices, however long the corpus. The first
``washout`` steps of each stream are left out (the reservoir still remembers its zero start).
Then ridge regression:

    W = (Z^T Z + ridge * M * I')^{-1} Z^T Y

(``I'`` leaves the bias unpenalised; ``ridge`` is per example, so its meaning does not change with
the corpus size). The readout's scores are regression estimates of the next character's one-hot
vector, not log-probabilities. An inverse temperature ``s`` (Newton's method) and then ``s`` with a
per-character offset ``b`` (L-BFGS) are fitted on validation text so that ``softmax(s * y + b)``
minimises the validation cross-entropy (convex in ``s`` and ``b``): calibrated probabilities and
a real bits-per-character figure. The offsets matter: on tinyshakespeare they take a 400-unit
reservoir from about 4.06 to 3.68 bpc, as one-hot regression under-predicts the common characters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.checkpoint import save_checkpoint
from models.esn import EchoStateLM
from models.registry import build_model
from models.scoring import bits_per_char
from models.vocab import BOS_ID
from training.config import TrainConfig
from training.data import Corpus
from training.evaluate import evaluate_docs, limit_docs

logger = logging.getLogger(__name__)

#: validation characters used to fit the temperature (scores held in memory: M x V floats)
MAX_TEMPERATURE_CHARS = 200_000


@dataclass
class ESNFit:
    """What the closed-form fit did, for the checkpoint's training summary."""

    train_chars: int
    val_chars: int
    ridge: float
    logit_scale: float
    train_mse: float
    val_bpc: float
    seconds: float

    def to_dict(self) -> dict[str, float | int | str]:
        return {"algorithm": "esn-ridge", **asdict(self)}


def _streams(ids: np.ndarray, streams: int) -> Tensor:
    """(S, L) contiguous streams of the corpus; the tail that does not fill a row is dropped."""
    ids = np.asarray(ids, dtype=np.int64)
    streams = max(1, min(streams, len(ids) // 2))
    length = len(ids) // streams
    if length < 2:
        raise ValueError(f"corpus of {len(ids)} characters is too short for the reservoir fit")
    return torch.from_numpy(ids[: streams * length].reshape(streams, length).copy())


def _chunks(
    model: EchoStateLM, ids: np.ndarray, streams: int, chunk: int, washout: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Per chunk: reservoir states (M, N), input ids (M,) and target ids (M,), washout removed."""
    rows = _streams(ids, streams).to(model.reservoir.device)
    state = model.initial_state(rows.shape[0])
    steps = rows.shape[1] - 1
    for start in range(0, steps, chunk):
        stop = min(start + chunk, steps)
        inputs = rows[:, start:stop]
        states, state = model.run_reservoir(inputs, state)  # (S, t, N)
        skip = max(0, washout - start)
        if skip >= stop - start:
            continue
        yield (
            states[:, skip:].reshape(-1, states.shape[-1]),
            inputs[:, skip:].reshape(-1),
            rows[:, start + 1 + skip : stop + 1].reshape(-1),
        )


def design_matrix(model: EchoStateLM, states: Tensor, inputs: Tensor) -> Tensor:
    """Z = [x_t; u_t; 1] (M, N + V + 1)."""
    features = model.features(states, inputs)
    return torch.cat(
        [features, torch.ones(features.shape[0], 1, dtype=features.dtype, device=features.device)],
        dim=1,
    )


@torch.no_grad()
def accumulate_normal_equations(
    model: EchoStateLM, ids: np.ndarray, streams: int = 32, chunk: int = 256, washout: int = 50
) -> tuple[Tensor, Tensor, int]:
    """``Z^T Z`` (F+1, F+1), ``Z^T Y`` (F+1, V) in float64 and the number of examples M."""
    width = model.num_features + 1
    vocab = model.config.vocab_size
    gram = torch.zeros(width, width, dtype=torch.float64)
    cross = torch.zeros(width, vocab, dtype=torch.float64)
    count = 0
    for states, inputs, targets in _chunks(model, ids, streams, chunk, washout):
        # (M, F+1), summed in float64: the one-hot and bias columns make Z^T Z ill-conditioned
        z = design_matrix(model, states, inputs).cpu().double()
        gram += z.T @ z
        # Z^T Y adds each row of Z into its target's column: no (M, V) one-hot needed
        cross.index_add_(1, targets.cpu(), z.T)
        count += z.shape[0]
    if count == 0:
        raise ValueError("no training examples left after the washout; use a longer corpus")
    return gram, cross, count


def solve_ridge(gram: Tensor, cross: Tensor, count: int, ridge: float) -> Tensor:
    """(F+1, V) readout weights, the last row the bias (left out of the penalty)."""
    penalty = torch.full((gram.shape[0],), ridge * count, dtype=gram.dtype)
    penalty[-1] = 0.0
    system = gram + torch.diag(penalty)
    try:
        factor = torch.linalg.cholesky(system)
        return torch.cholesky_solve(cross, factor)
    except RuntimeError:  # singular without a penalty (e.g. ridge=0 and a constant feature)
        return torch.linalg.lstsq(system, cross).solution


def fit_logit_scale(scores: Tensor, targets: Tensor, iterations: int = 50) -> float:
    """The ``s`` > 0 minimising the mean cross-entropy of ``softmax(s * scores)`` (Newton)."""
    scores = scores.double()
    target_scores = scores.gather(1, targets.unsqueeze(1)).squeeze(1)
    scale = 1.0
    for _ in range(iterations):
        probs = torch.softmax(scale * scores, dim=1)
        mean = (probs * scores).sum(1)
        gradient = float((mean - target_scores).mean())
        curvature = float(((probs * scores**2).sum(1) - mean**2).mean())
        if curvature <= 1e-12:
            break
        new_scale = max(scale - gradient / curvature, scale / 4)  # damped: stay positive
        if abs(new_scale - scale) < 1e-9 * max(1.0, scale):
            scale = new_scale
            break
        scale = new_scale
    return scale


def fit_calibration(scores: Tensor, targets: Tensor) -> tuple[float, Tensor]:
    """Inverse temperature and (V,) offsets minimising the cross-entropy of ``s * scores + b``."""
    scale = fit_logit_scale(scores, targets)
    scores = scores.double()
    params = torch.zeros(scores.shape[1] + 1, dtype=torch.float64)
    params[0] = scale
    params.requires_grad_(True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(params[0] * scores + params[1:], targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    fitted = params.detach()
    return float(fitted[0]), fitted[1:].float()


@torch.no_grad()
def _validation_scores(
    model: EchoStateLM, ids: np.ndarray, streams: int, chunk: int, limit: int
) -> tuple[Tensor, Tensor]:
    scores, targets = [], []
    for states, inputs, target in _chunks(model, ids[: limit + 1], streams, chunk, washout=0):
        scores.append(model.scores(states, inputs).cpu())
        targets.append(target.cpu())
    return torch.cat(scores), torch.cat(targets)


def fit_esn(
    model: EchoStateLM,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    *,
    streams: int = 32,
    chunk: int = 256,
    washout: int = 50,
) -> ESNFit:
    """Fit the readout by ridge regression and the temperature on validation, in place."""
    started = time.perf_counter()
    model.eval()
    ridge = float(model.option("ridge"))
    gram, cross, count = accumulate_normal_equations(model, train_ids, streams, chunk, washout)
    logger.info("esn: accumulated %d examples in %.1fs", count, time.perf_counter() - started)
    weights = solve_ridge(gram, cross, count, ridge)  # (F+1, V)
    # mean squared error of the fit, from the normal equations: (Y^T Y - 2 W.Z^T Y + W^T Z^T Z W)/M
    sse = count - 2 * float((weights * cross).sum()) + float((weights * (gram @ weights)).sum())
    device = model.readout.weight.device
    with torch.no_grad():
        model.readout.weight.copy_(weights[:-1].T.to(device))
        model.readout.bias.copy_(weights[-1].to(device))
        scores, targets = _validation_scores(
            model, val_ids, min(streams, 8), chunk, MAX_TEMPERATURE_CHARS
        )
        scale, offsets = fit_calibration(scores, targets)
        model.logit_scale.fill_(scale)
        model.logit_bias.copy_(offsets.to(device))
        logits = scale * scores.double() + offsets.double()
        nll = torch.nn.functional.cross_entropy(logits, targets)
    fit = ESNFit(
        train_chars=count,
        val_chars=int(targets.numel()),
        ridge=ridge,
        logit_scale=scale,
        train_mse=sse / (count * model.config.vocab_size),
        val_bpc=bits_per_char(float(nll)),
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "esn: logit scale %.3g, validation %.4f bpc on %d chars (%.1fs)",
        scale,
        fit.val_bpc,
        fit.val_chars,
        fit.seconds,
    )
    return fit


def train_esn(
    config: TrainConfig, corpus: Corpus, out: Path | None
) -> tuple[EchoStateLM, dict[str, Any]]:
    """``charlm-train --arch esn``: build, fit in one pass, evaluate as ``charlm-eval`` does and
    save the checkpoint. Returns the model and its training summary."""
    if config.algorithm != "bptt":
        raise ValueError(
            "the esn readout is fitted in closed form;"
            f" --algorithm {config.algorithm} does not apply to it"
        )
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.model_config(len(corpus.vocab)))
    assert isinstance(model, EchoStateLM)
    train_ids = np.asarray(corpus.train_ids, dtype=np.int64)
    val_docs = limit_docs(corpus.val_docs, config.eval_max_chars)
    if val_docs:
        val_ids = np.concatenate([np.concatenate([[BOS_ID], d]) for d in val_docs])
        fit_ids = train_ids
    else:  # calibrate on the training text's last 5% instead, held out of the regression
        logger.warning("no validation text: calibrating the readout on the last 5%% of training")
        cut = int(len(train_ids) * 0.95)
        fit_ids, val_ids = train_ids[:cut], train_ids[cut:]
    fit = fit_esn(model, fit_ids, val_ids, streams=config.batch_size, chunk=config.seq_len)
    result = evaluate_docs(model, val_docs) if val_docs else None
    summary = {
        **fit.to_dict(),
        "step": 0,
        "train_seconds": round(time.perf_counter() - started, 3),
        "best_step": 0 if result else -1,
        "best_val_nats_per_char": result.nats_per_char if result else None,
        "best_val_bits_per_char": result.bits_per_char if result else None,
        "corpus_fingerprint": corpus.fingerprint,
        "train_chars": len(train_ids),
        "val_chars": corpus.num_val_chars,
        "world_size": 1,
    }
    if out is not None:
        save_checkpoint(out, model, corpus.vocab, train_config=config.to_dict(), training=summary)
    return model, summary
