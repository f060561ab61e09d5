"""Counter-based randomness: structured keys, a keyed hash, uniforms and a keyed bijection.

Every random number in distsampler is a pure function of a 64-bit key and a counter, so any
position of a plan can be computed without the ones before it (grain's ``index_shuffle`` idea).

* Keys are derived from a tuple with :class:`numpy.random.SeedSequence`, never by adding
  integers: ``seed + epoch`` collides (seed 1 / epoch 0 == seed 0 / epoch 1), a tuple does not.
* The hash is SplitMix64's output function applied to ``key + (counter + 1) * gamma``: for a
  fixed key the counters 0, 1, 2, ... give exactly the SplitMix64 stream (passes BigCrush).
* :func:`permute` is a keyed bijection on ``[0, n)``; ``n`` and ``key`` may differ per element,
  which lets one vectorised call shuffle many groups (each class, each cycle, each segment).

How :func:`permute` works, and its trade-offs:

* ``n <= 32``: the image of ``x`` is the rank of ``hash(key, x)`` among ``hash(key, 0..n-1)``:
  an exactly uniform permutation (the order of ``n`` i.i.d. 64-bit values, which never tie: the
  finaliser is a bijection of distinct stream states). O(n) hashes an element, so only for tiny
  domains, where any Feistel network is measurably biased; when a key serves many elements (a
  whole segment or batch) each key's ranks are computed once, as a table.
* ``n > 32``: a Feistel network on the mixed-radix domain ``Z_a x Z_(2**h)``, with
  ``h = bit_length(n - 1) // 2`` and ``a = ceil(n / 2**h)``: ``x = L * 2**h + R``; the rounds
  alternate ``L = (L + F(R)) mod a`` and ``R = (R + F(L)) mod 2**h``, each a bijection whatever
  ``F``. ``a * 2**h - n < 2**h``, so cycle walking (re-apply until the value falls back into
  ``[0, n)``) concerns fewer than ``1 / a <= 1 / sqrt(n)`` of the elements, against up to half
  of them on the power-of-two domain used before (the main cost it had). The round functions hash
  the key with the counter ``v * rounds + r + 1`` (no round keys to derive per element); the
  hash is reduced to ``[0, a)`` by its high half times ``a`` and to ``[0, 2**h)`` by its top
  ``h`` bits.
* Rounds: 6 below ``2**16`` elements, 4 from there. At 4 rounds the pairs ``(pi(x), pi(y))``
  of a Feistel network on halves of a few values are far from uniform (the 4-round power-of-two
  network used before: a chi-square of the gap ``pi(y) - pi(x)`` 3 to 500 times its degrees of
  freedom at n = 5..64), and the bias fades only as the halves grow (still 2.7x for some pairs
  at n = 4096, gone at 65536); at 6 rounds it is within about 2x from n = 33 on and gone to the
  test's resolution from n ~ 100. ``tests/test_kernels.py`` holds these bounds.
* Domains up to ``2**32`` run the network in uint32 (twice the elements per vector op; round
  functions from the 32-bit ``lowbias32`` finaliser keyed by both halves of the key), larger ones
  in uint64 (the SplitMix64 finaliser above). The split is by each element's own ``n``, so an
  element's image never depends on the others in the call.
* Work runs in chunks of ``_CHUNK`` elements with in-place ufuncs, so the temporaries stay in
  cache (a fresh array past glibc's trim threshold costs page faults each time); all
  arithmetic is unsigned and exact for ``n <= 2**62``.

All array functions take and return numpy arrays and never loop in Python over elements; the
only Python loops are over chunks, Feistel rounds and cycle-walking passes.
"""

from __future__ import annotations

import functools

import numpy as np

from .checks import MAX_SEED, check_int

