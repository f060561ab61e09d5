"""Multi-process data pipeline benchmark: distsampler against DistributedSampler under torchrun.

Usage::

    torchrun --nproc_per_node=8 -m benchmarks.nccl_bench             # NCCL, one GPU per rank
    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m benchmarks.nccl_bench --tiny                               # gloo on CPU (CI)

Backend ``nccl`` when CUDA is available, else ``gloo``. Every rank builds the same synthetic data
set (``--size`` float32 feature rows, ~3% minority labels), then, for each sampler in turn
(``DistributedSampler(shuffle=True)``, ``DistributedWeightedSampler`` on the labels,
``DistributedQuotaBatchSampler`` with ``batch_size // 8`` minority per batch), runs
``--epochs`` epochs of a training-shaped loop:

1. take a batch from a ``DataLoader`` (``num_workers``, ``pin_memory`` under CUDA; the data
   set gathers a whole batch in one ``__getitems__`` call, so the loader is as light as it
   gets and the sampler's share below is an upper bound);
2. move it to the device, one forward/backward/step of a linear model;
3. ``all_gather`` the batch's per-group counts and its indices (the collective).

Rank 0 checks on the fly, outside the timed step: *balanced*: every quota batch on every rank
holds exactly its quota, and the weighted sampler's epoch shows the balanced 50% minority share
(within ``W + 1`` samples over the epoch); *disjoint*: the ``W`` batches of each global step are
``W`` distinct blocks of the 1-process plan, index for index (so ranks never overlap), and
``DistributedSampler``'s ranks share no index beyond its padding.

Reported per rank: samples/s over the timed steps, the data wait share, the sampler's share of
the step time (the same batches of indices drawn from the sampler alone, before the loader
pass, divided by the loader pass's step time) and the collective's cost per step. Exit status 1
if any check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

if not __package__:  # run as a file (torchrun's default): make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, tables
from benchmarks.baselines import make_labels
from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
)

SAMPLERS = ("dist_sampler", "weighted", "quota")
LABELS = {
    "dist_sampler": "DistributedSampler(shuffle)",
    "weighted": "DistributedWeightedSampler(labels)",
    "quota": "DistributedQuotaBatchSampler",
}


class SyntheticSet(Dataset):
    """Feature rows, labels and the index of each row; a batch is one fancy-indexing call."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.x[idx], self.y[idx], idx


@dataclass
class Stats:
    """One rank's figures for one sampler."""

    sampler: str
    rank: int
    steps: int = 0
    samples: int = 0
    step_s: float = 0.0
    wait_s: float = 0.0
    collective_s: float = 0.0
    sampler_s: float = 0.0
    verify_s: float = 0.0
    minority: int = 0
    checked_steps: int = 0
    unbalanced: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)


def world_setup() -> tuple[int, int, torch.device, str]:
    """Join the process group torchrun describes; NCCL and one GPU per rank when available."""
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend)
    return dist.get_world_size(), dist.get_rank(), device, backend


