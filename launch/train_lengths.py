"""Variable-length sequences under DDP: random, group_by_length-style and bucketed batches.

A small transformer classifies synthetic token sequences (lognormal lengths, median 48 tokens,
up to 384; a 10% minority class marked by a token pattern), balanced by a stratified
``DistributedWeightedSampler`` (``class_weights="balanced"``). Each recipe trains one epoch
from the same initial weights and the same source plan, and batches it differently:

* ``random``: the weighted sampler's local stream cut every ``--batch-size`` (today's DDP loop);
* ``group_by_length``: HF ``LengthGroupedSampler``'s recipe on each rank: megabatches of
  ``50 x batch`` of the local stream sorted by length (ranks sort on their own, so a global
  step mixes a long batch on one rank with short ones on the others);
* ``bucketed``: ``DistributedBucketBatchSampler`` over the same weighted source, with
  ``align=W`` (the local batches of a global step have similar lengths);
  ``bucketed_align1``: the same with ``align=1`` (each micro-batch shuffled on its own).

Backend: gloo (CPU). Run it with torchrun::

    python -m torch.distributed.run --standalone --nproc_per_node=4 launch/train_lengths.py

Rank 0 prints a markdown table, one row per recipe: the padding share of the tokens computed,
real tokens per second (all ranks), the minority share of the samples trained, and the mean
over steps of the slowest rank's padded tokens over the mean rank's (DDP waits for the slowest).
``--log-json PATH`` writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from benchmarks import tables
from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler

VOCAB, PAD, MARK = 64, 0, 7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=6000, help="dataset size")
    p.add_argument("--batch-size", type=int, default=16, help="local (per-rank) batch size")
    p.add_argument("--steps", type=int, default=0, help="stop each recipe after N steps (0: epoch)")
    p.add_argument("--recipes", default="random,group_by_length,bucketed_align1,bucketed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-json", type=Path, help="write the figures of every recipe here")
    return p.parse_args(argv)


def make_data(n: int) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """Sequences, labels (10% minority) and lengths: fixed, the same on every rank."""
    rng = np.random.default_rng(1234)
    lengths = np.clip(rng.lognormal(np.log(48), 0.9, n), 4, 384).astype(np.int64)
    labels = (rng.random(n) < 0.1).astype(np.int64)
    seqs = []
    for length, label in zip(lengths, labels, strict=True):
        tokens = rng.integers(8, VOCAB, length)
        if label:  # the minority carries the marker at a random place
            tokens[rng.integers(0, length)] = MARK
        seqs.append(torch.from_numpy(tokens))
    return seqs, labels, lengths


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32, padding_idx=PAD)
        self.encoder = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == PAD
        h = self.encoder(self.embed(tokens), src_key_padding_mask=pad)
        h = h.masked_fill(pad[..., None], 0.0).sum(1) / (~pad).sum(1, keepdim=True)
        return self.head(h)


def collate(seqs: list[torch.Tensor], batch: list[int]) -> torch.Tensor:
    return nn.utils.rnn.pad_sequence([seqs[i] for i in batch], batch_first=True)


def local_batches(recipe: str, labels: np.ndarray, lengths: np.ndarray, args) -> list[list[int]]:
    """This rank's batches of one epoch under ``recipe`` (the same source plan for all)."""
    b = args.batch_size
    if recipe.startswith("bucketed"):
        source = DistributedWeightedSampler(labels=labels, seed=args.seed)
        # runs of W similar batches: a step pads alike on all ranks (align=1: not aligned)
        align = 1 if recipe == "bucketed_align1" else dist.get_world_size()
        sampler = DistributedBucketBatchSampler(
            source, lengths, batch_size=b, align=align, seed=args.seed
        )
        return [list(x) for x in sampler]
    source = DistributedWeightedSampler(labels=labels, seed=args.seed, block_size=b)
    stream = np.asarray(list(source))
    if recipe == "group_by_length":  # HF LengthGroupedSampler on the rank's own stream
        mega = 50 * b
        parts = [stream[i : i + mega] for i in range(0, len(stream), mega)]
        stream = np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in parts])
    return [stream[i : i + b].tolist() for i in range(0, len(stream), b)]


def run_recipe(recipe: str, data, args, world: int) -> dict:
    seqs, labels, lengths = data
    torch.manual_seed(args.seed)
    model = nn.parallel.DistributedDataParallel(Classifier())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = local_batches(recipe, labels, lengths, args)
    if args.steps:
        batches = batches[: args.steps]
    real = padded = minority = samples = 0
    skew = []
    dist.barrier()
    start = time.perf_counter()
    for batch in batches:
        x = collate(seqs, batch)
        y = torch.from_numpy(labels[batch])
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cost = torch.tensor([float(x.numel())])
        gathered = [torch.zeros(1) for _ in range(world)]
        dist.all_gather(gathered, cost)
        costs = torch.cat(gathered)
        skew.append(float(costs.max() / costs.mean()))
        real += int(lengths[batch].sum())
        padded += x.numel()
        minority += int(y.sum())
        samples += len(batch)
    elapsed = time.perf_counter() - start
    totals = torch.tensor([real, padded, minority, samples], dtype=torch.float64)
    dist.all_reduce(totals)
    real_t, padded_t, minority_t, samples_t = totals.tolist()
    return {
        "recipe": recipe,
        "steps": len(batches),
        "padding_share": 1 - real_t / padded_t,
        "tokens_per_s": real_t / elapsed,
        "minority_share": minority_t / samples_t,
        "rank_skew": float(np.mean(skew)),
        "seconds": elapsed,
    }


HEAD = (
    "recipe",
    "padding share",
    "tokens/s (all ranks)",
    "minority share",
    "slowest / mean rank (padded tokens a step)",
)


def results_table(results: list[dict], batch_size: int, world: int) -> str:
    """One row per recipe (docs/benchmarks.md shows this table; tokens/s are wall clock)."""
    label = {
        "random": "random batches",
        "group_by_length": "`group_by_length`-style (each rank sorts its own megabatches)",
        "bucketed_align1": f"ours, `batch_size={batch_size}, align=1`",
        "bucketed": f"ours, `batch_size={batch_size}, align={world}`",
    }
    rows = [
        [
            label.get(r["recipe"], r["recipe"]),
            f"{r['padding_share']:.1%}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['minority_share']:.3f}",
            f"{r['rank_skew']:.2f}",
        ]
        for r in results
    ]
    return tables.markdown(HEAD, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    world, rank = dist.get_world_size(), dist.get_rank()
    data = make_data(args.samples)
    results = [run_recipe(r, data, args, world) for r in args.recipes.split(",")]
    if rank == 0:
        steps = ", ".join(f"{r['recipe']} {r['steps']}" for r in results)
        print(f"{world} ranks, batch {args.batch_size} per rank, {args.samples} sequences")
        print(f"steps: {steps}\n")
        print(results_table(results, args.batch_size, world))
        if args.log_json:
            args.log_json.write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    exit_now(main())  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
