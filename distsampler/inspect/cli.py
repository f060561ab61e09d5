"""``distsampler inspect``: see what a sampler does to your batches before training.

Parses the command line, runs the samplers epoch by epoch through their vectorised plan access
(``indices`` / ``batches``), prints a table (or ``--json``) and draws figures with ``--plots``.
The numbers come from :mod:`distsampler.diagnostics`.

Example::

    distsampler inspect labels.npy --sampler weighted --sampler torch-wrs \\
        --batch-size 32 --world-size 2 --epochs 5 --plots figures/
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import weights as W
from ..groups import GroupIndex, from_coco
from ..quota import DistributedQuotaBatchSampler
from ..weighted import DistributedWeightedSampler
from . import diagnostics as D

__all__ = ["main"]

SAMPLERS = ("weighted", "quota", "torch-wrs")
STRATEGIES = (
    "balanced",
    "instance",
    "sqrt",
    "temperature",
    "effective",
    "progressive",
    "shares",
    "repeat",
)
PLOTS_HINT = 'matplotlib is needed for --plots: pip install "distsampler[plots]"'
_PROGRESS_MIN_DRAWS = 1_000_000
_MAX_CLASS_ROWS = 8


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# -- argument parsing ----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distsampler", description="Class-imbalance samplers for PyTorch DDP."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect",
        help="simulate samplers and report batch balance, coverage and repeats",
        description="Simulate samplers on your labels and report, per sampler: the share of "
        "draws per class, the minority share per batch, coverage per epoch, epochs until every "
        "sample was seen and repeats of minority samples, next to the i.i.d. closed forms.",
    )
    p.add_argument("labels", help="labels: .npy (1-D ints or strings), .csv, or COCO .json")
    src = p.add_argument_group("input")
    src.add_argument("--column", help="CSV column holding the label")
    src.add_argument(
        "--coco-groups",
        action="append",
        default=[],
        metavar="NAME=IDS",
        help="COCO: group of images holding any of these category ids, e.g. defect=1,2 "
        "(repeatable; the first matching group wins)",
    )
    src.add_argument("--coco-default", metavar="NAME", help="COCO: group of all other images")
    smp = p.add_argument_group("samplers")
    smp.add_argument(
        "--sampler",
        action="append",
        choices=SAMPLERS,
        help="repeatable; default: weighted and torch-wrs (and quota when --quota is given). "
        "torch-wrs is torch.utils.data.WeightedRandomSampler with the same per-sample weights, "
        "shared by the ranks like DistributedSampler",
    )
    smp.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="balanced",
        help="class weighting of weighted and torch-wrs (default balanced; see "
        "distsampler.weights); repeat: LVIS repeat factors, COCO input only",
    )
    smp.add_argument("--temperature", type=float, default=2.0, help="temperature: T (2 = sqrt)")
    smp.add_argument("--beta", type=float, default=0.999, help="effective: beta in [0, 1)")
    smp.add_argument("--shares", metavar="A=0.3,B=0.7", help="shares: target share per class")
    smp.add_argument(
        "--progressive-epochs",
        type=int,
        metavar="T",
        help="progressive: epoch at which sampling is class-balanced (default: --epochs)",
    )
    smp.add_argument(
        "--threshold", type=float, default=0.001, help="repeat (COCO only): LVIS threshold t"
    )
    smp.add_argument(
        "--no-stratify",
        action="store_true",
        help="weighted: i.i.d. class draws instead of exact class counts per epoch",
    )
    smp.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="NAME=Q",
        help="quota: an int is a count per batch, a float in (0, 1) a share (repeatable; "
        "default: an equal share for every class)",
    )
    smp.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME=cycle|replace",
        help="quota: cycle a group without replacement (default) or draw it i.i.d.",
    )
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=32, help="local batch size (default 32)")
    run.add_argument("--world-size", type=int, default=1, help="ranks (default 1)")
    run.add_argument(
        "--block-size", type=int, default=1, help="weighted: round-robin block (default 1)"
    )
    run.add_argument("--epochs", type=int, default=5, help="epochs to simulate (default 5)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--minority", metavar="NAME", help="class to follow (default: smallest)")
    out = p.add_argument_group("output")
    out.add_argument("--plots", metavar="DIR", help="write PNG figures to DIR")
    out.add_argument("--json", action="store_true", help="print the numbers as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _pairs(items: Sequence[str], option: str) -> list[tuple[str, str]]:
    """``["a=1", "b=2,3"]`` (also comma-joined ``"a=0.3,b=0.7"``) -> ``[(name, value)]``."""
    out = []
    for item in items:
        for part in re.split(r",(?=[^,=]+=)", item):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise CliError(f"{option} expects NAME=VALUE, but got {part!r}")
            out.append((name.strip(), value.strip()))
    return out


def _number(text: str, option: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{option} expects a number, but got {text!r}") from None


# -- loading labels ------------------------------------------------------------------------------
@dataclass
class Data:
    """Labels and what came with them."""

    source: str
    index: GroupIndex
    categories: list | None = None  # per-sample category ids (COCO), for --strategy repeat


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise CliError(
            f"cannot read {path}: {exc} (save labels as integers or fixed-width strings)"
        ) from None
    if arr.ndim != 1:
        raise CliError(f"labels in {path} should be 1-D, but have shape {arr.shape}")
    return arr


def _load_csv(path: Path, column: str | None) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if column is None:
            if len(columns) != 1:
                raise CliError(
                    f"{path} has columns {columns}; pick the label column with --column NAME"
                )
            column = columns[0]
        if column not in columns:
            raise CliError(f"column {column!r} is not in {path}; its columns are {columns}")
        values = [row[column] for row in reader]
    if not values:
        raise CliError(f"{path} has no rows")
    if all(re.fullmatch(r"[+-]?\d+", v.strip()) for v in values):
        return np.asarray([int(v) for v in values], dtype=np.int64)
    return np.asarray(values)


def _load_coco(path: Path, args) -> tuple[np.ndarray, list | None]:
    if not args.coco_groups:
        raise CliError(
            "a COCO file needs --coco-groups NAME=ID,ID (repeatable) and usually "
            "--coco-default NAME for the other images"
        )
    groups = {}
    for name, ids in _pairs(args.coco_groups, "--coco-groups"):
        try:
            groups.setdefault(name, []).extend(int(x) for x in ids.split(","))
        except ValueError:
            raise CliError(f"--coco-groups {name}= expects category ids, got {ids!r}") from None
    try:
        with open(path, encoding="utf-8") as fh:
            coco = json.load(fh)
        ids, labels = from_coco(coco, groups, default=args.coco_default)
        all_ids, cats = W.coco_image_categories(coco)
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read COCO file {path}: {exc}") from None
    if len(ids) == 0:
        raise CliError(f"no image of {path} is in a group; add --coco-default NAME")
    where = {int(i): k for k, i in enumerate(all_ids)}
    return labels, [cats[where[int(i)]] for i in ids]


def load_data(args) -> Data:
    """Labels from ``.npy``, ``.csv`` or a COCO ``.json``, with clear errors."""
    path = Path(args.labels)
    if not path.is_file():
        raise CliError(f"no such file: {str(path)!r}")
    suffix = path.suffix.lower()
    categories = None
    if suffix == ".npy":
        labels = _load_npy(path)
    elif suffix == ".csv":
        labels = _load_csv(path, args.column)
    elif suffix == ".json":
        labels, categories = _load_coco(path, args)
    else:
        raise CliError(f"labels should be a .npy, .csv or COCO .json file, but got {str(path)!r}")
    try:
        index = GroupIndex.from_labels(labels)
    except (ValueError, TypeError) as exc:
        raise CliError(f"cannot use the labels in {path}: {exc}") from None
    return Data(str(path), index, categories)


def _class(index: GroupIndex, text: str, option: str) -> Hashable:
    """The class whose name prints as ``text``; a clear error listing the classes otherwise."""
    for name in index.names:
        if str(name) == text:
            return name
    shown = ", ".join(str(n) for n in index.names[:20])
    more = f" (and {len(index.names) - 20} more)" if len(index.names) > 20 else ""
    raise CliError(
        f"{option} names class {text!r}, which is not in the labels; classes: {shown}{more}"
    )


# -- building the samplers -----------------------------------------------------------------------
@dataclass
class Run:
    """One sampler's simulation: how to get an epoch's layout, and its results."""

    kind: str
    detail: str
    target: np.ndarray  # (C,) target share of draws, averaged over the epochs
    draws_per_epoch: int
    layout: Callable | None  # (epoch, progress) -> (iterations, W, B)
    tally: D.Tally | None = None
    skipped: str | None = None  # why the sampler cannot run


def _strategy(args, data: Data):
    """``(class_weights or None, per-sample weights or None, description)``."""
    s = args.strategy
    if s == "repeat":
        if data.categories is None:
            raise CliError("--strategy repeat needs a COCO file (per-image category lists)")
        return (
            None,
            W.repeat_factors(data.categories, args.threshold),
            f"repeat t={args.threshold:g}",
        )
    if s in ("balanced", "instance", "sqrt"):
        return s, None, s
    if s == "temperature":
        return W.Temperature(args.temperature), None, f"temperature T={args.temperature:g}"
    if s == "effective":
        return W.EffectiveNumber(args.beta), None, f"effective beta={args.beta:g}"
    if s == "progressive":
        t = args.epochs if args.progressive_epochs is None else args.progressive_epochs
        return W.Progressive(t), None, f"progressive T={t}"
    if not args.shares:
        raise CliError("--strategy shares needs --shares NAME=SHARE,NAME=SHARE")
    shares = {
        _class(data.index, k, "--shares"): float(_number(v, "--shares"))
        for k, v in _pairs([args.shares], "--shares")
    }
    text = ",".join(f"{k}={v:g}" for k, v in shares.items())
    return W.target_shares(shares), None, f"shares {text}"


def _mean_target(class_weights, data: Data, epochs: int) -> np.ndarray:
    strategy = W.resolve(class_weights, data.index.names)
    sizes = data.index.sizes
    return np.mean([W.class_shares(strategy, sizes, e) for e in range(epochs)], axis=0)


def _weights_target(weights: np.ndarray, codes: np.ndarray, num: int) -> np.ndarray:
    mass = np.bincount(codes, weights=weights, minlength=num)
    return mass / mass.sum()


def _weighted_run(args, data, codes, class_weights, sample_weights, detail) -> Run:
    kw = dict(num_replicas=args.world_size, rank=0, seed=args.seed, block_size=args.block_size)
    if sample_weights is not None:
        sampler = DistributedWeightedSampler(sample_weights, **kw)
        target = _weights_target(sample_weights, codes, len(data.index.names))
    else:
        sampler = DistributedWeightedSampler(
            labels=data.index,
            class_weights=class_weights,
            stratify=not args.no_stratify,
            **kw,
        )
        target = _mean_target(class_weights, data, args.epochs)
        detail += ", i.i.d." if args.no_stratify else ", stratified"

    def layout(epoch, progress):
        stream = D.weighted_stream(sampler, epoch, progress=progress)
        return D.epoch_layout(stream, args.world_size, args.batch_size, args.block_size)

    total = sampler.num_replicas * len(sampler)
    return Run("weighted", detail, target, total, layout)


def _quota_run(args, data) -> Run:
    index = data.index
    if args.quota:
        quotas = {
            _class(index, k, "--quota"): _number(v, "--quota")
            for k, v in _pairs(args.quota, "--quota")
        }
    elif len(index.names) > 1:  # an equal share of every batch for every class
        quotas = {n: 1.0 / len(index.names) for n in index.names}
    else:
        quotas = {index.names[0]: args.batch_size}
    policies = {_class(index, k, "--policy"): v for k, v in _pairs(args.policy, "--policy")}
    sampler = DistributedQuotaBatchSampler(
        index,
        args.batch_size,
        quotas,
        policies=policies or None,
        num_replicas=args.world_size,
        rank=0,
        seed=args.seed,
    )
    counts = sampler.per_epoch_counts()
    detail = ",".join(f"{k}={v:g}" for k, v in quotas.items()) if args.quota else "equal shares"
    if policies:
        detail += " " + ",".join(f"{k}:{v}" for k, v in policies.items())

    def layout(epoch, progress):
        micro = D.quota_stream(sampler, epoch, progress=progress)  # (M, B)
        return D.deal(micro, args.world_size)  # (iterations, W, B)

    total = sampler.num_replicas * len(sampler) * args.batch_size
    return Run("quota", detail, counts / counts.sum(), total, layout)


def _torch_run(args, data, codes, class_weights, sample_weights, detail) -> Run:
    n = data.index.num_samples
    problem = D.torch_wrs_problem(n)
    if sample_weights is not None:
        target = _weights_target(sample_weights, codes, len(data.index.names))
    else:
        target = _mean_target(class_weights, data, args.epochs)
    run = Run("torch-wrs", detail, target, -(-n // args.world_size) * args.world_size, None)
    if problem:
        run.skipped = problem
        return run
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    strategy = None if sample_weights is not None else W.resolve(class_weights, data.index.names)

    def layout(epoch, progress):
        w = sample_weights if strategy is None else strategy(data.index.sizes, epoch)[codes]
        stream = D.torch_wrs_stream(w, args.world_size, generator)
        if progress:
            progress(len(stream))
        return D.epoch_layout(stream, args.world_size, args.batch_size, 1)

    run.layout = layout
    return run


def build_runs(args, data: Data) -> list[Run]:
    """The runs asked for, validated (no epoch is simulated yet)."""
    kinds = list(dict.fromkeys(args.sampler or ["weighted", "torch-wrs"]))
    if not args.sampler and args.quota:
        kinds.insert(1, "quota")
    codes = D.label_codes(data.index)
    try:
        class_weights, sample_weights, detail = _strategy(args, data)
        runs = []
        for kind in kinds:
            if kind == "weighted":
                runs.append(_weighted_run(args, data, codes, class_weights, sample_weights, detail))
            elif kind == "quota":
                runs.append(_quota_run(args, data))
            else:
                runs.append(_torch_run(args, data, codes, class_weights, sample_weights, detail))
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    return runs


# -- progress bar --------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr (no dependency), redrawn at most 10 times a second."""

    def __init__(self, total: int, enabled: bool = True, stream=None, width: int = 28) -> None:
        self.total, self.enabled, self.width = max(1, total), enabled, width
        self.stream = sys.stderr if stream is None else stream
        self.done, self.label, self._last, self._drawn = 0, "", 0.0, False

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width)
            self.stream.write(
                f"\r{self.label:<24} [{bar:<{self.width}}] {frac:6.1%} "
                f"{self.done:,}/{self.total:,} draws"
            )
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def simulate(runs: list[Run], data: Data, args, minority: int) -> None:
    """Run every epoch of every runnable sampler into its :class:`Tally`."""
    codes = D.label_codes(data.index)
    total = sum(r.draws_per_epoch for r in runs if not r.skipped) * args.epochs
    progress = Progress(total, enabled=not args.no_progress and total >= _PROGRESS_MIN_DRAWS)
    try:
        for run in runs:
            if run.skipped:
                continue
            run.tally = D.Tally(codes, len(data.index.names), minority, args.batch_size)
            for epoch in range(args.epochs):
                progress.label = f"{run.kind} epoch {epoch + 1}/{args.epochs}"
                run.tally.add_epoch(run.layout(epoch, progress))
    finally:
        progress.close()


