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

Module map (read in this order):

===========================  ================================================================
``weighted``, ``quota``      the two samplers: thin, stateful (configuration, epoch, resume)
``bucketed``, ``sizes``      size-bucketed batches of a source's stream; per-sample sizes
``_core/plan.py``            every index plan: ``(seed, epoch, position) -> dataset index``
``_core/quota_plan.py``      the quota plan: ``(seed, epoch, micro-batch) -> batch``
``pk_batches``               class batches (P classes x K samples), a thin sampler
``_core/pk_plan.py``         the class-batch plan: ``(seed, epoch, micro-batch) -> P x K``
``_core/bucket_plan.py``     the bucket plan: a source's windows cut into batches by size
``_core/keyed.py``           counter-based randomness: keys, keyed hash, keyed bijection
``_core/strata.py``          stratified class order with random access (Beatty tree)
``_core/sharding.py``        the world, and which plan positions a rank reads
``_core/state.py``           epoch, resume point, configuration as data, state dicts
``_core/checks.py``          argument validation (one rule, torch's wording)
``_core/index_store.py``     the storage plans read: group members, weight draw tables
``_core/index_files.py``     atomic index saves (manifest last); loads that check the files
``groups``, ``coco``         the label index (``GroupIndex``), COCO reading
``weight_index``             per-sample weights for O(1) draws (``WeightIndex``)
``weights``                  class weighting strategies (balanced, sqrt, effective number...)
``transforms``, ``collate``  MixUp, CutMix, Remix; detection collation
``integrations/``            HF Accelerate, HF Trainer, Lightning, torchdata
``inspect/``                 the ``distsampler inspect`` command line
===========================  ================================================================
"""

from . import weights
from ._core.state import EpochNotSetWarning
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
    "WeightIndex",
    "weights",
]
__version__ = "0.3.0.dev0"
