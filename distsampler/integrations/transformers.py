"""HF ``transformers.Trainer``: our samplers sharded once, set to every epoch, resumed exactly.

Plain ``Trainer`` gets our (already rank-aware) samplers wrong in four ways:

1. a sampler returned from ``_get_train_sampler`` is dealt out once more by Accelerate's
   ``BatchSamplerShard``: each rank trains on ``1 / W**2`` of the plan;
2. one built for one process is dealt out correctly, but Accelerate's ``even_batches`` pads a
   short round with the epoch's first batches (two ranks train the same batch);
3. the quota batch sampler cannot be returned at all (Trainer passes it as ``sampler=``);
4. on resume, Trainer calls ``accelerate.skip_first_batches`` *before* ``set_epoch``; the
   loader it builds (``SkipBatchSampler``) has no ``set_epoch`` to pass on, so the resumed epoch
   and every later one replay epoch 0. No sampler state is saved in checkpoints either.

:class:`SamplerTrainerMixin` replaces the train loader and the resume path, nothing else:

* the loader is built around :class:`~distsampler.integrations.AccelerateBatches` (each local
  batch repeated ``W`` times), so Accelerate's round-robin is a pass-through: every rank trains
  on exactly the batches the sampler gives under plain ``torchrun``, in order, and no batch is
  repeated to even out the ranks (our lengths are already equal);
* ``set_epoch(epoch)`` is called on the sampler by us at the start of every epoch;
* every checkpoint folder gets ``distsampler_state.json``: the sampler's resume point counted
  from the micro-batches the training loop really trained (prefetching workers and Accelerate's
  look-ahead run ahead of that);
* ``train(resume_from_checkpoint=...)`` loads that state and never skips batches: the sampler
  starts where the checkpoint left off, under any number of processes. Trainer's epoch and step
  bookkeeping is derived from the sampler's state (see :class:`SamplerTrainerMixin`).

Evaluation and prediction loaders are Trainer's own, untouched. Importing this module imports
``transformers``; importing :mod:`distsampler` or :mod:`distsampler.integrations` does not.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, IterableDataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, seed_worker

from .._core.state import ResumeDiscardedWarning
from ..weighted import DistributedWeightedSampler
from ._common import (
    OUR_SAMPLERS,
    OurSampler,
    check_dataset_size,
    fixed_batch_size,
    is_batch_sampler,
)
from .accelerate import AccelerateBatches
from .double_sharding import check_not_double_sharded

__all__ = ["SamplerTrainer", "SamplerTrainerMixin"]

# Trainer's hooks this module overrides or calls (written against transformers 5.23): fail at
# import, not in the middle of a run, if a transformers release renamed them.
_HOOKS = (
    "_run_epoch",
    "_init_training_state",
    "set_initial_training_values",
    "get_batch_samples",
    "_save_checkpoint",
    "_load_rng_state",
)
_missing = [name for name in _HOOKS if not callable(getattr(Trainer, name, None))]
if _missing:
    import transformers

    raise ImportError(
        f"distsampler.integrations.transformers needs Trainer.{', Trainer.'.join(_missing)}, "
        f"which transformers {transformers.__version__} does not have (written for 5.23)"
    )

#: File in every checkpoint folder that holds the sampler's resume point (JSON).
_STATE_FILE = "distsampler_state.json"
_TRAINER_STATE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME


class _TrainerBatches(AccelerateBatches):
    """:class:`AccelerateBatches` that honours ``dataloader_drop_last`` for the weighted sampler.

    The quota sampler's batches are always full; the weighted sampler's last local batch may be
    short, and ``drop_last=True`` drops it, as ``DataLoader(batch_size=B, drop_last=True)``
    does under plain torchrun.
    """

    def __init__(
        self, sampler: OurSampler, batch_size: int, num_processes: int, drop_last: bool
    ) -> None:
        quota = is_batch_sampler(sampler)
        super().__init__(sampler, None if quota else batch_size, num_processes)
        self.local_batch_size = batch_size
        self.drop_short = bool(drop_last) and not quota

    def local_batches(self) -> Iterator[list[int]]:
        for batch in super().local_batches():
            if self.drop_short and len(batch) < self.local_batch_size:
                return
            yield batch

    def num_local_batches(self) -> int:
        """Local batches of the next pass (the rest of the epoch after a loaded state)."""
        if is_batch_sampler(self.sampler):
            return len(self.sampler)
        items, b = len(self.sampler), self.local_batch_size
        return items // b if self.drop_short else -(-items // b)

    def __len__(self) -> int:
        return self.num_local_batches() * self.num_processes


class _EpochProgress(TrainerCallback):
    """Counts the micro-batches the loop trained in the current epoch; keeps ``state.epoch``.

    Trainer calls ``on_substep_end`` after every micro-batch but the last of an optimizer step
    and ``on_step_end`` after the last one, so ``used`` counts trained batches, not fetched ones.
    """

    def __init__(self) -> None:
        self.epoch, self.offset, self.length, self.used = 0, 0, 1, 0

    def begin(self, epoch: int, offset: int, length: int) -> None:
        self.epoch, self.offset, self.length, self.used = epoch, offset, max(1, length), 0

    def on_substep_end(self, args, state, control, **kwargs):
        self.used += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.used += 1
        # Trainer computes epoch + step / steps_in_epoch from the batches of this pass; after a
        # resume the pass starts `offset` batches into the epoch.
        state.epoch = self.epoch + (self.offset + self.used) / self.length


@dataclass(frozen=True)
class _Resume:
    """Where a resumed run starts, from the sampler's state (the one source of truth)."""

    checkpoint: str
    sampler_state: dict
    global_step: int
    saved_world: int
    epoch: int  # the sampler state's epoch
    remaining: int  # local batches left in that epoch under this world (0: it is complete)

    @property
    def first_epoch(self) -> int:
        return self.epoch if self.remaining else self.epoch + 1


