"""`FakeTime`: an injected monotonic clock and sleep for pacer tests, so no test waits in real time."""

from __future__ import annotations


class FakeTime:
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
