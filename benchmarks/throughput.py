"""Sampler throughput: distsampler side by side with today's PyTorch recipes, N = 1e5 .. 1e8.

Usage::

    python benchmarks/throughput.py                      # full sweep, about 20 min on 2 cores
    python benchmarks/throughput.py --quick              # N = 1e5, W in {1, 8}: seconds
    python benchmarks/throughput.py --sizes 1e7 --worlds 8 --json out.json

Every case (one sampler, one data set size N, one world size W) runs rank 0 of the W ranks in a
fresh subprocess (``num_replicas=W, rank=0``: the plan needs no communication, and every rank
does the same work), so memory is measured from a clean process and a case past its limit can be
killed. The data: ``N`` binary labels, about 3% minority (int8), and the balanced per-sample
weights (float64) that give each class half the draws.

Samplers (the three baselines are what people write today):

(1) ``WeightedRandomSampler`` under ``DistributedSamplerWrapper`` (Catalyst's and Lightning's
    recipe, ~15 lines below): every rank draws the full ``N``-sample weighted epoch with
    ``torch.multinomial`` and keeps its ``DistributedSampler`` slice of it.
(2) ``DistributedSampler(shuffle=True)``: uniform, no balancing; the ceiling PyTorch offers.
    Every rank builds a full ``randperm(N)`` as a Python list.
(3) a hand-written quota batch sampler: per batch ``k`` minority by ``torch.randint``, the rest
    from this rank's slice of a permutation of the majority, shuffled within the batch.
ours: ``DistributedWeightedSampler`` (weights i.i.d., labels stratified, labels i.i.d.,
    weights without replacement) and ``DistributedQuotaBatchSampler`` (minority drawn i.i.d.,
    majority cycled: the same contract as (3)).

Figures, per rank:

* ``init``: building the sampler from data already in memory (labels, weights, the label
  index): once per run, not per epoch.
* ``first``: ``set_epoch`` + ``iter`` + the first index (or batch): the per-epoch setup a
  training loop waits for at every epoch start.
* ``epoch``: ``set_epoch`` to the last index of this rank's share, consumed by a C loop
  (``collections.deque(it, maxlen=0)``); ratios divide the baseline's time *per index* by ours,
  so the quota samplers' slightly different epoch lengths compare fairly. ``first`` and
  ``epoch`` are the best of epochs 1-3 where those fit in 5 s (else one epoch), to damp noise
  from other work on the machine; each case records the load average it ran under.
* ``DataLoader pull``: indices per second as ``DataLoader(num_workers=0)`` takes a whole epoch
  (epoch 10, ``set_epoch`` and the per-epoch setup included) from the sampler: ``batch_size``
  (default 256) through its ``BatchSampler``, or the quota sampler as ``batch_sampler``, from a
  data set whose ``__getitems__`` returns the indices, collate identity. This is the
  main-process path that feeds the workers. Shares above ``--pull-cap`` indices (N = 1e8 at
  W = 1) are timed over their first ``--pull-cap``. The loader alone caps the rate: the header
  prints it with ``range(N)`` as the sampler.
* ``peak extra``: the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` once the
  inputs exist) minus the RSS before ``init``, over init + the first epoch: numpy, Python *and*
  torch allocations, beyond the inputs (labels, weights, label index). ``--tracemalloc`` adds
  the traced peak (numpy and Python only; slow, so off by default).

A case whose epoch would exceed ``--time-limit`` (extrapolated linearly from the previous size
at the same W) is not run: the table says ``skipped (limit)``; a case that runs over its
subprocess timeout says ``timeout``. Baselines that cannot run say why (``torch.multinomial``
takes at most 2**24 categories).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import operator
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    WeightedRandomSampler,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from distsampler import (  # noqa: E402  (after the path fix-up, for a source checkout)
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
)

SIZES = (10**5, 10**6, 10**7, 10**8)
WORLDS = (1, 8, 64)
MINORITY = 0.03
QUOTA_SHARE = 8  # the quota samplers put batch_size // 8 minority samples in every batch
REPEAT_BUDGET = 5.0  # seconds: cheap cases time up to 3 epochs and keep the best


# -- baselines -------------------------------------------------------------------------------
class DatasetFromSampler(Dataset):
    """A sampler's indices as a data set (Catalyst's ``DatasetFromSampler``)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.items: list[int] | None = None

    def __getitem__(self, i: int) -> int:
        if self.items is None:
            self.items = list(self.sampler)  # the full N-sample epoch, on every rank
        return self.items[i]

    def __len__(self) -> int:
        return len(self.sampler)


