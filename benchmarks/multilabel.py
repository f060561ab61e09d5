"""Multi-label, long tail: 1,000 classes with Zipf sizes, 1e7 images of 2-3 labels (LVIS-like).

Usage (from the repository root)::

    python -m benchmarks.multilabel                   # N = 1e7, 1,000 classes, W = 8
    python -m benchmarks.multilabel --size 1e5 --classes 100 --json out.json

An image belongs to every class it carries. The index is built **once**, from one Python list
of labels per image, by ``GroupIndex.from_label_sets`` (and, for comparison, from the same
labels as (image, class) coordinates by ``GroupIndex.from_pairs``), then saved; rank 0 of ``W``
loads it with ``mmap=True`` and samples class-aware: a class by its share (``"balanced"``: equal
shares), then a member of that class. Each case runs in a fresh interpreter.

Ours: ``DistributedWeightedSampler(labels=index)`` stratified (exact draws through each class
per epoch) and i.i.d. Today's recipes on the same data: (1) ``WeightedRandomSampler`` with the
per-image weight ``max over its labels of 1 / class size`` under ``DistributedSamplerWrapper``,
(2) ``DistributedSampler`` (no balancing). Figures per rank, as in :mod:`benchmarks.throughput`
(epoch, DataLoader pull, efficiency = pull / the same loader fed a ready list of Python ints),
plus the *rare share*: the fraction of the rank's drawn images that carry one of the rarer half
of the classes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import baselines, harness, tables
from distsampler import DistributedWeightedSampler, GroupIndex

BATCH = 256
SAMPLERS = {
    "wrs_wrapper": "(1) WeightedRandomSampler + wrapper (image weights)",
    "dist_sampler": "(2) DistributedSampler(shuffle)",
    "ours_strat": "ours: class-aware, stratified",
    "ours_iid": "ours: class-aware, i.i.d.",
}


def labels_path(directory: Path) -> Path:
    return directory / "labels.npy"


# -- the cases (each in its own interpreter) -------------------------------------------------
def build_case(case: dict) -> dict:
    """Generate the labels, build the index from label lists (and from pairs), save both."""
    directory = Path(case["dir"])
    lab = baselines.zipf_label_sets(case["n"], case["classes"])
    np.save(labels_path(directory), lab)
    lists = baselines.as_label_lists(lab)
    t0 = time.perf_counter()
    index = GroupIndex.from_label_sets(lists)
    t1 = time.perf_counter()
    del lists
    rows, cols = np.nonzero(lab >= 0)
    t2 = time.perf_counter()
    pairs = GroupIndex.from_pairs(rows, lab[rows, cols], list(range(case["classes"])), len(lab))
    t3 = time.perf_counter()
    if not np.array_equal(pairs.members, index.members):
        return {"status": "error", "reason": "from_pairs and from_label_sets disagree"}
    index.save(directory / "index")
    sizes = index.sizes
    return {
        "status": "ok",
        "label_sets_s": t1 - t0,
        "pairs_s": t3 - t2,
        "groups": len(sizes),
        "largest": int(sizes.max()),
        "smallest": int(sizes.min()),
        "labels_per_image": float((lab >= 0).sum() / len(lab)),
        "multilabel": bool(index.multilabel),
    }


def _sampler(name: str, directory: Path, lab: np.ndarray, classes: int, world: int):
    if name == "wrs_wrapper":
        return baselines.weighted_wrapper(baselines.image_weights(lab, classes), world, 0)
    if name == "dist_sampler":
        return baselines.distributed_sampler(len(lab), world, 0)
    index = GroupIndex.load(directory / "index", mmap=True)
    return DistributedWeightedSampler(
        labels=index, stratify=name == "ours_strat", num_replicas=world, rank=0
    )


def rare_share(drawn: np.ndarray, lab: np.ndarray, classes: int) -> float:
    """Fraction of ``drawn`` images carrying one of the rarer half of the classes."""
    sizes = np.bincount(lab[lab >= 0], minlength=classes)
    rare = np.zeros(classes + 1, dtype=bool)  # index -1 (no label) -> False
    rare[np.argsort(sizes, kind="stable")[: classes // 2]] = True
    return float(rare[lab[drawn]].any(axis=1).mean())


def sample_case(case: dict) -> dict:
    """Rank 0's epoch of one sampler: init, epoch, pull, efficiency, rare share."""
    directory, classes, world = Path(case["dir"]), case["classes"], case["world"]
    lab = np.load(labels_path(directory))
    n = len(lab)
    t0 = time.perf_counter()
    sampler = _sampler(case["sampler"], directory, lab, classes, world)
    rec = {"status": "ok", "init_s": time.perf_counter() - t0}
    rec |= harness.best_epochs(sampler, "index")
    rec |= harness.pull_rate(sampler, "index", n, BATCH, 1 << 62)
    sampler.set_epoch(0)
    drawn = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    rec["rare_share"] = rare_share(drawn, lab, classes)
    return rec


