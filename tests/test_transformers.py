"""HF Trainer: SamplerTrainer / SamplerTrainerMixin under real torchrun launches (CPU, gloo).

launch/train_trainer.py trains a tiny model on a synthetic imbalanced set and logs, per rank,
the micro-batches (dataset indices) of every optimizer step. Two uninterrupted 2-process runs
(weighted sampler; quota sampler through a user's subclass with gradient accumulation and a
worker) write checkpoints; four resumed runs start from those checkpoints, two of them under
one process. Everything is checked against the samplers' own plans built in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _launch import launch

pytest.importorskip("transformers")

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "train_trainer.py"
B, QUOTA, N = 8, 2, 200  # the script's batch size, minority quota, dataset size
LABELS = [int(i % 10 == 0) for i in range(N)]  # the script's make_labels()


def train(tmp: Path, nproc: int, *args: str, timeout: float = 100) -> list[dict]:
    """One torchrun launch of the script; returns every rank's log."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    logs = tmp / "logs"
    cmd = [*run, f"--nproc_per_node={nproc}", str(SCRIPT), "--output-dir", str(tmp / "out")]
    launch([*cmd, "--log-dir", str(logs), *args], timeout)
    return [json.loads((logs / f"rank{r}.json").read_text()) for r in range(nproc)]


def make(kind: str, world: int, rank: int):
    if kind == "weighted":
        return DistributedWeightedSampler(
            labels=LABELS, block_size=B, seed=0, num_replicas=world, rank=rank
        )
    return DistributedQuotaBatchSampler(
        LABELS, B, {1: QUOTA}, seed=0, num_replicas=world, rank=rank
    )


def plan(kind: str, world: int, rank: int, epoch: int) -> list[list[int]]:
    """Local batches of ``rank`` in ``epoch`` under plain torchrun (DataLoader(batch_size=B))."""
    sampler = make(kind, world, rank)
    sampler.set_epoch(epoch)
    items = list(sampler)
    if kind == "quota":
        return items
    return [items[i : i + B] for i in range(0, len(items), B)]


def batches(log: dict, after_step: int = 0) -> dict[int, list[list[int]]]:
    """epoch -> the micro-batches a rank trained, in order, in steps after ``after_step``."""
    out: dict[int, list[list[int]]] = {}
    for rec in log["records"]:
        if rec["global_step"] > after_step:
            out.setdefault(rec["epoch"], []).extend(rec["batches"])
    return out


def interleave(logs: list[dict], after_step: int) -> dict[int, list[int]]:
    """epoch -> the global stream of indices: the ranks' batches read round-robin."""
    per_rank = [batches(log, after_step) for log in logs]
    out: dict[int, list[int]] = {}
    for epoch in per_rank[0]:
        rounds = zip(*(r[epoch] for r in per_rank), strict=True)
        out[epoch] = [i for batch_round in rounds for batch in batch_round for i in batch]
    return out


def state_epochs(log: dict) -> dict[int, float]:
    return {rec["global_step"]: rec["state_epoch"] for rec in log["records"]}


