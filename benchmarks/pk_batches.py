"""Class batches (P x K): anchors with a positive, plan build time, first batch at 1e8.

Usage (from the repository root)::

    python -m benchmarks.pk_batches                      # 1e6 samples / 1e5 classes, 1e8
    python -m benchmarks.pk_batches --size 2e4 --classes 2e3 --huge 1e6 --json out.json

* ``positives``: the share of anchors whose local batch holds another sample of their class
  (a different sample: a repeated index is no positive), over one epoch of rank 0's batches,
  for ``W`` = 1, 2, 4 ranks, ``P = 8`` classes x ``K = 4``, 240 classes with Zipf sizes
  (2..300 samples, 20 under ``K``):

  - ``random``: ``DistributedSampler`` batches of ``P * K`` (shuffled, strided over ranks);
  - ``m-per-class``: a re-implementation of pytorch-metric-learning's ``MPerClassSampler``
    algorithm (each batch: ``P`` classes drawn without replacement, ``K`` samples of each,
    with replacement only when the class is smaller than ``K``), its index list strided over
    the ranks as a ``DistributedSamplerWrapper`` does (rank ``r`` reads ``list[r::W]``);
  - ``ours``: ``DistributedClassBatchSampler(labels, P, K)``.
* ``build``: constructing the sampler from ``--size`` labels of ``--classes`` classes
  (``GroupIndex.from_labels`` included) plus its first batch, in seconds (target <= 1 s).
* ``first_batch``: ``--huge`` samples as ``GroupIndex.from_sizes`` ranges (1e4 classes):
  building the sampler and its first batch on rank 0 of 8, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsampler import DistributedClassBatchSampler, GroupIndex

P, K = 8, 4


def zipf_labels(num_classes: int, seed: int = 0, low: int = 2, high: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = np.clip((high / np.arange(1, num_classes + 1) ** 0.8).astype(int), low, high)
    labels = np.repeat(np.arange(num_classes), sizes)
    return labels[rng.permutation(len(labels))]


def positive_share(batches, labels: np.ndarray) -> float:
    """Anchors (batch entries) with another, different sample of their class in the batch."""
    hit = total = 0
    for b in batches:
        b = np.asarray(b)
        for x in b:
            same = (labels[b] == labels[x]) & (b != x)
            hit += bool(same.any())
            total += 1
    return hit / max(total, 1)


def random_batches(labels: np.ndarray, world: int, seed: int) -> list:
    """DistributedSampler(shuffle=True) on rank 0, batched by P * K."""
    n = len(labels)
    perm = np.random.default_rng(seed).permutation(n)
    per = -(-n // world)
    perm = np.concatenate([perm, perm[: per * world - n]])
    mine = perm[0::world]
    B = P * K
    return [mine[i : i + B] for i in range(0, len(mine) - B + 1, B)]


def m_per_class_batches(labels: np.ndarray, world: int, seed: int) -> list:
    """MPerClassSampler's documented algorithm, strided over ranks, on rank 0."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    B = P * K
    length = len(labels) - len(labels) % B
    out: list[int] = []
    while len(out) < length:
        for c in rng.permutation(classes)[: length // K]:
            m = members[c]
            out.extend(rng.choice(m, K, replace=len(m) < K).tolist())
            if len(out) >= length:
                break
    idx = np.asarray(out[:length])
    mine = idx[0::world]  # DistributedSamplerWrapper: every W-th index
    return [mine[i : i + B] for i in range(0, len(mine) - B + 1, B)]


def ours_batches(labels: np.ndarray, world: int, seed: int) -> list:
    s = DistributedClassBatchSampler(labels, P, K, num_replicas=world, rank=0, seed=seed)
    return [np.asarray(b) for b in s]


def positives(worlds: list[int]) -> list[dict]:
    labels = zipf_labels(240)
    rows = []
    for w in worlds:
        row = {"W": w}
        for name, fn in (
            ("random", random_batches),
            ("m-per-class", m_per_class_batches),
            ("ours", ours_batches),
        ):
            row[name] = positive_share(fn(labels, w, 0), labels)
        rows.append(row)
    return rows


def build(size: int, classes: int) -> dict:
    labels = np.random.default_rng(0).integers(0, classes, size)
    t0 = time.perf_counter()
    s = DistributedClassBatchSampler(labels, 16, 4, num_replicas=8, rank=0)
    next(iter(s))
    return {"n": size, "classes": classes, "seconds": time.perf_counter() - t0}


def first_batch(huge: int) -> dict:
    classes = 10_000
    index = GroupIndex.from_sizes({c: huge // classes for c in range(classes)})
    t0 = time.perf_counter()
    s = DistributedClassBatchSampler(index, 16, 4, num_replicas=8, rank=0)
    next(iter(s))
    return {"n": index.num_samples, "ms": 1e3 * (time.perf_counter() - t0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=float, default=1e6, help="samples of the build case")
    p.add_argument("--classes", type=float, default=1e5, help="classes of the build case")
    p.add_argument("--huge", type=float, default=1e8, help="samples of the first-batch case")
    p.add_argument("--worlds", default="1,2,4")
    p.add_argument("--json", help="write the records here")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # the small-class notice
    worlds = [int(w) for w in a.worlds.split(",")]
    pos = positives(worlds)
    print(f"anchors with a positive in their local batch (P={P}, K={K}, 240 Zipf classes)\n")
    print("| W | random | m-per-class (strided) | ours |")
    print("|---|---|---|---|")
    for r in pos:
        print(f"| {r['W']} | {r['random']:.1%} | {r['m-per-class']:.1%} | {r['ours']:.1%} |")
    b = build(int(a.size), int(a.classes))
    f = first_batch(int(a.huge))
    print(f"\nbuild + first batch, {b['n']:.0e} samples / {b['classes']:.0e} classes: ", end="")
    print(f"{b['seconds']:.3f} s")
    print(f"first batch at N = {f['n']:.0e} (ranges, rank 0 of 8): {f['ms']:.1f} ms")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"positives": pos, "build": b, "first_batch": f}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