if TYPE_CHECKING:  # the mixin is always mixed into a Trainer: type-check it as one
    _TrainerBase = Trainer
else:
    _TrainerBase = object


class SamplerTrainerMixin(_TrainerBase):
    """Train on a distsampler sampler under ``transformers.Trainer``, resume included.

    Put it first: ``class MyTrainer(SamplerTrainerMixin, transformers.Trainer)``, or use
    :class:`SamplerTrainer`. Pass ``train_sampler=`` (keyword) next to Trainer's arguments::

        sampler = DistributedWeightedSampler(labels=labels, block_size=16, seed=0)
        trainer = SamplerTrainer(model=model, args=args, train_dataset=ds, train_sampler=sampler)
        trainer.train()  # or trainer.train(resume_from_checkpoint=True)

    Args:
        train_sampler: a :class:`~distsampler.DistributedWeightedSampler` with
            ``block_size == args.per_device_train_batch_size`` or a
            :class:`~distsampler.DistributedQuotaBatchSampler` with that ``batch_size``, built
            the normal way (under torchrun it finds its rank itself), over ``train_dataset``.
            With ``train_sampling_strategy="group_by_length"`` (``group_by_length=True``
            before transformers 5) a weighted or quota sampler becomes the source of a
            :class:`~distsampler.DistributedBucketBatchSampler` (lengths from the dataset's
            ``length_column_name`` column, else its ``input_ids``), and ``self.train_sampler``
            is that bucketed sampler: the loader, ``set_epoch``, checkpoints and resume all
            use it. Trainer's other sampling strategies are refused.

    Guarantees, under ``torchrun --nproc_per_node=W`` with any ``gradient_accumulation_steps``
    and ``dataloader_num_workers``: each rank trains on exactly the sampler's local batches, in
    order, every epoch (no second sharding, no loop-back padding, equal step counts); the
    sampler's ``set_epoch`` is called at every epoch start, the resumed one included; each
    checkpoint holds ``distsampler_state.json`` and a resume continues with exactly the batches
    the uninterrupted run trained after that checkpoint.

    Resuming under another number of processes continues the same global stream: the rest of
    the checkpoint's epoch is dealt round-robin over the new ranks, then whole epochs follow.
    Trainer's bookkeeping follows the sampler: the run resumes in the checkpoint's epoch,
    ``global_step`` continues from the checkpoint, ``state.epoch`` counts the new world's
    batches, and ``max_steps`` becomes ``global_step`` plus the optimizer steps the remaining
    data gives (epoch-based runs; the LR schedule therefore ends with the data). With
    ``args.max_steps > 0`` the target is kept and enough epochs are scheduled to reach it.

    Traps:
        ``args.ignore_data_skip=True`` keeps Trainer's own behaviour: the sampler state is not
        loaded and the checkpoint's epoch restarts from its first batch. ``auto_find_batch_size``
        and Accelerate's ``split_batches``/``dispatch_batches`` are refused (the batch size is
        the sampler's, and each rank draws its own batches), as are ``data_seed`` other than
        the sampler's ``seed`` (it would seed Trainer's own, unused sampler) and
        ``dataloader_drop_last=True`` with token-budget batches (none has a fixed size).
        Batches of a fixed size (quota, bucketed) are always full: ``dataloader_drop_last``
        drops only a weighted sampler's short last batch.
    """

    train_sampler: OurSampler

    def __init__(self, *args: Any, train_sampler: OurSampler | None = None, **kwargs: Any) -> None:
        if not isinstance(train_sampler, OUR_SAMPLERS):
            raise TypeError(
                f"{type(self).__name__} needs train_sampler=, a DistributedWeightedSampler or one "
                "of distsampler's batch samplers (DistributedQuotaBatchSampler, ...), "
                f"but got {type(train_sampler).__name__}"
            )
        super().__init__(*args, **kwargs)
        self.train_sampler = train_sampler
        self._check_setup()  # the sampler as given: its batch size, world and dataset
        self.train_sampler = _group_by_length(train_sampler, self.args, self.train_dataset)
        if self.train_sampler is not train_sampler:
            self._check_setup()  # the length-bucketed sampler that now decides the batches
        # The loader, the epoch, the checkpoints and the resume all go through
        # self.train_sampler (the bucketed one with group_by_length), never the source.
        self._distsampler_batches = _TrainerBatches(
            self.train_sampler,
            self.args.per_device_train_batch_size,
            self.accelerator.num_processes,
            self.args.dataloader_drop_last,
        )
        self._distsampler_progress = _EpochProgress()
        # first, so that every other callback sees the corrected state.epoch
        self.callback_handler.callbacks.insert(0, self._distsampler_progress)
        self._distsampler_resume: _Resume | None = None
        self._distsampler_length = 0  # local batches of a full epoch
        self._distsampler_rng: str | None = None  # checkpoint whose RNG state is still to load

    # -- checks ----------------------------------------------------------------------------
    def _check_setup(self) -> None:
        args, sampler = self.args, self.train_sampler
        batch = args.per_device_train_batch_size
        if is_batch_sampler(sampler):
            fixed = fixed_batch_size(sampler)
            if fixed is not None and fixed != batch:
                raise ValueError(
                    f"the {type(sampler).__name__}'s batch_size={fixed} differs from "
                    f"per_device_train_batch_size={batch}: build it with batch_size={batch} "
                    f"(or set per_device_train_batch_size={fixed})"
                )
            if fixed is None and args.dataloader_drop_last:
                raise ValueError(
                    "dataloader_drop_last=True drops a short last batch, but the "
                    f"{type(sampler).__name__}'s batches have no fixed size (a token budget): "
                    "none is short, so it would drop nothing. Leave dataloader_drop_last "
                    "False (the sampler's own drop_last= drops the epoch's last incomplete round)"
                )
        elif isinstance(sampler, DistributedWeightedSampler) and sampler.block_size != batch:
            raise ValueError(
                f"the weighted sampler's block_size={sampler.block_size} differs from "
                f"per_device_train_batch_size={batch}: build it with block_size={batch} "
                f"(or set per_device_train_batch_size={sampler.block_size}), so that each "
                "rank's batches are whole blocks of the plan"
            )
        data_seed = getattr(args, "data_seed", None)
        if data_seed is not None and data_seed != sampler.seed:
            raise ValueError(
                f"data_seed={data_seed} seeds Trainer's own sampler, which a "
                f"{type(self).__name__} never uses: the train_sampler's seed={sampler.seed} "
                f"decides the order. Build the sampler with seed={data_seed}, or leave "
                "data_seed unset"
            )
        if args.auto_find_batch_size:
            raise ValueError(
                "auto_find_batch_size=True changes the batch size, which the sampler fixes: "
                "turn it off"
            )
        if self._train_batch_size != batch:
            raise ValueError(
                f"Trainer uses a batch of {self._train_batch_size} per process (DataParallel over "
                f"{args.n_gpu} GPUs); launch one process per GPU with torchrun instead"
            )
        acc = self.accelerator
        if acc.split_batches or acc.dispatch_batches is True:
            raise ValueError(
                "accelerator_config split_batches / dispatch_batches split or broadcast one "
                "process's batches; the sampler already gives each rank its own: leave both off"
            )
        if (sampler.num_replicas, sampler.rank) != (acc.num_processes, acc.process_index):
            raise ValueError(
                f"the sampler is rank {sampler.rank} of num_replicas={sampler.num_replicas} but "
                f"this Trainer process is rank {acc.process_index} of {acc.num_processes}: build "
                "the sampler in the launched process without num_replicas/rank (it reads the "
                "world from torchrun)"
            )
        if self.train_dataset is not None:
            self._check_dataset(self.train_dataset)

    def _check_dataset(self, dataset: Any) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise TypeError(
                "train_dataset should be a map-style dataset (with __len__ and __getitem__): the "
                "sampler draws indices into it"
            )
        check_dataset_size(self.train_sampler, dataset)

    # -- the train loader ------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        """A prepared loader that yields exactly the sampler's local batches on every rank."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset, args = self.train_dataset, self.args
        self._check_dataset(dataset)
        collator = self.data_collator
        if _is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description="Training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="Training")
        workers = args.dataloader_num_workers
        loader = DataLoader(
            dataset,
            batch_sampler=self._distsampler_batches,
            collate_fn=collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context if workers else None,
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            in_order=args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index),
        )
        prepared = self.accelerator.prepare(loader)
        check_not_double_sharded(prepared)
        return prepared

    # -- resume ----------------------------------------------------------------------------
    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """Trainer's ``train``; the sampler's state in the checkpoint decides where data resumes."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint is None:
                raise ValueError(
                    f"No valid checkpoint found in output directory ({self.args.output_dir})"
                )
        elif checkpoint is False:
            checkpoint = None
        self._distsampler_length = self._full_epoch_batches()
        self._distsampler_resume = self._read_resume(checkpoint)
        try:
            return super().train(checkpoint, *args, **kwargs)
        finally:
            self._distsampler_resume = self._distsampler_rng = None

    def _full_epoch_batches(self) -> int:
        """Local batches of a whole epoch, with any loaded resume point dropped.

        ``set_epoch`` to another epoch starts that epoch from its beginning (the documented
        rule); coming back to the current epoch then gives its whole length.
        """
        sampler = self.train_sampler
        epoch = sampler.epoch
        with warnings.catch_warnings():  # dropping a loaded state here is deliberate
            warnings.simplefilter("ignore", ResumeDiscardedWarning)
            sampler.set_epoch(epoch + 1)
            sampler.set_epoch(epoch)
        return self._distsampler_batches.num_local_batches()

    def _read_resume(self, checkpoint: str | None) -> _Resume | None:
        if checkpoint is None or self.args.ignore_data_skip:
            return None
        path = os.path.join(checkpoint, _STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint was not written by a SamplerTrainer, so it "
                "holds no sampler resume point. Pass ignore_data_skip=True in TrainingArguments "
                "to restart the checkpoint's epoch from its first batch instead"
            )
        with open(path) as f:
            saved = json.load(f)
        step = TrainerState.load_from_json(os.path.join(checkpoint, _TRAINER_STATE)).global_step
        if saved.get("global_step") != step:
            raise ValueError(
                f"{path} was written at global step {saved.get('global_step')} but the "
                f"checkpoint's trainer state is at step {step}: the folder mixes two runs"
            )
        sampler = self.train_sampler
        sampler.load_state_dict(saved["sampler"])  # raises on another seed/dataset/config
        resume = _Resume(
            checkpoint=checkpoint,
            sampler_state=saved["sampler"],
            global_step=step,
            saved_world=int(saved["num_processes"]),
            epoch=sampler.epoch,
            remaining=self._distsampler_batches.num_local_batches(),
        )
        # Back to whole epochs until the resumed epoch starts: Trainer sizes its schedule from
        # len(train_dataloader), which must be a full epoch. _run_epoch loads the state again.
        self._full_epoch_batches()
        return resume

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple:
        """Trainer's values; after a resume under another world size, steps fit the data left."""
        values = super().set_initial_training_values(args, dataloader)
        resume = self._distsampler_resume
        if resume is None or resume.saved_world == self.accelerator.num_processes:
            return values  # same world: Trainer's own numbers already match the sampler
        epochs, per_epoch, examples, samples, total_batch, steps_in_epoch, max_steps = values
        ga = args.gradient_accumulation_steps
        first = math.ceil(resume.remaining / ga)  # optimizer steps left in the resumed epoch
        after = resume.first_epoch + (1 if resume.remaining else 0)  # first untouched epoch
        if args.max_steps > 0:
            left = max(0, max_steps - resume.global_step - first)
            epochs = after + math.ceil(left / per_epoch)
        else:
            epochs = math.ceil(args.num_train_epochs)
            cut = epochs * per_epoch - math.ceil(args.num_train_epochs * per_epoch)
            max_steps = resume.global_step + first + max(0, epochs - after) * per_epoch - cut
        return epochs, per_epoch, examples, samples, total_batch, steps_in_epoch, max_steps

    def _init_training_state(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        epochs_trained, steps_trained = super()._init_training_state(*args, **kwargs)
        resume = self._distsampler_resume
        if resume is None:
            return epochs_trained, steps_trained
        offset = self._distsampler_length - resume.remaining if resume.remaining else 0
        return resume.first_epoch, offset

    def _run_epoch(self, **kwargs: Any):  # type: ignore[override]  # Trainer passes keywords
        """Set the sampler to this epoch (after loading the resume point, in the resumed one).

        The resumed epoch runs as a pass over the batches left: Trainer skips nothing (no
        ``skip_first_batches``) and its step count and gradient accumulation start from the
        resume point.
        """
        epoch, resume = kwargs["epoch"], self._distsampler_resume
        sampler, batches = self.train_sampler, self._distsampler_batches
        resumed = resume is not None and resume.remaining > 0 and epoch == resume.epoch
        if resume is not None and resumed:
            sampler.load_state_dict(resume.sampler_state)
        sampler.set_epoch(epoch)
        steps = batches.num_local_batches()
        if resume is not None and resumed:
            ga = self.args.gradient_accumulation_steps
            kwargs.update(
                steps_in_epoch=steps,
                num_update_steps_per_epoch=math.ceil(steps / ga),
                steps_trained_in_current_epoch=0,
                resume_from_checkpoint=None,  # no skipping; we restore the RNG ourselves
            )
            self._distsampler_rng = resume.checkpoint
        self._distsampler_progress.begin(
            epoch, self._distsampler_length - steps, self._distsampler_length
        )
        return super()._run_epoch(**kwargs)

    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: Any) -> Any:
        """Trainer's; restores the checkpoint's RNG after the resumed epoch's first fetch."""
        out = super().get_batch_samples(epoch_iterator, num_batches, device)
        checkpoint, self._distsampler_rng = self._distsampler_rng, None
        if checkpoint is not None:
            self._load_rng_state(checkpoint)  # where Trainer restores it after skipping batches
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def _distsampler_state(self) -> dict:
        """The sampler's resume point after the micro-batches the loop trained (JSON-safe)."""
        sampler, progress = self.train_sampler, self._distsampler_progress
        per_batch = 1 if is_batch_sampler(sampler) else None
        items = progress.used * (per_batch or self.args.per_device_train_batch_size)
        return sampler.state_dict(consumed=items)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        saved = {
            "global_step": int(self.state.global_step),
            "num_processes": int(self.accelerator.num_processes),
            "sampler": self._distsampler_state(),
        }
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, _STATE_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(saved, f, indent=1)
            os.replace(tmp, os.path.join(folder, _STATE_FILE))
        super()._save_checkpoint(model, trial)