def make_data(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, GroupIndex]:
    """The same synthetic data on every rank: features, int64 labels and their label index."""
    labels = make_labels(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return x, torch.from_numpy(labels.astype(np.int64)), GroupIndex.from_labels(labels)


def build(name: str, index: GroupIndex, n: int, bs: int, world: int, rank: int, seed: int):
    """The sampler ``name`` for ``rank`` of ``world`` (``world=1``: the 1-process reference)."""
    if name == "dist_sampler":
        return DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    if name == "weighted":
        return DistributedWeightedSampler(
            labels=index, num_replicas=world, rank=rank, seed=seed, block_size=bs
        )
    return DistributedQuotaBatchSampler(
        index, bs, {1: bs // 8}, num_replicas=world, rank=rank, seed=seed
    )


def make_loader(sampler: Sampler, ds: Dataset, bs: int, workers: int, pin: bool) -> DataLoader:
    kw = {"num_workers": workers, "pin_memory": pin, "collate_fn": harness.as_is}
    if isinstance(sampler, DistributedQuotaBatchSampler):
        return DataLoader(ds, batch_sampler=sampler, **kw)
    return DataLoader(ds, batch_size=bs, sampler=sampler, **kw)


def sampler_only(sampler: Sampler, epoch: int, bs: int, steps: int) -> float:
    """Seconds to draw ``steps`` batches of indices from the sampler alone (no data)."""
    t0 = time.perf_counter()
    sampler.set_epoch(epoch)
    it = iter(sampler)
    is_batch = isinstance(sampler, DistributedQuotaBatchSampler)
    for _ in range(steps):
        batch = next(it) if is_batch else [*itertools.islice(it, bs)]
        if not batch:
            break
    return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gather(t: torch.Tensor, world: int) -> torch.Tensor:
    """``all_gather`` of equal-shaped tensors into one ``(world, *shape)`` tensor."""
    flat = t.contiguous().view(-1)
    out = torch.empty(world * flat.numel(), dtype=t.dtype, device=t.device)
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, flat)  # the concatenated form: every backend takes it
    return out.view(world, *t.shape)


class Checker:
    """Rank 0's checks of one sampler's epoch: balance and rank-disjointness.

    The gathered counts and indices of every step are kept as they arrive and checked when the
    epoch ends, so the check's own time never stalls the other ranks inside a timed collective.
    """

    def __init__(self, name: str, ref, world: int, bs: int, n: int, quota: int) -> None:
        self.name, self.ref, self.world, self.bs, self.n, self.quota = (
            name,
            ref,
            world,
            bs,
            n,
            quota,
        )
        self.counts: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []

    def step(self, counts: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep global step's ``counts`` (W, C) and ``idx`` (W, b)."""
        self.counts.append(counts.cpu().numpy())
        self.indices.append(idx.cpu().numpy())

    def expected(self, s: int, b: int) -> np.ndarray | None:
        """The 1-process plan's indices for global step ``s`` as (W, b); None past full blocks."""
        w, bs = self.world, self.bs
        if self.name == "quota":
            return self.ref.batches(np.arange(s * w, (s + 1) * w))
        if b != bs:  # the shrunken last round: its layout is checked by the unit tests
            return None
        return self.ref.indices(np.arange(s * w * bs, (s + 1) * w * bs)).reshape(w, bs)

    def finish(self, st: Stats) -> None:
        """Check the epoch; failures go to ``st.unbalanced`` / ``st.overlapping``."""
        if not self.indices:
            return
        if self.name == "dist_sampler":
            every = np.concatenate([i.ravel() for i in self.indices])
            dup = len(every) - len(np.unique(every))
            pad = max(0, len(every) - self.n)
            if dup > pad:
                st.overlapping.append(f"{dup} indices on two ranks, more than the {pad} padding")
            return
        for s, (counts, idx) in enumerate(zip(self.counts, self.indices, strict=True)):
            if self.name == "quota" and (counts[:, 1] != self.quota).any():
                st.unbalanced.append(f"step {s}: minority {counts[:, 1].tolist()} != {self.quota}")
            expected = self.expected(s, idx.shape[1])
            if expected is None:
                continue
            st.checked_steps += 1
            if not np.array_equal(expected, idx):
                st.overlapping.append(f"step {s}: the ranks' batches are not the 1-process plan's")
        if self.name == "weighted":
            # Stratified: exact class counts per n plan positions; the padding adds < W.
            minority = int(sum(c[:, 1].sum() for c in self.counts))
            samples = int(sum(i.size for i in self.indices))
            if abs(minority - samples / 2) > self.world + 1:
                st.unbalanced.append(f"minority {minority} of {samples} samples, not 50%")


def run_sampler(name: str, args: argparse.Namespace, ctx: dict) -> Stats:
    """Timed epochs of one sampler on this rank, with rank 0 checking every step."""
    world, rank, device = ctx["world"], ctx["rank"], ctx["device"]
    bs, n = args.batch_size, args.size
    sampler = build(name, ctx["index"], n, bs, world, rank, args.seed)
    loader = make_loader(sampler, ctx["ds"], bs, args.num_workers, device.type == "cuda")
    steps = len(loader) if args.steps is None else min(args.steps, len(loader))
    model = torch.nn.Linear(args.dim, 2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    st = Stats(name, rank)
    for epoch in range(args.epochs):
        st.sampler_s += sampler_only(sampler, epoch, bs, steps)
        ref = None
        if rank == 0 and name != "dist_sampler":
            ref = build(name, ctx["index"], n, bs, 1, 0, args.seed)
            ref.set_epoch(epoch)
        check = Checker(name, ref, world, bs, n, bs // 8)
        sampler.set_epoch(epoch)
        it = iter(loader)
        for _ in range(steps):
            t0 = time.perf_counter()
            x, y, idx = next(it)
            t1 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            counts = torch.bincount(y, minlength=2)
            sync(device)
            t2 = time.perf_counter()
            all_counts = gather(counts, world)
            all_idx = gather(idx.to(device), world)
            sync(device)
            t3 = time.perf_counter()
            st.steps += 1
            st.samples += len(idx)
            st.minority += int(counts[1])
            st.wait_s += t1 - t0
            st.step_s += t3 - t0
            st.collective_s += t3 - t2
            if rank == 0:
                check.step(all_counts, all_idx)
        del it
        if rank == 0:
            t4 = time.perf_counter()
            check.finish(st)
            st.verify_s += time.perf_counter() - t4
    return st


HEAD = (
    "sampler",
    "rank",
    "samples/s",
    "data wait",
    "sampler share",
    "collective ms/step",
    "collective share",
    "minority share",
    "balanced",
    "disjoint",
)


def summarise(stats: list[Stats], world: int, backend: str, device: str) -> tuple[str, bool, bool]:
    """A markdown table (one row per sampler and rank); whether balance and disjointness held."""
    rows = []
    for st in stats:
        step = max(st.step_s, 1e-12)
        if st.rank != 0:
            balanced = disjoint = "(rank 0 checks)"
        else:
            balanced = "FAIL" if st.unbalanced else "OK"
            if st.sampler == "dist_sampler":
                balanced = "n/a (uniform)"
            disjoint = "FAIL" if st.overlapping else "OK"
            if st.sampler != "dist_sampler":
                disjoint += f" ({st.checked_steps} steps vs plan)"
        rows.append(
            [
                LABELS[st.sampler],
                str(st.rank),
                f"{st.samples / step:,.0f}",
                f"{100 * st.wait_s / step:.1f}%",
                f"{100 * st.sampler_s / step:.1f}%",
                f"{1e3 * st.collective_s / max(st.steps, 1):.3f}",
                f"{100 * st.collective_s / step:.1f}%",
                f"{st.minority / max(st.samples, 1):.3f}",
                balanced,
                disjoint,
            ]
        )
    lines = [f"world {world}, backend {backend}, device {device}", "", tables.markdown(HEAD, rows)]
    for st in stats:
        for f in (st.unbalanced + st.overlapping)[:5]:
            lines.append(f"FAIL {LABELS[st.sampler]} rank {st.rank}: {f}")
    balanced_ok = not any(st.unbalanced for st in stats)
    disjoint_ok = not any(st.overlapping for st in stats)
    return "\n".join(lines), balanced_ok, disjoint_ok


def _ok(flag: bool) -> str:
    return "OK" if flag else "FAIL"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1 << 20, help="samples in the data set")
    p.add_argument("--dim", type=int, default=64, help="features per sample")
    p.add_argument("--batch-size", type=int, default=256, help="per-rank batch size")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="max steps per epoch (default all)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samplers", type=harness.names_arg(SAMPLERS), default=list(SAMPLERS))
    p.add_argument("--tiny", action="store_true", help="a few seconds on CPU: for CI")
    p.add_argument("--json", type=Path, help="rank 0 writes every rank's figures here")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.dim, args.batch_size, args.epochs = 2048, 8, 32, 2
        args.num_workers = 0  # worker start-up would dominate a CI smoke run
    if args.batch_size < 8:
        p.error("--batch-size should be >= 8 (the quota sampler puts batch_size // 8 minority)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    world, rank, device, backend = world_setup()
    try:
        x, y, index = make_data(args.size, args.dim, args.seed)
        ctx = {"world": world, "rank": rank, "device": device, "index": index}
        ctx["ds"] = SyntheticSet(x, y)
        mine = [run_sampler(name, args, ctx) for name in args.samplers]
        gathered: list[list[Stats] | None] = [None] * world
        dist.all_gather_object(gathered, mine)
        ok = True
        if rank == 0:
            flat = [
                st for name in args.samplers for per in gathered for st in per if st.sampler == name
            ]
            table, balanced, disjoint = summarise(flat, world, backend, str(device))
            ok = balanced and disjoint
            print(table, flush=True)
            print(f"RESULT balanced={_ok(balanced)} disjoint={_ok(disjoint)}", flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(s) for s in flat], indent=1))
        flag = torch.tensor([int(ok)], device=device)
        dist.broadcast(flag, 0)
        # Every rank is done with the group before any tears it down: a rank that destroys
        # gloo while its peer still talks to it can abort ("terminate called ...", SIGABRT).
        dist.barrier()
        return 0 if int(flag) else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    from launch.teardown import exit_now

    exit_now(main())  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
