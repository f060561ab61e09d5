"""Class batches through the integrations: Accelerate, torchdata, SamplerTrainer.

The integrations accept any batch-plan sampler (its ``batch_size`` is ``P * K``); these tests
check that the prepared loaders yield exactly the sampler's batches and resume exactly.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import interleave
from torch.utils.data import DataLoader, TensorDataset

from distsampler import DistributedClassBatchSampler
from distsampler.integrations import find_sampler_state, prepare_for_accelerate

N = 240
LABELS = (np.arange(N) * 13 % 24).tolist()  # 24 classes of 10
DATASET = TensorDataset(torch.arange(N))
P, K = 3, 4


def make(world: int = 1, rank: int = 0) -> DistributedClassBatchSampler:
    return DistributedClassBatchSampler(LABELS, P, K, num_replicas=world, rank=rank, seed=2)


def plain(epoch: int, world: int = 1, rank: int = 0) -> list[list[int]]:
    s = make(world, rank)
    s.set_epoch(epoch)
    return [[int(i) for i in b] for b in s]


def test_prepare_for_accelerate_yields_the_samplers_batches():
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    sampler = make()
    loader, ckpt = prepare_for_accelerate(acc, DATASET, sampler)
    loader.set_epoch(1)  # reaches the sampler
    got = [b[0].tolist() for b in ckpt.track(loader)]
    assert sampler.epoch == 1 and got == plain(1)
    assert all(len(b) == P * K for b in got)


@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.timeout(60)
def test_torchdata_stateful_loader_resumes_under_another_world():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    s = make(2, 0)
    s.set_epoch(1)
    dl = sdl.StatefulDataLoader(DATASET, batch_sampler=s, num_workers=2)
    it = iter(dl)
    first = [next(it)[0].tolist() for _ in range(2)]
    buf = io.BytesIO()
    torch.save(dl.state_dict(), buf)
    rest = [b[0].tolist() for b in it]
    assert first + rest == plain(1, 2, 0)
    buf.seek(0)
    state = find_sampler_state(torch.load(buf, weights_only=True))
    assert state["consumed"] == 2 * 2
    resumed = []
    for rank in range(3):
        r = make(3, rank)
        r.load_state_dict(state)
        r.set_epoch(1)
        resumed.append([b[0].tolist() for b in DataLoader(DATASET, batch_sampler=r)])
    done = interleave([plain(1, 2, 0)[:2], plain(1, 2, 1)[:2]])
    got = done + interleave(resumed)
    assert got == [list(map(int, b)) for b in make().batches(np.arange(len(got)), epoch=1)]


@pytest.mark.timeout(120)
def test_sampler_trainer_trains_an_epoch_of_class_batches(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from distsampler.integrations.transformers import SamplerTrainer

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return {"x": torch.ones(2) * i, "labels": torch.tensor(float(LABELS[i]))}

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            out = self.lin(x).squeeze(-1)
            return {"loss": ((out - labels) ** 2).mean(), "logits": out}

    sampler = make()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=P * K,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        num_train_epochs=1,
    )
    t = SamplerTrainer(model=Tiny(), args=args, train_dataset=Rows(), train_sampler=sampler)
    out = t.train()
    assert out.global_step == len(sampler)


@pytest.mark.timeout(120)
def test_lightning_trains_on_the_samplers_batches_and_sets_its_epoch(tmp_path):
    L = pytest.importorskip("lightning")
    from distsampler.integrations import check_lightning_trainer

    seen: list[tuple[int, list[int]]] = []

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def training_step(self, batch, _):
            seen.append((self.current_epoch, batch[0].tolist()))
            return self.lin(batch[0].float()[:, None]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return DataLoader(DATASET, batch_sampler=make())

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    check_lightning_trainer(trainer)
    trainer.fit(Module())
    for epoch in (0, 1):
        assert [b for e, b in seen if e == epoch] == plain(epoch)
