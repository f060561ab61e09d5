"""Real ``lightning.Trainer.fit`` runs (CPU, ``strategy="ddp"`` with one process).

With its default ``use_distributed_sampler=True`` Lightning rebuilds the train loader under a
distributed strategy, even with one process: it re-creates a batch sampler as
``cls(sampler, batch_size=..., drop_last=...)``, which fails for the bucket, quota and class
batch samplers with a ``TypeError`` about a missing ``sizes``/``quotas`` argument.
``check_lightning_trainer`` called from ``on_fit_start`` fails first, naming the fix.

The fits run in one spawned interpreter: Lightning's DDP strategy initialises a process group,
which must not leak into the other tests.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import pytest

pytest.importorskip("lightning")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N, B = 64, 8
KINDS = ["bucket", "quota", "class", "weighted"]


def make(kind: str):
    from distsampler import (
        DistributedBucketBatchSampler,
        DistributedClassBatchSampler,
        DistributedQuotaBatchSampler,
        DistributedWeightedSampler,
    )

    labels = [i % 4 for i in range(N)]
    if kind == "bucket":
        source = DistributedWeightedSampler(labels=labels, block_size=B)
        return DistributedBucketBatchSampler(source, [1 + i % 7 for i in range(N)], batch_size=B)
    if kind == "quota":
        return DistributedQuotaBatchSampler(labels, B, {0: 2})
    if kind == "class":
        return DistributedClassBatchSampler(labels, 2, B // 2)
    return DistributedWeightedSampler(labels=labels, block_size=B)


def fits(cases: list[tuple[str, bool, bool]]) -> list[tuple[str, str]]:
    """For each ``(kind, use_distributed_sampler, check)``: ``Trainer.fit`` for one epoch;
    ``("ok", steps == batches)`` or the exception's type and message."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from distsampler.integrations.lightning import check_lightning_trainer

    torch.set_num_threads(1)
    data = TensorDataset(torch.randn(N, 2), torch.randn(N))

    class Module(L.LightningModule):
        def __init__(self, kind: str, check: bool) -> None:
            super().__init__()
            self.kind, self.check = kind, check
            self.lin = torch.nn.Linear(2, 1)
            self.batches = 0

        def train_dataloader(self):
            sampler = make(self.kind)
            self.batches = len(sampler) if self.kind != "weighted" else -(-len(sampler) // B)
            if self.kind == "weighted":
                return DataLoader(data, batch_size=B, sampler=sampler)
            return DataLoader(data, batch_sampler=sampler)

        def on_fit_start(self) -> None:
            if self.check:
                check_lightning_trainer(self.trainer)

        def training_step(self, batch, i):
            x, y = batch
            return ((self.lin(x).squeeze(-1) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    out = []
    for kind, flag, check in cases:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            strategy="ddp",
            max_epochs=1,
            use_distributed_sampler=flag,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        module = Module(kind, check)
        try:
            trainer.fit(module)
            out.append(("ok", str(trainer.global_step == module.batches)))
        except Exception as e:  # reported to the test
            out.append((type(e).__name__, str(e)))
    return out


CASES = [(k, flag, check) for k in KINDS for flag, check in [(True, True), (False, True)]]
CASES += [(k, True, False) for k in KINDS[:3]]


@pytest.fixture(scope="module")
def outcomes() -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return dict(zip(CASES, pool.submit(fits, CASES).result(timeout=240), strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_the_check_names_use_distributed_sampler_false_through_fit(outcomes, kind):
    name, message = outcomes[(kind, True, True)]
    assert name == "ValueError", message
    assert "Trainer(use_distributed_sampler=False)" in message


@pytest.mark.parametrize("kind", KINDS)
def test_with_use_distributed_sampler_false_the_epoch_trains(outcomes, kind):
    assert outcomes[(kind, False, True)] == ("ok", "True")


@pytest.mark.parametrize("kind", KINDS[:3])
def test_without_the_check_lightning_fails_on_our_batch_samplers(outcomes, kind):
    """Without the check, Lightning's rebuild still fails with a message that says why and names
    the fix (in 0.3: ``__init__() missing 1 required positional argument: 'sizes'``)."""
    name, message = outcomes[(kind, True, False)]
    assert name == "TypeError", message
    assert "use_distributed_sampler=False" in message, message
