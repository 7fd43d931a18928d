"""Pace SendMessageToGlobe calls (the single lane) to the account's rate, across processes and within one.

The batch lane asks Prefect for one slot per call (`globe_sms.pacing`); at 2,000 calls a second that would be
2,000 requests a second to the Prefect server. The single lane asks for *many* slots at a time instead:

* **Server side**: the account's single-call limit `<limit>-single` is a Prefect global concurrency limit with
  slot decay (a leaky bucket): `slot_decay_per_second` = the lane's rate, `limit` = two grants' worth of
  slots.
  Every process sending for the account takes its slots from it, `grant_slots` at a time (about
  `grants_per_second` = 20 requests a second in all, whatever the rate), with the public
  client's
  `increment_concurrency_slots(mode="rate_limit")`, strictly: a missing limit is an error, never an
  unthrottled send. A background thread keeps a reservoir of granted slots topped up: it asks again one grant
  interval (`grant_slots / rate`) after its previous *ask left*, so the grant's round trip is hidden behind
  the interval instead of added to it. A busy server (503: on SQLite "database is locked", when the chunk
  task runs' writes meet the ask) is asked again at once, up to three times; a denial (423, or a server
  still busy) is asked again a quarter interval later.
* **Client side**: the granted slots are spent smoothly, at most `rate` calls a second (at most 20 ms worth
  at once, so an event loop that wakes late under load catches up without a burst), not in bursts of
  `grant_slots`, so the gateway sees an even flow.

**Rate and margin.** The lane runs at `calls_per_second * (1 - margin)` (3 % by default) so that network and
scheduling jitter never puts more than the account's allowance into one second at the gateway. Within one
process the smooth spending bounds any one-second window to the rate plus 20 ms worth (2 %, inside the
margin; 25 ms left too little for arrivals bunched by a stall: 2,004-2,006 in a rolling second). Across
processes, the leaky bucket bounds it to the rate plus its size (two grants, about 10 % of the rate) when
several processes start at once; a throttling answer then slows the lane down (below).

**Beside the batch lane** (`send_via: both`) the margin is 5 %: once a second the batch lane's own work in
the same process (a 1,000-number answer, a 1,000-row commit) holds the event loop up, and calls taken
before the stall leave with the ones after it. With 3 % the gateway counted 2,003-2,008 calls in its
busiest rolling second and throttled 4-8 (`bench/bench_single.py --prefect-postgres`); at 5 %, none. The
account's shared limit keeps the default margin (campaigns of either kind share it).

**Throttling slows the lane down** (adaptive, never a retry storm): each throttled answer (`Throttling*`,
`QPS_LIMIT_CONTROL`) cuts the spending rate by 30 % (at most once per 100 ms; never below 5 % of the rate) and
pauses spending for 100 ms; every second without one gives back 10 % of the rate, up to the full rate. The
throttled calls' recipients go back to `pending` and are sent again later through the same pacer.

**Prefect's public client only** (`open_pacing_client`, `increment_concurrency_slots`,
`read_global_concurrency_limit_by_name`, `create/update_global_concurrency_limit`).
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from globe_sms.pacing import RateLimitTimeout, ServerBusy, is_busy, open_pacing_client, unless_busy

logger = logging.getLogger(__name__)

TakeSlots = Callable[[int], bool]
"""One attempt at `n` slots of the lane's limit: True if granted, False if denied or the server is busy."""

DEFAULT_MARGIN = 0.03
BESIDE_BATCH_MARGIN = 0.05  # `send_via: both`: the batch lane's work in the process stalls the event loop
GRANTS_PER_SECOND = 20.0
TICK_SECONDS = 0.005  # how often a waiting dispatcher looks again
BURST_SECONDS = 0.020  # at most rate x this many calls start together (a late wake-up catches up that much)
THROTTLE_CUT = 0.7
THROTTLE_PAUSE_SECONDS = 0.1
RECOVERY_PER_SECOND = 0.1  # of the full rate, per second without a throttling answer
MIN_RATE_FRACTION = 0.05


def single_limit_name(limit_name: str) -> str:
    """The Prefect global limit of the account's SendMessageToGlobe calls, beside its batch limit."""
    return f"{limit_name}-single"


def grant_size(rate: float, grants_per_second: float = GRANTS_PER_SECOND) -> int:
    """Slots asked for at a time: the rate divided by the asks per second, at least one."""
    return max(1, math.ceil(rate / grants_per_second))


def lane_margin(beside_batch: bool) -> float:
    """The single lane's margin: wider when the batch lane sends from the same process (`send_via: both`)."""
    return BESIDE_BATCH_MARGIN if beside_batch else DEFAULT_MARGIN


