"""How every benchmark here measures: timing, the DataLoader pull and its ceiling, memory, and
one case per fresh subprocess.

* Timing: :func:`timed_epoch` (``set_epoch`` to the first and to the last index) drains in C
  (``collections.deque(it, maxlen=0)``), so the figure is the sampler's, not a Python loop's.
* Pull: :func:`pull_rate` is the main-process path that feeds a ``DataLoader``'s workers
  (``num_workers=0``, a data set whose ``__getitems__`` returns the indices, identity collate).
  Its ceiling is the same loader fed a *ready list of Python ints* of the same length
  (``ints.tolist()``, built before the clock starts): nothing can be pulled faster, so
  ``efficiency = pull rate / ceiling rate`` (both measured in the same process, interleaved)
  says how close a sampler gets.
* Memory: :class:`AnonPeak` polls the anonymous (non-file-backed) resident memory of the
  process (``RssAnon`` in ``/proc/self/status``; :func:`anon_mb` reads ``Anonymous:`` in
  ``/proc/self/smaps_rollup``). Pages of memory-mapped files are file-backed, shared by the
  ranks of a node, and not counted. :func:`reset_peak_rss` resets ``VmHWM`` for the whole RSS.
* Isolation: :func:`run_case` runs ``python -m benchmarks.<script> --case JSON`` in a fresh
  interpreter, so a case sees neither another case's memory nor its warm caches, and one that
  runs past its limit is killed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

ROOT = Path(__file__).resolve().parent.parent


# -- timing ----------------------------------------------------------------------------------
def drain(it: Iterator, kind: str) -> int:
    """Consume an iterator in C (index samplers); returns the indices held by batches."""
    if kind == "index":
        collections.deque(it, maxlen=0)
        return 0
    return sum(len(b) for b in it)


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


def best_epochs(sampler: Sampler, kind: str, runs: list | None = None, budget: float = 5.0) -> dict:
    """Epochs 1-3 while their total stays under ``budget`` s (at least one); the best times.

    ``runs``: :func:`timed_epoch` results already taken (epoch 1 first). Keeping the best damps
    noise from other work on the machine.
    """
    runs = list(runs or [timed_epoch(sampler, kind, 1)])
    while len(runs) < 3 and sum(r[1] for r in runs) < budget:
        runs.append(timed_epoch(sampler, kind, len(runs) + 1))
    return {
        "first_s": min(r[0] for r in runs),
        "epoch_s": min(r[1] for r in runs),
        "epochs_timed": len(runs),
        "items": runs[0][2],
    }


# -- the DataLoader pull and its ceiling ----------------------------------------------------
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


def loader(sampler: Any, kind: str, n: int, batch_size: int) -> DataLoader:
    """``DataLoader(num_workers=0)`` over :class:`IndexDataset` (``kind="batch"``: batches)."""
    ds = IndexDataset(n)
    if kind == "index":
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=as_is)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=as_is)


def _pull(dl: DataLoader, cap: int) -> tuple[int, float]:
    got, t0 = 0, time.perf_counter()
    for batch in dl:
        got += len(batch)
        if got >= cap:
            break
    return got, time.perf_counter() - t0


def _pull_epoch(sampler: Sampler, kind: str, n: int, batch_size: int, cap: int, epoch: int):
    """``(indices, seconds)`` as a ``DataLoader`` takes an epoch, ``set_epoch`` included."""
    t0 = time.perf_counter()
    sampler.set_epoch(epoch)
    setup = time.perf_counter() - t0
    got, dt = _pull(loader(sampler, kind, n, batch_size), cap)
    return got, dt + setup


def ready_ints(count: int, n: int, batch_size: int, kind: str) -> list:
    """A ready list of ``count`` Python ints below ``n`` (lists of ``batch_size`` for batches)."""
    ints = np.random.default_rng(0).integers(0, n, size=max(count, batch_size))
    if kind == "index":
        return ints.tolist()
    return ints[: len(ints) - len(ints) % batch_size].reshape(-1, batch_size).tolist()


def pull_rate(
    sampler: Sampler,
    kind: str,
    n: int,
    batch_size: int,
    cap: int,
    epoch: int = 10,
    budget: float = 5.0,
) -> dict:
    """The DataLoader pull (indices/s, up to ``cap`` an epoch), its ceiling and efficiency.

    Rounds of (one epoch pulled from the sampler, the same count pulled from a ready list of
    Python ints) run while they fit in ``budget`` s, at most 3 (at least 1); the best rate of
    each is kept. Interleaving the two and keeping the best makes the ratio robust to other
    work on the machine: a single short ceiling run can lose half its speed to a neighbour.
    """
    got, dt = _pull_epoch(sampler, kind, n, batch_size, cap, epoch)
    if not got:
        return {"pull_items": 0, "pull_rate": None}
    ready = ready_ints(got, n, batch_size, kind)
    rates, ceilings, start = [got / dt], [], time.perf_counter() - dt
    while True:
        c_got, c_dt = _pull(loader(ready, kind, n, batch_size), 1 << 62)
        ceilings.append(c_got / c_dt)
        if len(rates) == 3 or time.perf_counter() - start > budget:
            break
        got, dt = _pull_epoch(sampler, kind, n, batch_size, cap, epoch + len(rates))
        rates.append(got / dt)
    best, ceiling = max(rates), max(ceilings)
    return {
        "pull_items": got,
        "pull_rate": best,
        "pull_rounds": len(rates),
        "ceiling_rate": ceiling,
        "efficiency": best / ceiling,
    }


# -- memory ----------------------------------------------------------------------------------
def proc_kb(key: str, path: str = "/proc/self/status") -> int:
    """A ``key:  <n> kB`` line of a ``/proc`` file, in kB."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in {path}")


