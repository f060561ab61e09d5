"""The sampler runs ``distsampler inspect`` simulates: build each sampler, then its epochs.

A :class:`Run` knows how to produce an epoch's layout ``(iterations, W, B)`` and its target
share of draws per class; :func:`simulate` feeds every epoch into the run's :class:`Tally`.

Targets:

* ``weighted`` with class weights: the share of draws that pick class ``c`` (the strategy's
  class shares, averaged over the epochs). With overlapping classes a draw picked for ``c``
  may also contain ``d``, so the realised share of draws containing ``d`` exceeds its target.
* ``weighted`` / ``torch-wrs`` with per-sample weights: the weight mass of ``c``'s members.
* ``quota``: the share of batch slots reserved for ``c`` (its quota, or its part of the rest).
* ``class-batches``: the share of class slots given to ``c`` (``P`` classes x ``K`` samples a
  batch, ``P = batch size / K``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import weights as W
from ..pk_batches import DistributedClassBatchSampler
from ..quota import DistributedQuotaBatchSampler
from ..weighted import DistributedWeightedSampler
from . import streams as S
from .load import Data
from .options import CliError, class_named, number, pairs
from .progress import Progress
from .tally import Tally

__all__ = ["SAMPLERS", "STRATEGIES", "Run", "build_runs", "default_samplers", "simulate"]

SAMPLERS = ("weighted", "quota", "torch-wrs", "class-batches")
STRATEGIES = (
    "balanced",
    "instance",
    "sqrt",
    "temperature",
    "effective",
    "progressive",
    "shares",
    "repeat",
)
PROGRESS_MIN_DRAWS = 1_000_000


@dataclass
class Run:
    """One sampler's simulation: how to get an epoch's layout, and its results."""

    kind: str
    detail: str
    target: np.ndarray  # (C,) target share of draws, averaged over the epochs
    draws_per_epoch: int
    layout: Callable | None  # (epoch, progress) -> (iterations, W, B)
    tally: Tally | None = None
    skipped: str | None = None  # why the sampler cannot run

    @property
    def result(self) -> Tally:
        """The simulated run's tally (only runs that were simulated have one)."""
        if self.tally is None:
            raise ValueError(f"the {self.kind} run was not simulated: {self.skipped or 'yet'}")
        return self.tally


def default_samplers(args, data: Data) -> list[str]:
    """``--sampler`` when not given: weighted and torch-wrs (plus quota with ``--quota``);
    weighted and quota for multi-label input."""
    if args.sampler:
        return list(dict.fromkeys(args.sampler))
    if data.multilabel:
        return ["weighted", "quota"]
    return ["weighted", "quota", "torch-wrs"] if args.quota else ["weighted", "torch-wrs"]


def _strategy(args, data: Data):
    """``(class_weights or None, per-sample weights or None, description)``."""
    s = args.strategy
    if s == "repeat":
        if data.categories is None:
            raise CliError("--strategy repeat needs a COCO file (per-image category lists)")
        return (
            None,
            W.repeat_factors(data.categories, args.threshold),
            f"repeat t={args.threshold:g}",
        )
    if s in ("balanced", "instance", "sqrt"):
        return s, None, s
    if s == "temperature":
        return W.Temperature(args.temperature), None, f"temperature T={args.temperature:g}"
    if s == "effective":
        return W.EffectiveNumber(args.beta), None, f"effective beta={args.beta:g}"
    if s == "progressive":
        t = args.epochs if args.progressive_epochs is None else args.progressive_epochs
        return W.Progressive(t), None, f"progressive T={t}"
    if not args.shares:
        raise CliError("--strategy shares needs --shares NAME=SHARE,NAME=SHARE")
    shares = {
        class_named(data.index.names, k, "--shares"): float(number(v, "--shares"))
        for k, v in pairs([args.shares], "--shares")
    }
    text = ",".join(f"{k}={v:g}" for k, v in shares.items())
    return W.target_shares(shares), None, f"shares {text}"


def _class_target(class_weights, data: Data, epochs: int) -> np.ndarray:
    strategy = W.resolve(class_weights, data.index.names)
    sizes = data.index.sizes
    return np.mean([W.class_shares(strategy, sizes, e) for e in range(epochs)], axis=0)


def _weights_target(weights: np.ndarray, data: Data) -> np.ndarray:
    """Weight mass of the members of each class over the total weight."""
    return data.membership.per_class(np.asarray(weights, dtype=np.float64)) / np.sum(weights)


def _weighted_run(args, data: Data, class_weights, sample_weights, detail: str) -> Run:
    kw = dict(num_replicas=args.world_size, rank=0, seed=args.seed, block_size=args.block_size)
    if sample_weights is not None:
        sampler = DistributedWeightedSampler(sample_weights, **kw)
        target = _weights_target(sample_weights, data)
    else:
        sampler = DistributedWeightedSampler(
            labels=data.index,
            class_weights=class_weights,
            stratify=not args.no_stratify,
            **kw,
        )
        target = _class_target(class_weights, data, args.epochs)
        detail += ", i.i.d." if args.no_stratify else ", stratified"

    def layout(epoch, progress):
        stream = S.weighted_stream(sampler, epoch, progress=progress)
        return S.epoch_layout(stream, args.world_size, args.batch_size, args.block_size)

    total = sampler.num_replicas * len(sampler)
    return Run("weighted", detail, target, total, layout)


