"""Real launches on CPU (gloo): torchrun and launch/train.py, accelerate launch and
launch/train_accelerate.py, a 2-process Lightning DDP run.

Every launcher runs in its own process group with a hard timeout (the whole group is killed),
``OMP_NUM_THREADS=1``, torchrun ``--standalone`` (a free rendezvous port). The scripts write
every rank's batches (dataset indices) with --log-json; the tests rebuild the global plan in
this process and check the launches against it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _launch import launch

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler, weights

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
B, QUOTA = 32, 8  # the scripts' defaults: local batch size, minority count (share 0.25)

pytestmark = pytest.mark.slow


def _train_module():
    spec = importlib.util.spec_from_file_location("launch_train", LAUNCH / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Y_TRAIN = _train_module().load_data()[1]


def torchrun(nproc: int, *args: str, timeout: float = 90) -> str:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return launch([*run, f"--nproc_per_node={nproc}", str(LAUNCH / "train.py"), *args], timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate(nproc: int, *args: str, timeout: float = 90) -> str:
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(LAUNCH / "accelerate_config.yaml"), "--num_processes", str(nproc)]
    cmd += ["--main_process_port", str(free_port()), str(LAUNCH / "train_accelerate.py"), *args]
    return launch(cmd, timeout)


def world_size(out: str) -> int:
    return int(re.search(r"^world size: (\d+)", out, re.M).group(1))


def quota_plan(log: dict) -> dict[tuple[int, int], list[int]]:
    """(epoch, global micro-batch) -> dataset indices, from the ranks' logged batches.

    Rank r's k-th batch of a pass that started at micro-batch ``start`` is ``start + k*W + r``
    (docs/design.md: round-robin blocks, the rest of a resumed epoch dealt from rank 0).
    """
    w, plan = log["world_size"], {}
    for rec in log["records"]:
        key = (rec["epoch"], rec["start"] + rec["step"] * w + rec["rank"])
        assert key not in plan, f"plan position {key} taken twice"
        plan[key] = rec["indices"]
    return plan


def reference_quota() -> DistributedQuotaBatchSampler:
    return DistributedQuotaBatchSampler(Y_TRAIN, B, {1: QUOTA}, num_replicas=1, rank=0, seed=0)


@pytest.fixture(scope="module")
def torchrun_full(tmp_path_factory) -> tuple[str, dict]:
    """An uninterrupted 4-process quota run of 2 epochs."""
    log = tmp_path_factory.mktemp("full") / "log.json"
    out = torchrun(4, "--sampler", "quota", "--epochs", "2", "--log-json", str(log))
    return out, json.loads(log.read_text())


@pytest.mark.timeout(120)
def test_torchrun_four_ranks_disjoint_equal_balanced(torchrun_full) -> None:
    out, log = torchrun_full
    assert world_size(out) == 4 and log["world_size"] == 4
    ref = reference_quota()
    per_rank = 1 + (ref.epoch_batches - 1) // 4
    assert out.count(f"batches/rank {[per_rank] * 4}") == 2  # printed for both epochs
    counts = Counter((r["epoch"], r["rank"]) for r in log["records"])
    assert set(counts.values()) == {per_rank}  # every rank, every epoch: the same count
    plan = quota_plan(log)  # raises on a position taken twice: rank-disjoint
    for epoch in (0, 1):
        taken = sorted(m for e, m in plan if e == epoch)
        assert taken == list(range(4 * per_rank))  # contiguous: nothing skipped
        want = ref.batches(np.array(taken), epoch)
        got = np.array([plan[epoch, m] for m in taken])
        assert np.array_equal(got, want)  # the plan's own batches, in order
        assert (Y_TRAIN[got].sum(axis=1) == QUOTA).all()  # the quota, exact, every batch
    assert plan[0, 0] != plan[1, 0]  # set_epoch changed the plan
    assert "minority/batch 0.250 (full batches: min 0.250, max 0.250)" in out


@pytest.mark.timeout(150)
def test_sigterm_checkpoint_resumes_under_two_ranks(torchrun_full, tmp_path) -> None:
    """Rank 0 gets SIGTERM after 5 steps of a 4-process run: all ranks stop at that step
    boundary and save; 2 processes resume: together exactly the uninterrupted run's batches."""
    ckpt, log_a, log_b = tmp_path / "ck.pt", tmp_path / "a.json", tmp_path / "b.json"
    common = ["--sampler", "quota", "--epochs", "2", "--checkpoint", str(ckpt)]
    out = torchrun(4, *common, "--stop-after-steps", "5", "--log-json", str(log_a))
    assert "stopped on purpose in epoch 0" in out and "batches/rank [5, 5, 5, 5]" in out
    state = torch.load(ckpt, weights_only=True)["sampler"]
    assert state["epoch"] == 0 and state["consumed"] == 5 * 4  # micro-batches of all ranks
    out = torchrun(2, *common, "--resume", str(ckpt), "--log-json", str(log_b))
    assert world_size(out) == 2 and "resumed from" in out
    a, b = quota_plan(json.loads(log_a.read_text())), quota_plan(json.loads(log_b.read_text()))
    assert not set(a) & set(b)  # nothing repeated
    full = quota_plan(torchrun_full[1])
    resumed = {**a, **b}
    assert set(resumed) == set(full)  # nothing lost
    assert all(resumed[key] == full[key] for key in full)  # the same batch at every position