# -- report --------------------------------------------------------------------------------------
def build_report(runs: list[Run], data: Data, args, minority: int) -> dict:
    """Everything printed, as a JSON-ready dict."""
    names = data.index.names
    return {
        "input": data.source,
        "num_samples": data.index.num_samples,
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
            r.kind: {"detail": r.detail, **r.tally.summary(names, r.target)}
            for r in runs
            if not r.skipped
        },
        "skipped": {r.kind: r.skipped for r in runs if r.skipped},
    }


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _shown_classes(report: dict) -> list[str]:
    classes = report["classes"]
    if len(classes) <= _MAX_CLASS_ROWS:
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
    """The terminal table: data first, then one column per sampler."""
    cfg, classes, minority = report["config"], report["classes"], report["minority"]
    n = report["num_samples"]
    shown = _shown_classes(report)
    lines = [
        f"distsampler inspect {report['input']}",
        f"{n:,} samples in {len(classes)} classes; batch size {cfg['batch_size']} x "
        f"{cfg['world_size']} rank(s); {cfg['epochs']} epochs; seed {cfg['seed']}; "
        f"minority: {minority}",
        "",
    ]
    data_rows = [(k, [f"{classes[k]:,}", _pct(classes[k] / n)]) for k in shown]
    if len(shown) < len(classes):
        data_rows.append((f"... {len(classes) - len(shown)} more classes (see --json)", []))
    lines += _table(["class", "samples", "share"], data_rows)
    for kind, reason in report["skipped"].items():
        lines += ["", f"{kind}: cannot run: {reason}"]
    samplers = report["samplers"]
    if samplers:
        lines += ["", *_sampler_table(samplers, shown, minority, cfg["epochs"]), ""]
        lines += _LEGEND
    return "\n".join(lines)


