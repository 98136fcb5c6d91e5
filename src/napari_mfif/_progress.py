"""Progress on the command line: a tqdm bar on stderr when it is a terminal, a line per
tenth of the work otherwise (logs of batch jobs and clusters), nothing for runs that end
within a second, nothing with --quiet.

tqdm (a dependency of napari, and ours) draws the bar, with the rate and the time left; the
plain lines are written here because tqdm redraws with carriage returns, which make one
unreadable line in a log file.
"""

from __future__ import annotations

import os
import sys
import time

#: nothing is shown for work that ends before this many seconds (the environment variable
#: NAPARI_MFIF_PROGRESS_DELAY sets another, e.g. 0 to see the lines of a quick run)
DELAY = float(os.environ.get("NAPARI_MFIF_PROGRESS_DELAY", "1.0"))


class Progress:
    """A ``progress(done, total)`` callback for :func:`napari_mfif.fuse` and tiled runs.

    Parameters
    ----------
    what : str
        The step, e.g. "fusing" or "tiles".
    unit : str
        What ``done`` counts, e.g. "step" or "tile".
    quiet : bool
        Show nothing.
    stream : file, optional
        Where to write (default stderr).
    """

    def __init__(self, what: str, unit: str, *, quiet: bool = False, stream=None):
        self.what, self.unit, self.quiet = what, unit, quiet
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.bar = None
        self.shown = 0  # tenths of the work already reported as lines

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        done = min(done, total)
        if self.tty:
            self._draw(done, total)
            return
        tenth = 10 * done // total
        elapsed = time.perf_counter() - self.start
        if tenth > self.shown and (elapsed >= DELAY or (done == total and self.shown)):
            self.shown = tenth
            left = elapsed * (total - done) / done if done else 0.0
            eta = f", about {left:.0f} s left" if done < total else ""
            print(f"{self.what}: {done}/{total} {self.unit}s ({100 * done // total}%), "
                  f"{elapsed:.1f} s{eta}", file=self.stream, flush=True)

    def _draw(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            waited = time.perf_counter() - self.start
            self.bar = tqdm(total=total, desc=self.what, unit=self.unit, file=self.stream,
                            delay=max(0.0, DELAY - waited), leave=True, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the bar (a run that stopped early leaves it where it was)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
