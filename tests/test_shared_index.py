"""One copy per node, with real processes: local rank 0 builds and saves, every rank maps.

``launch/shared_index.py`` runs under a real ``torchrun``; each rank reports its anonymous
(private) memory growth from /proc/self/smaps_rollup and whether the mapped samplers yield
exactly the indices of in-memory ones.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_ranks_map_one_saved_index(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    log = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "launch" / "shared_index.py"),
        "--num-samples=10000000",
        f"--dir={tmp_path / 'index'}",
        f"--log-json={log}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
