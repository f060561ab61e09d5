"""distsampler: class-imbalance samplers for PyTorch DDP, one global seeded plan per epoch.

Public names:

* :class:`DistributedWeightedSampler` -- weighted sampling (per-sample weights or labels plus a
  class weighting), with or without replacement.
* :class:`DistributedQuotaBatchSampler` -- an exact quota per group in every local mini-batch.
* :class:`GroupIndex` -- the label index shared by the samplers (build once, save, mmap).
* :mod:`distsampler.weights` -- class weighting strategies.
"""

from . import weights
from .groups import GroupIndex
from .quota import DistributedQuotaBatchSampler
from .weighted import DistributedWeightedSampler

__all__ = ["DistributedQuotaBatchSampler", "DistributedWeightedSampler", "GroupIndex", "weights"]
__version__ = "0.1.0"
