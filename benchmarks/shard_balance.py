"""Per-batch class balance of the shard plan against ``cache_shards``, class-mixed vs class-pure.

    python -m benchmarks.shard_balance                 # print the table
    python -m benchmarks.shard_balance --write-docs    # the table into docs/shards.md
    python -m benchmarks.shard_balance --check-docs    # exit 1 if the page shows another

The data: 400 shards of 100 samples, a common class (70%), six middle classes (4.5% each) and a
rare one (3%), with shares {common: 0.5, each middle: 0.04, rare: 0.26} (the common and middle
classes are read with their shards, the rare one is oversampled and resident). Written two
ways: class-mixed (samples shuffled before sharding) and class-pure (class by class). Each row
is one ``cache_shards``; the error of a batch of 32 is its total variation distance from the
target shares (half the sum of ``|count / 32 - share|``), averaged over the batches of 4 ranks
(``lanes=4``) and 2 epochs. The last row is i.i.d. draws with the same shares
(``WeightedRandomSampler``'s distribution), the same number of batches, seed 0. Plans are
seeded: the table is the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from benchmarks import tables
from distsampler import DistributedWeightedSampler
from distsampler import weights as W
from distsampler.shards import ShardLayout

SHARDS, PER, BATCH, LANES, EPOCHS = 400, 100, 32, 4, 2
DOCS = [Path(__file__).resolve().parents[1] / "docs" / "shards.md"]
DOCS_COMMAND = "python -m benchmarks.shard_balance --write-docs"
CACHES = (1, 2, 4, 8, 16)


def dataset() -> tuple[np.ndarray, np.ndarray, dict]:
    """Class-mixed labels, class-pure labels, and the target shares."""
    n = SHARDS * PER
    sizes = [int(0.70 * n)] + [int(0.045 * n)] * 6
    sizes.append(n - sum(sizes))
    pure = np.repeat(np.arange(8), sizes)
    mixed = np.random.default_rng(0).permutation(pure)
    shares = {0: 0.5, **{c: 0.04 for c in range(1, 7)}, 7: 0.26}
    return mixed, pure, shares


def batch_error(labels: np.ndarray, target: np.ndarray) -> float:
    """Mean total variation distance of batches of ``BATCH`` from ``target``."""
    n = len(labels) // BATCH
    counts = np.zeros((n, len(target)))
    rows = np.repeat(np.arange(n), BATCH)
    np.add.at(counts, (rows, labels[: n * BATCH]), 1)
    return float(0.5 * np.abs(counts / BATCH - target).sum(axis=1).mean())


def plan_error(labels: np.ndarray, shares: dict, cache_shards: int) -> tuple[float, float]:
    """(mean batch error, the rare class's mean |share - target|) over ranks and epochs."""
    layout = ShardLayout.from_sizes([PER] * SHARDS)
    target = np.array([shares[c] for c in range(8)])
    errs, rare = [], []
    for rank in range(LANES):
        s = DistributedWeightedSampler(
            labels=labels,
            class_weights=W.target_shares(shares),
            shards=layout,
            cache_shards=cache_shards,
            lanes=LANES,
            num_replicas=LANES,
            rank=rank,
            block_size=BATCH,
            seed=0,
        )
        for e in range(EPOCHS):
            s.set_epoch(e)
            got = labels[np.fromiter(s, dtype=np.int64)]
            errs.append(batch_error(got, target))
            n = len(got) // BATCH
            rare_share = (got[: n * BATCH].reshape(n, BATCH) == 7).mean(axis=1)
            rare.append(float(np.abs(rare_share - shares[7]).mean()))
    return float(np.mean(errs)), float(np.mean(rare))


def iid_error(shares: dict, batches: int) -> tuple[float, float]:
    target = np.array([shares[c] for c in range(8)])
    labels = np.random.default_rng(0).choice(8, size=batches * BATCH, p=target)
    rare = (labels.reshape(batches, BATCH) == 7).mean(axis=1)
    return batch_error(labels, target), float(np.abs(rare - shares[7]).mean())


def table() -> str:
    mixed, pure, shares = dataset()
    rows = []
    for k in CACHES:
        m, mr = plan_error(mixed, shares, k)
        p, pr = plan_error(pure, shares, k)
        rows.append([f"shard plan, `cache_shards={k}`", f"{m:.3f}", f"{p:.3f}", f"{mr:.3f}"])
    batches = EPOCHS * SHARDS * PER // BATCH
    i, ir = iid_error(shares, batches)
    rows.append(["i.i.d. draws (`WeightedRandomSampler`)", f"{i:.3f}", f"{i:.3f}", f"{ir:.3f}"])
    head = [
        "plan",
        "batch error, class-mixed shards",
        "batch error, class-pure shards",
        "rare (resident) share error",
    ]
    return tables.markdown(head, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", action="store_true", help="write the table into the docs")
    docs.add_argument("--check-docs", action="store_true", help="exit 1 if a page differs")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    body = table()
    if a.write_docs or a.check_docs:
        return tables.docs_main(DOCS, DOCS_COMMAND, body, write=a.write_docs)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
