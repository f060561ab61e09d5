"""Sampler throughput: distsampler side by side with today's PyTorch recipes, N = 1e5 .. 1e8.

Usage (from the repository root)::

    python -m benchmarks.throughput                      # the full sweep
    python -m benchmarks.throughput --quick              # N = 1e5, W in {1, 8}
    python -m benchmarks.throughput --sizes 1e7 --worlds 8 --json out.json

Every case (one sampler, one data set size N, one world size W) runs rank 0 of the W ranks in a
fresh subprocess (``num_replicas=W, rank=0``: the plan needs no communication and every rank
does the same work), so memory is measured from a clean process and a case past its limit can
be killed. The data: ``N`` binary labels, about 3% minority (int8), and the balanced per-sample
weights (float64) that give each class half the draws.

Samplers: the baselines (1)-(3) of :mod:`benchmarks.baselines`, the floor (4) (random reads of
the label index made into Python ints, no plan: no sampler over a stored index pulls faster)
and (5) (the same as batches), and ours:
``DistributedWeightedSampler`` (weights i.i.d., labels stratified, labels i.i.d., weights
without replacement) and ``DistributedQuotaBatchSampler`` (32 of 256 minority drawn i.i.d.,
majority cycled: the contract of (3)).

Figures, per rank (how each is taken: :mod:`benchmarks.harness`):

* ``init``: building the sampler from data already in memory: once per run.
* ``first``: ``set_epoch`` + ``iter`` + the first index (or batch): what the loop waits for
  at every epoch start. ``first`` and ``epoch`` are the best of epochs 1-3 where those fit in
  5 s (else one epoch).
* ``epoch``: ``set_epoch`` to the last index of this rank's share, drained in C; ratios divide
  the baseline's time *per index* by ours, so the quota samplers' slightly different epoch
  lengths compare fairly.
* ``pull``: indices/s as ``DataLoader(num_workers=0, batch_size=256)`` takes an epoch
  (``set_epoch`` included), capped at ``--pull-cap`` indices. ``efficiency``: the pull over
  the same loader fed a ready list of Python ints of the same length, in the same process
  (interleaved rounds, best of each: :func:`benchmarks.harness.pull_rate`).
* ``peak extra``: peak RSS (``VmHWM``) minus the RSS before ``init``, over init + the first
  epoch: numpy, Python *and* torch allocations beyond the inputs.

A case whose epoch would exceed ``--time-limit`` (extrapolated linearly from the previous size
at the same W) is not run: the table says ``skipped (limit)``. Baselines that cannot run say why
(``torch.multinomial`` takes at most 2**24 categories).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import Sampler

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import baselines, harness, tables
from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
)

SIZES = (10**5, 10**6, 10**7, 10**8)
WORLDS = (1, 8, 64)
QUOTA_SHARE = 8  # the quota samplers put batch_size // 8 minority samples in every batch


# -- the samplers under test -----------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """How to prepare the inputs of one sampler and build it for a rank."""

    label: str
    role: str  # "baseline", "floor" or "ours"
    kind: str  # "index" or "batch"
    needs: str  # inputs built before the measurement: "none", "weights", "index", "groups"
    build: Callable[[dict, int, int, int], Sampler]
    hard_limit: int | None = None  # past this N it fails at once: run it to show the error


def _wrs(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    return baselines.weighted_wrapper(inp["weights"], world, rank)


def _ds(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    return baselines.distributed_sampler(inp["n"], world, rank)


def _naive_quota(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    minority, majority = inp["groups"]
    return baselines.NaiveQuotaBatchSampler(minority, majority, bs, bs // QUOTA_SHARE, world, rank)


def _floor(inp: dict, world: int, rank: int, bs: int, batches: bool = False) -> Sampler:
    length = -(-inp["n"] // world)  # a rank's share, as ours
    return baselines.IndexReads(inp["index"].members, length, bs if batches else None)


def _ours(**kw: Any) -> Callable[[dict, int, int, int], Sampler]:
    def build(inp: dict, world: int, rank: int, bs: int) -> Sampler:
        data = {"labels": inp["index"]} if "index" in inp else {"weights": inp["weights"]}
        return DistributedWeightedSampler(**data, **kw, num_replicas=world, rank=rank)

    return build


def _ours_quota(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    return DistributedQuotaBatchSampler(
        inp["index"],
        bs,
        {1: bs // QUOTA_SHARE},
        policies={1: "replace"},
        num_replicas=world,
        rank=rank,
    )


SAMPLERS: dict[str, Spec] = {
    "wrs_wrapper": Spec(
        "(1) WeightedRandomSampler + wrapper", "baseline", "index", "weights", _wrs, 2**24
    ),
    "dist_sampler": Spec("(2) DistributedSampler(shuffle)", "baseline", "index", "none", _ds),
    "naive_quota": Spec(
        "(3) hand-written quota batches", "baseline", "batch", "groups", _naive_quota
    ),
    "floor": Spec("(4) floor: random index reads, no plan", "floor", "index", "index", _floor),
    "floor_batch": Spec(
        "(5) floor: the same, as batches",
        "floor",
        "batch",
        "index",
        lambda inp, world, rank, bs: _floor(inp, world, rank, bs, batches=True),
    ),
    "weights_iid": Spec("ours: weights i.i.d.", "ours", "index", "weights", _ours()),
    "labels_strat": Spec("ours: labels stratified", "ours", "index", "index", _ours()),
    "labels_iid": Spec("ours: labels i.i.d.", "ours", "index", "index", _ours(stratify=False)),
    "weights_wor": Spec(
        "ours: weights w/o replacement", "ours", "index", "weights", _ours(replacement=False)
    ),
    "quota": Spec("ours: quota batches", "ours", "batch", "index", _ours_quota),
}


def prepare_inputs(needs: str, n: int, minority: float) -> dict:
    """The data a sampler is built from, created before memory is measured."""
    inp: dict[str, Any] = {"n": n}
    if needs == "none":
        return inp
    labels = baselines.make_labels(n, minority)
    if needs == "weights":
        inp["weights"] = baselines.balanced_weights(labels)
    elif needs == "index":
        inp["index"] = GroupIndex.from_labels(labels)
    elif needs == "groups":
        y = torch.from_numpy(labels)
        inp["groups"] = (torch.nonzero(y == 1).flatten(), torch.nonzero(y == 0).flatten())
    return inp


# -- one case (runs in its own subprocess) ---------------------------------------------------
def run_case(case: dict) -> dict:
    """Measure one case in this process; returns its record (see the module docstring)."""
    spec = SAMPLERS[case["sampler"]]
    n, world, rank, bs = case["n"], case["world"], case["rank"], case["batch_size"]
    rec: dict[str, Any] = {"load1": os.getloadavg()[0]}
    t = time.perf_counter()
    inp = prepare_inputs(spec.needs, n, case["minority"])
    rec["setup_s"] = time.perf_counter() - t
    base_kb, reset = harness.reset_peak_rss()
    t0 = time.perf_counter()
    sampler = spec.build(inp, world, rank, bs)
    rec["init_s"] = time.perf_counter() - t0
    try:
        first = harness.timed_epoch(sampler, spec.kind, 1)
    except RuntimeError as e:  # e.g. torch.multinomial past 2**24 categories
        return {**rec, "status": "cannot run", "reason": str(e).splitlines()[0]}
    peak_kb = harness.peak_rss_kb(reset)
    rec |= {"status": "ok", "peak_extra_mb": max(0, peak_kb - base_kb) / 1024}
    rec |= harness.best_epochs(sampler, spec.kind, [first])
    rec |= harness.pull_rate(sampler, spec.kind, n, bs, case["pull_cap"])
    rec["load1_end"] = os.getloadavg()[0]
    return rec


# -- the sweep -------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Cases to run and what limits them."""

    sizes: list[int]
    worlds: list[int]
    samplers: list[str]
    time_limit: float
    budget: float
    batch_size: int = 256
    pull_cap: int = 1 << 24
    minority: float = baselines.MINORITY
    rank: int = 0
    inline: bool = False
    records: list[dict] = field(default_factory=list)


