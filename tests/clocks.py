"""The fake clocks of the tests, one per kind of time the code reads; none of them waits in real time.

- `FakeMonotonic`: a monotonic reading in seconds and a `sleep` that moves it (the pacer's `clock`/`sleep`).
- `FakeWallClock`: aware UTC datetimes from `T0`, moved by `tick` (the ledger's and the lease's `clock`).
- `FakeEpochClock`: epoch seconds from the real time, moved by `advance` (the emulator's `clock`; starting
  at the real time keeps request signatures fresh).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


class FakeMonotonic:
    """A monotonic clock that moves only by sleeps (and by whatever a test adds to `now`).

    Args:
        start: the clock's reading before anything happens.
    """

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeWallClock:
    """A UTC wall clock the test moves by hand, starting at `T0`."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class FakeEpochClock:
    """Wall-clock seconds that move only when told to; starts at the real time so signatures stay fresh."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