def anon_mb() -> float:
    """Anonymous (non-file-backed) memory of this process, MB (``smaps_rollup``)."""
    try:
        return proc_kb("Anonymous", "/proc/self/smaps_rollup") / 1024
    except (OSError, RuntimeError):
        return proc_kb("RssAnon") / 1024


class AnonPeak:
    """The peak anonymous resident memory (MB) over a ``with`` block, polled by a thread.

    Polls ``RssAnon`` every ``interval`` s (and once at each end). Trap: a spike shorter
    than the interval can be missed; numpy and Python release memory in large steps, so a
    few ms catches the peaks that matter.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = self.end_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, proc_kb("RssAnon") / 1024)

    def __enter__(self) -> AnonPeak:
        gc.collect()
        self.start_mb = self.peak_mb = proc_kb("RssAnon") / 1024
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end_mb = proc_kb("RssAnon") / 1024
        self.peak_mb = max(self.peak_mb, self.end_mb)

    @property
    def extra_mb(self) -> float:
        """Peak minus the memory at the start of the block."""
        return max(0.0, self.peak_mb - self.start_mb)


def reset_peak_rss() -> tuple[int, bool]:
    """Reset ``VmHWM`` to the current RSS if the kernel allows; returns (RSS in kB, reset?)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    return proc_kb("VmRSS"), reset


def peak_rss_kb(reset: bool) -> int:
    """``VmHWM`` since :func:`reset_peak_rss` (or the process's max RSS if it could not reset)."""
    if reset:
        return proc_kb("VmHWM")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- one case per fresh interpreter ----------------------------------------------------------