def case_timeout(n: int, limit: float) -> float:
    """Wall-clock allowed to one case: data setup grows with N, then init + epoch + pull."""
    return 20 + 60 * n / 1e8 + 3 * limit


def estimate(records: list[dict], sampler: str, world: int, n: int) -> float | None:
    """Epoch time at size ``n`` extrapolated linearly from the largest smaller size run."""
    prev = [
        r
        for r in records
        if r["sampler"] == sampler and r["world"] == world and r["n"] < n and "status" in r
    ]
    if not prev:
        return None
    last = max(prev, key=lambda r: r["n"])
    if last["status"] in ("skipped (limit)", "timeout"):
        return float("inf")
    if last["status"] != "ok":
        return None
    return last["epoch_s"] * n / last["n"]


def run_sweep(sw: Sweep, log: Callable[[str], None]) -> list[dict]:
    """Run every case in order of size, skipping those past the limit or the budget."""
    start = time.monotonic()
    for n in sw.sizes:
        for world in sw.worlds:
            for name in sw.samplers:
                case = {
                    "sampler": name,
                    "n": n,
                    "world": world,
                    "rank": sw.rank,
                    "batch_size": sw.batch_size,
                    "pull_cap": sw.pull_cap,
                    "minority": sw.minority,
                }
                spec = SAMPLERS[name]
                rec = {**case, "label": spec.label, "role": spec.role, "kind": spec.kind}
                est = estimate(sw.records, name, world, n)
                if spec.hard_limit is not None and n > spec.hard_limit:
                    est = None  # fails at once with its own error, which the table shows
                if time.monotonic() - start > sw.budget:
                    rec |= {"status": "skipped (budget)", "reason": f"sweep over {sw.budget} s"}
                elif est is not None and est > sw.time_limit:
                    rec |= {"status": "skipped (limit)", "reason": f"epoch est. {est:.0f} s"}
                else:
                    timeout = case_timeout(n, sw.time_limit)
                    rec |= harness.dispatch("throughput", case, sw.inline, run_case, timeout)
                sw.records.append(rec)
                log(progress_line(rec))
    return sw.records