class DistributedSamplerWrapper(DistributedSampler):
    """Baseline (1): any sampler under DDP, the Catalyst / Lightning way.

    Every rank runs the wrapped sampler over the whole epoch, then keeps its ``DistributedSampler``
    slice of the positions. The wrapped sampler's generator is reseeded from ``(seed, epoch)``
    so all ranks draw the same epoch (with the global RNG, as Catalyst leaves it, they would not).
    """

    def __init__(self, sampler: WeightedRandomSampler, num_replicas: int, rank: int) -> None:
        super().__init__(DatasetFromSampler(sampler), num_replicas=num_replicas, rank=rank)
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.sampler.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self) -> Iterator[int]:
        self.dataset = DatasetFromSampler(self.sampler)
        positions = list(super().__iter__())
        return iter(operator.itemgetter(*positions)(self.dataset))


class NaiveQuotaBatchSampler(Sampler[list[int]]):
    """Baseline (3): the quota batch sampler users write by hand.

    Per batch: ``k`` minority samples by ``torch.randint`` (with replacement), the other
    ``batch_size - k`` from this rank's stride of a per-epoch permutation of the majority, then
    the batch is shuffled.
    """

    def __init__(
        self,
        minority: torch.Tensor,
        majority: torch.Tensor,
        batch_size: int,
        k: int,
        num_replicas: int,
        rank: int,
        seed: int = 0,
    ) -> None:
        self.minority, self.majority = minority, majority
        self.batch_size, self.k = batch_size, k
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_batches = len(majority) // ((batch_size - k) * num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = self.majority[torch.randperm(len(self.majority), generator=g)]
        mine = perm[self.rank :: self.num_replicas]
        g_rank = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 4096 + 1)
        fill = self.batch_size - self.k
        for i in range(self.num_batches):
            pick = torch.randint(len(self.minority), (self.k,), generator=g_rank)
            batch = torch.cat([self.minority[pick], mine[i * fill : (i + 1) * fill]])
            yield batch[torch.randperm(self.batch_size, generator=g_rank)].tolist()


class _Sized:
    """A data set of ``n`` items, for ``DistributedSampler`` (which only asks for its length)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class IndexDataset(Dataset):
    """``dataset[i] == i``; ``__getitems__`` hands a whole batch back in one call."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def __getitems__(self, indices: list[int]) -> list[int]:
        return indices


def as_is(batch: Any) -> Any:
    """Identity collate: the loader hands the batch of indices over untouched."""
    return batch