_LEGEND = [
    "(x) after a share of draws: the target share. After coverage: the i.i.d. expectation",
    "1 - (1 - 1/n)^k for the k draws the class got. After epochs to see all: the coupon",
    "collector's n*H_n draws over the class's draws per epoch. Per-batch shares count full",
    "local batches of every rank.",
]


def _sampler_table(samplers: dict, shown: list[str], minority: str, epochs: int) -> list[str]:
    runs = list(samplers.values())
    header = ["", *samplers]
    rows: list[tuple[str, list[str]]] = [("", [r["detail"] for r in runs])]
    groups = [
        "share of draws (target)",
        f"'{minority}' share per batch",
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
    for i, key in enumerate(("min", "median", "max")):
        row(groups[1] if i == 0 else "", key, lambda r, key=key: _num(r["minority_share"][key]))
    row(f"batches without '{minority}'", "", lambda r: _pct(r["no_minority_fraction"], 1))
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
    return _table(header, rows)


# -- plots ---------------------------------------------------------------------------------------
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(PLOTS_HINT) from None


def _colors(num: int, minority: int) -> list:
    from matplotlib import colormaps

    palette = (
        colormaps["tab10"].colors if num <= 10 else colormaps["viridis"](np.linspace(0, 1, num))
    )
    others = [c for i, c in enumerate(palette) if i != 3]  # tab10[3] is red: the minority's
    out, j = [], 0
    for c in range(num):
        if c == minority:
            out.append("#d62728")
        else:
            out.append(others[j % len(others)])
            j += 1
    return out


def _plot_composition(ax, run: Run, ctx: dict) -> None:
    head = run.tally.head  # (batches, C)
    x = np.arange(len(head))
    bottom = np.zeros(len(head))
    m = ctx["minority"]
    shown = [m] + [c for c in ctx["classes"] if c != m]
    segments = [(head[:, c], ctx["colors"][c], ctx["names"][c]) for c in shown]
    rest = np.delete(head, shown, axis=1).sum(axis=1)
    if rest.any():
        segments.append((rest, "0.8", "other classes"))
    for height, color, label in segments:
        ax.bar(x, height, bottom=bottom, width=0.9, color=color, label=label)
        bottom += height
    target = run.target[ctx["minority"]] * ctx["batch_size"]
    ax.axhline(target, color="k", lw=1, ls="--", label=f"target {ctx['names'][ctx['minority']]}")
    ax.set_ylim(0, ctx["batch_size"] * 1.4)  # headroom for the legend
    ax.set_xlabel("local batch (iteration-major, ranks interleaved)")
    ax.set_ylabel("samples per class")
    ax.set_title(f"{run.kind} ({run.detail}): first {len(head)} batches", fontsize=10)


def _plot_share_hist(ax, run: Run, ctx: dict) -> None:
    bs = ctx["batch_size"]
    shares = np.concatenate(run.tally.shares)
    edges = (np.arange(bs + 2) - 0.5) / bs
    ax.hist(shares, bins=edges, color=ctx["colors"][ctx["minority"]], alpha=0.85)
    ax.axvline(run.target[ctx["minority"]], color="k", lw=1, ls="--", label="target share")
    none = np.mean(shares == 0) if shares.size else 0
    name = ctx["names"][ctx["minority"]]
    ax.set_xlabel(f"share of {name} per full batch")
    ax.set_ylabel("batches")
    ax.set_title(f"{run.kind}: {100 * none:.1f}% of batches without {name}", fontsize=10)
    ax.set_xlim(-0.5 / bs, ctx["share_max"] + 1.5 / bs)


def _plot_coverage(ax, run: Run, ctx: dict) -> None:
    at, seen, expected = run.tally.curve()
    for c in ctx["classes"]:
        ax.plot(at, seen[:, c], color=ctx["colors"][c], lw=1.8, label=ctx["names"][c])
        ax.plot(at, expected[:, c], color=ctx["colors"][c], lw=1, ls=":")
    for b in np.cumsum(run.tally.iterations)[:-1]:
        ax.axvline(b, color="0.85", lw=0.8, zorder=0)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("iteration (epochs in grey; dotted: i.i.d. expectation)")
    ax.set_ylabel("fraction of class seen")
    ax.set_title(f"{run.kind}: coverage", fontsize=10)


def _plot_times_seen(ax, run: Run, ctx: dict) -> None:
    times, labels = run.tally.times, run.tally.labels
    for c in ctx["classes"]:
        x, f = D.ecdf(times[labels == c])
        ax.step(
            np.concatenate([[0], x]),
            np.concatenate([[0], f]),
            where="post",
            color=ctx["colors"][c],
            lw=1.6,
            label=ctx["names"][c],
        )
    ax.set_xscale("symlog", linthresh=1)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel(f"times a sample was seen in {len(run.tally.draws)} epochs")
    ax.set_ylabel("fraction of class (ECDF)")
    ax.set_title(f"{run.kind}: times each sample was seen", fontsize=10)


_PANELS = {
    "composition": _plot_composition,
    "minority_share": _plot_share_hist,
    "coverage": _plot_coverage,
    "times_seen": _plot_times_seen,
}


def _share_max(run: Run, minority: int) -> float:
    shares = np.concatenate(run.tally.shares)
    return max(2 * float(run.target[minority]), float(shares.max(initial=0)))


def write_plots(directory: str, runs: list[Run], data: Data, args, minority: int) -> list[Path]:
    """One PNG per panel kind (samplers side by side) and ``inspect.png`` with all of them."""
    from matplotlib.figure import Figure

    runs = [r for r in runs if r.tally is not None]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in data.index.names]
    num = len(names)
    if num <= _MAX_CLASS_ROWS:
        classes = list(range(num))
    else:
        by_size = np.argsort(data.index.sizes, kind="stable")
        classes = sorted({minority, int(by_size[-1])})
    ctx = {
        "names": names,
        "minority": minority,
        "classes": classes,
        "colors": _colors(num, minority),
        "batch_size": args.batch_size,
        "share_max": min(1.0, max(_share_max(r, minority) for r in runs)),
    }
    cols = max(1, len(runs))
    written = []

    def save(fig, name):
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)

    for name, panel in _PANELS.items():
        fig = Figure(figsize=(5.2 * cols, 3.6), layout="constrained")
        axes = fig.subplots(1, cols, squeeze=False)[0]
        for ax, run in zip(axes, runs, strict=True):
            panel(ax, run, ctx)
        axes[0].legend(fontsize=8, loc="best", framealpha=0.9)
        save(fig, name)
    fig = Figure(figsize=(5.2 * cols, 3.3 * len(_PANELS)), layout="constrained")
    grid = fig.subplots(len(_PANELS), cols, squeeze=False)
    for row, panel in zip(grid, _PANELS.values(), strict=True):
        for ax, run in zip(row, runs, strict=True):
            panel(ax, run, ctx)
        row[0].legend(fontsize=8, loc="best", framealpha=0.9)
    fig.suptitle(
        f"{Path(data.source).name}: {data.index.num_samples:,} samples, batch {args.batch_size}"
        f" x {args.world_size} rank(s), {args.epochs} epochs",
        fontsize=11,
    )
    save(fig, "inspect")
    return written


# -- entry point ---------------------------------------------------------------------------------
def _check_args(args) -> None:
    for name in ("batch_size", "world_size", "block_size", "epochs"):
        value = getattr(args, name)
        if value < 1:
            raise CliError(f"--{name.replace('_', '-')} should be a positive integer, got {value}")
    if args.seed < 0:
        raise CliError(f"--seed should be >= 0, got {args.seed}")


def inspect(args) -> int:
    """``distsampler inspect``: returns the exit status."""
    _check_args(args)
    if args.plots:
        _require_matplotlib()
    data = load_data(args)
    if args.minority is None:
        minority = int(np.argmin(data.index.sizes))
    else:
        minority = data.index.code(_class(data.index, args.minority, "--minority"), "--minority")
    runs = build_runs(args, data)
    simulate(runs, data, args, minority)
    report = build_report(runs, data, args, minority)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.plots and any(r.tally is not None for r in runs):
        for path in write_plots(args.plots, runs, data, args, minority):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``distsampler``; returns the exit status (0 ok, 2 bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return int(exc.code or 0)
    try:
        return inspect(args)
    except CliError as exc:
        print(f"distsampler {args.command}: error: {exc}", file=sys.stderr)
        return 2
