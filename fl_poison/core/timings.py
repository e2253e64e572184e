"""Where a run's wall time goes, phase by phase, for ``timings.json`` and the benchmarks.

A :class:`PhaseClock` belongs to one ServerApp run: the run's code times its phases with
:meth:`PhaseClock.phase` (set-up, waiting for the nodes, every round's training, aggregation and
evaluation, the final files) and :meth:`PhaseClock.as_dict` gives the totals in seconds plus the
wall-clock time (Unix epoch) at which the run started, so that a benchmark in another process can
place the ServerApp on its own timeline (the time before it is the ``flwr`` CLI, the SuperLink
hand-off and the simulation's start).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Accumulates the seconds spent in named phases of one run.

    Parameters
    ----------
    started_at : float | None
        The run's start as a Unix time (``time.time()``); None takes the present moment.
    """

    def __init__(self, started_at: float | None = None) -> None:
        self.started_at = time.time() if started_at is None else started_at
        self._origin = time.monotonic() - (time.time() - self.started_at)
        self._seconds: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block and add it to phase ``name`` (also when the block raises).

        Parameters
        ----------
        name : str
            The phase (e.g. ``setup``, ``train``, ``aggregate``, ``evaluate``).
        """
        start = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - start)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name`` (one more occurrence of it).

        Parameters
        ----------
        name : str
            The phase.
        seconds : float
            Its duration (not negative).
        """
        if not seconds >= 0.0:
            raise ValueError(f"phase {name!r}: duration {seconds!r}; allowed: a number >= 0")
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds
        self._counts[name] = self._counts.get(name, 0) + 1

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._origin

    def seconds(self, name: str) -> float:
        """Total seconds of phase ``name`` so far (0 when it never ran).

        Parameters
        ----------
        name : str
            The phase.
        """
        return self._seconds.get(name, 0.0)

    def as_dict(self) -> dict[str, object]:
        """``started_at`` (Unix time), ``elapsed_seconds``, and per phase its total ``seconds`` and ``count``."""
        return {
            "started_at": round(self.started_at, 3),
            "elapsed_seconds": round(self.elapsed(), 4),
            "phases": {
                name: {"seconds": round(total, 4), "count": self._counts[name]} for name, total in self._seconds.items()
            },
        }
