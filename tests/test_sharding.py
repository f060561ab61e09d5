"""Round-robin block sharding and world detection."""

import numpy as np
import pytest

from distsampler._core.sharding import Shard, resolve_world


@pytest.mark.parametrize(
    "total, world, block, drop_last",
    [
        (10, 1, 1, False),  # one process: the identity, never padded
        (10, 3, 1, False),  # DistributedSampler's stride, padded by 2
        (10, 3, 1, True),  # trimmed to 9
        (33, 4, 8, False),  # the last round shrinks its blocks to 1 (contiguous padding)
        (64, 4, 8, False),  # exact rounds
        (7, 8, 4, False),  # more ranks than positions: everyone gets 1
        (100, 3, 7, True),  # blocks and drop_last together
    ],
)
def test_layout_covers_a_contiguous_prefix(total, world, block, drop_last):
    shards = [Shard(world, r, block) for r in range(world)]
    length = shards[0].length(total, drop_last)
    pos = [s.positions(length, 0, length) for s in shards]
    allpos = np.sort(np.concatenate(pos))
    # Disjoint, contiguous from 0, and equal per rank.
    assert np.array_equal(allpos, np.arange(world * length))
    if drop_last:
        assert world * length <= total < world * (length + 1)
    else:
        assert total <= world * length < total + world  # at most world - 1 extra positions


def test_block_layout_matches_accelerate_round_robin():
    # Block m = k * W + r goes to rank r.
    s = Shard(3, 1, 4)
    assert s.positions(8, 0, 8).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]


@pytest.mark.parametrize("world, rank", [(1, 0), (3, 2), (8, 5)])
def test_block_size_one_is_distributed_samplers_stride(world, rank):
    # DistributedSampler(shuffle=False) reads indices[rank::world]; its padding repeats the start
    # where ours continues, so compare positions of the padded length.
    s = Shard(world, rank, 1)
    length = s.length(100, drop_last=False)
    assert s.positions(length, 0, length).tolist() == list(range(rank, world * length, world))
    assert s.positions(length, 3, 9).tolist() == list(range(rank, world * length, world))[3:9]


def test_positions_random_access():
    s = Shard(4, 2, 3)
    assert np.array_equal(s.positions(50, 10, 20), s.positions(50, 0, 50)[10:20])


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((2, 2), ValueError, "rank should be in"),
        ((0, 0), ValueError, "num_replicas should be a positive integer"),
        ((2, -1), ValueError, "rank should be a non-negative integer"),
        ((True, 0), TypeError, "num_replicas should be an integer"),
        ((2.0, 0), TypeError, "num_replicas should be an integer"),
    ],
)
def test_bad_world(args, exc, match):
    with pytest.raises(exc, match=match):
        resolve_world(*args)


def test_world_detection_order(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert resolve_world() == (1, 0)  # nothing: one process
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert resolve_world() == (4, 3)  # torchrun's environment
    assert resolve_world(2, 1) == (2, 1)  # arguments win
    assert resolve_world(num_replicas=8) == (8, 3)  # each argument wins on its own
    # An initialised process group beats the environment: tests/test_distributed.py.