def lane_rate(calls_per_second: float, margin: float = DEFAULT_MARGIN) -> float:
    """The rate the lane spends at: the account's allowance less the margin."""
    return calls_per_second * (1.0 - margin)


def ensure_single_limit(name: str, calls_per_second: float, margin: float = DEFAULT_MARGIN) -> str:
    """Create (or update) the Prefect global limit `name`: decay at the lane's rate, room for two grants.

    A disabled limit is enabled again (a disabled limit lets every caller through, even strictly). Prefect's
    upsert is not atomic, so a creation that loses a race (409) reads the winner's limit instead.

    Returns:
        `created`, `updated` or `exists`.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    rate = lane_rate(calls_per_second, margin)
    wanted = {"limit": 2 * grant_size(rate), "slot_decay_per_second": rate}
    with get_client(sync_client=True) as client:
        for _ in range(3):
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, active=True, **wanted)
                    )
                    return "created"
                except ObjectAlreadyExists:
                    continue
            same = existing.limit == wanted["limit"] and math.isclose(
                existing.slot_decay_per_second or 0.0, rate, rel_tol=1e-9
            )
            if same and existing.active:
                return "exists"
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(active=True, **wanted)
            )
            return "updated"
    raise RuntimeError(f"could not create the Prefect global concurrency limit {name!r}")


def prefect_take_slots(client: Any, name: str) -> TakeSlots:
    """`TakeSlots` over the public client: one `increment_concurrency_slots` request per attempt.

    Raises (from the returned function):
        ConcurrencySlotAcquisitionError: the limit does not exist (as `rate_limit(strict=True)`).
    """
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    def take(slots: int) -> bool:
        try:
            # A busy server's 503 ("database is locked" on SQLite) has already waited on the server: ask again
            # at once, a few times, before the lane's reservoir runs dry.
            response = unless_busy(
                lambda: client.increment_concurrency_slots(names=[name], slots=slots, mode="rate_limit"),
                attempts=3,
                pause=0.002,
            )
        except (httpx.HTTPStatusError, ServerBusy) as exc:
            if is_busy(exc):
                return False
            raise
        if not response.json():
            raise ConcurrencySlotAcquisitionError(
                f"Concurrency limits {[name]!r} must be created before acquiring slots"
            )
        return True

    return take


@dataclass
class SinglePacingStats:
    """What the single lane's pacer did, for the summary and the benchmark."""

    asks: int = 0  # requests to the Prefect server
    grants: int = 0
    slots_granted: int = 0
    calls: int = 0  # slots spent
    throttled: int = 0
    slowdowns: int = 0
    lowest_rate: float = 0.0


