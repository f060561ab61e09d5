"""Counter-based randomness: structured keys, a keyed hash, uniforms and a keyed bijection.

Every random number in distsampler is a pure function of a 64-bit key and a counter, so any
position of a plan can be computed without the ones before it (grain's ``index_shuffle`` idea).

* Keys are derived from a tuple with :class:`numpy.random.SeedSequence`, never by adding
  integers: ``seed + epoch`` collides (seed 1 / epoch 0 == seed 0 / epoch 1), a tuple does not.
* The hash is SplitMix64's output function applied to ``key + (counter + 1) * gamma``: for a
  fixed key the counters 0, 1, 2, ... give exactly the SplitMix64 stream (passes BigCrush).
* :func:`permute` is a 4-round (unbalanced) Feistel network on ``2**k >= n`` values with cycle
  walking, a bijection on ``[0, n)``; ``n`` and ``key`` may differ per element, which lets one
  vectorised call shuffle many groups (each class, each cycle) at once.

All array functions take and return numpy arrays and never loop in Python over elements; the
only Python loops are over Feistel rounds and cycle-walking passes (expected < 4).
"""

from __future__ import annotations

import numpy as np

from .checks import MAX_SEED, check_int

__all__ = ["derive", "hash64", "make_key", "permute", "uniform"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROUNDS = 4


def make_key(*parts: int) -> int:
    """A 64-bit key from a tuple of non-negative ints (seed, epoch, stream, ...)."""
    for i, p in enumerate(parts):
        check_int(f"key part {i}", p, 0, MAX_SEED)
    ss = np.random.SeedSequence([int(p) for p in parts])
    return int(ss.generate_state(1, np.uint64)[0])


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _u64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.uint64:
        return a
    return (
        a.astype(np.int64, copy=False).view(np.uint64)
        if a.dtype.kind == "i"
        else a.astype(np.uint64)
    )


def hash64(key, counter) -> np.ndarray:
    """Keyed hash of ``counter`` (array): SplitMix64 output ``counter`` of the stream ``key``."""
    with np.errstate(over="ignore"):
        z = _u64(key) + (_u64(counter) + np.uint64(1)) * _GAMMA
        return _mix(np.asarray(z, dtype=np.uint64))


def derive(key, *parts) -> np.ndarray:
    """Sub-key of ``key`` for ``parts`` (ints or int arrays, broadcast): a keyed hash chain."""
    k = _u64(key)
    for p in parts:
        k = hash64(k, hash64(np.uint64(0x5851F42D4C957F2D), p))
    return k


def uniform(key, counter) -> np.ndarray:
    """Uniform doubles in ``[0, 1)`` with 53 random bits, one per counter."""
    return (hash64(key, counter) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _split_bits(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bit widths (a, b) of the two Feistel halves for the domain ``[0, 2**(a+b)) >= [0, n)``."""
    nm1 = np.maximum(n, 2).astype(np.float64) - 1.0
    bits = np.maximum(np.frexp(nm1)[1].astype(np.uint64), np.uint64(2))  # bit_length(n - 1)
    a = bits // np.uint64(2)
    return a, bits - a


def _feistel(x, a, b, round_keys) -> np.ndarray:
    """Unbalanced Feistel: the halves take turns to be xored with a hash of the other."""
    mask_a = (np.uint64(1) << a) - np.uint64(1)
    mask_b = (np.uint64(1) << b) - np.uint64(1)
    left, right = x >> b, x & mask_b
    for r, rk in enumerate(round_keys):
        if r % 2 == 0:
            left = left ^ (hash64(rk, right) & mask_a)
        else:
            right = right ^ (hash64(rk, left) & mask_b)
    return (left << b) | right


def permute(index, n, key, group=None) -> np.ndarray:
    """Keyed bijection on ``[0, n)``: the image of ``index`` (int array, each ``< n``).

    ``n`` and ``key`` broadcast against ``index``, so each element may live in its own domain
    with its own key. The domain is rounded up to a power of two at most ``2 n``, so cycle
    walking takes fewer than two passes on average. Returns int64.

    ``group``: optional int array like ``index``; ``key`` then holds one key per group and
    element ``i`` uses ``key[group[i]]``: the same result as passing ``key[group]``, with the
    round keys derived once per group instead of once per element.
    """
    idx = np.asarray(index, dtype=np.int64)
    n_arr = np.asarray(n, dtype=np.int64)
    k_arr = _u64(key)
    a, b = _split_bits(n_arr)
    rks = [derive(k_arr, r) for r in range(_ROUNDS)]
    if group is not None:
        rks = [rk[group] for rk in rks]
    out = _feistel(idx.astype(np.uint64), a, b, rks)
    nn = n_arr.astype(np.uint64)
    bad = out >= nn
    if not bad.any():
        return out.astype(np.int64)
    # Cycle walking: re-apply until each value falls back into [0, n).
    shape = out.shape
    a, b, nn = (np.broadcast_to(v, shape) for v in (a, b, nn))
    rks = [np.broadcast_to(rk, shape) for rk in rks]
    todo = np.flatnonzero(bad.ravel())
    flat = out.ravel()
    a, b, nn = a.ravel(), b.ravel(), nn.ravel()
    rks = [rk.ravel() for rk in rks]
    while todo.size:
        y = _feistel(flat[todo], a[todo], b[todo], [rk[todo] for rk in rks])
        flat[todo] = y
        todo = todo[y >= nn[todo]]
    return flat.reshape(shape).astype(np.int64)
