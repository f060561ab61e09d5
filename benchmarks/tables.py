"""Markdown tables and the number formats every benchmark prints."""

from __future__ import annotations

from collections.abc import Sequence


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; a row shorter than ``head`` is padded with empty cells."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [*row, *[""] * (len(head) - len(row))]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def rate(value: float | None) -> str:
    """Millions of indices per second: one decimal, two significant digits below 1."""
    if not value:
        return "—"
    m = value / 1e6
    return f"{m:.1f}" if m >= 1 else f"{m:.2g}"


def ratio(x: float | None, as_percent: bool = False) -> str:
    """``12.3x`` (``412x`` from 100 on), or a percentage; ``—`` for a missing figure."""
    if x is None:
        return "—"
    if as_percent:
        return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.0f}%"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def share(x: float | None) -> str:
    """A fraction such as an efficiency, two decimals; ``—`` for a missing figure."""
    return "—" if x is None else f"{x:.2f}"


def num(x: float | None, fmt: str = ".1f") -> str:
    """Any number with ``fmt``; ``—`` for a missing figure."""
    return "—" if x is None else format(x, fmt)


def divide(num_: float | None, den: float | None) -> float | None:
    """``num_ / den``, or None when either is missing or ``den`` is 0."""
    return num_ / den if num_ is not None and den else None


def verdict(value: float | None, met: bool | None) -> str:
    """`` met`` / `` **missed**`` after a figure checked against a target."""
    if value is None or met is None:
        return ""
    return " met" if met else " **missed**"


def timing_cells(r: dict) -> list[str]:
    """A record's init (s), first index (ms), epoch (s), DataLoader pull and efficiency cells."""
    return [
        f"{r['init_s']:.3f}",
        f"{r['first_s'] * 1e3:.1f}",
        f"{r['epoch_s']:.3f}",
        rate(r.get("pull_rate")),
        share(r.get("efficiency")),
    ]


TIMING_HEAD = (
    "init (s)",
    "first index (ms)",
    "epoch/rank (s)",
    "DataLoader pull (M idx/s)",
    "efficiency",
)


def not_run(r: dict) -> str:
    """The cell of a case that did not run: its status and, if any, the reason."""
    return f"{r['status']}: {r['reason']}" if r.get("reason") else r["status"]
