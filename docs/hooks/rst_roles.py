"""MkDocs hook: show Sphinx roles left in docstrings (:class:`X`) as plain code (``X``).

The docstrings are read in editors and ``help()`` as well, where ``:class:`~pkg.Name``` is the
common idiom; mkdocstrings (Google style) renders the role's name literally. This drops the role
and, for a ``~`` target, keeps only the last component, as Sphinx would.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_plain, html)
