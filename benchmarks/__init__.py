"""Benchmarks of distsampler against what users run today (run them from the repository root).

* :mod:`benchmarks.throughput`: every sampler mode and the baselines, N = 1e5 .. 1e8.
* :mod:`benchmarks.memory`: shared-memory mode, anonymous memory per rank at N = 1e8.
* :mod:`benchmarks.sources`: a 1e10-sample mixture of data sources at W = 1024.
* :mod:`benchmarks.multilabel`: an LVIS-like long tail of 1,000 classes, 2-3 labels an image.
* :mod:`benchmarks.nccl_bench`: a training-shaped loop on every rank under torchrun.

Shared parts: :mod:`benchmarks.harness` (how a figure is measured), :mod:`benchmarks.baselines`
(today's recipes and the synthetic data) and :mod:`benchmarks.tables` (output).
"""