__all__ = ["derive", "hash64", "make_key", "permute", "uniform"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = (np.uint64(s) for s in (27, 30, 31, 32))
#: Domains up to this size are permuted by ranking hashes (exactly uniform, O(n) an element).
_SMALL = 32
#: Feistel rounds below and from ``_LARGE`` elements (see the module docstring).
_ROUNDS, _ROUNDS_LARGE, _LARGE = 6, 4, 1 << 16
#: Domains up to this size run the uint32 network, larger ones the uint64 one.
_WIDE = 1 << 32
_PHI32 = 0x9E3779B9
_L1, _L2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_T15, _T16 = np.uint32(15), np.uint32(16)
_CHUNK = 1 << 15
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def make_key(*parts: int) -> int:
    """A 64-bit key from a tuple of non-negative ints (seed, epoch, stream, ...)."""
    for i, p in enumerate(parts):
        check_int(f"key part {i}", p, 0, MAX_SEED)
    return _seed_sequence_key(tuple(int(p) for p in parts))


@functools.lru_cache(maxsize=4096)
def _seed_sequence_key(parts: tuple[int, ...]) -> int:
    """``SeedSequence`` costs about 10 us; a plan asks for the same few keys every chunk."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mix_high(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser in place, less its last xor-shift (which changes one of the
    high 32 bits, the only ones the callers use)."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    return z


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
        z = _u64(counter) + np.uint64(1)  # a fresh array: the rest works in place
        z *= _GAMMA
        k = _u64(key)
        if np.broadcast_shapes(z.shape, k.shape) == z.shape:
            z += k
        else:  # a key array wider than the counters
            z = np.add(z, k, dtype=np.uint64)
        z = _mix_high(z)  # in place for arrays (a new object for a scalar counter)
        if z.ndim == 0:
            return z ^ (z >> _S31)
        z ^= z >> _S31
        return z


def derive(key, *parts) -> np.ndarray:
    """Sub-key of ``key`` for ``parts`` (ints or int arrays, broadcast): a keyed hash chain."""
    k = _u64(key)
    for p in parts:
        k = hash64(k, hash64(np.uint64(0x5851F42D4C957F2D), p))
    return k


def uniform(key, counter) -> np.ndarray:
    """Uniform doubles in ``[0, 1)`` with 53 random bits, one per counter."""
    z = hash64(key, counter)
    if z.ndim == 0:
        return (z >> np.uint64(11)).astype(np.float64) * _TO_UNIT
    z >>= np.uint64(11)
    u = z.astype(np.float64)
    u *= _TO_UNIT
    return u


def bit_length(m: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of each uint64 ``m < 2**63``, exactly: the exponent of ``float(m)``,
    less one where the conversion rounded ``m`` up to the next power of two (past 53 bits)."""
    m = np.asarray(m, dtype=np.uint64)
    bits = m.astype(np.float64).view(np.uint64) >> np.uint64(52)  # biased exponent; 0 for m = 0
    np.maximum(bits, np.uint64(1022), out=bits)
    bits -= np.uint64(1022)  # bit_length of float(m)
    top = bits - (bits > 0)  # the bit that would be the highest
    bits -= ((m >> top) == 0) & (bits > 0)
    return bits


def _lowbias(z: np.ndarray, k_hi) -> np.ndarray:
    """``lowbias32`` (C. Wellons' 32-bit finaliser) in place, the key's high half xored in after
    the first multiply, less the last xor-shift (it leaves the high 16 bits alone). A bijection
    of uint32 ``z`` for any ``k_hi``."""
    z ^= z >> _T16
    z *= _L1
    z ^= k_hi
    z ^= z >> _T15
    z *= _L2
    return z


def _halves(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low and high 32-bit halves of uint64 keys."""
    return k.astype(np.uint32), (k >> _S32).astype(np.uint32)


def _rank_small(x: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rank of ``hash(k, x)`` among ``hash(k, 0..n-1)`` (``n <= _SMALL``; 1-D uint64 inputs).

    ``hash(k, y) = lowbias(k_lo + (y + 1) * phi)``: distinct for the ``y`` of one key (each step
    is a bijection of uint32), so the ranks are a bijection on ``[0, n)``. In uint32 (twice the
    elements per vector op), laid out ``(width, m)``: long inner loops.
    """
    width = int(n.max())
    ys = (np.arange(1, width + 1, dtype=np.uint32) * np.uint32(_PHI32))[:, None]  # (width, 1)
    full = bool(n.min() == width)  # every domain as wide as the table: no mask
    out = np.empty(x.size, dtype=np.uint64)
    step = max(1, (1 << 17) // width)
    for lo in range(0, x.size, step):
        k_lo, k_hi = _halves(k[lo : lo + step])
        z = _lowbias(k_lo + ys, k_hi)  # (width, m): hash(k, y) of each key
        own = x[lo : lo + step].astype(np.uint32) + np.uint32(1)
        own *= np.uint32(_PHI32)
        own += k_lo
        below = z < _lowbias(own, k_hi)  # (width, m): hash y below the element's own hash
        if not full:
            below &= np.arange(width, dtype=np.uint64)[:, None] < n[lo : lo + step]
        out[lo : lo + step] = below.view(np.uint8).sum(axis=0, dtype=np.uint8)
    return out


def _rank_table(keys: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``(width, G)`` table: column ``g`` holds ``_rank_small`` of key ``g`` on ``[0, n[g])``.

    The same numbers as :func:`_rank_small`, with each key's hashes computed once: cheaper when
    a key serves many elements (a whole segment, a whole batch). Keys run along the last axis,
    so every ufunc loops over them (long inner loops).
    """
    width = int(n.max())
    ys = (np.arange(1, width + 1, dtype=np.uint32) * np.uint32(_PHI32))[:, None]  # (width, 1)
    table = np.empty((width, keys.size), dtype=np.uint8)
    step = max(1, (1 << 18) // (width * width))
    for lo in range(0, keys.size, step):
        k_lo, k_hi = _halves(keys[lo : lo + step])
        z = _lowbias(k_lo + ys, k_hi)  # (width, g): hash(k, y) of each key
        below = z[None, :, :] < z[:, None, :]  # (x, y, g): hash y below hash x
        below &= (np.arange(width, dtype=np.uint64)[:, None] < n[lo : lo + step])[None]
        table[:, lo : lo + step] = below.view(np.uint8).sum(axis=1, dtype=np.uint8)
    return table


def _feistel(x, a, h, k, rounds: int) -> np.ndarray:
    """The mixed-radix Feistel network on ``Z_a x Z_(2**h)`` (1-D uint64 inputs, one pass)."""
    mask = (np.uint64(1) << h) - np.uint64(1)
    top = np.uint64(64) - h
    left, right = x >> h, x & mask
    step = np.uint64((rounds * 0x9E3779B97F4A7C15) & (2**64 - 1))
    z, t = np.empty_like(x), np.empty_like(x)
    for r in range(rounds):
        src = right if r % 2 == 0 else left
        np.multiply(src, step, out=z)  # counter src * rounds + r + 1 of the key's stream
        z += k
        z += np.uint64(((r + 1) * 0x9E3779B97F4A7C15) & (2**64 - 1))
        z = _mix_high(z)  # (a new object for a scalar counter)
        if r % 2 == 0:  # left = (left + F(right)) mod a
            z >>= _S32
            z *= a
            z >>= _S32  # F in [0, a): the high 32 bits times a
            left += z  # < 2 a: reduce once, branch-free (left - a wraps above left if < a)
            np.subtract(left, a, out=t)
            np.minimum(left, t, out=left)
        else:  # right = (right + F(left)) mod 2**h: the top h bits, masked
            z >>= top
            right += z
            right &= mask
    left <<= h
    left |= right
    return left


def _feistel32(x, a, h, k, rounds: int) -> np.ndarray:
    """The same network in uint32 for ``n <= 2**32`` (halves ``<= 2**16``), twice the elements
    per vector op: round functions from ``lowbias32`` (C. Wellons' 32-bit finaliser) of the
    counter ``src * rounds + r + 1`` plus the key's low half, the high half xored in after the
    first multiply (so all 64 key bits matter). 1-D uint64 inputs and output."""
    x32, a, h = x.astype(np.uint32), a.astype(np.uint32), h.astype(np.uint32)
    k_lo, k_hi = _halves(k)
    mask = (np.uint32(1) << h) - np.uint32(1)
    top = np.uint32(32) - h
    left, right = x32 >> h, x32 & mask
    step = np.uint32((rounds * _PHI32) & 0xFFFFFFFF)
    z, t = np.empty_like(x32), np.empty_like(x32)
    for r in range(rounds):
        src = right if r % 2 == 0 else left
        np.multiply(src, step, out=z)
        z += k_lo
        z += np.uint32(((r + 1) * _PHI32) & 0xFFFFFFFF)
        _lowbias(z, k_hi)
        if r % 2 == 0:  # left = (left + F(right)) mod a, F = the high 16 bits times a
            z >>= _T16
            z *= a
            z >>= _T16
            left += z
            np.subtract(left, a, out=t)
            np.minimum(left, t, out=left)
        else:  # right = (right + the top h bits) mod 2**h
            z >>= top
            right += z
            right &= mask
    left <<= h
    left |= right
    return left.astype(np.uint64)


def _radix(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, h)``: the domain ``Z_a x Z_(2**h)`` of ``[0, n)``, ``2**h <= sqrt(n) <= a``."""
    m = n - np.uint64(1)
    h = bit_length(m) >> np.uint64(1)
    return (m >> h) + np.uint64(1), h


def _feistel_walk(x, n, k, lo: int, hi: int) -> np.ndarray:
    """Cycle-walked Feistel: a bijection on ``[0, n)`` (1-D uint64 inputs, ``32 < lo <= n <=
    hi``).

    The first pass runs in chunks of ``_CHUNK`` (cache-sized temporaries, the radix included);
    the walking passes take the few elements still outside ``[0, n)`` all at once.
    """
    for cut in (_LARGE, _WIDE + 1):  # each kind with its own rounds and word size
        if lo < cut <= hi:
            y = np.empty_like(x)
            upper = n >= np.uint64(cut)
            sel = np.flatnonzero(upper)
            y[sel] = _feistel_walk(x[sel], n[sel], k[sel], cut, hi)
            sel = np.flatnonzero(~upper)
            y[sel] = _feistel_walk(x[sel], n[sel], k[sel], lo, cut - 1)
            return y
    rounds = _ROUNDS_LARGE if lo >= _LARGE else _ROUNDS
    net = _feistel if lo > _WIDE else _feistel32
    y = np.empty_like(x)
    out = []
    for start in range(0, x.size, _CHUNK):
        s = slice(start, start + _CHUNK)
        y[s] = net(x[s], *_radix(n[s]), k[s], rounds)
        out.append(np.flatnonzero(y[s] >= n[s]) + start)
    todo = np.concatenate(out)
    while todo.size:  # fewer than 1 / a of the elements, geometrically fewer each pass
        z = net(y[todo], *_radix(n[todo]), k[todo], rounds)
        y[todo] = z
        todo = todo[z >= n[todo]]
    return y


def permute(index, n, key, group=None) -> np.ndarray:
    """Keyed bijection on ``[0, n)``: the image of ``index`` (int array, each ``< n``).

    ``n`` (``1 <= n <= 2**62``) and ``key`` broadcast against ``index``, so each element may
    live in its own domain with its own key. Returns int64 of the broadcast shape.

    ``group``: optional int array like ``index``; ``key`` then holds one key per group and
    element ``i`` uses ``key[group[i]]``: exactly the same result as passing ``key[group]``.

    The permutation a key gives is part of every plan: changing this function changes every
    user's resumed runs (``tests/test_golden.py`` pins them).
    """
    idx = np.asarray(index, dtype=np.int64)
    n_arr = np.asarray(n, dtype=np.int64)
    k_arr = _u64(key)
    gshape = k_arr.shape if group is None else np.shape(group)
    shape = np.broadcast_shapes(idx.shape, n_arr.shape, gshape)
    per_key = group is not None or k_arr.shape != shape
    if group is None:  # key i of the (unbroadcast) key array, by element
        group = np.arange(k_arr.size).reshape(k_arr.shape)
    else:
        group = np.asarray(group, dtype=np.intp)
    k_arr = k_arr.ravel()
    x, nn = (_flat_u64(v, shape) for v in (idx, n_arr))  # (size,) each, copies only if needed
    if x.size == 0:
        return np.zeros(shape, dtype=np.int64)
    lo, hi = int(nn.min()), int(nn.max())
    with np.errstate(over="ignore"):
        if not per_key:  # a key per element: no gather
            kk = k_arr
        else:
            g = np.broadcast_to(group, shape).ravel()
            if hi <= _SMALL and k_arr.size * (4 + hi) < 5 * x.size:
                n_key = np.zeros(k_arr.size, dtype=np.uint64)
                n_key[g] = nn
                if np.array_equal(n_key[g], nn):  # one domain per key: a table per key
                    return _rank_table(k_arr, n_key)[x, g].astype(np.int64).reshape(shape)
            kk = k_arr[g]
        if hi <= _SMALL:
            out = _rank_small(x, nn, kk)
        elif lo > _SMALL:
            out = _feistel_walk(x, nn, kk, lo, hi)
        else:  # both kinds: each on its own elements
            small = nn <= np.uint64(_SMALL)
            out = np.empty_like(x)
            sel = np.flatnonzero(small)
            out[sel] = _rank_small(x[sel], nn[sel], kk[sel])
            sel = np.flatnonzero(~small)
            out[sel] = _feistel_walk(x[sel], nn[sel], kk[sel], _SMALL + 1, hi)
    return out.view(np.int64).reshape(shape)


def _flat_u64(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` broadcast to ``shape``, flat, as uint64 (a view of int64 input where possible)."""
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a).ravel().view(np.uint64)
