"""Metric learning under DDP: class batches (P x K) against random batches, Recall@1.

A synthetic open-set retrieval task, no download: ``--classes`` identities with Zipf sizes
(some under ``K``), each a random point of a 16-D latent space seen through a fixed random
non-linear map into 64-D with heavy within-class noise. The first 70% of the identities train an
MLP embedding (64 -> 128 -> 32, L2-normalised) with a batch-hard triplet loss (margin 0.2;
an anchor with no positive in its local batch contributes nothing); the other 30%, never seen
in training, are the retrieval test: Recall@1 is the share of test samples whose nearest other
test sample (cosine) has the same identity.

Batches of ``P * K`` per rank: ``ours`` is ``DistributedClassBatchSampler(labels, P, K)``,
``random`` is torch's ``DistributedSampler`` with the same batch size; both take the same
steps per epoch (one pass over the training samples). Every rank computes its loss on its own
local batch (DDP averages the gradients).

    torchrun --standalone --nproc_per_node=2 launch/train_metric.py            # 3 seeds
    torchrun --standalone --nproc_per_node=2 launch/train_metric.py --seeds 0 --epochs 2

Rank 0 prints one line per (seed, batches) and a summary table.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

if not __package__:  # run as a file: the repository's distsampler
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsampler import DistributedClassBatchSampler


def make_data(num_classes: int, seed: int = 1234):
    """Features and identities (fixed, not affected by --seeds); train/test identity split."""
    rng = np.random.default_rng(seed)
    sizes = np.clip((60 / np.arange(1, num_classes + 1) ** 0.7).astype(int), 2, 60)
    rng.shuffle(sizes)
    centers = rng.normal(size=(num_classes, 16))
    labels = np.repeat(np.arange(num_classes), sizes)
    z = centers[labels] + 0.9 * rng.normal(size=(len(labels), 16))
    a = rng.normal(size=(16, 64)) / 4
    b = rng.normal(size=(64, 64)) / 8
    x = np.tanh(z @ a) @ b + 0.05 * rng.normal(size=(len(labels), 64))
    x = (x - x.mean(0)) / x.std(0)
    train = labels < int(0.7 * num_classes)
    return (
        torch.tensor(x[train], dtype=torch.float32),
        torch.tensor(labels[train]),
        torch.tensor(x[~train], dtype=torch.float32),
        torch.tensor(labels[~train]),
    )


def batch_hard(emb: torch.Tensor, y: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    d = torch.cdist(emb, emb)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    pos = same & ~eye
    has = pos.any(1)
    hardest_pos = (d * pos).max(1).values
    hardest_neg = d.masked_fill(same, float("inf")).min(1).values
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return (loss * has).sum() / has.sum().clamp(min=1) + 0.0 * emb.sum()


def recall_at_1(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        e = F.normalize(model(x), dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-2)
    return float((y[sim.argmax(1)] == y).float().mean())


def run(kind: str, seed: int, data, args, world: int, rank: int) -> float:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    ds = TensorDataset(xtr, ytr)
    B = args.P * args.K
    steps = len(ds) // (world * B)  # both kinds: one pass over the data in steps
    if kind == "ours":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-class notice
            sampler = DistributedClassBatchSampler(
                ytr.numpy(), args.P, args.K, seed=seed, dataset_size=len(ds), num_batches=steps
            )
        loader = DataLoader(ds, batch_sampler=sampler)
    else:
        sampler = DistributedSampler(ds, seed=seed, drop_last=True)
        loader = DataLoader(ds, batch_size=B, sampler=sampler, drop_last=True)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = batch_hard(F.normalize(ddp(x), dim=1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return recall_at_1(model, xte, yte)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=300)
    p.add_argument("--P", type=int, default=8)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    data = make_data(args.classes)
    results: dict[str, list[float]] = {"random": [], "ours": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for kind in ("random", "ours"):
            r1 = run(kind, seed, data, args, world, rank)
            results[kind].append(r1)
            if rank == 0:
                print(f"seed {seed} {kind:<7} Recall@1 {r1:.3f}", flush=True)
    if rank == 0:
        n_test = len(data[3])
        print(f"\n{world} ranks, P={args.P} K={args.K}, {args.epochs} epochs, {n_test} test")
        print("| batches | Recall@1 (mean) | per seed |")
        print("|---|---|---|")
        for kind, vals in results.items():
            per = ", ".join(f"{v:.3f}" for v in vals)
            print(f"| {kind} | {np.mean(vals):.3f} | {per} |")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
