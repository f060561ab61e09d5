"""SamplerTrainer's loader yields the batches of the sampler that decides them: length grouping.

With ``train_sampling_strategy="group_by_length"`` the train_sampler becomes the source of a
:class:`DistributedBucketBatchSampler`. The loader used to be built from the source instead, so
the training step received the source's unbucketed batches (about twice the padding), and a
resume loaded the bucketed sampler's state while the loader counted the source's epoch (a
mid-epoch checkpoint restarted its epoch). Every test here records the batches the training
step receives (the model's forward, called from ``training_step``) and compares them with the
bucketed sampler's own plan, built in this process; the multi-process ones run
``launch/train_trainer.py --group-by-length`` under ``torchrun`` (CPU, gloo).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
from _launch import launch

pytest.importorskip("transformers")

from transformers import TrainerCallback, TrainingArguments

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
)
from distsampler._core.state import ResumeDiscardedWarning
from distsampler.integrations.transformers import SamplerTrainer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "train_trainer.py"
B, QUOTA = 8, 2  # the script's batch size and minority quota


def _script():
    spec = importlib.util.spec_from_file_location("train_trainer_loader", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _script()
LABELS = script.make_labels()
LENGTHS = script.make_lengths()
N = len(LABELS)


def source(kind: str, world: int = 1, rank: int = 0, batch_size: int = B):
    """The script's sampler (seed 0), for ``rank`` of ``world``."""
    if kind == "weighted":
        return DistributedWeightedSampler(
            labels=LABELS, block_size=batch_size, seed=0, num_replicas=world, rank=rank
        )
    return DistributedQuotaBatchSampler(
        LABELS, batch_size, {1: QUOTA}, seed=0, num_replicas=world, rank=rank
    )


def plan(kind: str, world: int, rank: int, epoch: int, batch_size: int = B) -> list[list[int]]:
    """``rank``'s batches in ``epoch``: the bucketed sampler SamplerTrainer is documented to
    build (the source's seed, ``per_device_train_batch_size``, default window and align)."""
    src = source(kind, world, rank, batch_size)
    sampler = DistributedBucketBatchSampler(
        src, LENGTHS, batch_size=batch_size, seed=0, num_replicas=world, rank=rank
    )
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def source_batches(kind: str, epoch: int) -> list[list[int]]:
    """The source's own batches in one process (what an unbucketed loader trains)."""
    src = source(kind)
    src.set_epoch(epoch)
    items = list(src)
    if kind == "quota":
        return items
    return [items[i : i + B] for i in range(0, len(items), B)]


# -- real torchrun runs -------------------------------------------------------------------------


def train(tmp: Path, nproc: int, *args: str, timeout: float = 100) -> list[dict]:
    """One torchrun launch of the script with ``--group-by-length``; every rank's log."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    logs = tmp / "logs"
    cmd = [*run, f"--nproc_per_node={nproc}", str(SCRIPT), "--output-dir", str(tmp / "out")]
    launch([*cmd, "--log-dir", str(logs), "--group-by-length", *args], timeout)
    return [json.loads((logs / f"rank{r}.json").read_text()) for r in range(nproc)]


def batches(log: dict, after_step: int = 0) -> dict[int, list[list[int]]]:
    """epoch -> the micro-batches a rank trained, in order, in steps after ``after_step``."""
    out: dict[int, list[list[int]]] = {}
    for rec in log["records"]:
        if rec["global_step"] > after_step:
            out.setdefault(rec["epoch"], []).extend(rec["batches"])
    return out


def state_epochs(log: dict) -> dict[int, float]:
    return {rec["global_step"]: rec["state_epoch"] for rec in log["records"]}


QUOTA_ARGS = ("--sampler", "quota", "--trainer", "mixin", "--grad-accum", "2")


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 processes, weighted source: 25 bucketed batches a round, 13 a rank an epoch (the 26th
    micro-batch comes from the continuation), a checkpoint every 5 steps."""
    tmp = tmp_path_factory.mktemp("bucketed_weighted")
    return tmp, train(tmp, 2, "--sampler", "weighted", "--save-steps", "5")