def _quota_run(args, data: Data) -> Run:
    names = data.index.names
    if args.quota:
        quotas = {
            class_named(names, k, "--quota"): number(v, "--quota")
            for k, v in pairs(args.quota, "--quota")
        }
    elif len(names) > 1:  # an equal share of every batch for every class
        quotas = {n: 1.0 / len(names) for n in names}
    else:
        quotas = {names[0]: args.batch_size}
    policies = {class_named(names, k, "--policy"): v for k, v in pairs(args.policy, "--policy")}
    sampler = DistributedQuotaBatchSampler(
        data.index,
        args.batch_size,
        quotas,
        policies=policies or None,
        num_replicas=args.world_size,
        rank=0,
        seed=args.seed,
    )
    counts = sampler.per_epoch_counts()
    detail = ",".join(f"{k}={v:g}" for k, v in quotas.items()) if args.quota else "equal shares"
    if policies:
        detail += " " + ",".join(f"{k}:{v}" for k, v in policies.items())

    def layout(epoch, progress):
        micro = S.quota_stream(sampler, epoch, progress=progress)  # (M, B)
        return S.deal(micro, args.world_size)  # (iterations, W, B)

    total = sampler.num_replicas * len(sampler) * args.batch_size
    return Run("quota", detail, counts / counts.sum(), total, layout)


def _class_batches_run(args, data: Data) -> Run:
    import warnings

    K = args.samples_per_class
    if K < 1 or args.batch_size % K:
        raise CliError(
            f"class-batches: --batch-size {args.batch_size} should be a multiple of "
            f"--samples-per-class {K}"
        )
    with warnings.catch_warnings():  # the small-class count goes into the detail instead
        warnings.simplefilter("ignore")
        sampler = DistributedClassBatchSampler(
            data.index,
            args.batch_size // K,
            K,
            num_replicas=args.world_size,
            rank=0,
            seed=args.seed,
        )
    counts = sampler.per_epoch_counts(0).astype(np.float64)
    detail = f"P={sampler.classes_per_batch} x K={K}"
    if sampler.num_small_classes:
        detail += f", {sampler.num_small_classes} classes < K"

    def layout(epoch, progress):
        micro = S.quota_stream(sampler, epoch, progress=progress)  # (M, P * K)
        return S.deal(micro, args.world_size)

    total = sampler.num_replicas * len(sampler) * sampler.batch_size
    return Run("class-batches", detail, counts / counts.sum(), total, layout)


def _torch_run(args, data: Data, class_weights, sample_weights, detail: str) -> Run:
    n = data.index.num_samples
    if sample_weights is not None:
        target = _weights_target(sample_weights, data)
    else:
        target = _class_target(class_weights, data, args.epochs)
    run = Run("torch-wrs", detail, target, -(-n // args.world_size) * args.world_size, None)
    run.skipped = S.torch_wrs_problem(n)
    if run.skipped is None and data.multilabel and sample_weights is None:
        run.skipped = (
            "WeightedRandomSampler takes one weight per sample; class weights need one class "
            "per sample, and this input is multi-label"
        )
    if run.skipped:
        return run
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    strategy = None if sample_weights is not None else W.resolve(class_weights, data.index.names)
    codes = data.membership.classes

    def layout(epoch, progress):
        w = sample_weights if strategy is None else strategy(data.index.sizes, epoch)[codes]
        stream = S.torch_wrs_stream(w, args.world_size, generator)
        if progress:
            progress(len(stream))
        return S.epoch_layout(stream, args.world_size, args.batch_size, 1)

    run.layout = layout
    return run


def build_runs(args, data: Data) -> list[Run]:
    """The runs asked for, validated (no epoch is simulated yet)."""
    try:
        class_weights, sample_weights, detail = _strategy(args, data)
        runs = []
        for kind in default_samplers(args, data):
            if kind == "weighted":
                runs.append(_weighted_run(args, data, class_weights, sample_weights, detail))
            elif kind == "quota":
                runs.append(_quota_run(args, data))
            elif kind == "class-batches":
                runs.append(_class_batches_run(args, data))
            else:
                runs.append(_torch_run(args, data, class_weights, sample_weights, detail))
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    return runs


def simulate(runs: list[Run], data: Data, args, minority: int) -> None:
    """Run every epoch of every runnable sampler into its :class:`Tally`."""
    total = sum(r.draws_per_epoch for r in runs if not r.skipped) * args.epochs
    progress = Progress(total, enabled=not args.no_progress and total >= PROGRESS_MIN_DRAWS)
    try:
        for run in runs:
            if run.skipped:
                continue
            tally = run.tally = Tally(data.membership, minority, args.batch_size)
            layout = run.layout
            assert layout is not None  # a run that is not skipped has a layout
            for epoch in range(args.epochs):
                progress.label = f"{run.kind} epoch {epoch + 1}/{args.epochs}"
                tally.add_epoch(layout(epoch, progress))
    finally:
        progress.close()
