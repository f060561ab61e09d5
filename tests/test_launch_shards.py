"""launch/train_shards.py: DDP training over tar shards served by a loopback HTTP server.

A real ``torchrun --nproc_per_node=4`` (gloo, CPU) of the demo, checked through its output and
its ``--log-json``: four ranks trained, each epoch after the first fetched at most 1.35x the
shards' bytes (the ranks' counters and the server's own count), every full batch held the
minority at its target share, the minority's test recall ended above 0, and rank 0 removed its
temporary directory (shards and cache) at the end. The shard writer is checked in-process.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from _launch import launch

from distsampler.shards import ShardedDataset, ShardLayout
from launch import train_shards

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "train_shards.py"
SHARE = 0.25  # the script's --minority-share default
LATER_EPOCHS_MAX = 1.35  # bytes of an epoch after the first, as a multiple of the shards'


def torchrun(*args: str, timeout: float = 120) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    return launch([*cmd, str(SCRIPT), *args], timeout)


def check_run(out: str, log: dict, epochs: int) -> None:
    assert int(re.search(r"^world size: (\d+)", out, re.M).group(1)) == 4
    assert log["world_size"] == 4
    metrics = log["metrics"]
    assert [m["epoch"] for m in metrics] == list(range(epochs))
    for m in metrics:
        assert len(m["batches"]) == 4 and min(m["batches"]) > 0, m["batches"]  # 4 ranks trained
        assert len(set(m["batches"])) == 1  # the same number of steps on every rank
        assert m["share_min"] == m["share_max"] == SHARE  # every full local batch: the target
        assert m["shards_fetched"] > 0
    total = log["shard_bytes"]
    for m in metrics[1:]:  # the first epoch also gathers the resident minority
        assert m["bytes_fetched"] <= LATER_EPOCHS_MAX * total, (m, total)
        assert m["bytes_served"] <= LATER_EPOCHS_MAX * total, (m, total)  # the server's count
    assert metrics[-1]["recall"] > 0
    assert out.count(f"batches/rank {metrics[0]['batches']}") == epochs  # printed every epoch
    assert "| epoch | bytes fetched |" in out  # the table of the docs
    assert not Path(log["temp_dir"]).exists()  # shards and cache removed, the server stopped


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_torchrun_four_ranks_over_http_shards(tmp_path) -> None:
    log = tmp_path / "log.json"
    out = torchrun("--epochs", "3", "--log-json", str(log))
    doc = json.loads(log.read_text())
    assert "class-mixed shards" in out and not doc["class_pure"]
    check_run(out, doc, epochs=3)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_torchrun_class_pure_shards(tmp_path) -> None:
    """Shards written class by class: the resident minority keeps every batch at its share."""
    log = tmp_path / "log.json"
    out = torchrun("--class-pure", "--epochs", "2", "--log-json", str(log))
    doc = json.loads(log.read_text())
    assert "class-pure shards" in out and doc["class_pure"]
    check_run(out, doc, epochs=2)


@pytest.mark.parametrize("pure", [False, True])
def test_written_shards_are_what_the_layout_reads(tmp_path, pure) -> None:
    """Every sample of the split in one shard of ``size``; class-pure shards hold one class
    (but the shard at the boundary), class-mixed ones mix them as the split does; a sample
    decodes to its pixels and label."""
    x = np.arange(230 * 64, dtype=np.float32).reshape(230, 64)
    y = (np.arange(230) % 10 == 3).astype(np.int64)
    names = train_shards.write_shards(tmp_path / "src", x, y, 50, class_pure=pure)
    layout = ShardLayout.from_webdataset([str(tmp_path / "src" / n) for n in names], labels="cls")
    assert layout.sizes.tolist() == [50, 50, 50, 50, 30]
    data = ShardedDataset(layout, cache_dir=tmp_path / "cache")
    keys = [int(data[i]["__key__"]) for i in range(len(data))]
    assert sorted(keys) == list(range(230))
    assert np.array_equal(layout.labels, y[keys])
    classes = [len(set(layout.labels[a:b].tolist())) for a, b in map(layout.shard_range, range(5))]
    assert classes == ([1, 1, 1, 1, 2] if pure else [2] * 5)
    for i in (0, 229):
        pixels, label = train_shards.decode(data[i])
        assert label == y[keys[i]] and np.array_equal(pixels.numpy(), x[keys[i]])
