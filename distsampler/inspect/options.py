"""Option values of ``distsampler inspect``: parsing ``NAME=VALUE`` lists, numbers, class names.

Every user error is a :class:`CliError`, which the command prints as one line (exit status 2).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

__all__ = ["CliError", "class_named", "number", "pairs"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def pairs(items: Sequence[str], option: str) -> list[tuple[str, str]]:
    """``["a=1", "b=2,3"]`` (also comma-joined ``"a=0.3,b=0.7"``) -> ``[(name, value)]``."""
    out = []
    for item in items:
        for part in re.split(r",(?=[^,=]+=)", item):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise CliError(f"{option} expects NAME=VALUE, but got {part!r}")
            out.append((name.strip(), value.strip()))
    return out


def number(text: str, option: str) -> int | float:
    """``"3"`` -> 3, ``"0.3"`` -> 0.3; a :class:`CliError` naming ``option`` otherwise."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{option} expects a number, but got {text!r}") from None


def class_named(names: Sequence[Hashable], text: str, option: str) -> Hashable:
    """The class whose name prints as ``text``; a clear error listing the classes otherwise."""
    for name in names:
        if str(name) == text:
            return name
    shown = ", ".join(str(n) for n in names[:20])
    more = f" (and {len(names) - 20} more)" if len(names) > 20 else ""
    raise CliError(
        f"{option} names class {text!r}, which is not in the labels; classes: {shown}{more}"
    )