def progress_line(r: dict) -> str:
    head = f"N={r['n']:.0e} W={r['world']:<3} {r['sampler']:<13}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('reason', '')}"
    return (
        f"{head} init {r['init_s']:.3f}s first {r['first_s'] * 1e3:.1f}ms "
        f"epoch {r['epoch_s']:.3f}s pull {tables.rate(r.get('pull_rate'))}M/s "
        f"eff {tables.share(r.get('efficiency'))} peak +{r['peak_extra_mb']:.0f}MB"
    )


# -- reporting -------------------------------------------------------------------------------
def per_index(r: dict | None) -> float | None:
    if r is None or r.get("status") != "ok" or not r.get("items"):
        return None
    return r["epoch_s"] / r["items"]


def _find(records: list[dict], sampler: str, n: int, world: int) -> dict | None:
    return next(
        (r for r in records if r["sampler"] == sampler and r["n"] == n and r["world"] == world),
        None,
    )


def speedups(records: list[dict], r: dict) -> dict[str, float | None]:
    """Per-index epoch speedups vs baselines (1)-(3), and first index as a share of (2)'s."""
    n, w = r["n"], r["world"]
    ours = per_index(r)
    out = {
        f"vs_{b}": tables.divide(per_index(_find(records, b, n, w)), ours)
        for b in ("wrs_wrapper", "dist_sampler", "naive_quota")
    }
    ds = _find(records, "dist_sampler", n, w)
    ds_first = ds["first_s"] if ds and ds.get("status") == "ok" else None
    out["first_vs_dist_sampler"] = tables.divide(r.get("first_s"), ds_first)
    return out


