"""Smoke: the class-batch benchmark and the metric-learning launch run at tiny sizes."""

from __future__ import annotations

import json
import sys

import pytest
from _launch import ROOT, launch

from benchmarks import pk_batches


def test_benchmark_reports_positives_build_and_first_batch(tmp_path, capsys):
    out = tmp_path / "pk.json"
    argv = ["--size", "2e4", "--classes", "2e3", "--huge", "1e6", "--worlds", "1,4"]
    assert pk_batches.main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| W | random | m-per-class (strided) | ours |" in text
    rec = json.loads(out.read_text())
    assert [r["ours"] for r in rec["positives"]] == [1.0, 1.0]  # every anchor has a positive
    assert rec["positives"][1]["m-per-class"] < 0.1  # K = W = 4: strided blocks lose them
    assert rec["first_batch"]["n"] == 10**6


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_train_metric_runs_under_torchrun():
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    script = str(ROOT / "launch" / "train_metric.py")
    out = launch([*run, script, "--seeds", "0", "--epochs", "1", "--classes", "60"], 150)
    assert "| random |" in out and "| ours |" in out
