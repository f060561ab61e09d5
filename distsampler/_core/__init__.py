"""The engine: pure functions and small frozen types; no torch, no global state.

==============  ===========================================================================
module          job
==============  ===========================================================================
``checks``      argument validation (one rule, torch's wording)
``keyed``       counter-based randomness: structured keys, a keyed hash, a keyed bijection
``strata``      stratified class order with random access (the Beatty tree)
``sorting``     sorting kernels: unique values of a sorted array, a fast stable key order
``plan``        the index plans: ``(seed, epoch, position) -> dataset index``
``quota_plan``  the quota plan: ``(seed, epoch, micro-batch) -> batch``
``sharding``    where the world comes from; which plan positions a rank reads
``state``       epoch, resume point, configuration as data, state dicts
==============  ===========================================================================

Every random decision of distsampler is made in ``plan`` and ``quota_plan`` from the
primitives of ``keyed`` and ``strata`` (``sorting`` orders, it never draws).
"""
