"""Counter-based randomness: structured keys, uniforms, the keyed bijection."""

import numpy as np
import pytest

from distsampler._core.keyed import make_key, permute, uniform


@pytest.mark.parametrize(
    "n",
    [
        1,  # a single element maps to itself
        2,  # smallest real domain (hash ranks)
        32,  # the largest domain ranked by hashes
        33,  # the smallest Feistel domain (Z_5 x Z_8: cycle walking from 40)
        256,  # Z_16 x Z_16 exactly: no walking
        1000,
        4097,  # just above a power of two: Z_65 x Z_64
    ],
)
def test_permute_is_a_bijection(n):
    p = permute(np.arange(n), n, make_key(3, 1))
    assert np.array_equal(np.sort(p), np.arange(n))


def test_permute_per_element_domains_and_keys():
    # Three groups with their own sizes and keys in one call equal three separate calls.
    sizes, keys = [5, 3, 7], [make_key(1), make_key(2), make_key(3)]
    idx = np.concatenate([np.arange(n) for n in sizes])
    n = np.repeat(sizes, sizes)
    k = np.repeat(np.array(keys, dtype=np.uint64), sizes)
    joint = permute(idx, n, k)
    alone = np.concatenate(
        [permute(np.arange(s), s, key) for s, key in zip(sizes, keys, strict=True)]
    )
    assert np.array_equal(joint, alone)


def test_permute_depends_on_key_and_is_not_identity():
    n = 1000
    a, b = permute(np.arange(n), n, make_key(1)), permute(np.arange(n), n, make_key(2))
    assert not np.array_equal(a, b)
    assert np.mean(a == np.arange(n)) < 0.02  # a random permutation has ~1 fixed point


def test_permute_random_access_matches_full():
    n, key = 10**9, make_key(7)  # far past 2**24; only 5 positions evaluated
    pos = np.array([0, 12345, 10**8, 10**9 - 1, 5])
    assert np.array_equal(permute(pos, n, key)[[0, 2]], permute(pos[[0, 2]], n, key))
    assert (permute(pos, n, key) < n).all()


def test_keys_are_structured_not_added():
    # torch's seed + epoch collides: (seed 1, epoch 0) == (seed 0, epoch 1). Tuples do not.
    assert make_key(1, 0) != make_key(0, 1)
    assert make_key(0, 1, 2) != make_key(0, 12)
    assert make_key(5, 3) == make_key(5, 3)


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (-1, ValueError),  # right type, wrong value
        (2**63, ValueError),  # beyond 63 bits
        (1.5, TypeError),  # wrong type: one rule everywhere
        (True, TypeError),  # bool is never an int here
        ("3", TypeError),
    ],
)
def test_make_key_rejects_bad_parts(bad, exc):
    with pytest.raises(exc, match="key part 0"):
        make_key(bad)


def test_uniform_moments():
    # Mean of n U(0,1) has std 1/sqrt(12 n); 5 sigma at n = 1e6 is 0.0014.
    u = uniform(make_key(0), np.arange(10**6))
    assert (u >= 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 5 / np.sqrt(12 * 10**6)
    assert abs(np.var(u) - 1 / 12) < 0.001