# -- data ------------------------------------------------------------------------------------
def make_labels(n: int, minority: float = MINORITY, seed: int = 12345) -> np.ndarray:
    """``n`` int8 labels, 1 with probability ``minority`` (fixed seed)."""
    rng = np.random.default_rng(seed)
    return (rng.random(n, dtype=np.float32) < minority).astype(np.int8)


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample float64 weights giving each class half of the draws."""
    n1 = int(np.count_nonzero(labels))
    return np.where(labels == 1, 0.5 / n1, 0.5 / (len(labels) - n1))


# -- the samplers under test -----------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """How to prepare the inputs of one sampler and build it for a rank."""

    label: str
    role: str  # "baseline" or "ours"
    kind: str  # "index" or "batch"
    needs: str  # inputs built before the measurement: "none", "weights", "index", "groups"
    build: Callable[[dict, int, int, int], Sampler]
    hard_limit: int | None = None  # past this N it fails at once: run it to show the error


def _wrs(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    w = torch.from_numpy(inp["weights"])
    wrs = WeightedRandomSampler(w, len(w), replacement=True, generator=torch.Generator())
    return DistributedSamplerWrapper(wrs, num_replicas=world, rank=rank)


def _ds(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    return DistributedSampler(_Sized(inp["n"]), num_replicas=world, rank=rank, shuffle=True)


def _naive_quota(inp: dict, world: int, rank: int, bs: int) -> Sampler:
    minority, majority = inp["groups"]
    return NaiveQuotaBatchSampler(minority, majority, bs, bs // QUOTA_SHARE, world, rank)


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
    labels = make_labels(n, minority)
    if needs == "weights":
        inp["weights"] = balanced_weights(labels)
    elif needs == "index":
        inp["index"] = GroupIndex.from_labels(labels)
    elif needs == "groups":
        y = torch.from_numpy(labels)
        inp["groups"] = (torch.nonzero(y == 1).flatten(), torch.nonzero(y == 0).flatten())
    return inp


# -- measurement (runs in the case's own subprocess) ---------------------------------------
def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def reset_peak_rss() -> tuple[int, bool]:
    """Reset ``VmHWM`` to the current RSS if the kernel allows; returns (RSS in kB, reset?)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    return _status_kb("VmRSS"), reset


def drain(it: Iterator, kind: str) -> int:
    """Consume an iterator in C (index samplers) and return the indices it held (batches)."""
    if kind == "index":
        collections.deque(it, maxlen=0)
        return 0
    return sum(len(b) for b in it)


def pull_rate(sampler: Sampler, spec: Spec, n: int, batch_size: int, cap: int) -> dict:
    """Indices/s as a ``DataLoader`` takes an epoch (``set_epoch`` included), up to ``cap``."""
    ds = IndexDataset(n)
    if spec.kind == "index":
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=as_is)
    else:
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=as_is)
    got, t0 = 0, time.perf_counter()
    sampler.set_epoch(10)
    for batch in loader:
        got += len(batch)
        if got >= cap:
            break
    dt = time.perf_counter() - t0
    return {"pull_items": got, "pull_rate": got / dt if got and dt > 0 else None}


def traced_peak(spec: Spec, inp: dict, world: int, rank: int, bs: int) -> float:
    """tracemalloc's peak (MB) over init + one epoch (numpy and Python allocations only)."""
    tracemalloc.start()
    try:
        s = spec.build(inp, world, rank, bs)
        s.set_epoch(3)
        drain(iter(s), spec.kind)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def timed_epoch(sampler: Sampler, kind: str, epoch: int) -> tuple[float, float, int]:
    """``(first_s, epoch_s, items)`` of one epoch, from ``set_epoch`` on."""
    t1 = time.perf_counter()
    sampler.set_epoch(epoch)
    it = iter(sampler)
    first = next(it)
    t2 = time.perf_counter()
    batch_items = drain(it, kind)
    t3 = time.perf_counter()
    items = len(sampler) if kind == "index" else len(first) + batch_items
    return t2 - t1, t3 - t1, items


