"""Glue for training frameworks: our samplers, sharded exactly once, resumed exactly.

One module per framework, each importing its framework only when used:

=====================  ==================================================================
module                 what it gives
=====================  ==================================================================
``accelerate``         :func:`prepare_for_accelerate`, :class:`AccelerateBatches`
``lightning``          :func:`check_lightning_trainer` (``use_distributed_sampler=False``)
``torchdata``          :func:`find_sampler_state` in a ``StatefulDataLoader`` or
                       ``torchdata.nodes`` snapshot; :func:`sampler_node` and
                       :func:`map_style_batches` build a ``torchdata.nodes`` graph that keeps
                       a loaded state
``transformers``       ``SamplerTrainer`` and ``SamplerTrainerMixin`` for HF ``Trainer``
``checkpoint``         :class:`SamplerCheckpoint`: the resume point at the loop's own count
``double_sharding``    :func:`check_not_double_sharded` and :class:`DoubleShardingError`
``_common``            :func:`check_dataset_size`: one label (or weight) per dataset sample
=====================  ==================================================================

``from distsampler.integrations import ...`` works for every name but the ``transformers``
ones, which need ``from distsampler.integrations.transformers import ...`` (so that importing
this package never imports ``transformers``).
"""

from ._common import check_dataset_size
from .accelerate import AccelerateBatches, prepare_for_accelerate
from .checkpoint import SamplerCheckpoint
from .double_sharding import DoubleShardingError, check_not_double_sharded
from .lightning import check_lightning_trainer
from .torchdata import find_sampler_state, map_style_batches, sampler_node

__all__ = [
    "AccelerateBatches",
    "DoubleShardingError",
    "SamplerCheckpoint",
    "check_dataset_size",
    "check_lightning_trainer",
    "check_not_double_sharded",
    "find_sampler_state",
    "map_style_batches",
    "prepare_for_accelerate",
    "sampler_node",
]
