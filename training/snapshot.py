"""Snapshots of a running ``Trainer`` into its resume file, and back (see ``training.resume``)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch

from training import distributed
from training.resume import ResumeError, ResumeState, load_resume, resume_path, save_resume

if TYPE_CHECKING:
    from training.loop import Trainer

logger = logging.getLogger(__name__)


def write_snapshot(trainer: Trainer) -> None:
    """Write the resume file beside ``trainer.out`` (every rank must call: states are gathered)."""
    # every rank takes part in the gathers; rank 0 writes
    carried = tuple(distributed.gather_rows(s, trainer.ctx) for s in trainer.state)
    rng = {"torch": distributed.gather_rows(torch.get_rng_state().unsqueeze(0), trainer.ctx)}
    if trainer.device.type == "cuda":
        cuda_rng = torch.cuda.get_rng_state(trainer.device).unsqueeze(0)
        rng["cuda"] = distributed.gather_rows(cuda_rng, trainer.ctx)
    if trainer.out is None or not trainer.ctx.is_main:
        return
    p = trainer.batcher.position
    info = {
        "train_config": trainer.config.to_dict(),
        "step": trainer.step,
        "train_seconds": trainer.train_seconds,
        "position": {"epoch": p.epoch, "offset": p.offset, "pos": p.pos},
        "best_val": trainer.best_val if trainer.best_step >= 0 else None,
        "best_step": trainer.best_step,
        "bad_evals": trainer.bad_evals,
        "last_eval_step": trainer.last_eval_step,
        "world_size": trainer.ctx.world_size,
        "corpus_fingerprint": trainer.corpus.fingerprint,
        "vocab": trainer.corpus.vocab.to_dict(),
    }
    state = ResumeState(
        info=info,
        model=trainer.model.state_dict(),
        optimizer=trainer.optimizer.state_dict(),
        carried=carried,
        rng=rng,
        algorithm=trainer.train_step.carried(),
    )
    save_resume(resume_path(trainer.out), state)


def restore_snapshot(trainer: Trainer) -> None:
    """Put ``trainer`` back where its resume file says, after checking it is the same run."""
    if trainer.out is None:
        raise ResumeError("resuming needs the checkpoint path (--out)")
    saved = load_resume(resume_path(trainer.out))
    info = saved.info
    if info["corpus_fingerprint"] != trainer.corpus.fingerprint:
        raise ResumeError("the training data differ from the data the run started with")
    if info["vocab"] != trainer.corpus.vocab.to_dict():
        raise ResumeError("the vocabulary differs from the one the run started with")
    if info["world_size"] != trainer.ctx.world_size:
        raise ResumeError(
            f"the run used {info['world_size']} processes; resume it with the same number"
        )
    trainer.model.load_state_dict(saved.model, strict=True)
    trainer.optimizer.load_state_dict(saved.optimizer)
    b = trainer.config.batch_size
    rows = slice(trainer.ctx.rank * b, (trainer.ctx.rank + 1) * b)
    trainer.state = tuple(s[rows].to(trainer.device) for s in saved.carried)
    trainer.train_step.restore_carried(
        {name: t.to(trainer.device) for name, t in saved.algorithm.items()}
    )
    torch.set_rng_state(saved.rng["torch"][trainer.ctx.rank].clone())
    if "cuda" in saved.rng and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(saved.rng["cuda"][trainer.ctx.rank].clone(), trainer.device)
    pos = info["position"]
    trainer.batcher.position.epoch = int(pos["epoch"])
    trainer.batcher.position.offset = int(pos["offset"])
    trainer.batcher.position.pos = int(pos["pos"])
    trainer.step = int(info["step"])
    trainer.train_seconds = float(info["train_seconds"])
    trainer.best_val = math.inf if info["best_val"] is None else float(info["best_val"])
    trainer.best_step = int(info["best_step"])
    trainer.bad_evals = int(info["bad_evals"])
    trainer.last_eval_step = int(info["last_eval_step"])
    if trainer.metrics is not None and trainer.ctx.is_main:
        trainer.metrics.truncate_after(trainer.step)
    logger.info("resumed at step %d", trainer.step)