def _group_by_length(sampler: OurSampler, args: Any, dataset: Any) -> OurSampler:
    """Length grouping (``train_sampling_strategy="group_by_length"``, or ``group_by_length=True``
    before transformers 5): the sampler's stream in length-bucketed batches, or a refusal.

    A weighted or quota sampler becomes the source of a
    :class:`~distsampler.DistributedBucketBatchSampler` with ``per_device_train_batch_size``,
    the lengths read from the dataset's ``args.length_column_name`` column, else from the
    lengths of its ``input_ids`` (never by iterating the dataset's samples). A bucket sampler
    passes as it is.
    """
    from ..bucketed import DistributedBucketBatchSampler
    from ..quota import DistributedQuotaBatchSampler
    from ..sizes import from_hf_dataset
    from ..weighted import DistributedWeightedSampler

    strategy = getattr(args, "train_sampling_strategy", "random")  # transformers >= 5
    if strategy not in ("random", "group_by_length"):
        raise ValueError(
            f"train_sampling_strategy={strategy!r} would replace the order the train_sampler "
            "decides; leave it at 'random' (or 'group_by_length' for length-bucketed batches)"
        )
    if not (getattr(args, "group_by_length", False) or strategy == "group_by_length"):
        return sampler
    if isinstance(sampler, DistributedBucketBatchSampler):
        return sampler
    names = getattr(dataset, "column_names", None) or []
    column = next((c for c in (args.length_column_name, "input_ids") if c in names), None)
    if column is None or not isinstance(
        sampler, (DistributedWeightedSampler, DistributedQuotaBatchSampler)
    ):
        raise ValueError(
            "group_by_length needs each sample's length: a datasets.Dataset with a "
            f"{args.length_column_name!r} or 'input_ids' column and a weighted or quota "
            "train_sampler; or pass train_sampler=DistributedBucketBatchSampler(source, "
            "sizes, batch_size=per_device_train_batch_size) yourself"
        )
    return DistributedBucketBatchSampler(
        sampler,
        from_hf_dataset(dataset, column),
        batch_size=args.per_device_train_batch_size,
        seed=sampler.seed,
        num_replicas=sampler.num_replicas,
        rank=sampler.rank,
    )


class SamplerTrainer(SamplerTrainerMixin, Trainer):
    """``transformers.Trainer`` with ``train_sampler=``; see :class:`SamplerTrainerMixin`."""


def _is_hf_dataset(dataset: Any) -> bool:
    """A ``datasets.Dataset`` (its module is loaded if the object exists)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(dataset, datasets.Dataset)
