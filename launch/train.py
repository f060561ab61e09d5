"""DDP training demo: an MLP on an imbalanced task (3% minority) with the distsampler samplers.

The data needs no download: scikit-learn's bundled 8x8 handwritten digits, "digit 0" against
the rest, with the zeros subsampled to 3% (fixed, not affected by --seed). Backend: nccl on
GPUs, else gloo on CPU.

    torchrun --standalone --nproc_per_node=4 launch/train.py --sampler quota --epochs 5
    torchrun --standalone --nproc_per_node=4 launch/train.py --sampler weighted --mixup
    torchrun --standalone --nproc_per_node=4 launch/train.py --sampler none  # DistributedSampler

Each epoch prints the training loss, the test set's minority recall and balanced accuracy, and
the minority share the ranks really saw: the mean over every sample, and the min and max over
the full local batches of every rank (the last batch of an epoch may be short).

Checkpoints: --checkpoint PATH saves model, optimizer and sampler state after every epoch.
--stop-after-steps N stops the run on purpose after N steps: every rank stops at that step
boundary, saves, and exits 0. A SIGTERM sent to the workers does the same at the next step
boundary (the ranks agree through an all_reduce). --resume PATH continues the same global
plan, under any --nproc_per_node:

    torchrun --standalone --nproc_per_node=4 launch/train.py --checkpoint ck.pt \
        --stop-after-steps 20
    torchrun --standalone --nproc_per_node=2 launch/train.py --checkpoint ck.pt --resume ck.pt

Sending SIGTERM to torchrun itself also leaves a complete checkpoint (torchrun forwards the
signal, the workers save and exit 0), but torchrun then exits 1 with its own SignalException
traceback: that is torchrun's exit status, not the training's.

--log-json PATH writes every rank's batches (dataset indices) and the per-epoch metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler, weights
from distsampler.integrations import SamplerCheckpoint, check_dataset_size

MINORITY = 1  # label of the minority class ("digit 0")
_RUN = {"stop": False, "steps": 0}  # SIGTERM seen; steps of this run (all epochs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sampler", choices=("none", "weighted", "quota"), default="quota")
    p.add_argument("--minority-share", type=float, default=0.25, help="target share per batch")
    p.add_argument("--mixup", action="store_true", help="MixUp (alpha 0.2) in the training loop")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="local (per-rank) batch size")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    p.add_argument("--checkpoint", type=Path, help="save here each epoch and on SIGTERM")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint")
    p.add_argument("--log-json", type=Path, help="write every rank's batches and the metrics")
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="stop on purpose after N steps of this run: save --checkpoint, exit 0",
    )
    return p.parse_args(argv)


# -- data, model, sampler -------------------------------------------------------------------------
def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: digit 0 (label 1, 3% of samples) vs the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, digit = load_digits(return_X_y=True)
    zeros, rest = np.flatnonzero(digit == 0), np.flatnonzero(digit != 0)
    keep = np.random.RandomState(0).choice(zeros, size=50, replace=False)  # 50 / 1669 = 3.0%
    idx = np.sort(np.concatenate([keep, rest]))
    x, y = (x[idx] / 16.0).astype(np.float32), (digit[idx] == 0).astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def make_sampler(args: argparse.Namespace, y: np.ndarray):
    """The sampler of ``--sampler``; the world comes from the initialised process group."""
    b, share = args.batch_size, args.minority_share
    if args.sampler == "weighted":  # block_size=b: the batches Accelerate would deal out
        shares = weights.target_shares({MINORITY: share, 1 - MINORITY: 1 - share})
        return DistributedWeightedSampler(
            labels=y, class_weights=shares, seed=args.seed, block_size=b
        )
    if args.sampler == "quota":  # an exact count of minority samples in every local batch
        quota = max(1, round(share * b))
        return DistributedQuotaBatchSampler(y, b, {MINORITY: quota}, seed=args.seed)
    return DistributedSampler(TensorDataset(torch.as_tensor(y)), shuffle=True, seed=args.seed)


def make_loader(args: argparse.Namespace, dataset: TensorDataset, sampler) -> DataLoader:
    """A batch sampler goes in ``batch_sampler=``, an index sampler in ``sampler=``."""
    if isinstance(sampler, DistributedQuotaBatchSampler):
        return DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers)
    return DataLoader(dataset, args.batch_size, sampler=sampler, num_workers=args.workers)


def make_mixup(args: argparse.Namespace, rank: int, epoch: int):
    """MixUp seeded by the tuple (seed, rank, epoch), or None without --mixup."""
    if not args.mixup:
        return None
    try:
        from distsampler.transforms import MixUp, seeded_generator
    except ImportError as err:
        raise SystemExit(f"--mixup needs distsampler.transforms, which is missing: {err}") from err
    gen = seeded_generator(args.seed, rank=rank, epoch=epoch)
    return MixUp(alpha=0.2, num_classes=2, generator=gen)


# -- distributed helpers --------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """Join torchrun's process group (nccl on GPUs, else gloo); a lone process is a world of 1."""
    if "RANK" not in os.environ:  # plain `python launch/train.py`
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_world_size(), dist.get_rank(), device


