"""docs/inspect.md shows the real output of its examples: each ``distsampler inspect`` command
of the page, run here, prints exactly the table the page shows after it.

When a change to a sampler's plan changes the numbers, this fails: run the page's commands
again and paste their output (the Python block first writes the multi-label example's file).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from distsampler.inspect import cli

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "inspect.md"
EXAMPLE = re.compile(
    r"^```bash\n(distsampler inspect .*?)^```\n.*?^```\n(distsampler inspect .*?)^```", re.M | re.S
)
PYTHON = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(PAGE.read_text())


def argv(command: str) -> list[str]:
    """The command's arguments, without the figures (the table does not depend on them)."""
    words = shlex.split(command.replace("\\\n", " "))[1:]
    if "--plots" in words:
        at = words.index("--plots")
        del words[at : at + 2]
    return [*words, "--no-progress"]


def test_the_page_has_both_examples():
    commands = [c for c, _ in examples()]
    assert len(commands) == 2
    assert "docs/defects.npy" in commands[0] and "--background" in commands[1]


@pytest.mark.parametrize("number", [0, 1])
def test_example_output_is_current(capsys, tmp_path, monkeypatch, number):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    for code in PYTHON.findall(PAGE.read_text()):  # writes the multi-label example's file
        exec(compile(code, str(PAGE), "exec"), {"__name__": "__main__"})
    command, shown = examples()[number]
    assert cli.main(argv(command)) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == shown.rstrip("\n"), (
        f"docs/inspect.md shows an old output of `{command.strip()}`; paste the new one"
    )
