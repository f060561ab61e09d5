"""Every sampler behind a plain ``accelerator.prepare(DataLoader(...))``, in a real launch.

One ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`` of
launch/accelerate_plain_prepare.py runs every case on both ranks and prints one ``RESULT`` line
per rank and case; the tests below read them. Accelerate deals the prepared loader's batches out
once more, over our already rank-aware samplers: a batch sampler directly under its shard must
give each rank exactly its batches of the plan (``len`` and ``skip_first_batches`` included);
every other wiring must fail at the first batch with a message naming
``prepare_for_accelerate``. Before this was handled, each rank trained on every other of its
batches, with repeats, and nothing said so.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest
from _launch import ROOT, launch

pytest.importorskip("accelerate")

PREPARE = "distsampler.integrations.accelerate.prepare_for_accelerate"  # named in every refusal

pytestmark = pytest.mark.slow

BATCH = ["quota", "class", "bucket", "bucket-tokens"]
WEIGHTED = ["weighted-sampler", "weighted-batch-sampler"]
WIRING = {name: "DataLoader(dataset, batch_sampler=sampler)" for name in BATCH}
WIRING.update({name: "DataLoader(dataset, sampler=sampler, batch_size=...)" for name in WEIGHTED})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results() -> dict[str, list[dict]]:
    """case -> the two ranks' records, from one real 2-process launch."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    cmd += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    cmd += [str(ROOT / "launch" / "accelerate_plain_prepare.py")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELERATE_USE_CPU", "1")
        out = launch(cmd, timeout=150)
    assert "world size: 2" in out, out[-3000:]
    by_case: dict[str, list[dict]] = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            record = json.loads(line[len("RESULT ") :])
            by_case.setdefault(record["case"], []).append(record)
    for case, records in by_case.items():
        assert sorted(r["rank"] for r in records) == [0, 1], case
    return by_case


def _exact(records: list[dict], skip: bool) -> None:
    for r in records:
        assert r["outcome"] == "exact", r
        assert r["batches"] == r["planned"] == r["length"] > 0, r
        if skip:
            assert r["skip"] == "exact", r


def _refused(records: list[dict], name: str) -> None:
    for r in records:
        assert r["outcome"] == "error" and r["batches_before"] == 0, r
        assert r["type"] == "DoubleShardingError", r
        assert PREPARE in r["message"] and WIRING[name] in r["message"], r["message"]
        assert f"rank={r['rank']}" in r["message"], r["message"]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("setting", ["default", "uneven"])
@pytest.mark.parametrize("name", BATCH)
def test_batch_sampler_under_plain_prepare_yields_exactly_the_plan(results, name, setting):
    """batch_sampler=ours under accelerator.prepare: rank r's k-th batch is the plan's micro-batch
    k * W + r, len(loader) counts them, and skip_first_batches skips this rank's own; also with
    even_batches=False."""
    _exact(results[f"{setting}/{name}"], skip=setting == "default")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", BATCH)
def test_split_batches_is_refused_at_the_first_batch(results, name):
    """split_batches=True cuts each local batch into W pieces: refused before any batch."""
    records = results[f"split/{name}"]
    if name == "bucket-tokens":  # no batch_size: Accelerate's prepare itself refuses it
        assert all(r["outcome"] == "prepare-error" for r in records), records
        return
    _refused(records, name)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("setting", ["default", "uneven", "split"])
@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_sampler_under_plain_prepare_is_refused_at_the_first_batch(results, name, setting):
    """sampler=ours (or a BatchSampler around it) under accelerator.prepare: refused before any
    batch, naming prepare_for_accelerate and the wiring."""
    _refused(results[f"{setting}/{name}"], name)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", BATCH + WEIGHTED)
def test_prepare_for_accelerate_stays_exact(results, name):
    """The supported path is untouched by the check: exactly the plan, for every sampler."""
    _exact(results[f"prepare_for_accelerate/{name}"], skip=False)