def run_case(script: str, case: dict, timeout: float) -> dict:
    """Run ``benchmarks.<script> --case JSON`` in a fresh interpreter; a dict with ``status``.

    The script prints the case's record as its last JSON line; a crash, a timeout or no output
    comes back as ``status`` ``error`` / ``timeout`` with the reason.
    """
    cmd = [sys.executable, "-m", f"benchmarks.{script}", "--case", json.dumps(case)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over the {timeout:.0f} s case timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def start(
    p: argparse.ArgumentParser, argv: list[str] | None, run: Callable[[dict], dict]
) -> argparse.Namespace | None:
    """Parse ``argv``; with ``--case``, run that one case here, print its record, return None.

    Without it, print the machine line that heads every report and return the arguments.
    """
    args = p.parse_args(argv)
    if not args.case:
        print(machine_line(machine()), flush=True)
        return args
    torch.set_num_threads(1)  # the ranks of a node share its cores
    print(json.dumps(run(json.loads(args.case))), flush=True)
    return None


def parser(
    doc: str | None, *, size: int | None = None, world: int | None = None
) -> argparse.ArgumentParser:
    """A script's parser: its docstring's first paragraph, and :func:`add_common_args`."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    add_common_args(p, size=size, world=world)
    return p


def add_common_args(
    p: argparse.ArgumentParser, *, size: int | None = None, world: int | None = None
) -> None:
    """``--json``, ``--inline``, the hidden ``--case``; and ``--size``, ``--world``, ``--dir``."""
    if size is not None:
        p.add_argument("--size", type=parse_size, default=size, help="samples N (e.g. 1e8)")
    if world is not None:
        p.add_argument("--world", type=int, default=world, help="ranks W (rank 0 is measured)")
        p.add_argument("--dir", type=Path, help="where to save indexes (default: a temp dir)")
    p.add_argument("--json", type=Path, help="write the machine and the records here")
    p.add_argument(
        "--inline",
        action="store_true",
        help="run the cases in this process (fast; memory figures then include earlier cases)",
    )
    p.add_argument("--case", help=argparse.SUPPRESS)


def names_arg(allowed: Iterable[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``allowed``."""
    allowed = list(allowed)

    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = [x for x in names if x not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {allowed}")
        return names

    return parse


@contextlib.contextmanager
def scratch(directory: Path | None) -> Iterator[Path]:
    """``directory``, or a temporary one removed afterwards (indexes saved for the cases)."""
    if directory is not None:
        yield directory
        return
    tmp = Path(tempfile.mkdtemp(prefix="distsampler-bench-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def log(line: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(line, file=sys.stderr, flush=True)


def finish(path: Path | None, records: list[dict], **payload: Any) -> int:
    """Write the JSON report if asked; exit status 1 if a case failed with an error."""
    if path is not None:
        path.write_text(json.dumps({"machine": machine(), "records": records, **payload}, indent=1))
    return 1 if any(r["status"] == "error" for r in records) else 0


def dispatch(script: str, case: dict, inline: bool, run: Callable[[dict], dict], timeout: float):
    """One case: in a fresh interpreter, or here with ``inline`` (for smoke tests)."""
    if inline:
        return run(case)
    return run_case(script, case, timeout)


def parse_size(text: str) -> int:
    """``"1e7"`` -> ``10_000_000``; a positive integer or an argparse error."""
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"a size should be a positive integer, got {text!r}")
    return int(value)


def sizes_arg(text: str) -> list[int]:
    """A comma-separated list of sizes (``1e5,1e6``)."""
    return [parse_size(x) for x in text.split(",")]


def missing(*names: str) -> str | None:
    """``"needs X, Y"`` for the API names this installation of distsampler lacks, else None.

    Names are ``"WeightIndex"`` (package level) or ``"GroupIndex.from_sizes"`` (attribute).
    """
    import distsampler

    lacking = []
    for name in names:
        obj: Any = distsampler
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            lacking.append(name)
    return f"needs {', '.join(lacking)}" if lacking else None


# -- where the numbers came from -------------------------------------------------------------
def machine() -> dict:
    """CPU count and model, RAM, versions and the commit measured."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln)
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gb": round(proc_kb("MemTotal", "/proc/meminfo") / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "distsampler_commit": commit or "unknown",
        "load1": os.getloadavg()[0],
    }


def machine_line(info: dict) -> str:
    """One line naming the machine, for the head of every report."""
    return (
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM; python "
        f"{info['python']}, torch {info['torch']}, numpy {info['numpy']}; distsampler "
        f"{info['distsampler_commit']}; load average (1 min) {info['load1']:.1f}"
    )
