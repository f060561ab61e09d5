"""HF Trainer on an imbalanced set with a distsampler sampler: two lines differ from Trainer.

    torchrun --standalone --nproc_per_node=2 launch/train_trainer.py --sampler quota
    torchrun --standalone --nproc_per_node=2 launch/train_trainer.py --sampler weighted \\
        --output-dir runs/w --save-steps 5
    # continue from a checkpoint, under any number of processes:
    torchrun --standalone --nproc_per_node=1 launch/train_trainer.py --sampler weighted \\
        --output-dir runs/w1 --resume runs/w/checkpoint-5
    # batches of similar length (train_sampling_strategy="group_by_length"):
    torchrun --standalone --nproc_per_node=2 launch/train_trainer.py --group-by-length

The model is a tiny classifier built in code (no download) that returns ``{"loss", "logits"}``;
the data set is synthetic: 200 samples, 10% of them minority. The only changes from a plain
``Trainer`` script: build the sampler, and use ``SamplerTrainer(..., train_sampler=sampler)``
(or put ``SamplerTrainerMixin`` first in your own Trainer subclass, ``--trainer mixin``).

``--group-by-length`` gives every sample a length (a long-tailed token count, in a ``length``
column) and sets ``train_sampling_strategy="group_by_length"``: SamplerTrainer then cuts the
sampler's stream into batches of similar length, and rank 0 prints the padded tokens per real
token of the batches it trained.

``--log-dir DIR`` writes, per rank, every optimizer step's micro-batches (dataset indices) and
the sampler's epoch: the tests compare them with the sampler's own plan.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler
from distsampler.integrations.transformers import SamplerTrainer, SamplerTrainerMixin

NUM_SAMPLES, MINORITY_SHARE, FEATURES = 200, 0.1, 8
QUOTA = 2  # minority samples in every local quota batch


def make_labels(n: int = NUM_SAMPLES) -> list[int]:
    """1 = minority: every 10th sample."""
    step = round(1 / MINORITY_SHARE)
    return [int(i % step == 0) for i in range(n)]


class ImbalancedSet(Dataset):
    """Dict samples, as Trainer's collator expects: features, label, and the sample's index."""

    def __init__(self, labels: list[int], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.tensor(labels)
        self.x = torch.randn(len(labels), FEATURES, generator=g) + self.labels[:, None] * 1.5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": int(self.labels[i]), "index": i}


def make_lengths(n: int = NUM_SAMPLES) -> list[int]:
    """Token counts of a long-tailed text set (lognormal, 2 to 512), fixed by a seed of 0."""
    lengths = np.random.default_rng(0).lognormal(3.5, 0.9, size=n).round()
    return np.clip(lengths, 2, 512).astype(int).tolist()


class LengthSet(ImbalancedSet):
    """:class:`ImbalancedSet` with a ``length`` column, as a ``datasets.Dataset`` has.

    ``dataset["length"]`` and ``column_names`` are all that length grouping reads; with a
    ``datasets.Dataset`` of token ids the ``input_ids`` column is used when there is none.
    """

    column_names = ("x", "labels", "index", "length")

    def __init__(self, labels: list[int], lengths: list[int], seed: int = 0) -> None:
        super().__init__(labels, seed)
        self.lengths = list(lengths)

    def __getitem__(self, key):  # a column by name, else a sample
        if key == "length":
            return self.lengths
        return super().__getitem__(key)


def padding_ratio(batches: list[list[int]], lengths: list[int]) -> float:
    """Padded tokens per real token: each batch padded to its longest sample."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return padded / sum(lengths[i] for b in batches for i in b)


