"""``distsampler inspect``: see what a sampler does to your batches before training.

Modules: :mod:`~distsampler.inspect.cli` (the command line), :mod:`~distsampler.inspect.diagnostics`
(the numbers: batch composition, coverage, repeats and their i.i.d. closed forms).
"""