class SingleLanePacer:
    """Lets SendMessageToGlobe calls start at most `rate` a second, with slots from the shared limit.

    Args:
        calls_per_second: the account's allowed SendMessageToGlobe rate.
        limit_name: the Prefect global limit (`single_limit_name`); None paces locally only (scripts, tests
            without a Prefect server).
        margin: the fraction of the rate kept in reserve (see the module docstring).
        grants_per_second: how often to ask the server, at most (sets the grant size).
        timeout_seconds: longest time without a grant while calls wait; then `take` raises RateLimitTimeout.
        take_slots: one attempt at slots (injected in tests); default the Prefect limit `limit_name`.
        clock, sleep: injected in tests.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        limit_name: str | None,
        margin: float = DEFAULT_MARGIN,
        grants_per_second: float = GRANTS_PER_SECOND,
        timeout_seconds: float | None = None,
        take_slots: TakeSlots | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.rate = lane_rate(calls_per_second, margin)
        self.grant_slots = grant_size(self.rate, grants_per_second)
        self.grant_interval = self.grant_slots / self.rate
        self.limit_name = limit_name
        self.timeout_seconds = timeout_seconds
        self._take_slots = take_slots
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._slots = 0  # granted, not yet spent
        self._allowance = 0.0  # calls the smooth spending allows now
        self._current = self.rate  # the spending rate, lowered by throttling
        self._last_refill = clock()
        self._waiting_since: float | None = None
        self._last_throttle = float("-inf")
        self._paused_until = float("-inf")
        self._demand = 0  # callers waiting for slots (the refiller only asks while someone does)
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._api_stack: Any = None
        self.stats = SinglePacingStats(lowest_rate=self.rate)

    # -- the reservoir (a background thread asks the server) ------------------------------------------

    def _default_take(self) -> TakeSlots:
        from contextlib import ExitStack

        if self.limit_name is None:
            return lambda slots: True
        self._api_stack = ExitStack()
        client = self._api_stack.enter_context(open_pacing_client())
        return prefect_take_slots(client, self.limit_name)

    def _refill_loop(self) -> None:
        try:
            take = self._take_slots or self._default_take()
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            with self._wake:
                self._error = exc
                self._wake.notify_all()
            return
        next_ask = self._clock()
        try:
            while True:
                with self._wake:
                    while not self._closed and (self._demand == 0 or self._slots >= self.grant_slots):
                        self._wake.wait(0.05)
                    if self._closed:
                        return
                delay = next_ask - self._clock()
                if delay > 0:
                    self._sleep(delay)
                departed = self._clock()
                granted = take(self.grant_slots)
                with self._wake:
                    self.stats.asks += 1
                    if granted:
                        self._slots += self.grant_slots
                        self.stats.grants += 1
                        self.stats.slots_granted += self.grant_slots
                        self._wake.notify_all()
                # Timed from the ask's departure: the server freed the room one interval after it granted.
                next_ask = departed + (self.grant_interval if granted else self.grant_interval / 4)
        except BaseException as exc:  # noqa: BLE001 - a missing limit, a dead server: handed to the callers
            with self._wake:
                self._error = exc
                self._wake.notify_all()
        finally:
            if self._api_stack is not None:
                self._api_stack.close()

    def start(self) -> None:
        """Start the refiller thread (idempotent), in a copy of the caller's context: Prefect's settings (the
        API URL of a `temporary_settings` block, a flow run's) live in context variables."""
        with self._lock:
            if self._thread is None:
                context = contextvars.copy_context()
                self._thread = threading.Thread(
                    target=context.run, args=(self._refill_loop,), name="single-lane-slots", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop the refiller; slots left unspent simply decay on the server."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    # -- spending ----------------------------------------------------------------------------------------

    def _recover(self, now: float) -> None:
        if self._current < self.rate and now - self._last_throttle > 1.0:
            elapsed = now - max(self._last_throttle + 1.0, self._last_refill)
            self._current = min(self.rate, self._current + self.rate * RECOVERY_PER_SECOND * max(elapsed, 0))

    def take(self, wanted: int) -> tuple[int, float]:
        """How many calls may start now (at most `wanted`), and if none, how long to wait before asking.

        Non-blocking, for an event loop that sleeps the returned delay itself.

        Raises:
            RateLimitTimeout: no grant for `timeout_seconds` while calls waited.
            Exception: the refiller's error (e.g. the limit does not exist).
        """
        with self._wake:
            if self._error is not None:
                raise self._error
            now = self._clock()
            self._recover(now)
            burst = max(1.0, self._current * BURST_SECONDS)
            if now >= self._paused_until:
                self._allowance = min(burst, self._allowance + self._current * (now - self._last_refill))
            self._last_refill = now
            n = min(wanted, int(self._allowance), self._slots)
            if n > 0:
                self._allowance -= n
                self._slots -= n
                self.stats.calls += n
                self._waiting_since = None
                if self._slots < self.grant_slots:
                    self._wake.notify_all()
                return n, 0.0
            if self._slots == 0:
                self._demand = max(self._demand, 1)
                self._wake.notify_all()
                if self._waiting_since is None:
                    self._waiting_since = now
                waited = now - self._waiting_since
                if self.timeout_seconds is not None and waited > self.timeout_seconds:
                    raise RateLimitTimeout(self.limit_name or "(local)", self.timeout_seconds)
                return 0, min(self.grant_interval / 4, 0.02)
            if now < self._paused_until:
                return 0, self._paused_until - now
            return 0, max(TICK_SECONDS, (1.0 - self._allowance) / self._current)

    def want(self, active: bool) -> None:
        """Say whether calls are waiting: the refiller asks for slots only while they are."""
        with self._wake:
            self._demand = 1 if active else 0
            if not active:
                self._waiting_since = None
            self._wake.notify_all()

    def throttled(self) -> None:
        """A call was throttled by the gateway: spend more slowly for a while (once per pause)."""
        with self._wake:
            now = self._clock()
            self.stats.throttled += 1
            if now - self._last_throttle < THROTTLE_PAUSE_SECONDS:
                return
            self._last_throttle = now
            self._current = max(self.rate * MIN_RATE_FRACTION, self._current * THROTTLE_CUT)
            self._paused_until = now + THROTTLE_PAUSE_SECONDS
            self._allowance = 0.0
            self.stats.slowdowns += 1
            self.stats.lowest_rate = min(self.stats.lowest_rate, self._current)
            logger.info("single lane throttled: down to %.0f calls/s", self._current)

    @property
    def current_rate(self) -> float:
        """The rate calls are spent at now (the lane's rate unless throttling lowered it)."""
        with self._lock:
            return self._current