class TinyClassifier(nn.Module):
    """Any nn.Module works with Trainer if it returns a dict with "loss" when given labels."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURES, 2)
        self.trained: list[list[int]] = []  # indices of every training micro-batch (for --log-dir)

    def forward(self, x, labels=None, index=None):
        logits = self.linear(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        if self.training and index is not None:
            self.trained.append(index.tolist())
        return out


class CountingTrainer(SamplerTrainerMixin, Trainer):
    """A Trainer subclass of your own: put SamplerTrainerMixin first."""

    micro_batches = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.micro_batches += 1
        return super().training_step(model, inputs, num_items_in_batch)


class BatchLog(TrainerCallback):
    """After every optimizer step: its micro-batches, the sampler's epoch and Trainer's state."""

    def __init__(self, model: TinyClassifier, sampler) -> None:
        self.model, self.sampler, self.mark, self.records = model, sampler, 0, []

    def on_step_end(self, args, state, control, **kwargs):
        batches = self.model.trained[self.mark :]
        self.mark = len(self.model.trained)
        self.records.append(
            {
                "epoch": self.sampler.epoch,
                "global_step": state.global_step,
                "state_epoch": state.epoch,
                "batches": batches,
            }
        )


def make_sampler(kind: str, labels: list[int], batch_size: int, seed: int):
    """Built the normal way: under torchrun the sampler finds its rank and world itself."""
    if kind == "weighted":
        # block_size = per-device batch size: each rank's batches are whole blocks of the plan
        return DistributedWeightedSampler(labels=labels, block_size=batch_size, seed=seed)
    return DistributedQuotaBatchSampler(labels, batch_size, {1: QUOTA}, seed=seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sampler", choices=("weighted", "quota"), default="quota")
    p.add_argument("--trainer", choices=("sampler", "mixin"), default="sampler")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="per-device batch size")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument(
        "--group-by-length", action="store_true", help="batches of similar length (a length column)"
    )
    p.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: off)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/trainer"))
    p.add_argument("--resume", help="a checkpoint folder, or 'last'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", type=Path, help="write rank<r>.json with the trained batches")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    labels = make_labels()
    if args.group_by_length:
        dataset = LengthSet(labels, make_lengths(), seed=args.seed)
    else:
        dataset = ImbalancedSet(labels, seed=args.seed)
    model = TinyClassifier()
    training_args = TrainingArguments(
        output_dir=str(args.output_dir),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        num_train_epochs=args.epochs,
        learning_rate=1e-2,
        dataloader_num_workers=args.workers,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() else "gloo",
        report_to=[],
        ddp_find_unused_parameters=False,
        logging_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        length_column_name="length",
    )
    sampler = make_sampler(args.sampler, labels, args.batch_size, args.seed)
    cls = CountingTrainer if args.trainer == "mixin" else SamplerTrainer
    trainer = cls(model=model, args=training_args, train_dataset=dataset, train_sampler=sampler)
    log = BatchLog(model, trainer.train_sampler)  # the bucketed one with --group-by-length
    trainer.add_callback(log)
    resume = True if args.resume == "last" else args.resume
    trainer.train(resume_from_checkpoint=resume)

    rank, world = trainer.args.process_index, trainer.args.world_size
    if trainer.is_world_process_zero():
        state = trainer.state
        print(
            f"world size: {world} ({args.sampler}): {state.global_step} optimizer steps, "
            f"epoch {state.epoch:.3f} of {state.num_train_epochs}",
            flush=True,
        )
        if args.group_by_length:
            ratio = padding_ratio(model.trained, dataset.lengths)
            print(f"rank 0 padded tokens per real token: {ratio:.2f}", flush=True)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        out = {
            "world_size": world,
            "rank": rank,
            "records": log.records,
            "global_step": trainer.state.global_step,
            "max_steps": trainer.state.max_steps,
            "state_epoch": trainer.state.epoch,
            "micro_batches": getattr(trainer, "micro_batches", None),
        }
        (args.log_dir / f"rank{rank}.json").write_text(json.dumps(out))
    # Release DDP while every rank is still alive, then the process group: a DDP model freed
    # after its gloo group is gone can hang the process on exit.
    accelerator = trainer.accelerator
    accelerator.free_memory()
    del trainer, model, log
    gc.collect()
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    main()
    exit_now(0)  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