@pytest.fixture(scope="module")
def quota_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 processes, quota source in a user's subclass, 2 micro-batches per optimizer step:
    15 batches a rank an epoch, 8 steps (the last one short), a checkpoint every 3 steps."""
    tmp = tmp_path_factory.mktemp("bucketed_quota")
    return tmp, train(tmp, 2, *QUOTA_ARGS, "--workers", "1", "--save-steps", "3")


def check_full_run(kind: str, logs: list[dict], per_rank: int, ga: int) -> None:
    """Each rank trained exactly its bucketed batches; equal steps; padding as bucketed."""
    steps_per_epoch = -(-per_rank // ga)
    for log in logs:
        got = batches(log)
        assert sorted(got) == [0, 1]
        for epoch in (0, 1):
            assert got[epoch] == plan(kind, 2, log["rank"], epoch)  # in order, nothing else
        assert got[0] != got[1]  # set_epoch reached the bucketed sampler
        assert len(log["records"]) == 2 * steps_per_epoch == log["global_step"]
        assert log["max_steps"] == log["global_step"] and log["state_epoch"] == pytest.approx(2)
        used = 0  # state.epoch = epoch + trained batches / batches per epoch
        for rec in log["records"]:
            used = used % per_rank + len(rec["batches"])
            assert rec["state_epoch"] == pytest.approx(rec["epoch"] + used / per_rank)
    assert [len(batches(log)[0]) for log in logs] == [per_rank, per_rank]  # equal on both ranks
    assert logs[0]["records"] != logs[1]["records"]
    for epoch in (0, 1):  # padded tokens per real token: bucketed, not the source's batches
        trained = [b for log in logs for b in batches(log)[epoch]]
        assert script.padding_ratio(trained, LENGTHS) < 1.35
        assert script.padding_ratio(source_batches(kind, epoch), LENGTHS) > 2.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_weighted_source_each_rank_trains_the_bucketed_batches(weighted_run) -> None:
    _, logs = weighted_run
    check_full_run("weighted", logs, per_rank=13, ga=1)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quota_source_gradient_accumulation_and_worker(quota_run) -> None:
    _, logs = quota_run
    check_full_run("quota", logs, per_rank=15, ga=2)
    for log in logs:
        assert log["micro_batches"] == 30  # the user's own training_step saw every batch
        assert [len(r["batches"]) for r in log["records"]][:8] == [2] * 7 + [1]
        for batch in (b for rec in log["records"] for b in rec["batches"]):
            assert sum(LABELS[i] for i in batch) == QUOTA  # quotas survive the bucketing


def check_same_world_resume(full: list[dict], resumed: list[dict], step: int) -> None:
    for a, b in zip(full, resumed, strict=True):
        assert batches(b) == batches(a, after_step=step)  # exactly the rest, nothing replayed
        assert b["global_step"] == a["global_step"] and b["max_steps"] == a["max_steps"]
        want = {s: e for s, e in state_epochs(a).items() if s > step}
        assert state_epochs(b) == pytest.approx(want)
        assert b["state_epoch"] == pytest.approx(2)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_weighted_source_resume_mid_epoch_0(weighted_run, tmp_path) -> None:
    tmp, full = weighted_run
    ckpt = tmp / "out" / "checkpoint-5"
    assert json.loads((ckpt / "distsampler_state.json").read_text())["sampler"]["epoch"] == 0
    resumed = train(tmp_path, 2, "--sampler", "weighted", "--resume", str(ckpt))
    check_same_world_resume(full, resumed, step=5)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quota_source_resume_mid_epoch_1(quota_run, tmp_path) -> None:
    """checkpoint-9: one step (2 micro-batches) into epoch 1."""
    tmp, full = quota_run
    ckpt = tmp / "out" / "checkpoint-9"
    assert json.loads((ckpt / "distsampler_state.json").read_text())["sampler"]["epoch"] == 1
    resumed = train(tmp_path, 2, *QUOTA_ARGS, "--resume", str(ckpt))
    check_same_world_resume(full, resumed, step=9)


# -- in one process -----------------------------------------------------------------------------


class StepLog(TrainerCallback):
    """``state.epoch`` after every optimizer step (runs after SamplerTrainer's own callback)."""

    def __init__(self) -> None:
        self.epochs: dict[int, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        self.epochs[state.global_step] = state.epoch


def make_trainer(sampler, out: Path, dataset=None, **overrides) -> SamplerTrainer:
    options = dict(per_device_train_batch_size=B, use_cpu=True, report_to=[], disable_tqdm=True)
    options.update(save_strategy="no", output_dir=str(out), num_train_epochs=2)
    options.update(train_sampling_strategy="group_by_length", length_column_name="length")
    args = TrainingArguments(**{**options, **overrides})
    dataset = script.LengthSet(LABELS, LENGTHS) if dataset is None else dataset
    trainer = SamplerTrainer(
        model=script.TinyClassifier(), args=args, train_dataset=dataset, train_sampler=sampler
    )
    trainer.add_callback(StepLog())
    return trainer


def trained(trainer: SamplerTrainer) -> list[list[int]]:
    return trainer.model.trained


def epochs_of(trainer: SamplerTrainer) -> dict[int, float]:
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, StepLog)).epochs


