"""PyTorch Lightning: keep Lightning from wrapping our (already rank-aware) samplers.

Under a distributed strategy (``strategy="ddp"``, even with one process) Lightning rebuilds the
train ``DataLoader`` unless the trainer is built with ``Trainer(use_distributed_sampler=False)``:
it wraps an index sampler in its ``DistributedSamplerWrapper`` (a second sharding) and
re-creates a batch sampler as ``cls(sampler, batch_size=..., drop_last=...)``, which our batch
samplers do not accept (a ``TypeError`` about a missing ``sizes`` or ``quotas`` argument, or
an unexpected ``batch_size``). Build the sampler in ``train_dataloader()`` (after the process
group exists) and call :func:`check_lightning_trainer` from ``on_fit_start``, which runs before
Lightning touches the loader, to fail with the fix instead.
"""

from __future__ import annotations

from typing import Any

from .double_sharding import check_not_double_sharded

__all__ = ["check_lightning_trainer"]


def check_lightning_trainer(trainer: Any) -> None:
    """Raise if Lightning would shard or rebuild (or has sharded) our sampler.

    Checks the trainer's ``use_distributed_sampler`` setting under a distributed strategy,
    and the train loader Lightning built (:func:`check_not_double_sharded`) once it exists.
    Call it from ``on_fit_start``: it runs before Lightning rebuilds the train loader (that
    rebuild fails for the quota, bucket and class batch samplers with a ``TypeError`` that
    does not say why). From ``on_train_start`` it also checks the built loader.

    Example::

        class Module(L.LightningModule):
            def on_fit_start(self):
                check_lightning_trainer(self.trainer)

        L.Trainer(strategy="ddp", devices=8, use_distributed_sampler=False).fit(Module())

    Args:
        trainer: the ``lightning.Trainer`` (``self.trainer`` inside a ``LightningModule``).

    Raises:
        DoubleShardingError: the loader holds our sampler under a second sharding layer.
        ValueError: the trainer runs a distributed strategy with ``use_distributed_sampler=True``.
    """
    connector = getattr(trainer, "_accelerator_connector", None)
    wraps = getattr(connector, "use_distributed_sampler", False)
    distributed = getattr(connector, "is_distributed", None)
    if distributed is None:  # another Lightning layout: judge by the number of processes
        distributed = int(getattr(trainer, "world_size", 1)) > 1
    if wraps and distributed:
        raise ValueError(
            "Trainer(use_distributed_sampler=True), Lightning's default, rebuilds the train "
            "DataLoader under a distributed strategy: it wraps an index sampler in a "
            "DistributedSamplerWrapper (a second sharding) and re-creates a batch sampler as "
            "cls(sampler, batch_size=..., drop_last=...), which distsampler's batch samplers do "
            "not accept. distsampler's samplers are already rank-aware: build the trainer with "
            "Trainer(use_distributed_sampler=False)"
        )
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None and not callable(loader):
        check_not_double_sharded(loader)
