"""Each of distsampler's samplers behind a plain ``accelerator.prepare(DataLoader(...))``.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \\
        launch/accelerate_plain_prepare.py

Our samplers are rank-aware, and Accelerate deals a prepared loader's batches out once more.
For every sampler this script builds the loader the way a user would without
``distsampler.integrations.accelerate.prepare_for_accelerate`` (``batch_sampler=`` for the batch
samplers; ``sampler=`` and a ``BatchSampler`` around it for the weighted sampler), runs one
epoch, and prints one ``RESULT {json}`` line per rank and case:

* ``exact``: the rank got exactly its batches of the sampler's plan (micro-batch ``k * W + r``
  is rank ``r``'s ``k``-th batch), and ``len(loader)`` says how many;
* ``error``: the first batch raised, ``message`` says why (``prepare-error``: Accelerate's
  own ``prepare`` refused the loader);
* ``wrong``: anything else (the silent double sharding this script exists to catch).

The same is done under ``even_batches=False`` and ``split_batches=True``, after
``accelerator.skip_first_batches``, and through ``prepare_for_accelerate`` (always exact).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

if not torch.cuda.is_available():  # before Accelerator(): else every process trains alone
    os.environ.setdefault("ACCELERATE_USE_CPU", "1")

from accelerate import Accelerator, DataLoaderConfiguration

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedClassBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
)
from distsampler.integrations.accelerate import prepare_for_accelerate

N, B, EPOCH = 160, 8, 1
LABELS = np.arange(N) % 5  # 5 classes of 32
LENGTHS = (np.arange(N) * 7) % 40 + 1
DATASET = TensorDataset(torch.arange(N))


def weighted() -> DistributedWeightedSampler:
    return DistributedWeightedSampler(labels=LABELS, class_weights="balanced", block_size=B)


# name -> (sampler factory, loader around it, local batch size for a weighted sampler)
SAMPLERS = {
    "quota": lambda: DistributedQuotaBatchSampler(LABELS, B, {0: 2, 1: 2}),
    "class": lambda: DistributedClassBatchSampler(np.arange(N) % 20, 2, 4),
    "bucket": lambda: DistributedBucketBatchSampler(weighted(), LENGTHS, batch_size=B),
    "bucket-tokens": lambda: DistributedBucketBatchSampler(weighted(), LENGTHS, max_tokens=160),
    "weighted-sampler": weighted,
    "weighted-batch-sampler": weighted,
}


def plain_loader(name: str, sampler) -> DataLoader:
    """The loader a user builds before ``accelerator.prepare``."""
    if name == "weighted-sampler":
        return DataLoader(DATASET, sampler=sampler, batch_size=B)
    if name == "weighted-batch-sampler":
        return DataLoader(DATASET, batch_sampler=BatchSampler(sampler, B, drop_last=False))
    return DataLoader(DATASET, batch_sampler=sampler)


def plan(name: str, sampler, world: int, rank: int) -> list[list[int]]:
    """This rank's batches of the epoch's plan, from the plan itself (not by iterating)."""
    if name.startswith("weighted"):
        twin = weighted()  # same configuration, same world: its local stream, in B-runs
        twin.set_epoch(EPOCH)
        stream = list(twin)
        return [stream[i : i + B] for i in range(0, len(stream), B)]
    micro = np.arange(len(sampler)) * world + rank
    return [[int(i) for i in b] for b in sampler.batches(micro, EPOCH)]


def run(loader, expected: list[list[int]], skip: int = 0) -> dict:
    got: list[list[int]] = []
    try:
        for (x,) in loader:
            got.append(x.tolist())
    except Exception as e:  # the outcome is reported, not handled
        return dict(outcome="error", batches_before=len(got), type=type(e).__name__, message=str(e))
    want = expected[skip:]
    outcome = "exact" if got == want and len(loader) == len(want) else "wrong"
    return dict(outcome=outcome, batches=len(got), planned=len(want), length=len(loader))


def report(record: dict) -> None:
    """One ``RESULT`` line in one write: both ranks share the launcher's stdout, and print()'s
    separate writes of text and newline could interleave two ranks' lines."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), ("RESULT " + json.dumps(record) + "\n").encode())


def main() -> None:
    accelerators = {
        "default": Accelerator(),
        "uneven": Accelerator(dataloader_config=DataLoaderConfiguration(even_batches=False)),
        "split": Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True)),
    }
    acc = accelerators["default"]
    world, rank = acc.num_processes, acc.process_index
    acc.print(f"world size: {world} ({acc.distributed_type})")
    for setting, accelerator in accelerators.items():
        for name, make in SAMPLERS.items():
            sampler = make()
            try:
                loader = accelerator.prepare(plain_loader(name, sampler))
            except Exception as e:  # Accelerate's own refusal, before any batch
                record = dict(case=f"{setting}/{name}", rank=rank, world=world)
                record.update(outcome="prepare-error", type=type(e).__name__, message=str(e))
                report(record)
                continue
            loader.set_epoch(EPOCH)  # reaches the sampler, as in a training loop
            expected = plan(name, sampler, world, rank)
            result = run(loader, expected)
            if setting == "default" and result["outcome"] == "exact":
                sampler.set_epoch(EPOCH)  # the same epoch once more, on purpose
                skipped = accelerator.skip_first_batches(loader, 2)
                result["skip"] = run(skipped, expected, skip=2)["outcome"]
            record = dict(case=f"{setting}/{name}", rank=rank, world=world, **result)
            report(record)
    for name, make in SAMPLERS.items():  # the supported path: always exact
        sampler = make()
        batch_size = B if name.startswith("weighted") else None
        loader, _ = prepare_for_accelerate(
            acc, DATASET, sampler, batch_size=batch_size, register=False
        )
        loader.set_epoch(EPOCH)
        result = run(loader, plan(name, sampler, world, rank))
        record = dict(case=f"prepare_for_accelerate/{name}", rank=rank, world=world, **result)
        report(record)
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    main()
    exit_now(0)  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
