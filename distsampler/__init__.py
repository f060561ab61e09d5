"""distsampler: class-imbalance samplers for PyTorch DDP, one global seeded plan per epoch.

Public names:

* `DistributedWeightedSampler`: weighted sampling (per-sample weights, or labels plus a class
  weighting), with or without replacement.
* `DistributedQuotaBatchSampler`: an exact quota per group in every local mini-batch.
* `DistributedClassBatchSampler`: ``P`` distinct classes x ``K`` samples per local batch
  (metric learning), the classes distinct across ranks.
* `DistributedBucketBatchSampler`: batches of similar size (length, aspect ratio, token
  budget) cut from a weighted or quota source's stream, its balance kept.
* `GroupIndex`: the groups, from labels, label sets (multi-label) or sizes (ranges); build
  once, save, memory-map in every rank.
* `WeightIndex`: per-sample weights prepared for O(1) draws; build once, save, memory-map.
* `distsampler.weights`: class weighting strategies.

Public modules:

===========================  ================================================================
``weighted``, ``quota``      the two samplers: thin, stateful (configuration, epoch, resume)
``bucketed``, ``sizes``      size-bucketed batches of a source's stream; per-sample sizes
``pk_batches``               class batches (P classes x K samples per local batch)
``groups``, ``coco``         the label index (``GroupIndex``), COCO reading
``weight_index``             per-sample weights for O(1) draws (``WeightIndex``)
``weights``                  class weighting strategies and ``StepSchedule``
``feedback``                 shares that follow a metric during training
``shards``                   sharded storage: ``ShardLayout``, ``ShardedDataset``
``transforms``, ``collate``  MixUp, CutMix, Remix; detection collation
``integrations``             HF Accelerate, HF Trainer, Lightning, torchdata
``inspect``                  the ``distsampler inspect`` command line
===========================  ================================================================

Modules and packages whose names start with ``_`` (the plan engine in ``_core``) are private:
their names and signatures may change in any release. The design contract (docs/design.md)
describes the engine.
"""

from . import weights
from ._core.state import EpochNotSetWarning, ResumeDiscardedWarning
from .bucketed import DistributedBucketBatchSampler
from .groups import GroupIndex
from .pk_batches import DistributedClassBatchSampler
from .quota import DistributedQuotaBatchSampler
from .weight_index import WeightIndex
from .weighted import DistributedWeightedSampler

__all__ = [
    "DistributedBucketBatchSampler",
    "DistributedClassBatchSampler",
    "DistributedQuotaBatchSampler",
    "DistributedWeightedSampler",
    "EpochNotSetWarning",
    "GroupIndex",
    "ResumeDiscardedWarning",
    "WeightIndex",
    "weights",
]
__version__ = "0.3.0.dev0"