HEAD = (
    "N",
    "W",
    "sampler",
    *tables.TIMING_HEAD,
    "peak extra (MB)",
    "epoch vs (1)",
    "epoch vs (2)",
    "epoch vs (3)",
    "first vs (2)",
)


def markdown_table(records: list[dict]) -> str:
    """The results as one markdown table, rows grouped by N then W."""
    rows = []
    for r in records:
        lead = [f"{r['n']:.0e}", str(r["world"]), r["label"]]
        if r["status"] != "ok":
            why = r["status"] if r["status"].startswith("skipped") else tables.not_run(r)
            rows.append([*lead, why])
            continue
        sp = speedups(records, r) if r["role"] == "ours" else {}
        vs3 = sp.get("vs_naive_quota") if r["sampler"] == "quota" else None
        rows.append(
            [
                *lead,
                *tables.timing_cells(r),
                f"{r['peak_extra_mb']:.0f}",
                tables.ratio(sp.get("vs_wrs_wrapper")),
                tables.ratio(sp.get("vs_dist_sampler")),
                tables.ratio(vs3),
                tables.ratio(sp.get("first_vs_dist_sampler"), as_percent=True),
            ]
        )
    return tables.markdown(HEAD, rows)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: a figure of ours at (N, W) and the bar it must clear."""

    name: str
    goal: str
    n: int
    world: int
    value: Callable[[list[dict], dict], float | None]
    met: Callable[[float], bool] | None  # None: reported only
    unit: str  # "x", "%", "MB", "M/s" or "" (a plain fraction)
    samplers: tuple[str, ...] | None = None  # None: every sampler of ours


def _speedup(key: str) -> Callable[[list[dict], dict], float | None]:
    return lambda records, r: speedups(records, r)[key]


def _field(key: str) -> Callable[[list[dict], dict], float | None]:
    return lambda _, r: r.get(key)


def _floor_efficiency(records: list[dict], r: dict) -> float | None:
    """The efficiency of the floor of ``r``'s kind ((4) or (5)) at the same N and W."""
    name = "floor_batch" if r["kind"] == "batch" else "floor"
    for x in records:
        if (x["sampler"], x["n"], x["world"], x.get("status")) == (name, r["n"], r["world"], "ok"):
            return x.get("efficiency")
    return None


def _at_least(bar: float) -> Callable[[float], bool]:
    return lambda v: v >= bar


def _below(bar: float) -> Callable[[float], bool]:
    return lambda v: v < bar


def _targets(worlds: list[int]) -> list[Target]:
    big, mid = 10**8, 10**7
    eff_modes = ("weights_iid", "labels_strat", "labels_iid", "quota")
    return [
        Target("epoch vs (1)", ">= 20x", mid, 8, _speedup("vs_wrs_wrapper"), _at_least(20), "x"),
        Target("epoch vs (2)", ">= 1x", mid, 8, _speedup("vs_dist_sampler"), _at_least(1), "x"),
        Target("epoch vs (3)", "report", mid, 8, _speedup("vs_naive_quota"), None, "x", ("quota",)),
        Target("DataLoader pull", ">= 10M/s", mid, 8, _field("pull_rate"), _at_least(1e7), "M/s"),
        Target("efficiency", ">= 0.5", mid, 8, _field("efficiency"), _at_least(0.5), "", eff_modes),
        Target("efficiency of (4) / (5)", "bound", mid, 8, _floor_efficiency, None, "", eff_modes),
        *(Target("first index / (2)'s", "< 1%", big, w, _speedup("first_vs_dist_sampler"),
                 _below(0.01), "%") for w in worlds),
        *(Target("peak extra", "< 64 MB", big, w, _field("peak_extra_mb"), _below(64), "MB")
          for w in worlds),
    ]  # fmt: skip