@pytest.fixture(scope="module")
def weighted(tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 processes, weighted sampler, 2 epochs of 13 steps, a checkpoint every 5 steps."""
    tmp = tmp_path_factory.mktemp("weighted")
    return tmp, train(tmp, 2, "--sampler", "weighted", "--save-steps", "5")


@pytest.fixture(scope="module")
def quota(tmp_path_factory) -> tuple[Path, list[dict]]:
    """2 processes, quota sampler in a user's Trainer subclass (the mixin), 2 micro-batches per
    optimizer step (15 a rank an epoch: 8 steps, the last one short), a prefetching worker."""
    tmp = tmp_path_factory.mktemp("quota")
    args = ["--sampler", "quota", "--trainer", "mixin", "--grad-accum", "2", "--workers", "1"]
    return tmp, train(tmp, 2, *args, "--save-steps", "3")


def check_full_run(kind: str, logs: list[dict], steps_per_epoch: int, ga: int) -> None:
    """Every rank trained exactly its torchrun batches; ranks read together give the plan."""
    for log in logs:
        got = batches(log)
        assert sorted(got) == [0, 1]
        for epoch in (0, 1):
            assert got[epoch] == plan(kind, 2, log["rank"], epoch)  # in order, nothing else
        assert got[0] != got[1]  # set_epoch reached the sampler
        steps = [len(rec["batches"]) for rec in log["records"]]
        per_epoch = len(got[0])
        assert len(steps) == 2 * steps_per_epoch == log["global_step"] == log["max_steps"]
        assert steps[:steps_per_epoch] == [ga] * (per_epoch // ga) + [per_epoch % ga] * (
            per_epoch % ga > 0
        )
        used = 0  # state.epoch = epoch + trained batches / batches per epoch
        for rec in log["records"]:
            used = used % per_epoch + len(rec["batches"])
            assert rec["state_epoch"] == pytest.approx(rec["epoch"] + used / per_epoch)
    assert logs[0]["records"] != logs[1]["records"]
    assert [len(batches(log)[0]) for log in logs] == [len(batches(logs[0])[0])] * 2  # equal
    for epoch, stream in interleave(logs, 0).items():  # disjoint plan positions, all of them
        assert stream == [i for batch in plan(kind, 1, 0, epoch) for i in batch]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_weighted_each_rank_trains_its_torchrun_batches(weighted) -> None:
    tmp, logs = weighted
    check_full_run("weighted", logs, steps_per_epoch=13, ga=1)  # 100 a rank: 12 x 8 + 4
    saved = sorted(p.name for p in (tmp / "out").glob("checkpoint-*"))
    assert saved == [f"checkpoint-{s}" for s in (10, 15, 20, 25, 26, 5)]
    for folder in (tmp / "out").glob("checkpoint-*"):
        state = json.loads((folder / "distsampler_state.json").read_text())  # plain JSON
        assert state["global_step"] == int(folder.name.split("-")[1])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quota_mixin_gradient_accumulation_and_worker(quota) -> None:
    tmp, logs = quota
    check_full_run("quota", logs, steps_per_epoch=8, ga=2)
    for log in logs:
        assert log["micro_batches"] == 30  # the user's own training_step saw every batch
        for batch in (b for rec in log["records"] for b in rec["batches"]):
            assert sum(LABELS[i] for i in batch) == QUOTA  # exact in every local batch
    # checkpoint-3: 3 steps of 2 micro-batches; the worker had drawn more. The saved state is
    # the sampler's own state after exactly the 6 batches the loop trained.
    saved = json.loads((tmp / "out" / "checkpoint-3" / "distsampler_state.json").read_text())
    ref = make("quota", 2, 0)
    ref.set_epoch(0)
    it = iter(ref)
    for _ in range(6):
        next(it)
    assert saved["sampler"] == ref.state_dict()


def check_same_world_resume(full: list[dict], resumed: list[dict], step: int) -> None:
    for a, b in zip(full, resumed, strict=True):
        assert batches(b) == batches(a, after_step=step)  # exactly the rest, nothing skipped
        assert b["global_step"] == a["global_step"] and b["max_steps"] == a["max_steps"]
        want = {s: e for s, e in state_epochs(a).items() if s > step}
        assert state_epochs(b) == pytest.approx(want)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_weighted_resume_mid_epoch_0(weighted, tmp_path) -> None:
    tmp, full = weighted
    ckpt = tmp / "out" / "checkpoint-5"
    resumed = train(tmp_path, 2, "--sampler", "weighted", "--resume", str(ckpt))
    check_same_world_resume(full, resumed, step=5)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quota_resume_mid_epoch_1(quota, tmp_path) -> None:
    """checkpoint-9: one step into epoch 1, in which the run would replay epoch 0 without us."""
    tmp, full = quota
    args = ["--sampler", "quota", "--trainer", "mixin", "--grad-accum", "2", "--workers", "1"]
    resumed = train(tmp_path, 2, *args, "--resume", str(tmp / "out" / "checkpoint-9"))
    check_same_world_resume(full, resumed, step=9)
    assert [log["micro_batches"] for log in resumed] == [13, 13]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_weighted_two_process_checkpoint_resumes_in_one(weighted, tmp_path) -> None:
    """checkpoint-15 of 2 processes (epoch 1, 2 steps in: 32 of 200 positions) into 1 process:
    the rest of the same global stream, 21 batches of 8; Trainer's counters follow."""
    tmp, full = weighted
    ckpt = tmp / "out" / "checkpoint-15"
    (log,) = train(tmp_path, 1, "--sampler", "weighted", "--resume", str(ckpt))
    assert log["world_size"] == 1
    got = batches(log)
    assert sorted(got) == [1]
    assert [i for batch in got[1] for i in batch] == interleave(full, after_step=15)[1]
    assert got[1] == plan("weighted", 1, 0, 1)[4:]  # 25 batches an epoch here; 4 were trained
    assert log["global_step"] == log["max_steps"] == 15 + 21
    epochs = state_epochs(log)
    assert epochs[16] == pytest.approx(1 + 5 / 25) and log["state_epoch"] == pytest.approx(2)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quota_two_process_checkpoint_resumes_in_one(quota, tmp_path) -> None:
    """checkpoint-6 (epoch 0, 24 of 30 micro-batches) into 1 process with a worker and gradient
    accumulation: the last 6 micro-batches of epoch 0 (3 steps), then all of epoch 1 (15)."""
    tmp, full = quota
    args = ["--sampler", "quota", "--trainer", "mixin", "--grad-accum", "2", "--workers", "1"]
    (log,) = train(tmp_path, 1, *args, "--resume", str(tmp / "out" / "checkpoint-6"))
    got = {e: [i for b in bs for i in b] for e, bs in batches(log).items()}
    assert got == interleave(full, after_step=6)  # the same global stream, micro-batch order
    assert [len(rec["batches"]) for rec in log["records"]] == [2, 2, 2] + [2] * 15
    assert log["global_step"] == log["max_steps"] == 6 + 3 + 15
    assert state_epochs(log)[7] == pytest.approx(0 + 26 / 30)


# -- in one process: checks at construction, the loaders left alone, imports ---------------------


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_trainer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """``make_trainer(sampler, dataset=None, **training_args)`` in this process (world of 1)."""
    from transformers import TrainingArguments

    from distsampler.integrations.transformers import SamplerTrainer

    script = _script()
    out = str(tmp_path_factory.mktemp("one"))

    def make_trainer(sampler, dataset=None, **overrides):
        dataset = script.ImbalancedSet(LABELS) if dataset is None else dataset
        options = dict(per_device_train_batch_size=B, per_device_eval_batch_size=5)
        options.update(use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no")
        options.update(output_dir=out)
        args = TrainingArguments(**{**options, **overrides})
        model = script.TinyClassifier()
        return SamplerTrainer(model=model, args=args, train_dataset=dataset, train_sampler=sampler)

    return make_trainer, script


def test_batch_size_must_match_and_the_error_names_the_value(one_process) -> None:
    make_trainer, _ = one_process
    weighted = DistributedWeightedSampler(labels=LABELS, block_size=4, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match=r"block_size=4 .* build it with block_size=8"):
        make_trainer(weighted)
    quota = DistributedQuotaBatchSampler(LABELS, 16, {1: 2}, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match=r"batch_size=16 .* build it with batch_size=8"):
        make_trainer(quota)
    with pytest.raises(TypeError, match="train_sampler"):
        make_trainer(object())


def test_dataset_size_must_match_the_sampler(one_process) -> None:
    make_trainer, script = one_process
    short = script.ImbalancedSet(LABELS[:150])
    labels = DistributedWeightedSampler(labels=LABELS, block_size=B, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="200 labels but the dataset has 150"):
        make_trainer(labels, short)
    by_weights = DistributedWeightedSampler([1.0] * N, block_size=B, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="200 weights but the dataset has 150"):
        make_trainer(by_weights, short)
    quota = DistributedQuotaBatchSampler(LABELS, B, {1: 2}, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="200 labels but the dataset has 150"):
        make_trainer(quota, short)


def test_eval_and_test_loaders_are_trainers_own(one_process) -> None:
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    from distsampler.integrations.transformers import SamplerTrainer

    for name in ("get_eval_dataloader", "get_test_dataloader", "_get_eval_sampler"):
        assert getattr(SamplerTrainer, name) is getattr(Trainer, name)

    make_trainer, script = one_process
    sampler = DistributedQuotaBatchSampler(LABELS, B, {1: 2}, num_replicas=1, rank=0)
    trainer = make_trainer(sampler)
    assert [len(b["index"]) for b in trainer.get_train_dataloader()][:2] == [B, B]
    eval_set = script.ImbalancedSet(LABELS[:12])
    for loader in (trainer.get_eval_dataloader(eval_set), trainer.get_test_dataloader(eval_set)):
        assert isinstance(loader.sampler, SequentialSampler)
        assert [b["index"].tolist() for b in loader] == [
            list(range(12))[i : i + 5] for i in (0, 5, 10)
        ]


def test_checkpoint_without_sampler_state_is_refused(one_process, tmp_path) -> None:
    make_trainer, _ = one_process
    sampler = DistributedQuotaBatchSampler(LABELS, B, {1: 2}, num_replicas=1, rank=0)
    with pytest.raises(FileNotFoundError, match="not written by a SamplerTrainer"):
        make_trainer(sampler).train(resume_from_checkpoint=str(tmp_path))


def test_importing_distsampler_never_imports_transformers() -> None:
    code = (
        "import sys, distsampler, distsampler.integrations\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_step_based_run_resumes_under_another_world_size(weighted, one_process) -> None:
    """max_steps=30 from the 2-process checkpoint-15 in this process: the target is kept, the
    remaining steps come from the same global stream (epoch 1 here: 25 batches, 4 done)."""
    tmp, full = weighted
    make_trainer, _ = one_process
    sampler = make("weighted", 1, 0)
    trainer = make_trainer(sampler, max_steps=30)
    trainer.train(resume_from_checkpoint=str(tmp / "out" / "checkpoint-15"))
    assert trainer.state.global_step == trainer.state.max_steps == 30
    assert trainer.model.trained == plan("weighted", 1, 0, 1)[4 : 4 + 15]
    assert trainer.state.epoch == pytest.approx(1 + 19 / 25)


def test_one_process_resume_and_ignore_data_skip(one_process, tmp_path) -> None:
    """In one process: checkpoint-40 (epoch 1, 10 of 30 batches in) resumes at batch 10 of epoch
    1; with ignore_data_skip=True Trainer's own rule applies: epoch 1 restarts at its first batch
    (and max_steps=60 stops it after 20)."""
    make_trainer, _ = one_process
    options = dict(output_dir=str(tmp_path), num_train_epochs=2, save_strategy="steps")
    trainer = make_trainer(make("quota", 1, 0), **options, save_steps=40)
    trainer.train()
    epochs = [plan("quota", 1, 0, e) for e in (0, 1)]
    assert trainer.model.trained == epochs[0] + epochs[1]
    assert json.loads((tmp_path / "checkpoint-40" / "distsampler_state.json").read_text())
    for skip, want in ((False, epochs[1][10:]), (True, epochs[1][:20])):
        trainer = make_trainer(make("quota", 1, 0), **options, ignore_data_skip=skip)
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-40"))
        assert trainer.model.trained == want and trainer.state.global_step == 60
