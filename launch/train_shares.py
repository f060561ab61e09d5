"""Changing shares under DDP: static balanced vs deferred re-balancing vs feedback policies.

Long-tailed digits (scikit-learn's bundled 8x8 digits, no download): the training part keeps
``n_max * ratio ** (-c / 9)`` samples of class ``c`` (imbalance ratio ``--ratio``, default 50);
the test part is balanced (40% of each class, held out first). An MLP (64 -> 64 -> 10) trains
with SGD, gradients averaged over the ranks by one all_reduce per step. Per rank batches of 32
from ``DistributedWeightedSampler(labels=..., block_size=32)``, ``--samples`` global draws per
epoch. Strategies:

* ``instance``: the data's own mix (no re-balancing), for reference;
* ``balanced``: static class-balanced sampling;
* ``drw``: deferred re-balancing, ``StepSchedule([(0, "instance"), (60% of the run, "balanced")])``;
* ``inv-recall``: instance at first, then every epoch ``inverse_recall_shares`` of the per-class
  accuracy of the training batches' predictions (before each step), reduced with GroupStats;
* ``exp3``: every epoch ``exp3_shares`` of the per-class training loss (eta 1, floor 0.1).

Feedback updates are made at the epoch's end on every rank (they land at the next epoch's start).
Metrics on the balanced test part: worst-class recall and mean per-class recall, mean and
standard deviation over seeds. Seed 0's share trajectories go to ``--plot`` (a PNG).

    torchrun --standalone --nproc_per_node=2 launch/train_shares.py            # 3 seeds
    torchrun --standalone --nproc_per_node=2 launch/train_shares.py --seeds 0 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

if not __package__:  # run as a file: the repository's distsampler
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsampler import DistributedWeightedSampler, weights
from distsampler.feedback import GroupStats, exp3_shares, inverse_recall_shares

STRATEGIES = ("instance", "balanced", "drw", "inv-recall", "exp3")


def data(ratio: float):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(0.4 * len(idx))
        test.extend(idx[:cut])
        rest = idx[cut:]
        keep = max(2, int(round(len(rest) * ratio ** (-c / 9))))
        train.extend(rest[:keep])
    train, test = np.array(train), np.array(test)
    return x[train], y[train], x[test], y[test]


def recall(model, x, y) -> np.ndarray:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return np.array([(pred[y == c] == c).mean() for c in range(10)])


def run(strategy: str, seed: int, args, xtr, ytr, xte, yte) -> tuple[np.ndarray, list]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    n = args.samples
    cw: object = "balanced" if strategy == "balanced" else "instance"
    if strategy == "drw":
        cw = weights.StepSchedule([(0, "instance"), (int(0.6 * args.epochs) * n, "balanced")])
    sampler = DistributedWeightedSampler(
        labels=ytr,
        class_weights=cw,
        num_samples=n,
        block_size=32,
        seed=seed,
        dataset_size=len(ytr),
    )
    loader = DataLoader(
        TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr)),
        batch_size=32,
        sampler=sampler,
    )
    counts = np.bincount(ytr, minlength=10).astype(float)
    shares = np.full(10, 0.1) if strategy == "balanced" else counts / counts.sum()
    trajectory = [shares.copy()]
    stats = GroupStats(range(10))
    world = dist.get_world_size()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            out = model(xb)
            loss = F.cross_entropy(out, yb, reduction="none")
            signal = (out.argmax(1) == yb).float() if strategy == "inv-recall" else loss
            stats.add(yb, signal.detach())
            opt.zero_grad()
            loss.mean().backward()
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
            opt.step()
        reduced = stats.reduce()  # every rank: one all_reduce
        if strategy == "inv-recall":
            shares = inverse_recall_shares(reduced, shares, power=1.0, floor=0.2)
            sampler.update_shares(shares)
        elif strategy == "exp3":
            shares = exp3_shares(reduced, shares, eta=1.0, floor=0.1)
            sampler.update_shares(shares)
        elif strategy == "balanced" or (strategy == "drw" and epoch + 1 >= int(0.6 * args.epochs)):
            shares = np.full(10, 0.1)
        trajectory.append(np.asarray(shares, dtype=float).copy())
    return recall(model, xte, yte), trajectory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--samples", type=int, default=1024, help="global draws per epoch")
    ap.add_argument("--ratio", type=float, default=50.0)
    ap.add_argument("--plot", default="docs/shares_trajectories.png")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    xtr, ytr, xte, yte = data(args.ratio)
    if rank == 0:
        print(f"train class sizes {np.bincount(ytr).tolist()}, test {len(yte)} (balanced)")
    results: dict = {s: [] for s in STRATEGIES}
    trajectories = {}
    for seed in args.seeds:
        for strategy in STRATEGIES:
            rec, traj = run(strategy, seed, args, xtr, ytr, xte, yte)
            results[strategy].append(rec)
            if seed == args.seeds[0]:
                trajectories[strategy] = np.array(traj)
            if rank == 0:
                print(
                    f"seed {seed} {strategy:>10}: worst-class recall {rec.min():.3f}, "
                    f"mean recall {rec.mean():.3f}"
                )
    if rank == 0:
        print(
            "\nstrategy     worst-class recall   mean per-class recall   (mean +- std over seeds)"
        )
        for s in STRATEGIES:
            r = np.array(results[s])
            w, m = r.min(axis=1), r.mean(axis=1)
            print(
                f"{s:>10}   {w.mean():.3f} +- {w.std():.3f}        {m.mean():.3f} +- {m.std():.3f}"
            )
        if args.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(
                1, len(STRATEGIES), figsize=(3.2 * len(STRATEGIES), 3), sharey=True
            )
            for ax, s in zip(axes, STRATEGIES, strict=True):
                t = trajectories[s]
                for c in range(10):
                    ax.plot(t[:, c], label=str(c), color=plt.cm.viridis(c / 9))
                ax.set_title(s)
                ax.set_xlabel("epoch")
            axes[0].set_ylabel("class share")
            axes[-1].legend(title="class", fontsize=6, ncol=2)
            fig.tight_layout()
            fig.savefig(args.plot, dpi=80)
            print(f"share trajectories (seed {args.seeds[0]}): {args.plot}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
