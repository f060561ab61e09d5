"""``distsampler inspect``: see what a sampler does to your batches before training.

Modules, one job each:

* :mod:`~distsampler.inspect.cli`: the command line (argparse and the entry point ``main``);
* :mod:`~distsampler.inspect.load`: reading ``.npy`` / ``.csv`` / COCO / ``.json`` labels;
* :mod:`~distsampler.inspect.runs`: building the sampler runs and simulating their epochs;
* :mod:`~distsampler.inspect.streams`: the samplers' epochs as index streams and layouts;
* :mod:`~distsampler.inspect.tally`: accumulating a run's epochs into the reported numbers;
* :mod:`~distsampler.inspect.diagnostics`: the pure numbers (composition, coverage, repeats,
  closed forms);
* :mod:`~distsampler.inspect.report`: the JSON report and the terminal table;
* :mod:`~distsampler.inspect.plots`: the figures (matplotlib, optional);
* :mod:`~distsampler.inspect.options`, :mod:`~distsampler.inspect.progress`: option parsing
  and the progress bar.
"""
