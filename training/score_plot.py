"""``charlm-score --plot``: a histogram of the records' bits per character, as a PNG.

The values are read back from the score files a line at a time and kept as one float each.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable
from pathlib import Path

_BINS = 60


def read_bits_per_char(paths: Iterable[Path]) -> array[float]:
    """The ``bits_per_char`` of every non-empty record of the score files, in order."""
    values: array[float] = array("d")
    for path in paths:
        with path.open("rb") as handle:
            for raw in handle:
                line = json.loads(raw)
                if line.get("num_chars"):
                    values.append(float(line["bits_per_char"]))
    return values


def plot_histogram(paths: Iterable[Path], png: str, title: str = "") -> int:
    """Write the histogram to ``png``; returns how many records it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.frombuffer(read_bits_per_char(paths), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if len(values):
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=_BINS, color="#4c72b0")
        median = float(np.median(finite)) if len(finite) else math.nan
        ax.axvline(median, color="#c44e52", linestyle="--", label=f"median {median:.2f}")
        ax.legend()
    ax.set_xlabel("bits per character")
    ax.set_ylabel("records")
    ax.set_title(f"{title}: {len(values):,} records" if title else f"{len(values):,} records")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return len(values)
