"""One copy per node: build the index once, save it, memory-map it in every rank.

Every O(N) structure a sampler needs (the label index, or the weight index for per-sample
weights) is built by local rank 0 of each node, saved to node-local disk, and loaded with
``mmap=True`` by every rank after a barrier. The ranks then share the page cache's single copy
instead of holding one private copy each (at N = 1e8 that is ~1 GB a rank).

    torchrun --standalone --nproc_per_node=4 launch/shared_index.py --num-samples 10000000

Each rank prints its anonymous (private, non-file-backed) memory growth from building the
sampler and reading its first indices, and the script checks that the mapped sampler yields
exactly the indices of an in-memory one.

Without ``--dir`` the index goes to a fresh temporary directory (about 150 MB at 1e7 samples),
which is removed at the end; ``--keep`` keeps it and prints where it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
    WeightIndex,
)


def anonymous_mb() -> float:
    """This process's anonymous memory (Linux ``/proc/self/smaps_rollup``), in MB."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def make_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (3% minority) and per-sample weights, as a user's dataset would have them."""
    labels = (np.arange(n) % 33 == 0).astype(np.int8)
    weights = 1.0 + (np.arange(n) % 101) / 100.0  # 101 distinct values
    return labels, weights


def build_once_per_node(directory: Path, n: int) -> None:
    """Local rank 0 builds and saves; the others wait at the barrier, then everyone maps."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank == 0:
        labels, weights = make_data(n)
        GroupIndex.from_labels(labels).save(directory / "labels")
        WeightIndex.from_weights(weights).save(directory / "weights")
    dist.barrier()


def samplers(labels, weights) -> dict:
    """The three samplers of the demo, from labels and weights (mapped indexes or arrays)."""
    return {
        "weights": DistributedWeightedSampler(weights=weights),
        "stratified": DistributedWeightedSampler(labels=labels),
        "quota": DistributedQuotaBatchSampler(labels, 32, {1: 8}),
    }


def first(sampler, indices: int) -> list:
    """The first items of epoch 0 holding about ``indices`` indices (batches count 32)."""
    sampler.set_epoch(0)
    it = iter(sampler)
    count = indices // 32 if isinstance(sampler, DistributedQuotaBatchSampler) else indices
    return [next(it) for _ in range(count)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=1_000_000)
    p.add_argument("--dir", type=Path, default=None, help="node-local directory for the index")
    p.add_argument("--take", type=int, default=10_000, help="indices each rank reads")
    p.add_argument("--keep", action="store_true", help="keep a temporary index directory")
    p.add_argument("--log-json", type=Path, default=None)
    args = p.parse_args(argv)

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    temporary = args.dir is None
    shared = [str(args.dir) if args.dir else ""]
    if temporary and rank == 0:
        shared = [tempfile.mkdtemp(prefix="distsampler-shared-")]
    dist.broadcast_object_list(shared, src=0)  # one directory name for the whole node
    directory = Path(shared[0])
    build_once_per_node(directory, args.num_samples)

    before = anonymous_mb()
    mapped = samplers(
        GroupIndex.load(directory / "labels", mmap=True),
        WeightIndex.load(directory / "weights", mmap=True),
    )
    taken = {name: first(s, args.take) for name, s in mapped.items()}
    grown = anonymous_mb() - before

    # The mapped samplers give exactly what in-memory ones give.
    y, w = make_data(args.num_samples)
    in_memory = samplers(y, w)
    same = {name: first(s, args.take) == taken[name] for name, s in in_memory.items()}

    print(
        f"rank {rank}/{world}: anonymous memory +{grown:.1f} MB for 3 samplers on a mapped "
        f"index of {args.num_samples:,} samples; same indices as in memory: {same}",
        flush=True,
    )
    report = {"rank": rank, "world": world, "anonymous_mb": grown, "same": same}
    gathered = [None] * world
    dist.all_gather_object(gathered, report)
    if rank == 0 and args.log_json:
        args.log_json.write_text(json.dumps(gathered))
    dist.barrier()  # every rank has closed its use of the mapped files
    if rank == 0:
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 1e6
        if temporary and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
            print(f"removed the temporary index {directory} ({size:.0f} MB)", flush=True)
        else:
            print(f"the index stays in {directory} ({size:.0f} MB)", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    main()
    exit_now(0)  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
