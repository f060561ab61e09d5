"""The report of ``distsampler inspect``: a JSON-ready dict, and the terminal table built from it.

The table prints exactly the numbers of the dict (``--json`` prints the dict itself).
"""

from __future__ import annotations

import numpy as np

from .load import Data
from .runs import Run

__all__ = ["build_report", "format_report"]

MAX_CLASS_ROWS = 8


def build_report(runs: list[Run], data: Data, args, minority: int) -> dict:
    """Everything printed, as a JSON-ready dict."""
    names = data.index.names
    return {
        "input": data.source,
        "num_samples": data.index.num_samples,
        "multilabel": data.multilabel,
        "unlabelled_samples": data.unlabelled,
        "classes": {str(n): int(s) for n, s in zip(names, data.index.sizes, strict=True)},
        "minority": str(names[minority]),
        "config": {
            "batch_size": args.batch_size,
            "world_size": args.world_size,
            "block_size": args.block_size,
            "epochs": args.epochs,
            "seed": args.seed,
            "strategy": args.strategy,
        },
        "samplers": {
            r.kind: {"detail": r.detail, **r.result.summary(names, r.target)}
            for r in runs
            if not r.skipped
        },
        "skipped": {r.kind: r.skipped for r in runs if r.skipped},
    }


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def shown_classes(report: dict) -> list[str]:
    """All classes, or with many: the minority, the 4 smallest and the 2 largest."""
    classes = report["classes"]
    if len(classes) <= MAX_CLASS_ROWS:
        return list(classes)
    by_size = sorted(classes, key=lambda k: classes[k])
    keep = {report["minority"], *by_size[:4], *by_size[-2:]}
    return [k for k in classes if k in keep]


def _shown_epochs(epochs: int) -> list[int]:
    if epochs <= 6:
        return list(range(1, epochs + 1))
    steps = [e for e in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if e < epochs]
    return [*steps, epochs]