@pytest.mark.parametrize(
    ("kind", "step", "epoch"),
    [("weighted", 10, 0), ("weighted", 35, 1), ("quota", 10, 0), ("quota", 40, 1)],
)
def test_one_process_resume_mid_epoch_is_exact(kind, step, epoch, tmp_path) -> None:
    """One process: 25 (weighted) or 30 (quota) bucketed batches an epoch; a checkpoint
    mid-epoch 0 or mid-epoch 1 resumes with exactly the uninterrupted run's next batches."""
    per_epoch = len(plan(kind, 1, 0, 0))
    full = make_trainer(source(kind), tmp_path, save_strategy="steps", save_steps=step)
    full.train()
    assert trained(full) == plan(kind, 1, 0, 0) + plan(kind, 1, 0, 1)
    assert full.state.epoch == pytest.approx(2) and full.state.global_step == 2 * per_epoch
    saved = json.loads((tmp_path / f"checkpoint-{step}" / "distsampler_state.json").read_text())
    assert saved["sampler"]["epoch"] == epoch

    resumed = make_trainer(source(kind), tmp_path)
    with warnings.catch_warnings():  # no spurious "resume point dropped" warning either
        warnings.simplefilter("error", ResumeDiscardedWarning)
        resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{step}"))
    assert trained(resumed) == trained(full)[step:]
    assert epochs_of(resumed) == pytest.approx(
        {s: e for s, e in epochs_of(full).items() if s > step}
    )
    assert resumed.state.epoch == pytest.approx(2)
    assert resumed.state.global_step == resumed.state.max_steps == 2 * per_epoch


def test_one_process_loader_pads_as_the_bucketed_plan(tmp_path) -> None:
    trainer = make_trainer(source("weighted"), tmp_path, num_train_epochs=1)
    trainer.train()
    assert trained(trainer) == plan("weighted", 1, 0, 0)
    assert script.padding_ratio(trained(trainer), LENGTHS) < 1.35
    assert script.padding_ratio(source_batches("weighted", 0), LENGTHS) > 2.0


def test_dataloader_drop_last_with_group_by_length_trains_full_bucketed_batches(tmp_path) -> None:
    """Batches of 12: the source's 200 samples end in a short batch, which drop_last drops from
    unbucketed batches; bucketed, the short batch is filled from the source's continuation, so
    every batch is full and nothing is dropped: 17 batches of 12."""
    trainer = make_trainer(
        source("weighted", batch_size=12),
        tmp_path,
        num_train_epochs=1,
        per_device_train_batch_size=12,
        dataloader_drop_last=True,
    )
    trainer.train()
    want = plan("weighted", 1, 0, 0, batch_size=12)
    assert [len(b) for b in want] == [12] * 17
    assert trained(trainer) == want


def test_group_by_length_checks_the_sources_batch_size(tmp_path) -> None:
    quota = source("quota", batch_size=16)
    with pytest.raises(ValueError, match=r"batch_size=16 .* build it with batch_size=8"):
        make_trainer(quota, tmp_path)
    weighted = source("weighted", batch_size=4)
    with pytest.raises(ValueError, match=r"block_size=4 .* build it with block_size=8"):
        make_trainer(weighted, tmp_path)


def test_data_seed_other_than_the_samplers_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"data_seed=5 .* sampler with seed=5"):
        make_trainer(source("weighted"), tmp_path, data_seed=5)
    trainer = make_trainer(source("quota"), tmp_path, data_seed=0)  # the sampler's own: fine
    assert trainer.train_sampler.seed == 0


def test_dataloader_drop_last_with_a_token_budget_is_refused(tmp_path) -> None:
    budget = DistributedBucketBatchSampler(
        source("weighted"), LENGTHS, max_tokens=1024, num_replicas=1, rank=0
    )
    with pytest.raises(ValueError, match="dataloader_drop_last=True .* no fixed size"):
        make_trainer(budget, tmp_path, dataloader_drop_last=True)
    trainer = make_trainer(budget, tmp_path, num_train_epochs=1)  # without it: its batches
    trainer.train()
    again = DistributedBucketBatchSampler(
        source("weighted"), LENGTHS, max_tokens=1024, num_replicas=1, rank=0
    )
    assert trained(trainer) == [list(b) for b in again]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_process_checkpoint_resumes_in_one(weighted_run, tmp_path) -> None:
    """checkpoint-15 of the 2-process run (epoch 1, 4 of 25 bucketed micro-batches trained) in
    this process: the other 21 of the same global stream, then the run ends at epoch 2."""
    tmp, full = weighted_run
    trainer = make_trainer(source("weighted"), tmp_path)
    trainer.train(resume_from_checkpoint=str(tmp / "out" / "checkpoint-15"))
    rest = [b for r in zip(*(batches(log, 15)[1] for log in full), strict=True) for b in r]
    assert trained(trainer) == plan("weighted", 1, 0, 1)[4:] == rest[:21]
    assert trainer.state.global_step == trainer.state.max_steps == 15 + 21
    assert epochs_of(trainer)[16] == pytest.approx(1 + 5 / 25)
    assert trainer.state.epoch == pytest.approx(2)
