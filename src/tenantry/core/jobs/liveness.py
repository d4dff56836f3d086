"""Deciding that another worker is dead, from its heartbeat counter and our own clock.

Each worker bumps its `job_workers.beats` every fifth of `JOBS_WORKER_TIMEOUT_SECONDS`.
An observer never compares timestamps written by other hosts (clock skew would make a
live worker look dead); it notes, on its own monotonic clock, when it last saw each
counter change, and calls a worker dead once its counter has stood still for the whole
timeout *while the observer itself was watching without a gap*. After a pause of its own
(the database unreachable, the event loop stalled) it starts over, so a database outage
that silenced every worker at once does not get all of them declared dead on recovery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class LivenessObserver:
    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._seen: dict[str, tuple[int, float]] = {}
        self._last_look: float | None = None

    def reset(self) -> None:
        """Forget everything (our own view was interrupted)."""
        self._seen.clear()
        self._last_look = None

    def observe(self, beats: Mapping[str, int], *, me: str) -> dict[str, int]:
        """Record the counters read now; return the dead workers with the counter seen."""
        now = self.clock()
        if self._last_look is None or now - self._last_look > self.timeout / 2:
            self._seen.clear()  # a gap in our own watching: nothing we saw before counts
        self._last_look = now
        dead: dict[str, int] = {}
        for worker_id, count in beats.items():
            if worker_id == me:
                continue
            seen = self._seen.get(worker_id)
            if seen is None or seen[0] != count:
                self._seen[worker_id] = (count, now)
            elif now - seen[1] >= self.timeout:
                dead[worker_id] = count
        for worker_id in set(self._seen) - set(beats):
            del self._seen[worker_id]
        return dead
