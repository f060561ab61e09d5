"""docs/inspect.md shows the real output of its examples: each ``distsampler inspect`` command
of the page, run here, prints exactly the table the page shows after it.

When a change to a sampler's plan changes the numbers, this fails: ``python
tests/test_inspect_docs.py`` runs the page's commands again and pastes their output into it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
from pathlib import Path

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


def outputs(directory: Path) -> list[tuple[str, str, str]]:
    """``(command, shown, printed)`` per example, run in ``directory`` (the page's Python block
    first writes the multi-label example's file there)."""
    text = PAGE.read_text()
    here = Path.cwd()
    os.chdir(directory)
    try:
        (directory / "docs").symlink_to(ROOT / "docs")
        for code in PYTHON.findall(text):
            exec(compile(code, str(PAGE), "exec"), {"__name__": "__main__"})
        found = []
        for command, shown in EXAMPLE.findall(text):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert cli.main(argv(command)) == 0
            found.append((command, shown, out.getvalue()))
        return found
    finally:
        os.chdir(here)


def test_example_output_is_current(tmp_path):
    for command, shown, printed in outputs(tmp_path):
        assert printed.rstrip("\n") == shown.rstrip("\n"), (
            f"docs/inspect.md shows an old output of `{command.strip()}`; "
            "run `python tests/test_inspect_docs.py` to paste the new one"
        )


if __name__ == "__main__":  # paste the current output into the page
    page = PAGE.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for _, shown, printed in outputs(Path(tmp)):
            page = page.replace(shown, printed.rstrip("\n") + "\n")
    PAGE.write_text(page)