def run_case(case: dict) -> dict:
    """Measure one case in this process; returns the record (see the module docstring).

    Epochs 1, 2, 3 are timed while their total stays under ``REPEAT_BUDGET`` seconds (at least
    one); the best first-index and epoch times are kept, which damps noise from other load.
    """
    torch.set_num_threads(1)  # the ranks of a node share its cores
    spec = SAMPLERS[case["sampler"]]
    n, world, rank, bs = case["n"], case["world"], case["rank"], case["batch_size"]
    rec: dict[str, Any] = {"load1": os.getloadavg()[0]}
    t = time.perf_counter()
    inp = prepare_inputs(spec.needs, n, case["minority"])
    rec["setup_s"] = time.perf_counter() - t
    base_kb, rec["hwm_reset"] = reset_peak_rss()
    rec["rss_inputs_mb"] = base_kb / 1024
    t0 = time.perf_counter()
    sampler = spec.build(inp, world, rank, bs)
    rec["init_s"] = time.perf_counter() - t0
    try:
        runs = [timed_epoch(sampler, spec.kind, 1)]
    except RuntimeError as e:  # e.g. torch.multinomial past 2**24 categories
        return {**rec, "status": "cannot run", "reason": str(e).splitlines()[0]}
    peak_kb = _status_kb("VmHWM") if rec["hwm_reset"] else _maxrss_kb()
    while len(runs) < 3 and sum(r[1] for r in runs) < REPEAT_BUDGET:
        runs.append(timed_epoch(sampler, spec.kind, len(runs) + 1))
    rec |= {
        "status": "ok",
        "first_s": min(r[0] for r in runs),
        "epoch_s": min(r[1] for r in runs),
        "epochs_timed": len(runs),
        "items": runs[0][2],
        "peak_extra_mb": max(0, peak_kb - base_kb) / 1024,
    }
    rec |= pull_rate(sampler, spec, n, bs, case["pull_cap"])
    rec["load1_end"] = os.getloadavg()[0]
    if case.get("tracemalloc"):
        del sampler
        gc.collect()
        rec["traced_peak_mb"] = traced_peak(spec, inp, world, rank, bs)
    return rec


def _maxrss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- the sweep (parent) ----------------------------------------------------------------------
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
    minority: float = MINORITY
    rank: int = 0
    tracemalloc: bool = False
    records: list[dict] = field(default_factory=list)


def subprocess_timeout(n: int, limit: float) -> float:
    """Wall-clock allowed to one case: data setup grows with N, then init + epoch + pull."""
    return 20 + 60 * n / 1e8 + 3 * limit


def run_subprocess(case: dict, timeout: float) -> dict:
    """Run one case in a fresh interpreter; a dict with ``status`` whatever happens."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over the {timeout:.0f} s case timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


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
                    "tracemalloc": sw.tracemalloc,
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
                    rec |= run_subprocess(case, subprocess_timeout(n, sw.time_limit))
                sw.records.append(rec)
                log(progress_line(rec))
    return sw.records


def progress_line(r: dict) -> str:
    head = f"N={r['n']:.0e} W={r['world']:<3} {r['sampler']:<13}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('reason', '')}"
    rate = f"{_fmt_rate(r.get('pull_rate'))}M/s"
    return (
        f"{head} init {r['init_s']:.3f}s first {r['first_s'] * 1e3:.1f}ms "
        f"epoch {r['epoch_s']:.3f}s pull {rate} peak +{r['peak_extra_mb']:.0f}MB"
    )


# -- reporting -------------------------------------------------------------------------------
def loader_ceiling(n: int, batch_size: int, cap: int = 1 << 22) -> float:
    """Indices/s of the same DataLoader with ``range(n)`` as the sampler: the loader's cap."""
    loader = DataLoader(IndexDataset(n), batch_size=batch_size, sampler=range(n), collate_fn=as_is)
    got, t0 = 0, time.perf_counter()
    for batch in loader:
        got += len(batch)
        if got >= cap:
            break
    return got / (time.perf_counter() - t0)


