"""``distsampler inspect``: see what a sampler does to your batches before training.

The command line only: parse the options, then load (:mod:`.load`), build and simulate the
runs (:mod:`.runs`), print the report (:mod:`.report`) and draw the figures (:mod:`.plots`).

Example::

    distsampler inspect labels.npy --sampler weighted --sampler torch-wrs \\
        --batch-size 32 --world-size 2 --epochs 5 --plots figures/
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from .. import __version__
from .load import Data, load_data
from .options import CliError, class_named
from .plots import require_matplotlib, write_plots
from .report import build_report, format_report
from .runs import SAMPLERS, STRATEGIES, Run, build_runs, simulate

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    """The ``distsampler`` argument parser (one sub-command: ``inspect``)."""
    parser = argparse.ArgumentParser(
        prog="distsampler", description="Class-imbalance samplers for PyTorch DDP."
    )
    parser.add_argument("--version", action="version", version=f"distsampler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect",
        help="simulate samplers and report batch balance, coverage and repeats",
        description="Simulate samplers on your labels and report, per sampler: the share of "
        "draws per class (multi-label: of draws containing the class), the minority share per "
        "full local batch, coverage per epoch, epochs until every sample was seen and repeats "
        "of minority samples, next to the i.i.d. closed forms.",
    )
    p.add_argument(
        "labels",
        help="labels: .npy (1-D labels, or 2-D (N, C) multi-hot), .csv, COCO .json, or a .json "
        'list with one label or one list of labels per sample ([["scratch"], [], ["dent"]])',
    )
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
    src.add_argument(
        "--multilabel",
        action="store_true",
        help="multi-label input: COCO, one group per category name (an image is in the group "
        "of every category it has); CSV, a cell holds labels separated by --separator",
    )
    src.add_argument(
        "--separator",
        default="|",
        metavar="SEP",
        help="--multilabel CSV: separator of the labels in one cell (default |; an empty cell "
        "is a sample with no label)",
    )
    src.add_argument(
        "--background",
        metavar="NAME",
        help="multi-label input: group of the samples with no label (default: no group; "
        "class-aware samplers then never draw them)",
    )
    smp = p.add_argument_group("samplers")
    smp.add_argument(
        "--sampler",
        action="append",
        choices=SAMPLERS,
        help="repeatable; default: weighted and torch-wrs (and quota when --quota is given); "
        "weighted and quota for multi-label input. "
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
    smp.add_argument(
        "--samples-per-class",
        type=int,
        default=4,
        metavar="K",
        help="class-batches: K samples of each of batch size / K classes (default 4)",
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


def _check_args(args) -> None:
    for name in ("batch_size", "world_size", "block_size", "epochs"):
        value = getattr(args, name)
        if value < 1:
            raise CliError(f"--{name.replace('_', '-')} should be a positive integer, got {value}")
    if args.seed < 0:
        raise CliError(f"--seed should be >= 0, got {args.seed}")
    if not args.separator:
        raise CliError("--separator should be a non-empty string")


def simulation(args) -> tuple[Data, list[Run], int]:
    """Load the labels, build the runs and simulate every epoch: ``(data, runs, minority)``."""
    _check_args(args)
    if args.plots:
        require_matplotlib()
    data = load_data(
        args.labels,
        column=args.column,
        coco_groups=args.coco_groups,
        coco_default=args.coco_default,
        multilabel=args.multilabel,
        background=args.background,
        separator=args.separator,
    )
    if args.minority is None:
        minority = int(np.argmin(data.index.sizes))
    else:
        name = class_named(data.index.names, args.minority, "--minority")
        minority = data.index.names.index(name)
    runs = build_runs(args, data)
    simulate(runs, data, args, minority)
    return data, runs, minority


def inspect(args) -> int:
    """``distsampler inspect``: returns the exit status."""
    data, runs, minority = simulation(args)
    report = build_report(runs, data, args, minority)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.plots and any(r.tally is not None for r in runs):
        for path in write_plots(args.plots, runs, data, args, minority):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``distsampler``; returns the exit status (0 ok, 2 bad input)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return int(exc.code or 0)
    try:
        return inspect(args)
    except CliError as exc:
        print(f"distsampler {args.command}: error: {exc}", file=sys.stderr)
        return 2
