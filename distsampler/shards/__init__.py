"""Sharded storage: exact balance and quotas over WebDataset tars and Parquet on object storage.

* :class:`ShardLayout`: which dataset indices live in which shard (tar files, Parquet files or
  row groups), built from the shards' headers or footers in one pass, saved and loaded as an
  index file.
* :class:`ShardedDataset`: a map-style dataset that fetches whole shards into a node-local
  cache, in the order the sampler's schedule opens them.

Runtime dependencies stay torch and numpy: fsspec is imported only to read a URL, pyarrow only
for Parquet (extras ``shards`` and ``parquet``).
"""

from __future__ import annotations

from .fetch import ShardFetchError
from .layout import ShardLayout
from .reader import ShardedDataset
from .tar import TarError

__all__ = ["ShardFetchError", "ShardLayout", "ShardedDataset", "TarError"]
