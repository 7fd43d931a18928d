"""Pace BatchSendMessageToGlobe calls to the account's rate, across processes and within one.

Two layers, as `shared/ARCHITECTURE.md` sketches:

* **Server side**: a Prefect global concurrency limit with `limit=1` and `slot_decay_per_second=rate` (a leaky
  bucket on the Prefect server). Every run, worker and machine that shares the server shares the account's
  rate. It is acquired with `strict=True`: a missing limit is an error, never a silently unthrottled send.
* **Client side**: Prefect's `rate_limit` alone retries a denied grant after a jittered `Retry-After` of about
  a second, which measured only ~0.6 calls/s. So the pacer sleeps until one interval after its previous grant
  *returned*, and only then asks for the slot. Measured from the grant's return, the server always sees at
  least one full interval (plus the request's own latency) since the last grant, so the request is granted
  at once instead of being bounced into a second-long retry.

The caller does all per-batch work (ledger write, payload, signature) *before* `wait()`, so the gap seen by
the gateway is the interval plus the grant's round trip, a few milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Acquire = Callable[[str], None]


def prefect_rate_limit(name: str) -> None:
    """Take one slot of the Prefect global limit `name`; raise if the limit does not exist."""
    from prefect.concurrency.sync import rate_limit

    rate_limit(name, occupy=1, strict=True)


def ensure_global_limit(name: str, calls_per_second: float) -> None:
    """Create (or update) the Prefect global limit `name` as a one-slot leaky bucket at `calls_per_second`."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name=name, limit=1, slot_decay_per_second=calls_per_second
        )


@dataclass
class PacingStats:
    """What the pacer did, for the run summary."""

    grants: int = 0
    waited_seconds: float = 0.0
    acquire_seconds: float = 0.0


class Pacer:
    """Spaces calls at least `1 / calls_per_second + margin_seconds` apart, measured between grants.

    Args:
        calls_per_second: the account's allowed rate.
        limit_name: the Prefect global limit to acquire after the local wait; `None` paces locally only
            (for scripts without a Prefect server).
        margin_seconds: extra spacing for clock and network jitter between here and the gateway.
        acquire: how a slot is taken (injected in tests); defaults to Prefect's strict `rate_limit`.
        clock, sleep: injected in tests.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        limit_name: str | None,
        margin_seconds: float = 0.005,
        acquire: Acquire = prefect_rate_limit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.interval = 1.0 / calls_per_second + margin_seconds
        self.limit_name = limit_name
        self._acquire = acquire
        self._clock = clock
        self._sleep = sleep
        self._last_grant: float | None = None
        self._lock = threading.Lock()
        self.stats = PacingStats()

    def wait(self) -> None:
        """Block until this process may make its next call, then take the shared slot."""
        with self._lock:
            if self._last_grant is not None:
                delay = self._last_grant + self.interval - self._clock()
                if delay > 0:
                    self._sleep(delay)
                    self.stats.waited_seconds += delay
            if self.limit_name is not None:
                started = self._clock()
                self._acquire(self.limit_name)
                self.stats.acquire_seconds += self._clock() - started
            self._last_grant = self._clock()
            self.stats.grants += 1


_pacers: dict[tuple[str | None, float, float], Pacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(calls_per_second: float, *, limit_name: str | None, margin_seconds: float = 0.005) -> Pacer:
    """One pacer per limit and rate in this process, so consecutive batch task runs share their last grant."""
    key = (limit_name, calls_per_second, margin_seconds)
    with _pacers_lock:
        if key not in _pacers:
            _pacers[key] = Pacer(calls_per_second, limit_name=limit_name, margin_seconds=margin_seconds)
        return _pacers[key]