def reduce(values: list[float], op: dist.ReduceOp, device: torch.device) -> list[float]:
    """``values`` all-reduced with ``op`` over the ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def stop_agreed(device: torch.device) -> bool:
    """True on every rank once any rank got SIGTERM (called at every step boundary)."""
    return reduce([float(_RUN["stop"])], dist.ReduceOp.MAX, device)[0] > 0


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    ckpt: SamplerCheckpoint | None,
    epoch: int,
    finished: bool,
) -> None:
    """Rank 0 writes atomically; the sampler state is global (the same on every rank)."""
    state = ckpt.state_dict() if ckpt is not None else None
    if dist.get_rank() == 0:
        blob = {"model": model.state_dict(), "optimizer": opt.state_dict(), "sampler": state}
        blob.update(epoch=epoch, finished=finished)
        torch.save(blob, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    dist.barrier()


# -- training --------------------------------------------------------------------------------------
def evaluate(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[float, float]:
    """Minority recall and balanced accuracy on the test set."""
    from sklearn.metrics import balanced_accuracy_score, recall_score

    with torch.no_grad():
        pred = model(x).argmax(1).cpu().numpy()
    return recall_score(y, pred, pos_label=MINORITY), balanced_accuracy_score(y, pred)


def train_epoch(
    args: argparse.Namespace,
    epoch: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    ckpt: SamplerCheckpoint | None,
    device: torch.device,
    log: list[dict],
) -> dict:
    """One (possibly resumed) pass; stops early at a step boundary once SIGTERM is agreed."""
    rank, loss_fn = dist.get_rank(), nn.CrossEntropyLoss()
    mix = make_mixup(args, rank, epoch)
    start = ckpt.sampler.state_dict(consumed=0)["consumed"] if ckpt else 0
    loss_sum = minority = items = 0.0
    lo, hi, steps, stopped = float("inf"), float("-inf"), 0, False  # over full batches
    for x, y, idx in ckpt.track(loader) if ckpt else loader:
        x, y = x.to(device), y.to(device)
        share = float((y == MINORITY).float().mean())
        if len(y) == args.batch_size:  # a short last batch says nothing about the balance
            lo, hi = min(lo, share), max(hi, share)
        minority, items = minority + share * len(y), items + len(y)
        target = y
        if mix is not None:
            x, target = mix(x, y)
        loss = loss_fn(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(y)
        log.append(dict(epoch=epoch, rank=rank, step=steps, start=start, indices=idx.tolist()))
        steps += 1
        _RUN["steps"] += 1
        if rank == 0 and _RUN["steps"] == args.stop_after_steps:
            os.kill(os.getpid(), signal.SIGTERM)  # the same path as a real SIGTERM
        if stop_agreed(device):
            stopped = True
            break
    loss_sum, minority, items = reduce([loss_sum, minority, items], dist.ReduceOp.SUM, device)
    (lo,) = reduce([lo], dist.ReduceOp.MIN, device)
    (hi,) = reduce([hi], dist.ReduceOp.MAX, device)
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, steps)
    return dict(epoch=epoch, loss=loss_sum / max(items, 1), share=minority / max(items, 1),
                share_min=lo, share_max=hi, batches=counts, stopped=stopped)  # fmt: skip


def restore(
    args: argparse.Namespace,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    ckpt: SamplerCheckpoint | None,
    device: torch.device,
) -> int:
    """Load ``--resume`` (tensors and plain ints/strings only); returns the epoch to start."""
    blob = torch.load(args.resume, map_location=device, weights_only=True)
    net.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    if ckpt is not None and blob["sampler"] is not None:
        ckpt.load_state_dict(blob["sampler"])  # set_epoch(its epoch) below keeps the point
    elif not blob["finished"] and dist.get_rank() == 0:
        print("DistributedSampler has no state: the interrupted epoch starts over")
    start = blob["epoch"] + int(blob["finished"])
    if dist.get_rank() == 0:
        print(f"resumed from {args.resume} at epoch {start}")
    return start


def report(m: dict) -> None:
    """One line per epoch (rank 0): the metrics reduced over all ranks."""
    full = (
        "n/a"
        if m["share_min"] > m["share_max"]
        else (f"min {m['share_min']:.3f}, max {m['share_max']:.3f}")
    )
    print(
        f"epoch {m['epoch']}  loss {m['loss']:.4f}  recall {m['recall']:.3f}  "
        f"bal-acc {m['balanced_accuracy']:.3f}  minority/batch {m['share']:.3f} "
        f"(full batches: {full})  batches/rank {m['batches']}",
        flush=True,
    )


def write_log(args: argparse.Namespace, log: list[dict], metrics: list[dict]) -> None:
    """Rank 0 writes every rank's batches (gathered) and the metrics as JSON."""
    records: list = [None] * dist.get_world_size()
    dist.all_gather_object(records, log)
    if dist.get_rank() == 0:
        out = dict(world_size=dist.get_world_size(), sampler=args.sampler)
        out.update(batch_size=args.batch_size, metrics=metrics)
        out["records"] = [r for part in records for r in part]
        args.log_json.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: _RUN.update(stop=True))
    world, rank, device = init_distributed()
    if rank == 0:
        print(f"world size: {world} (backend {dist.get_backend()}, sampler {args.sampler})")
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data()
    dataset = TensorDataset(
        torch.from_numpy(x_train), torch.from_numpy(y_train), torch.arange(len(y_train))
    )
    sampler = make_sampler(args, y_train)  # after init_process_group: it reads the world there
    check_dataset_size(sampler, dataset)  # one label per sample, or a clear error now
    loader = make_loader(args, dataset, sampler)
    ours = not isinstance(sampler, DistributedSampler)
    ckpt = SamplerCheckpoint(sampler, args.batch_size) if ours else None
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start_epoch = restore(args, net, opt, ckpt, device) if args.resume else 0
    model = nn.parallel.DistributedDataParallel(net)
    x_eval, log, metrics = torch.from_numpy(x_test).to(device), [], []
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        m = train_epoch(args, epoch, model, opt, loader, ckpt, device, log)
        m["recall"], m["balanced_accuracy"] = evaluate(net, x_eval, y_test)
        metrics.append(m)
        if rank == 0:
            report(m)
        if args.checkpoint:
            save_checkpoint(args.checkpoint, net, opt, ckpt, epoch, finished=not m["stopped"])
        if m["stopped"]:
            if rank == 0:
                print(
                    f"stopped on purpose in epoch {epoch} at a step boundary; checkpoint: "
                    f"{args.checkpoint} (continue with --resume {args.checkpoint})"
                )
            break
    if args.log_json:
        write_log(args, log, metrics)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    main()
    exit_now(0)  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
