"""``python -m distsampler``: the ``distsampler`` command line."""

import sys

from .inspect.cli import main

if __name__ == "__main__":
    sys.exit(main())