def run_case(case: dict) -> dict:
    return build_case(case) if case["sampler"] == "build" else sample_case(case)


# -- the run ---------------------------------------------------------------------------------
def run_all(n: int, classes: int, world: int, directory: Path, inline: bool) -> list[dict]:
    """The index build first (it writes what the samplers read), then every sampler."""
    out = []
    for name in ["build", *SAMPLERS]:
        case = {"sampler": name, "n": n, "classes": classes, "world": world, "dir": str(directory)}
        needs = () if name in ("build", "wrs_wrapper", "dist_sampler") else ("GroupIndex.load",)
        lacking = harness.missing("GroupIndex.from_label_sets", *needs)
        if lacking:
            rec = {**case, "status": "skipped", "reason": lacking}
        else:
            timeout = 120 + 600 * n / 1e7
            rec = {**case, **harness.dispatch("multilabel", case, inline, run_case, timeout)}
        out.append(rec)
        harness.log(f"{name:<13} {rec['status']} {rec.get('reason', '')}")
    return out


def build_line(r: dict) -> str:
    if r["status"] != "ok":
        return f"index: {tables.not_run(r)}"
    return (
        f"index of {r['n']:,} images, {r['groups']} classes (sizes {r['smallest']:,} to "
        f"{r['largest']:,}), {r['labels_per_image']:.2f} labels an image: "
        f"from_label_sets (Python lists) {r['label_sets_s']:.1f} s, "
        f"from_pairs (coordinates) {r['pairs_s']:.1f} s"
    )


def per_index(r: dict) -> float | None:
    return r["epoch_s"] / r["items"] if r.get("status") == "ok" and r.get("items") else None


def table(records: list[dict]) -> str:
    found = {r["sampler"]: r for r in records}
    rows = []
    for name, label in SAMPLERS.items():
        r = found[name]
        lead = [label, f"{r['n']:.0e}", str(r["world"])]
        if r["status"] != "ok":
            rows.append([*lead, tables.not_run(r)])
            continue
        vs = ["", ""]
        if name.startswith("ours"):
            vs = [
                tables.ratio(tables.divide(per_index(found[b]), per_index(r)))
                for b in ("wrs_wrapper", "dist_sampler")
            ]
        rows.append(
            [
                *lead,
                *tables.timing_cells(r),
                f"{r['rare_share']:.3f}",
                *vs,
            ]
        )
    head = ["sampler", "N", "W", *tables.TIMING_HEAD, "rare share", "epoch vs (1)", "epoch vs (2)"]
    return tables.markdown(head, rows)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=10**7, world=8)
    p.add_argument("--classes", type=int, default=1000)
    args = harness.start(p, argv, run_case)
    if args is None:  # it ran one --case
        return 0
    with harness.scratch(args.dir) as directory:
        records = run_all(args.size, args.classes, args.world, directory, args.inline)
    print()
    print(build_line(records[0]))
    print()
    print(table(records[1:]))
    return harness.finish(args.json, records)


if __name__ == "__main__":
    sys.exit(main())
