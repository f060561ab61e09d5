"""Leave a finished distributed run without Python's finalisation (torch 2.13 on gloo).

``exit_now(code)`` flushes stdout and stderr and ends the process with ``os._exit(code)``.
Call it only after everything the run promised is written and ``destroy_process_group`` ran.

Why: a ``DistributedDataParallel`` model keeps references to its gloo process group that
neither ``del model``, ``gc.collect()`` nor ``destroy_process_group()`` release, so gloo's
worker threads live into interpreter finalisation. A worker that drops its last reference to
a finished collective there frees tensors owned by Python, must take the GIL, is ended by the
finalising interpreter, and the C++ runtime aborts the process ("terminate called without an
active exception", SIGABRT): about one run in 40 on 2 loaded cores, after every result was
printed, so torchrun reports a failed job. ``tests/test_teardown.py`` shows the leaked group.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_now(code: int | None = 0) -> NoReturn:
    """Flush the standard streams, then ``os._exit(code)``: no atexit handlers, no finalisers.

    Trap: files the caller opened and did not close lose their buffered writes.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code is None else int(code))