def weighted_native(world: int, rank: int, epoch: int) -> list[list[int]]:
    """Rank ``rank``'s batches of launch/train.py's weighted sampler under torchrun."""
    s = DistributedWeightedSampler(
        labels=Y_TRAIN,
        class_weights=weights.target_shares({1: 0.25, 0: 0.75}),
        num_replicas=world,
        rank=rank,
        seed=0,
        block_size=B,
    )
    s.set_epoch(epoch)
    stream = list(s)
    return [stream[i : i + B] for i in range(0, len(stream), B)]


def batches_by_rank(log: dict) -> dict[tuple[int, int], list[list[int]]]:
    out: dict[tuple[int, int], list[list[int]]] = {}
    for rec in sorted(log["records"], key=lambda r: (r["epoch"], r["rank"], r["step"])):
        out.setdefault((rec["epoch"], rec["rank"]), []).append(rec["indices"])
    return out


@pytest.fixture(scope="module")
def accelerate_full(tmp_path_factory) -> tuple[str, dict]:
    log = tmp_path_factory.mktemp("acc") / "log.json"
    out = accelerate(2, "--sampler", "weighted", "--epochs", "2", "--log-json", str(log))
    return out, json.loads(log.read_text())


@pytest.mark.timeout(120)
def test_accelerate_launch_two_processes_match_torchrun(accelerate_full) -> None:
    """accelerate launch really starts 2 processes, and each gets exactly its torchrun batches."""
    out, log = accelerate_full
    assert world_size(out) == 2 and log["world_size"] == 2
    # stratified shares 0.25 with block_size=B: every full local batch holds exactly 8 of 32
    assert out.count("(full batches: min 0.250, max 0.250)") == 2
    got = batches_by_rank(log)
    for epoch in (0, 1):
        for rank in (0, 1):
            assert got[epoch, rank] == weighted_native(2, rank, epoch)
        assert len(got[epoch, 0]) == len(got[epoch, 1])
    assert got[0, 0] != got[1, 0]  # loader.set_epoch reached the sampler


