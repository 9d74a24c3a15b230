"""The run's record of its validations: the best figure and its step, and early stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: nats/char a validation must gain to reset the early-stopping counter
EARLY_STOP_MIN_DELTA = 1e-4


@dataclass
class Progress:
    """What the validations so far have found. ``record`` takes each new figure."""

    best_val: float = math.inf
    best_step: int = -1  # -1: no validation yet
    bad_evals: int = 0  # validations in a row that failed to gain EARLY_STOP_MIN_DELTA
    last_eval_step: int = -1

    def record(self, step: int, val: float) -> bool:
        """Take the validation figure ``val`` of ``step``; True when it is the best so far (and
        the model of this step is the one to keep)."""
        self.last_eval_step = step
        if val < self.best_val - EARLY_STOP_MIN_DELTA:
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_step = val, step
        return improved

    def patience_spent(self, patience: int) -> bool:
        """Early stopping is due (``patience`` 0: never)."""
        return bool(patience) and self.bad_evals >= patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_val": self.best_val if self.best_step >= 0 else None,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "last_eval_step": self.last_eval_step,
        }

    def load_state_dict(self, info: dict[str, Any]) -> None:
        self.best_val = math.inf if info["best_val"] is None else float(info["best_val"])
        self.best_step = int(info["best_step"])
        self.bad_evals = int(info["bad_evals"])
        self.last_eval_step = int(info["last_eval_step"])
