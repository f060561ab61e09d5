"""DDP training over WebDataset tar shards served by HTTP, read about once per epoch.

The data is launch/train.py's (scikit-learn's bundled 8x8 digits, "digit 0" against the rest,
the zeros subsampled to 3% of the samples). Rank 0 writes the training set as tar shards of
``--shard-size`` samples into a temporary directory (class-mixed: in the shuffled order of the
split; ``--class-pure``: class by class), serves them over HTTP on 127.0.0.1 only (a free
port), and reads the layout once (``ShardLayout.from_webdataset(urls, labels="cls")``); the
other ranks wait for it on a barrier. Every rank then trains an MLP with
``DistributedWeightedSampler(shards=layout, cache_shards=..., block_size=batch)`` (the minority
at ``--minority-share`` of every batch) and ``ShardedDataset(layout, sampler, cache_dir=...)``
in a ``DataLoader(num_workers=2)``; the ranks share one node-local cache directory. At the end
the server stops and the temporary directory is removed. Backend: gloo (CPU).

    torchrun --standalone --nproc_per_node=4 launch/train_shards.py
    torchrun --standalone --nproc_per_node=4 launch/train_shards.py --class-pure --epochs 5

Rank 0 prints one line per epoch, every figure reduced over the ranks: the training loss, the
test set's minority recall, the minority share of the samples trained (mean, and min and max
over the full local batches), and what the epoch fetched: bytes (as a multiple of the shards'
bytes), whole-shard fetches into the cache, and reads outside the schedule (whole shards read
into memory, byte ranges). The first epoch also gathers the resident samples (the minority:
drawn more often than it has members, so kept in the cache directory and served at any time);
one needed before its shard was opened costs a read outside the schedule.

Trap: the DataLoader's workers read alternate batches of one lane, so a lane's window
(``--cache-shards`` shards) should span the batches in flight; a worker that falls further
behind reads its last samples of a shard as byte ranges (with ``--cache-shards 2`` in one
process the epochs after the first still cost 1.00x the shards' bytes).

The HTTP server's own count of the bytes it sent goes into ``--log-json PATH`` with the
per-epoch figures. Checkpoints are not offered: the layout's URLs name this run's port, and
a sampler state is tied to the layout it was made with.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from benchmarks import tables
from distsampler import DistributedWeightedSampler, weights
from distsampler.shards import ShardedDataset, ShardLayout
from launch.train import MINORITY, evaluate, load_data

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cache-shards", type=int, default=4, help="shards a lane reads at a time")
    p.add_argument("--class-pure", action="store_true", help="write the shards class by class")
    p.add_argument("--shard-size", type=int, default=50, help="samples per tar shard")
    p.add_argument("--minority-share", type=float, default=0.25, help="target share per batch")
    p.add_argument("--batch-size", type=int, default=32, help="local (per-rank) batch size")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-json", type=Path, help="write the per-epoch figures here (rank 0)")
    args = p.parse_args(argv)
    for name in ("epochs", "cache_shards", "shard_size", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} should be >= 1, but got {getattr(args, name)}")
    if not 0 < args.minority_share < 1:
        p.error(f"--minority-share should be in (0, 1), but got {args.minority_share}")
    return args


# -- shards and the server ------------------------------------------------------------------------
def write_shards(
    directory: Path, x: np.ndarray, y: np.ndarray, size: int, class_pure: bool
) -> list[str]:
    """Tar shards of ``size`` samples: ``<key>.x`` (64 float32 pixels), ``<key>.cls`` (label).

    The key is the sample's position in the training split. Class-mixed shards keep the
    split's (shuffled) order; class-pure ones take the samples class by class.
    """
    directory.mkdir(parents=True, exist_ok=True)
    order = np.argsort(y, kind="stable") if class_pure else np.arange(len(y))
    names = []
    for s, start in enumerate(range(0, len(order), size)):
        name = f"digits-{s:04d}.tar"
        with tarfile.open(directory / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in order[start : start + size].tolist():
                for ext, data in (("x", x[i].astype("<f4").tobytes()), ("cls", b"%d" % y[i])):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        names.append(name)
    return names


def loopback_server():
    """tests/_http.py's ``LoopbackServer`` (127.0.0.1 only), imported by its path."""
    spec = importlib.util.spec_from_file_location("distsampler_loopback", ROOT / "tests/_http.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LoopbackServer


def decode(sample: dict) -> tuple[torch.Tensor, int]:
    """A tar sample -> (pixels, label)."""
    x = torch.from_numpy(np.frombuffer(sample["x"], dtype="<f4").copy())
    return x, int(sample["cls"])


# -- training -------------------------------------------------------------------------------------
def reduce(values: list[float], op: dist.ReduceOp) -> list[float]:
    """``values`` all-reduced with ``op`` over the ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=op)
    return t.tolist()


FETCH = ("bytes_fetched", "shards_fetched", "out_of_schedule", "range_reads")


def train_epoch(
    args: argparse.Namespace,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    dataset: ShardedDataset,
) -> dict:
    """One epoch; the loss, the minority share and the fetch counters, reduced over the ranks."""
    before = dataset.stats()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum = minority = items = steps_here = 0.0
    lo, hi = float("inf"), float("-inf")
    for x, y in loader:
        share = float((y == MINORITY).float().mean())
        if len(y) == args.batch_size:  # a short last batch says nothing about the balance
            lo, hi = min(lo, share), max(hi, share)
        minority, items = minority + share * len(y), items + len(y)
        steps_here += 1
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(y)
    after = dataset.stats()
    fetched = [float(after[k] - before[k]) for k in FETCH]
    sums = reduce([loss_sum, minority, items, steps_here, *fetched], dist.ReduceOp.SUM)
    (lo,) = reduce([lo], dist.ReduceOp.MIN)
    (hi,) = reduce([hi], dist.ReduceOp.MAX)
    loss_sum, minority, items, steps = sums[:4]
    batches: list = [None] * dist.get_world_size()
    dist.all_gather_object(batches, int(steps_here))
    out = dict(loss=loss_sum / max(items, 1), share=minority / max(items, 1))
    out.update(share_min=lo, share_max=hi, batches=batches)
    out.update({k: int(v) for k, v in zip(FETCH, sums[4:], strict=True)})
    return out


def report(m: dict, total_bytes: int, num_shards: int) -> None:
    """One line per epoch (rank 0): the figures reduced over all ranks."""
    print(
        f"epoch {m['epoch']}  loss {m['loss']:.4f}  recall {m['recall']:.3f}  "
        f"minority/batch {m['share']:.3f} (full batches: min {m['share_min']:.3f}, "
        f"max {m['share_max']:.3f})  batches/rank {m['batches']}  fetched "
        f"{m['bytes_fetched']:,} B = {m['bytes_fetched'] / total_bytes:.2f}x the shards, "
        f"{m['shards_fetched']} shard fetches for {num_shards} shards, off schedule "
        f"{m['out_of_schedule']} whole + {m['range_reads']} ranges",
        flush=True,
    )


HEAD = (
    "epoch",
    "bytes fetched",
    "x the shards' bytes",
    "shard fetches",
    "off schedule: whole shards",
    "off schedule: byte ranges",
    "minority per batch: min",
    "max",
    "minority recall",
)


def results_table(metrics: list[dict], total_bytes: int) -> str:
    """The run's figures, one row per epoch (the table docs/shards.md shows)."""
    rows = [
        [
            str(m["epoch"]),
            f"{m['bytes_fetched']:,}",
            f"{m['bytes_fetched'] / total_bytes:.2f}x",
            str(m["shards_fetched"]),
            str(m["out_of_schedule"]),
            str(m["range_reads"]),
            f"{m['share_min']:.3f}",
            f"{m['share_max']:.3f}",
            f"{m['recall']:.3f}",
        ]
        for m in metrics
    ]
    return tables.markdown(HEAD, rows)


def setup(args: argparse.Namespace, rank: int, x: np.ndarray, y: np.ndarray) -> tuple:
    """Rank 0 writes the shards, starts the server and reads the layout; the other ranks wait.

    Returns ``(layout, temp_dir, server)`` on every rank (``server``: rank 0's, else None).
    """
    server, shared = None, [None]
    if rank == 0:
        tmp = Path(tempfile.mkdtemp(prefix="train-shards-"))
        try:
            names = write_shards(tmp / "shards", x, y, args.shard_size, args.class_pure)
            server = loopback_server()(tmp / "shards", lifetime=86400)
            layout = ShardLayout.from_webdataset([server.url(n) for n in names], labels="cls")
        except BaseException:
            if server is not None:
                server.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shared = [(layout, str(tmp))]
    dist.broadcast_object_list(shared, src=0)  # the other ranks wait here (a barrier)
    layout, tmp = shared[0]
    return layout, Path(tmp), server


def train(args: argparse.Namespace, layout: ShardLayout, tmp: Path, server, x_test, y_test):
    """Every epoch: train, evaluate, report (rank 0); returns the per-epoch figures."""
    world, rank = dist.get_world_size(), dist.get_rank()
    total = int(np.sum(layout.shard_bytes))
    b, share = args.batch_size, args.minority_share
    sampler = DistributedWeightedSampler(
        labels=layout.group_index(),
        class_weights=weights.target_shares({MINORITY: share, 1 - MINORITY: 1 - share}),
        shards=layout,
        cache_shards=args.cache_shards,
        block_size=b,  # a lane's positions in blocks of one local batch
        seed=args.seed,
    )
    dataset = ShardedDataset(layout, sampler, cache_dir=tmp / "cache", decode=decode)
    loader = DataLoader(dataset, b, sampler=sampler, num_workers=args.workers)
    (bound,) = reduce([dataset.bound], dist.ReduceOp.SUM)
    if rank == 0:
        sizes, pure = layout.sizes, "class-pure" if args.class_pure else "class-mixed"
        print(
            f"world size: {world} (backend gloo)  {layout.num_shards} {pure} shards of "
            f"{sizes.min()}-{sizes.max()} samples, {len(layout)} samples, {total:,} B, minority "
            f"{np.mean(layout.labels == MINORITY):.1%}; cache: at most {dataset.bound} shards "
            f"per rank, {int(bound)} on the node; {sampler.num_samples} draws an epoch",
            flush=True,
        )
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    model = nn.parallel.DistributedDataParallel(net)
    x_eval, metrics = torch.from_numpy(x_test), []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        served = server.total_bytes if server is not None else 0
        dist.barrier()  # no rank fetches for this epoch before rank 0 read the server's count
        m = dict(epoch=epoch, **train_epoch(args, model, opt, loader, dataset))
        m["recall"], _ = evaluate(net, x_eval, y_test)
        metrics.append(m)
        if rank == 0:
            m["bytes_served"] = server.total_bytes - served
            report(m, total, layout.num_shards)
    if rank == 0:
        print(results_table(metrics, total), flush=True)
        if args.log_json:
            out = dict(world_size=world, shard_bytes=total, num_shards=layout.num_shards)
            out.update(class_pure=args.class_pure, cache_shards=args.cache_shards)
            out.update(cache_bound=int(bound), temp_dir=str(tmp), metrics=metrics)
            args.log_json.write_text(json.dumps(out))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "RANK" not in os.environ:  # plain `python launch/train_shards.py`
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29534")
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data()
    if rank == 0:  # torchrun's SIGTERM (another rank failed): clean up, then exit
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    layout, tmp, server = setup(args, rank, x_train, y_train)
    try:
        train(args, layout, tmp, server, x_test, y_test)
        dist.barrier()  # every rank is done reading: the server may stop
    finally:
        if rank == 0:
            server.close()
            shutil.rmtree(tmp, ignore_errors=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    exit_now(main())  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