@pytest.mark.timeout(150)
def test_accelerate_save_state_resumes_under_one_process(accelerate_full, tmp_path) -> None:
    """save_state on SIGTERM (2 processes) carries the sampler's resume point; 1 process resumes
    with load_state: the union is the uninterrupted run's stream, position by position."""
    ckpt, log_a, log_b = tmp_path / "state", tmp_path / "a.json", tmp_path / "b.json"
    common = ["--sampler", "weighted", "--epochs", "2", "--checkpoint", str(ckpt)]
    out = accelerate(2, *common, "--stop-after-steps", "4", "--log-json", str(log_a))
    assert "stopped on purpose in epoch 0" in out
    out = accelerate(1, *common, "--resume", str(ckpt), "--log-json", str(log_b))
    assert world_size(out) == 1
    a, b = json.loads(log_a.read_text()), json.loads(log_b.read_text())
    full = batches_by_rank(accelerate_full[1])
    for epoch in (0, 1):
        # global order of the 2-process run: round-robin over ranks, batch by batch
        stream = [x for pair in zip(full[epoch, 0], full[epoch, 1], strict=True) for x in pair]
        stream = [i for batch in stream for i in batch]
        first = batches_by_rank(a).get((epoch, 0), []), batches_by_rank(a).get((epoch, 1), [])
        head = [i for pair in zip(*first, strict=True) for batch in pair for i in batch]
        tail = [i for batch in batches_by_rank(b)[epoch, 0] for i in batch]
        assert head + tail == stream


@pytest.mark.timeout(150)
def test_accelerate_skip_first_batches_resumes_same_world(accelerate_full, tmp_path) -> None:
    """--resume-mode skip: no sampler state, accelerator.skip_first_batches replays the epoch's
    first batches on each rank (same world size only): the run still ends up equal."""
    ckpt, log_a, log_b = tmp_path / "state", tmp_path / "a.json", tmp_path / "b.json"
    common = ["--epochs", "2", "--checkpoint", str(ckpt), "--resume-mode", "skip"]
    accelerate(2, *common, "--stop-after-steps", "3", "--log-json", str(log_a))
    accelerate(2, *common, "--resume", str(ckpt), "--log-json", str(log_b))
    a = batches_by_rank(json.loads(log_a.read_text()))
    b = batches_by_rank(json.loads(log_b.read_text()))
    for key, batches in batches_by_rank(accelerate_full[1]).items():
        assert a.get(key, []) + b[key] == batches


LIGHTNING_SCRIPT = """
import json, sys
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from distsampler import DistributedWeightedSampler
from distsampler.integrations import check_lightning_trainer, check_not_double_sharded

OUT, LABELS = sys.argv[1], [1] * 10 + [0] * 190

class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net, self.seen = torch.nn.Linear(1, 2), []

    def train_dataloader(self):  # the process group exists here: the sampler finds its rank
        sampler = DistributedWeightedSampler(labels=LABELS, block_size=8, seed=1)
        data = TensorDataset(torch.zeros(200, 1), torch.tensor(LABELS), torch.arange(200))
        return DataLoader(data, batch_size=8, sampler=sampler)

    def on_train_start(self):  # the recipe: fail fast if Lightning would shard again
        check_lightning_trainer(self.trainer)
        check_not_double_sharded(self.trainer.train_dataloader)
        self.checked = True

    def training_step(self, batch, i):
        x, y, idx = batch
        self.seen.append([self.current_epoch, idx.tolist()])
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_end(self):
        out = {"world": self.trainer.world_size, "seen": self.seen, "checked": self.checked}
        with open(f"{OUT}/rank{self.global_rank}.json", "w") as f:
            json.dump(out, f)

trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=2,
                    use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Module())

from launch.teardown import exit_now  # gloo can abort a finished run at exit

exit_now(0)
"""


@pytest.mark.timeout(90)
def test_lightning_ddp_keeps_our_sharding(tmp_path) -> None:
    """Trainer(strategy="ddp", devices=2, use_distributed_sampler=False): each rank trains on
    exactly its sampler's batches, and Lightning's per-epoch set_epoch reaches the sampler."""
    pytest.importorskip("lightning")
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING_SCRIPT)
    launch([sys.executable, str(script), str(tmp_path)], timeout=80)
    for rank in (0, 1):
        run = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert run["world"] == 2 and run["checked"]  # check_lightning_trainer passed
        for epoch in (0, 1):
            s = DistributedWeightedSampler(
                labels=[1] * 10 + [0] * 190, num_replicas=2, rank=rank, block_size=8, seed=1
            )
            s.set_epoch(epoch)
            stream = list(s)
            want = [stream[i : i + 8] for i in range(0, len(stream), 8)]
            assert [idx for e, idx in run["seen"] if e == epoch] == want
