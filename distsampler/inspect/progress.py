"""A one-line progress bar on stderr for long simulations (no dependency)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Counts draws and redraws a bar on ``stream`` at most 10 times a second.

    Call it with the number of draws just made; :meth:`close` ends the line if one was drawn.
    """

    def __init__(self, total: int, enabled: bool = True, stream=None, width: int = 28) -> None:
        self.total, self.enabled, self.width = max(1, total), enabled, width
        self.stream = sys.stderr if stream is None else stream
        self.done, self.label, self._last, self._drawn = 0, "", 0.0, False

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width)
            self.stream.write(
                f"\r{self.label:<24} [{bar:<{self.width}}] {frac:6.1%} "
                f"{self.done:,}/{self.total:,} draws"
            )
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