def _table(header: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    widths = [max(len(r[0]) for r in [(header[0], []), *rows])]
    for j in range(len(header) - 1):
        widths.append(max(len(header[j + 1]), *(len(r[1][j]) for r in rows if r[1])))
    lines = []
    for label, cells in [(header[0], header[1:]), *rows]:
        if not cells:
            lines.append(label)
            continue
        parts = [label.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def format_report(report: dict) -> str:
    """The terminal table: data first, then one column per sampler, then how to read it."""
    cfg, classes, minority = report["config"], report["classes"], report["minority"]
    n = report["num_samples"]
    multi = report["multilabel"]
    shown = shown_classes(report)
    lines = [
        f"distsampler inspect {report['input']}",
        f"{n:,} samples in {len(classes)} classes; batch size {cfg['batch_size']} x "
        f"{cfg['world_size']} rank(s); {cfg['epochs']} epochs; seed {cfg['seed']}; "
        f"minority: {minority}",
    ]
    if multi:
        bare = report["unlabelled_samples"]
        per_sample = sum(classes.values()) / max(1, n - bare)
        line = f"multi-label: {per_sample:.2f} classes per labelled sample on average"
        if bare:
            line += f"; {bare:,} samples hold no class (class-aware samplers never draw them)"
        lines.append(line)
    lines.append("")
    head = "samples holding it" if multi else "samples"
    data_rows = [(k, [f"{classes[k]:,}", _pct(classes[k] / n)]) for k in shown]
    if len(shown) < len(classes):
        data_rows.append((f"... {len(classes) - len(shown)} more classes (see --json)", []))
    lines += _table(["class", head, "share"], data_rows)
    for kind, reason in report["skipped"].items():
        lines += ["", f"{kind}: cannot run: {reason}"]
    samplers = report["samplers"]
    if samplers:
        lines += ["", *_sampler_table(samplers, shown, minority, cfg["epochs"], multi), ""]
        lines += _LEGEND_MULTI if multi else _LEGEND
    return "\n".join(lines)


_LEGEND = [
    "(x) after a share of draws: the target share. After coverage: the i.i.d. expectation",
    "1 - (1 - 1/n)^k for the k draws the class got. After epochs to see all: the coupon",
    "collector's n*H_n draws over the class's draws per epoch. Per-batch shares count FULL",
    "local batches only (every rank's; the short last batch of an epoch is left out).",
]
_LEGEND_MULTI = [
    "Multi-label: a draw contains class c when its sample holds c, and a sample holding two",
    "classes counts for both, so the realised shares sum to more than 100%. (x) after it: the",
    "target, the share of draws that pick c (quota: the batch slots reserved for c); a draw",
    "picked for one class also contains the classes that co-occur with it, so a rare class",
    "that co-occurs with others is realised above its target. Coverage: members of c seen;",
    "(x) after it: the i.i.d. expectation 1 - (1 - 1/n)^k for the k draws containing c, as if",
    "uniform over c's members (an upper bound for i.i.d. draws when members are drawn",
    "unevenly). Per-batch shares count FULL local batches only (every rank's).",
]


def _sampler_table(
    samplers: dict, shown: list[str], minority: str, epochs: int, multi: bool
) -> list[str]:
    runs = list(samplers.values())
    header = ["", *samplers]
    rows: list[tuple[str, list[str]]] = [("", [r["detail"] for r in runs])]
    groups = [
        "draws containing (target)" if multi else "share of draws (target)",
        f"'{minority}' share per full batch",
        f"coverage after epoch {epochs}",
        "epochs to see all",
        f"'{minority}' repeats per epoch",
    ]
    width = max(len(g) for g in groups) + 2

    def row(group, sub, fn):
        rows.append((group.ljust(width) + sub, [fn(r) for r in runs]))

    row("draws per epoch (all ranks)", "", lambda r: f"{r['draws_per_epoch']:,}")
    row("iterations per epoch", "", lambda r: f"{r['iterations_per_epoch']:,}")
    for i, k in enumerate(shown):
        row(
            groups[0] if i == 0 else "",
            k,
            lambda r, k=k: f"{_pct(r['realised_share'][k])} ({_pct(r['target_share'][k])})",
        )
    for i, key in enumerate(("min", "median", "mean", "max")):
        row(groups[1] if i == 0 else "", key, lambda r, key=key: _num(r["minority_share"][key]))
    row("", "full batches", lambda r: f"{r['minority_share']['full_batches']:,}")
    row(f"full batches without '{minority}'", "", lambda r: _pct(r["no_minority_fraction"], 1))
    for e in _shown_epochs(epochs):
        for i, k in enumerate(shown):
            row(
                f"coverage after epoch {e}" if i == 0 else "",
                k,
                lambda r, k=k, e=e: (
                    f"{_pct(r['coverage'][k][e - 1], 1)} "
                    f"({_pct(r['expected_coverage_iid'][k][e - 1], 1)})"
                ),
            )
        row("", "all", lambda r, e=e: _pct(r["coverage_all"][e - 1], 1))

    def to_cover(r, k):
        got, exp = r["epochs_to_cover"][k], r["expected_epochs_to_cover_iid"][k]
        text = f"> {epochs}" if got is None else str(got)
        return f"{text} ({'never' if exp is None else f'{exp:.3g}'})"

    for i, k in enumerate(shown):
        row(groups[3] if i == 0 else "", k, lambda r, k=k: to_cover(r, k))
    rep = "minority_repeats_per_epoch"
    row(groups[4], "max", lambda r: str(r[rep]["max"]))
    row("", "mean", lambda r: f"{r[rep]['mean']:.2f}")
    if "class-batches" in samplers:  # metric learning: positives and class coverage
        if not multi:
            row("anchors with a positive", "", lambda r: _pct(r["anchors_with_positive"], 1))
        row("classes chosen per epoch", "min", lambda r: _pct(min(r["classes_chosen"]), 1))
    return _table(header, rows)
