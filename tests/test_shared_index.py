"""One copy per node, with real processes: local rank 0 builds and saves, every rank maps.

``launch/shared_index.py`` runs under a real ``torchrun``; each rank reports its anonymous
(private) memory growth from /proc/self/smaps_rollup and whether the mapped samplers yield
exactly the indices of in-memory ones.
"""

import json
import sys
from pathlib import Path

import pytest
from _launch import ROOT, launch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def shared_index(*args: str) -> list[str]:
    """``launch/shared_index.py`` under a real torchrun with 2 ranks."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [*run, str(ROOT / "launch" / "shared_index.py"), *args]


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_ranks_map_one_saved_index(tmp_path):
    log = tmp_path / "report.json"
    launch(
        shared_index("--num-samples=10000000", f"--dir={tmp_path / 'index'}", f"--log-json={log}"),
        timeout=200,
    )
    reports = json.loads(log.read_text())
    assert [r["rank"] for r in reports] == [0, 1] and {r["world"] for r in reports} == {2}
    for r in reports:
        assert all(r["same"].values()), r
        # One private copy of the label index alone is 40 MB at N = 1e7 (the weight index
        # 120 MB more): the ranks must hold neither.
        assert r["anonymous_mb"] < 32, r
    saved = tmp_path / "index"
    assert (saved / "labels" / "members.npy").exists() and (
        saved / "weights" / "meta.json"
    ).exists()


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_a_temporary_index_is_removed_and_said(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the script's mkdtemp puts the index
    out = launch(shared_index("--num-samples=100000", "--take=1000"), timeout=120)
    assert "removed the temporary index" in out, out
    assert not list(tmp_path.glob("distsampler-shared-*"))  # nothing left behind
