"""PyTorch Lightning: keep Lightning from wrapping our (already rank-aware) samplers.

Lightning wraps every sampler that is not a ``DistributedSampler`` in its
``DistributedSamplerWrapper`` (and re-creates custom batch samplers) unless the trainer is built
with ``Trainer(use_distributed_sampler=False)``. Build the sampler in ``train_dataloader()``
(after the process group exists) and call :func:`check_lightning_trainer` from a hook such as
``on_train_start`` to fail fast if the flag was forgotten.
"""

from __future__ import annotations

from typing import Any

from .double_sharding import check_not_double_sharded

__all__ = ["check_lightning_trainer"]


def check_lightning_trainer(trainer: Any) -> None:
    """Raise if Lightning would shard (or has sharded) our sampler a second time.

    Checks the trainer's ``use_distributed_sampler`` setting where Lightning exposes it, and
    the train loader Lightning built (:func:`check_not_double_sharded`) once it exists. Call it
    from ``on_train_start``: the loader exists then, and nothing has been trained yet.

    Example::

        class Module(L.LightningModule):
            def on_train_start(self):
                check_lightning_trainer(self.trainer)

        L.Trainer(strategy="ddp", devices=8, use_distributed_sampler=False).fit(Module())

    Args:
        trainer: the ``lightning.Trainer`` (``self.trainer`` inside a ``LightningModule``).

    Raises:
        DoubleShardingError: the loader holds our sampler under a second sharding layer.
        ValueError: the trainer runs several processes with ``use_distributed_sampler=True``.
    """
    connector = getattr(trainer, "_accelerator_connector", None)
    wraps = getattr(connector, "use_distributed_sampler", False)
    if wraps and int(getattr(trainer, "world_size", 1)) > 1:
        raise ValueError(
            "Lightning wraps every sampler in a DistributedSamplerWrapper; distsampler's "
            "samplers are already rank-aware: build the trainer with "
            "Trainer(use_distributed_sampler=False)"
        )
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None and not callable(loader):
        check_not_double_sharded(loader)
