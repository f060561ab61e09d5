"""DistributedClassBatchSampler under real processes: spawn, gloo, FileStore (tests/_dist.py).

Each rank builds the sampler with no ``num_replicas``/``rank`` (the world comes from the
process group); all ranks report the same ``len``, yield exactly that many batches, hold
distinct classes at every step, and together give the 1-process stream.
"""

import _dist
import numpy as np
import pytest
from conftest import interleave

from distsampler import DistributedClassBatchSampler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

KIND = "DistributedClassBatchSampler"
LABELS = (np.arange(900) * 7 % 61).tolist()  # 61 classes, sizes 14..15
CONFIGS = [
    (KIND, (LABELS, 4, 3), dict(seed=5)),
    (KIND, (LABELS, 3, 4), dict(seed=1, num_batches=4)),
    (KIND, (LABELS, 5, 2), dict(drop_last=True)),
]


@pytest.mark.parametrize("world", [3, 4])
def test_equal_lengths_distinct_classes_and_one_stream_over_gloo(world):
    results = _dist.run("contract", world, configs=CONFIGS, epochs=[0, 3])
    labels = np.asarray(LABELS)
    for c, (_, args, kwargs) in enumerate(CONFIGS):
        P, K = args[1], args[2]
        for e in (0, 3):
            gathered = results[0][c][e]
            streams = [g["stream"] for g in gathered]
            lens = {g["len"] for g in gathered}
            assert len(lens) == 1 and {len(s) for s in streams} == lens  # no DDP hang
            for step in zip(*streams, strict=True):
                classes = [int(x) for b in step for x in labels[b][::K]]
                assert len(set(classes)) == world * P  # W * P <= 61 // 2 here
            kw = dict(kwargs)
            if "num_batches" in kw:  # per rank: the same global epoch in one process
                kw["num_batches"] *= world
            one = DistributedClassBatchSampler(*args, **kw, num_replicas=1, rank=0)
            got = interleave(streams)
            assert got == [list(b) for b in one.batches(np.arange(len(got)), epoch=e)]