def machine() -> dict:
    """Where the numbers came from."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln)
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "distsampler_commit": commit or "unknown",
    }


def per_index(r: dict | None) -> float | None:
    if r is None or r.get("status") != "ok" or not r.get("items"):
        return None
    return r["epoch_s"] / r["items"]


def _find(records: list[dict], sampler: str, n: int, world: int) -> dict | None:
    return next(
        (r for r in records if r["sampler"] == sampler and r["n"] == n and r["world"] == world),
        None,
    )


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _fmt_ratio(x: float | None, as_percent: bool = False) -> str:
    if x is None:
        return "—"
    if as_percent:
        return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.0f}%"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def _fmt_rate(rate: float | None) -> str:
    """Millions of indices per second: one decimal, two significant digits below 1."""
    if not rate:
        return "—"
    m = rate / 1e6
    return f"{m:.1f}" if m >= 1 else f"{m:.2g}"


def speedups(records: list[dict], r: dict) -> dict[str, float | None]:
    """Per-index epoch speedups vs baselines (1)-(3), and first index as a share of (2)'s."""
    n, w = r["n"], r["world"]
    ours = per_index(r)
    out = {
        f"vs_{b}": ratio(per_index(_find(records, b, n, w)), ours)
        for b in ("wrs_wrapper", "dist_sampler", "naive_quota")
    }
    ds = _find(records, "dist_sampler", n, w)
    ds_first = ds["first_s"] if ds and ds.get("status") == "ok" else None
    out["first_vs_dist_sampler"] = ratio(r.get("first_s"), ds_first)
    return out