def target_lines(records: list[dict]) -> list[dict]:
    """The issue's targets for each of our samplers, with the measured figure (met or missed)."""
    worlds = sorted({r["world"] for r in records})
    out = []
    for t in _targets(worlds):
        for r in records:
            if r["role"] != "ours" or r["n"] != t.n or r["world"] != t.world:
                continue
            if t.samplers is not None and r["sampler"] not in t.samplers:
                continue
            v = t.value(records, r) if r["status"] == "ok" else None
            met = None if v is None or t.met is None else bool(t.met(v))
            out.append(
                {
                    "target": t.name,
                    "goal": t.goal,
                    "n": t.n,
                    "world": t.world,
                    "sampler": r["sampler"],
                    "value": v,
                    "unit": t.unit,
                    "met": met,
                    "status": r["status"],
                }
            )
    return out


def _fmt_target(t: dict) -> str:
    v = t["value"]
    if v is None:
        return t["status"] if t["status"] != "ok" else "—"
    shown = {
        "x": lambda: tables.ratio(v),
        "%": lambda: tables.ratio(v, as_percent=True),
        "MB": lambda: f"{v:.0f} MB",
        "M/s": lambda: f"{v / 1e6:.1f}M/s",
        "": lambda: tables.share(v),
    }[t["unit"]]()
    return shown + tables.verdict(v, t["met"])


def targets_markdown(targets: list[dict]) -> str:
    """The targets as a table: one row per target and (N, W), one column per sampler of ours."""
    ours = [k for k, s in SAMPLERS.items() if s.role == "ours"]
    head = ["target", "goal", "N", "W", *(SAMPLERS[k].label.removeprefix("ours: ") for k in ours)]
    rows = []
    keys = list(dict.fromkeys((t["target"], t["goal"], t["n"], t["world"]) for t in targets))
    for name, goal, n, w in keys:
        cells = []
        for k in ours:
            hit = [
                t
                for t in targets
                if (t["target"], t["n"], t["world"], t["sampler"]) == (name, n, w, k)
            ]
            cells.append(_fmt_target(hit[0]) if hit else "")
        rows.append([name, goal, f"{n:.0e}", str(w), *cells])
    return tables.markdown(head, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace | None:
    p = harness.parser(__doc__)
    p.add_argument("--sizes", type=harness.sizes_arg, help="e.g. 1e5,1e6")
    p.add_argument("--worlds", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--samplers", type=harness.names_arg(SAMPLERS), help=",".join(SAMPLERS))
    p.add_argument("--time-limit", type=float, default=60.0, help="max epoch seconds per case")
    p.add_argument("--budget", type=float, default=1500.0, help="stop starting cases after this")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pull-cap", type=int, default=1 << 24, help="max indices per pull epoch")
    p.add_argument("--quick", action="store_true", help="N=1e5, W in 1,8: a smoke run")
    args = harness.start(p, argv, run_case)
    if args is None:
        return None
    if args.quick:
        args.sizes = args.sizes or [10**5]
        args.worlds = args.worlds or [1, 8]
        args.time_limit = min(args.time_limit, 20.0)
    args.sizes = args.sizes or list(SIZES)
    args.worlds = args.worlds or list(WORLDS)
    args.samplers = args.samplers or list(SAMPLERS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args is None:  # it ran one --case
        return 0
    torch.set_num_threads(1)
    sweep = Sweep(
        args.sizes,
        args.worlds,
        args.samplers,
        args.time_limit,
        args.budget,
        args.batch_size,
        args.pull_cap,
        inline=args.inline,
    )
    records = run_sweep(sweep, harness.log)
    loads = [r[k] for r in records for k in ("load1", "load1_end") if k in r]
    if loads:
        print(f"load average (1 min) seen by the cases: {min(loads):.1f} to {max(loads):.1f}")
    targets = target_lines(records)
    print()
    print(markdown_table(records))
    if targets:
        print("\nTargets (the issue's; ratios are per index, as in the table):\n")
        print(targets_markdown(targets))
    cfg = {k: v for k, v in asdict(sweep).items() if k != "records"}
    return harness.finish(args.json, records, config=cfg, targets=targets)


if __name__ == "__main__":
    sys.exit(main())
