"""The progress bar of a scoring job: how far through the input, records, characters/s, ETA.

The bar counts the input's own unit (bytes of a file, rows of a Parquet file, blocks of a Ray
job), so its ETA holds for inputs whose records vary in length; records scored and characters per
second follow it. On stdin, with no total, it counts records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm

_FORMAT = (
    "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"
)
_FORMAT_NO_TOTAL = "{desc}{n_fmt} records [{elapsed}{postfix}]"


class Progress:
    """A tqdm bar fed with a job's totals; ``done()`` says how much of ``total`` is read."""

    def __init__(
        self,
        done: Callable[[], int],
        total: int | None,
        unit: str,
        initial: int = 0,
        enabled: bool = True,
    ) -> None:
        self._done = done
        self._counts_records = total is None
        if total is None:
            unit = "records"
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=unit == "B",
            bar_format=_FORMAT_NO_TOTAL if total is None else _FORMAT,
            disable=not enabled,
            dynamic_ncols=True,
            desc="scoring ",
        )

    def update(self, totals: Any, window_done: bool = False) -> None:
        """Show ``totals`` (a ``ScoreTotals``); the position moves as the input is read."""
        position = totals.records + totals.errors if self._counts_records else self._done()
        if position > self._bar.n:
            self._bar.update(position - self._bar.n)
        self._bar.set_postfix_str(
            f"{totals.records:,} records, {totals.chars_per_s:,.0f} chars/s", refresh=window_done
        )

    def close(self) -> None:
        self._bar.close()
