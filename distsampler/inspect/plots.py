"""Figures of ``distsampler inspect --plots DIR``: one row per panel kind, one column per sampler.

Panels (each PNG has one kind, samplers side by side; ``inspect.png`` has all of them):

* ``composition``: the classes in the first local batches, in training order;
* ``minority_share``: histogram of the minority's share per full local batch;
* ``coverage``: share of each class seen vs training step (dotted: the i.i.d. expectation);
* ``times_seen``: ECDF of how often each sample was seen over all epochs.

matplotlib is optional (``pip install "distsampler[plots]"``); it is imported only here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .diagnostics import ecdf
from .load import Data
from .options import CliError
from .report import MAX_CLASS_ROWS
from .runs import Run

__all__ = ["PANELS", "PLOTS_HINT", "figure", "require_matplotlib", "write_plots"]

PLOTS_HINT = 'matplotlib is needed for --plots: pip install "distsampler[plots]"'
_LEGEND = {"fontsize": 7.5, "framealpha": 0.9}


def require_matplotlib() -> None:
    """A :class:`CliError` saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(PLOTS_HINT) from None


def _colors(num: int, minority: int) -> list:
    from matplotlib import colormaps

    palette = (
        colormaps["tab10"].colors  # type: ignore[attr-defined]  # a ListedColormap
        if num <= 10
        else colormaps["viridis"](np.linspace(0, 1, num))
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


def _batch_axis(ctx: dict) -> str:
    world = ctx["world_size"]
    if world == 1:
        return "batch, in training order"
    ranks = "rank 0, rank 1" if world == 2 else f"rank 0 to rank {world - 1}"
    return f"local batch, in training order (each step: {ranks})"


def _plot_composition(ax, run: Run, ctx: dict) -> None:
    head = run.result.head  # (batches, C)
    if head is None:
        return
    x = np.arange(len(head))
    m = ctx["minority"]
    shown = [m] + [c for c in ctx["classes"] if c != m]
    bs = ctx["batch_size"]
    if ctx["multilabel"]:  # overlapping classes do not stack: one line per class
        for c in shown:
            ax.step(x, head[:, c], where="mid", color=ctx["colors"][c], lw=1.4,
                    label=f"holding {ctx['names'][c]}")  # fmt: skip
        top = max(bs, int(head.max(initial=0)))
        ax.set_ylabel("samples holding the class")
    else:
        bottom = np.zeros(len(head))
        segments = [(head[:, c], ctx["colors"][c], ctx["names"][c]) for c in shown]
        rest = np.delete(head, shown, axis=1).sum(axis=1)
        if rest.any():
            segments.append((rest, "0.8", "other classes"))
        for height, color, label in segments:
            ax.bar(x, height, bottom=bottom, width=0.9, color=color, label=label)
            bottom += height
        top = bs
        ax.set_ylabel("samples per class")
    ax.axhline(run.target[m] * bs, color="k", lw=1, ls="--", label=f"target {ctx['names'][m]}")
    ax.set_ylim(0, top * 1.45)  # headroom for the legend
    ax.set_xlabel(_batch_axis(ctx))
    ax.set_title(f"{run.kind} ({run.detail}): first {len(head)} batches", fontsize=10)
    ax.legend(loc="upper right", ncol=2, **_LEGEND)


def _plot_share_hist(ax, run: Run, ctx: dict) -> None:
    bs = ctx["batch_size"]
    shares = np.concatenate(run.result.shares)
    edges = (np.arange(bs + 2) - 0.5) / bs
    name = ctx["names"][ctx["minority"]]
    ax.hist(shares, bins=edges, color=ctx["colors"][ctx["minority"]], alpha=0.85,
            label=f"full batches ({len(shares):,})")  # fmt: skip
    ax.axvline(run.target[ctx["minority"]], color="k", lw=1, ls="--", label="target share")
    none = np.mean(shares == 0) if shares.size else 0
    ax.set_xlabel(f"share of {name} per full local batch")
    ax.set_ylabel("full batches")
    ax.set_title(f"{run.kind}: {100 * none:.1f}% of full batches without {name}", fontsize=10)
    ax.set_xlim(-0.5 / bs, ctx["share_max"] + 1.5 / bs)
    ax.legend(loc="upper right", **_LEGEND)


def _plot_coverage(ax, run: Run, ctx: dict) -> None:
    at, seen, expected = run.result.curve()
    for c in ctx["classes"]:
        ax.plot(at, seen[:, c], color=ctx["colors"][c], lw=1.8, label=ctx["names"][c])
        ax.plot(at, expected[:, c], color=ctx["colors"][c], lw=1, ls=":")
    ax.plot([], [], color="0.3", lw=1, ls=":", label="i.i.d. expectation")
    for b in np.cumsum(run.result.iterations)[:-1]:
        ax.axvline(b, color="0.85", lw=0.8, zorder=0)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("training step (grey lines: epoch ends)")
    ax.set_ylabel("share of class seen")
    ax.set_title(f"{run.kind}: coverage", fontsize=10)
    ax.legend(loc="lower right", **_LEGEND)


def _plot_times_seen(ax, run: Run, ctx: dict) -> None:
    for c in ctx["classes"]:
        x, f = ecdf(run.result.times_seen(c))
        ax.step(
            np.concatenate([[0], x]),
            np.concatenate([[0], f]),
            where="post",
            color=ctx["colors"][c],
            lw=1.6,
            label=ctx["names"][c],
        )
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("symlog", linthresh=1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(0, 1.03)
    ax.set_xlabel(
        f"times a sample was seen in {len(run.result.draws)} epochs (log scale)\n"
        "share seen at most x times; the value at 0 = never seen",
        fontsize=9,
    )
    ax.set_ylabel("share of class seen <= x times")
    ax.set_title(f"{run.kind}: times each sample was seen", fontsize=10)
    ax.legend(loc="upper left", **_LEGEND)


PANELS = {
    "composition": _plot_composition,
    "minority_share": _plot_share_hist,
    "coverage": _plot_coverage,
    "times_seen": _plot_times_seen,
}


def _share_max(run: Run, minority: int) -> float:
    shares = np.concatenate(run.result.shares)
    return max(2 * float(run.target[minority]), float(shares.max(initial=0)))


def _context(runs: list[Run], data: Data, args, minority: int) -> dict:
    names = [str(n) for n in data.index.names]
    num = len(names)
    if num <= MAX_CLASS_ROWS:
        classes = list(range(num))
    else:
        by_size = np.argsort(data.index.sizes, kind="stable")
        classes = sorted({minority, int(by_size[-1])})
    return {
        "names": names,
        "minority": minority,
        "classes": classes,
        "colors": _colors(num, minority),
        "batch_size": args.batch_size,
        "world_size": args.world_size,
        "multilabel": data.multilabel,
        "share_max": min(1.0, max(_share_max(r, minority) for r in runs)),
    }


def figure(panels: list[str], runs: list[Run], data: Data, args, minority: int):
    """A matplotlib ``Figure``: one row per panel kind in ``panels``, one column per run.

    Every axes carries its own legend. Runs without a tally (skipped samplers) are left out.
    """
    from matplotlib.figure import Figure

    runs = [r for r in runs if r.tally is not None]
    ctx = _context(runs, data, args, minority)
    cols = max(1, len(runs))
    height = 3.6 if len(panels) == 1 else 3.4 * len(panels)
    fig = Figure(figsize=(5.2 * cols, height), layout="constrained")
    grid = fig.subplots(len(panels), cols, squeeze=False)
    for row, name in zip(grid, panels, strict=True):
        for ax, run in zip(row, runs, strict=True):
            PANELS[name](ax, run, ctx)
    if len(panels) > 1:
        fig.suptitle(
            f"{Path(data.source).name}: {data.index.num_samples:,} samples, batch "
            f"{args.batch_size} x {args.world_size} rank(s), {args.epochs} epochs",
            fontsize=11,
        )
    return fig


def write_plots(directory: str, runs: list[Run], data: Data, args, minority: int) -> list[Path]:
    """One PNG per panel kind (samplers side by side) and ``inspect.png`` with all of them."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, panels in [*((k, [k]) for k in PANELS), ("inspect", list(PANELS))]:
        path = out / f"{name}.png"
        figure(panels, runs, data, args, minority).savefig(path, dpi=110)
        written.append(path)
    return written