def markdown_table(records: list[dict]) -> str:
    """The results as one markdown table, rows grouped by N then W."""
    head = (
        "| N | W | sampler | init (s) | first index (ms) | epoch/rank (s) | DataLoader pull "
        "(M idx/s) | peak extra (MB) | epoch vs (1) | epoch vs (2) | epoch vs (3) | "
        "first vs (2) |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in records:
        lead = f"| {r['n']:.0e} | {r['world']} | {r['label']} |"
        if r["status"] != "ok":
            why = r["status"] if r["status"].startswith("skipped") else f"{r['status']}: "
            why += "" if r["status"].startswith("skipped") else r.get("reason", "")
            rows.append(f"{lead} {why} |" + " |" * 8)
            continue
        sp = speedups(records, r) if r["role"] == "ours" else {}
        vs3 = sp.get("vs_naive_quota") if r["sampler"] == "quota" else None
        rate = r.get("pull_rate")
        rows.append(
            f"{lead} {r['init_s']:.3f} | {r['first_s'] * 1e3:.1f} | {r['epoch_s']:.3f} | "
            f"{_fmt_rate(rate)} | {r['peak_extra_mb']:.0f} | "
            f"{_fmt_ratio(sp.get('vs_wrs_wrapper'))} | {_fmt_ratio(sp.get('vs_dist_sampler'))} | "
            f"{_fmt_ratio(vs3)} | {_fmt_ratio(sp.get('first_vs_dist_sampler'), True)} |"
        )
    return "\n".join(rows)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: a figure of ours at (N, W) and the bar it must clear."""

    name: str
    goal: str
    n: int
    world: int
    value: Callable[[list[dict], dict], float | None]
    met: Callable[[float], bool] | None  # None: reported only
    unit: str  # "x", "%", "MB" or "M/s"


def _targets(worlds: list[int]) -> list[Target]:
    def sp(key: str) -> Callable[[list[dict], dict], float | None]:
        return lambda records, r: speedups(records, r)[key]

    out = [
        Target("epoch vs (1)", ">= 20x", 10**7, 8, sp("vs_wrs_wrapper"), lambda v: v >= 20, "x"),
        Target("epoch vs (2)", ">= 1x", 10**7, 8, sp("vs_dist_sampler"), lambda v: v >= 1, "x"),
        Target("epoch vs (3)", "report", 10**7, 8, sp("vs_naive_quota"), None, "x"),
        Target(
            "DataLoader pull",
            ">= 10M idx/s",
            10**7,
            8,
            lambda _, r: r.get("pull_rate"),
            lambda v: v >= 1e7,
            "M/s",
        ),
    ]
    for w in worlds:
        out.append(
            Target(
                "first index / (2)'s",
                "< 1%",
                10**8,
                w,
                sp("first_vs_dist_sampler"),
                lambda v: v < 0.01,
                "%",
            )
        )
    for w in worlds:
        out.append(
            Target(
                "peak extra",
                "< 64 MB",
                10**8,
                w,
                lambda _, r: r["peak_extra_mb"],
                lambda v: v < 64,
                "MB",
            )
        )
    return out


def target_lines(records: list[dict]) -> list[dict]:
    """The issue's targets for each of our samplers, with the measured figure (met or missed)."""
    worlds = sorted({r["world"] for r in records})
    out = []
    for t in _targets(worlds):
        for r in records:
            if r["role"] != "ours" or r["n"] != t.n or r["world"] != t.world:
                continue
            if t.name == "epoch vs (3)" and r["sampler"] != "quota":
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
    unit = t["unit"]
    shown = {
        "x": f"{v:.3g}x",
        "%": f"{100 * v:.2g}%" if v < 0.1 else f"{100 * v:.0f}%",
        "MB": f"{v:.0f} MB",
        "M/s": f"{v / 1e6:.1f}M/s",
    }[unit]
    return shown + {True: " met", False: " **missed**", None: ""}[t["met"]]


def targets_markdown(targets: list[dict]) -> str:
    """The targets as a table: one row per target and (N, W), one column per sampler of ours."""
    ours = [k for k, s in SAMPLERS.items() if s.role == "ours"]
    head = "| target | goal | N | W | " + " | ".join(SAMPLERS[k].label[6:] for k in ours) + " |"
    rows = [head, "|" + "---|" * (4 + len(ours))]
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
        rows.append(f"| {name} | {goal} | {n:.0e} | {w} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_size(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"a size should be a positive integer, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",")])
    p.add_argument("--worlds", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--samplers", type=lambda s: s.split(","), help=",".join(SAMPLERS))
    p.add_argument("--time-limit", type=float, default=60.0, help="max epoch seconds per case")
    p.add_argument("--budget", type=float, default=1500.0, help="stop starting cases after this")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pull-cap", type=int, default=1 << 24, help="max indices per pull epoch")
    p.add_argument("--tracemalloc", action="store_true", help="also the traced peak (slow)")
    p.add_argument("--quick", action="store_true", help="N=1e5, W in 1,8: a smoke run")
    p.add_argument("--json", type=Path, help="write machine, cases and targets here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [10**5]
        args.worlds = args.worlds or [1, 8]
        args.time_limit = min(args.time_limit, 20.0)
    args.sizes = args.sizes or list(SIZES)
    args.worlds = args.worlds or list(WORLDS)
    args.samplers = args.samplers or list(SAMPLERS)
    unknown = [s for s in args.samplers if s not in SAMPLERS]
    if unknown:
        p.error(f"unknown samplers {unknown}; choose from {list(SAMPLERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    info = machine()
    torch.set_num_threads(1)
    ceiling = loader_ceiling(10**7, args.batch_size)
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM; python "
        f"{info['python']}, torch {info['torch']}, numpy {info['numpy']}; distsampler "
        f"{info['distsampler_commit']}",
        flush=True,
    )
    print(
        f"DataLoader ceiling (range as sampler, batch {args.batch_size}): "
        f"{ceiling / 1e6:.1f}M idx/s",
        flush=True,
    )
    sweep = Sweep(
        args.sizes,
        args.worlds,
        args.samplers,
        args.time_limit,
        args.budget,
        args.batch_size,
        args.pull_cap,
        tracemalloc=args.tracemalloc,
    )
    records = run_sweep(sweep, lambda line: print(line, file=sys.stderr, flush=True))
    loads = [r[k] for r in records for k in ("load1", "load1_end") if k in r]
    if loads:
        print(
            f"load average (1 min) seen by the cases: {min(loads):.1f} to {max(loads):.1f} "
            f"on {info['nproc']} CPUs"
        )
    targets = target_lines(records)
    print()
    print(markdown_table(records))
    if targets:
        print("\nTargets (the issue's; ratios are per index, as in the table):\n")
        print(targets_markdown(targets))
    if args.json:
        cfg = {k: v for k, v in asdict(sweep).items() if k != "records"}
        payload = {
            "machine": info,
            "config": cfg,
            "loader_ceiling": ceiling,
            "cases": records,
            "targets": targets,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    failed = [r for r in records if r["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
