"""MkDocs hook: render the reStructuredText idioms left in docstrings as Sphinx would.

The docstrings are read in editors and ``help()`` as well, where ``:class:`~pkg.Name``` and a
paragraph ending in ``::`` before a code block are the common idioms; mkdocstrings (Google
style) renders them literally. This shows a role as plain code (for a ``~`` target, only the
last component) and ends such a paragraph with one colon.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")
_LITERAL = re.compile(r"(\S)::</p>")


def _plain(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _LITERAL.sub(r"\1:</p>", _ROLE.sub(_plain, html))
