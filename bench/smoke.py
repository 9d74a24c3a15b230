"""What the ``--smoke`` runs of the benchmark scripts share: a small generated corpus.

A smoke run checks in seconds that a script still runs end to end and prints its figures; it
reads nothing from outside the repository, so it runs the same on any machine.
"""

from __future__ import annotations

from pathlib import Path


def smoke_corpus(folder: Path, lines: int = 2000) -> Path:
    """A generated text of about 20 characters a line, written to ``folder/smoke-corpus.txt``."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    rows = [f"{words[i % 6]} {i % 11} {words[(i * 7) % 6][::-1]}." for i in range(lines)]
    path = folder / "smoke-corpus.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
