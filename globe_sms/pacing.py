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

**Fairness between processes.** The server grants the slot to whichever request arrives first after it
frees, and the process that just sent knows best when that is: measured with two campaigns on two workers,
one campaign sent all its batches while the other waited 17 s. So processes take turns:

* a process that is denied the slot joins a *waiting room* (a slot of the Prefect concurrency limit
  `<limit>-waiting`, held under a 60 s lease while it waits, so that a crashed waiter drops out by itself)
  and watches the limit every ~50 ms with a read (cheap: no write lock on the server's database), asking
  again as soon as the slot is free (`take_slot_fairly`), instead of Prefect's ~1 s jittered retry;
* before asking, a process looks into the waiting room (ahead of time, so that the look never delays a call);
  if someone else waits, it steps aside for `yield_seconds` (0.5 s): the waiter takes the freed slot first,
  and the process that stepped aside is then denied and waits its turn.

Two campaigns alternate (each gets every other second); alone, a campaign never yields, so its throughput is
unchanged. With three or more, each waiting campaign has an equal chance at each freed slot. If stepping
aside is useless five times in a row (nobody took the slot: a stale room, e.g. after a server restart with
in-memory lease storage), the pacer stops yielding for 30 s.

**Hand-over margin.** The server spaces *grants* one interval apart, but each process sends a little after
its grant, and two processes do not take equally long (a loaded machine, a bigger body). When a grant may
follow another process's (this process was denied, stepped aside, or had no grant of its own in the last
two intervals), the pacer waits `handover_seconds` (50 ms) before returning, so that the gateway still sees
at least one interval between the two calls. A campaign sending alone never pays it after its first call.

Waiting for the slot is bounded (`GatewaySettings.rate_limit_timeout_seconds`): Prefect's timeout becomes a
`RateLimitTimeout` that names the limit. Nothing has been sent at that point, so the batch goes back to pending.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

Acquire = Callable[[str], "int | None"]
"""Takes one slot of the named limit; may return how many times it was denied first."""

logger = logging.getLogger(__name__)

WAITING_ROOM_SLOTS = 10_000
WAITING_LEASE_SECONDS = 60.0  # the shortest lease the server accepts; renewed while a wait lasts longer
USELESS_YIELDS = 5  # stepping aside for nobody this many times in a row ...
YIELD_PAUSE_SECONDS = 30.0  # ... stops it for this long


def waiting_room_name(limit_name: str) -> str:
    """The Prefect concurrency limit whose slots are the processes waiting for `limit_name`."""
    return f"{limit_name}-waiting"


class RateLimitTimeout(TimeoutError):
    """No slot of the account's rate limit was granted in time; nothing was sent.

    Attributes:
        limit_name: the Prefect global concurrency limit waited for.
        timeout_seconds: how long it was waited for.
    """

    def __init__(self, limit_name: str, timeout_seconds: float) -> None:
        self.limit_name = limit_name
        self.timeout_seconds = timeout_seconds
        super().__init__(
            f"no slot of the Prefect global concurrency limit {limit_name!r} within {timeout_seconds:g} s "
            "(gateway.rate_limit_timeout_seconds): other runs on the same account may be using the rate, "
            f"or the limit is stuck or misconfigured; see `prefect gcl inspect {limit_name}`. "
            "Nothing was sent: the batch stays pending for the next run."
        )


def prefect_rate_limit(name: str, timeout_seconds: float | None = None) -> None:
    """Take one slot of the Prefect global limit `name`.

    Raises:
        ConcurrencySlotAcquisitionError: the limit does not exist (`strict=True`).
        RateLimitTimeout: no slot within `timeout_seconds` (`None` waits for ever).
    """
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
    from prefect.concurrency.sync import rate_limit

    try:
        rate_limit(name, occupy=1, timeout_seconds=timeout_seconds, strict=True)
    except AcquireConcurrencySlotTimeoutError as exc:
        raise RateLimitTimeout(name, timeout_seconds or 0.0) from exc


def ensure_global_limit(name: str, calls_per_second: float) -> str:
    """Create (or update) the Prefect global limit `name` as a one-slot leaky bucket at `calls_per_second`.

    Its waiting room (see the module docstring) is created too. Safe when several runs start at once:
    Prefect's upsert is not atomic, so a creation that loses the race (409) reads the winner's limit
    instead. A disabled limit is enabled again: a disabled limit lets every caller through, even strictly.

    Returns:
        `created`, `updated` or `exists`.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        wanted = {"limit": 1, "slot_decay_per_second": calls_per_second}
        for _ in range(3):
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, **wanted))
                except ObjectAlreadyExists:
                    continue  # another run created it meanwhile: read it
                ensure_waiting_room(client, name)
                return "created"
            ensure_waiting_room(client, name)
            if existing.limit == 1 and existing.slot_decay_per_second == calls_per_second and existing.active:
                return "exists"
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(**wanted, active=True))
            return "updated"
    raise RuntimeError(f"could not create or read the global concurrency limit {name!r}")


def ensure_waiting_room(client: Any, limit_name: str) -> None:
    """Create the waiting room of `limit_name` if it is missing (a plain concurrency limit, many slots)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = waiting_room_name(limit_name)
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=WAITING_ROOM_SLOTS)
            )
        except ObjectAlreadyExists:
            pass


class WaitingRoom(Protocol):
    """Who else waits for the account's slot. Every method is a courtesy: errors must not fail a send."""

    def others_waiting(self) -> bool: ...
    def join(self, client: Any) -> UUID | None: ...
    def renew(self, client: Any, ticket: UUID) -> None: ...
    def leave(self, client: Any, ticket: UUID) -> None: ...


class PrefectWaitingRoom:
    """The waiting room as the Prefect concurrency limit `<limit>-waiting`: one leased slot per waiter."""

    def __init__(self, limit_name: str) -> None:
        self.name = waiting_room_name(limit_name)

    def others_waiting(self) -> bool:
        """Whether any process holds a slot of the room (this one holds none while it asks)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                return client.read_global_concurrency_limit_by_name(self.name).active_slots > 0
            except ObjectNotFound:  # a server set up before the room existed: no fairness, no error
                return False

    def join(self, client: Any) -> UUID | None:
        response = client.increment_concurrency_slots_with_lease(
            names=[self.name], slots=1, mode="concurrency", lease_duration=WAITING_LEASE_SECONDS
        )
        return UUID(response.json()["lease_id"])

    def renew(self, client: Any, ticket: UUID) -> None:
        client.renew_concurrency_lease(ticket, lease_duration=WAITING_LEASE_SECONDS)

    def leave(self, client: Any, ticket: UUID) -> None:
        client.release_concurrency_slots_with_lease(ticket)


def try_rate_limit(client: Any, name: str) -> bool:
    """One attempt at a slot of the rate limit `name`: True if granted, False if the server said 423.

    Raises:
        ConcurrencySlotAcquisitionError: the limit does not exist (as `rate_limit(strict=True)`).
    """
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    try:
        response = client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 423:
            return False
        raise
    if not response.json():
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limits {[name]!r} must be created before acquiring slots"
        )
    return True


import os as _os
def _trace(msg):
    path = _os.environ.get("GLOBE_SMS_PACER_TRACE")
    if path:
        with open(f"{path}-{_os.getpid()}.log", "a") as f:
            f.write(f"{time.time():.3f} {msg}\n")


def _courtesy(call: Callable[[], Any]) -> Any:
    """Run a waiting-room call; on any error log it and return None (the room never fails a send)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - fairness is best effort
        logger.debug("waiting room: %s", exc)
        return None


def take_slot_fairly(
    name: str,
    try_take: Callable[[str], bool],
    *,
    is_free: Callable[[str], bool] | None = None,
    room: WaitingRoom | None,
    client: Any = None,
    timeout_seconds: float | None = None,
    poll_seconds: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask for a slot of `name` until granted; while denied, stand in the waiting room and watch the limit.

    Args:
        name: the rate limit.
        try_take: one attempt at a slot (a write on the server): True if granted.
        is_free: whether the slot looks free (a read); `None` polls with `try_take` itself.
        room: the waiting room, or None.
        client: passed to the room's calls.
        timeout_seconds: longest wait (`None`: no bound).
        poll_seconds: between two looks while denied (jittered by ±20 %, so waiters do not poll in lockstep).
        clock, sleep: injected in tests.

    Returns:
        How many times the slot was denied.

    Raises:
        RateLimitTimeout: no slot within `timeout_seconds`; the room is left.
    """
    started = clock()
    denials = 0
    ticket: UUID | None = None
    joined = started
    try:
        while True:
            _trace("try")
            _ok = try_take(name)
            _trace(f"try -> {_ok}")
            if _ok:
                break
            denials += 1
            if room is not None and ticket is None:
                ticket = _courtesy(lambda: room.join(client))
                joined = clock()
            while True:
                now = clock()
                if timeout_seconds is not None and now - started >= timeout_seconds:
                    raise RateLimitTimeout(name, timeout_seconds)
                if room is not None and ticket is not None and now - joined > WAITING_LEASE_SECONDS / 2:
                    _courtesy(lambda: room.renew(client, ticket))
                    joined = now
                sleep(poll_seconds * random.uniform(0.8, 1.2))
                _trace("read")
                _free = is_free is None or _courtesy(lambda: is_free(name)) is not False
                _trace(f"read -> {_free}")
                if _free:
                    break
        return denials
    finally:
        if room is not None and ticket is not None:
            _courtesy(lambda: room.leave(client, ticket))


def slot_is_free(client: Any, name: str) -> bool:
    """Whether the rate limit `name` has no active slot now (the server applies the decay when read)."""
    return bool(client.read_global_concurrency_limit_by_name(name).active_slots == 0)


@dataclass
class PacingStats:
    """What the pacer did, for the run summary."""

    grants: int = 0
    waited_seconds: float = 0.0
    acquire_seconds: float = 0.0
    yields: int = 0
    denials: int = 0
    handovers: int = 0


class Pacer:
    """Spaces calls at least `1 / calls_per_second + margin_seconds` apart, measured between grants.

    Args:
        calls_per_second: the account's allowed rate.
        limit_name: the Prefect global limit to acquire after the local wait; `None` paces locally only
            (for scripts without a Prefect server).
        margin_seconds: extra spacing for clock and network jitter between here and the gateway.
        acquire: how a slot is taken (injected in tests); defaults to polling the Prefect limit strictly
            (`take_slot_fairly`), bounded by `timeout_seconds`.
        timeout_seconds: longest wait for the Prefect slot before `RateLimitTimeout` (`None`: no bound).
        waiting_room: who else waits for the slot (see the module docstring); defaults to the Prefect one
            with the default `acquire`, and to none (no yielding) with an injected one.
        yield_seconds: how long to step aside when someone else waits (at most half an interval).
        handover_seconds: the wait after a grant that may follow another process's; defaults to 50 ms with
            the default `acquire` and to 0 with an injected one.
        clock, sleep: injected in tests.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        limit_name: str | None,
        margin_seconds: float = 0.005,
        acquire: Acquire | None = None,
        timeout_seconds: float | None = None,
        waiting_room: WaitingRoom | None = None,
        yield_seconds: float = 0.5,
        handover_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.interval = 1.0 / calls_per_second + margin_seconds
        self.limit_name = limit_name
        self.timeout_seconds = timeout_seconds
        self.yield_seconds = min(yield_seconds, self.interval / 2)
        self.poll_seconds = min(0.05, self.interval / 10)
        self.spacing = 1.0 / calls_per_second  # what the server keeps between two grants
        if waiting_room is None and acquire is None and limit_name is not None:
            waiting_room = PrefectWaitingRoom(limit_name)
        if handover_seconds is None:
            handover_seconds = 0.05 if acquire is None else 0.0
        self.handover_seconds = min(handover_seconds, self.spacing / 4)
        self._room = waiting_room
        self._acquire = acquire if acquire is not None else self._take_prefect_slot
        self._clock = clock
        self._sleep = sleep
        self._last_grant: float | None = None
        self._useless_yields = 0
        self._yields_paused_until = float("-inf")
        self._lock = threading.Lock()
        self.stats = PacingStats()

    def _take_prefect_slot(self, name: str) -> int:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return take_slot_fairly(
                name,
                lambda limit: try_rate_limit(client, limit),
                is_free=lambda limit: slot_is_free(client, limit),
                room=self._room,
                client=client,
                timeout_seconds=self.timeout_seconds,
                poll_seconds=self.poll_seconds,
                clock=self._clock,
                sleep=self._sleep,
            )

    def _sleep_until(self, moment: float | None) -> None:
        delay = 0.0 if moment is None else moment - self._clock()
        if delay > 0:
            self._sleep(delay)
            self.stats.waited_seconds += delay

    def _others_waiting(self) -> bool:
        if self._room is None or self._clock() < self._yields_paused_until:
            return False
        return bool(_courtesy(self._room.others_waiting))

    def _count_yield(self, denials: int | None) -> None:
        """After stepping aside: was anyone there to take the slot? Pause yielding if not, repeatedly."""
        if denials is None or denials > 0:
            self._useless_yields = 0
            return
        self._useless_yields += 1
        if self._useless_yields >= USELESS_YIELDS:
            logger.warning(
                "nobody took the slot of %s in %s turns this process gave up: not yielding for %g s "
                "(a stale waiting room? see `prefect gcl inspect %s`)",
                self.limit_name, USELESS_YIELDS, YIELD_PAUSE_SECONDS,
                waiting_room_name(self.limit_name or ""),
            )
            self._useless_yields = 0
            self._yields_paused_until = self._clock() + YIELD_PAUSE_SECONDS

    def wait(self) -> None:
        """Block until this process may make its next call, then take the shared slot.

        Raises:
            RateLimitTimeout: the shared slot was not granted within the acquire function's timeout.
        """
        with self._lock:
            _trace("wait")
            previous = self._last_grant
            due = None if previous is None else previous + self.interval
            courteous = False
            denials: int | None = None
            if self.limit_name is not None and self._room is not None:
                # Look into the waiting room a little ahead, so that the look never delays the call itself.
                self._sleep_until(None if due is None else due - min(0.05, self.interval / 4))
                _trace("room?")
                courteous = self._others_waiting()
                _trace(f"room -> {courteous}")
            self._sleep_until(due)
            if courteous:
                self._sleep(self.yield_seconds)
                self.stats.yields += 1
            if self.limit_name is not None:
                started = self._clock()
                denials = self._acquire(self.limit_name)
                self.stats.acquire_seconds += self._clock() - started
                self.stats.denials += denials or 0
                if courteous:
                    self._count_yield(denials)
            self.stats.grants += 1
            # Nobody can have had a grant between two of ours less than two spacings apart.
            since = None if previous is None else self._clock() - previous
            own_turn = since is not None and since < 2 * self.spacing - min(0.05, self.spacing / 4)
            handover = self.limit_name is not None and (denials or courteous or not own_turn)
            if self.handover_seconds and handover:
                self._sleep(self.handover_seconds)
                self.stats.handovers += 1
            # From the moment the call may leave: a hand-over wait must not shorten the next interval.
            self._last_grant = self._clock()
            _trace(f"return denials={denials} courteous={courteous} handover={handover}")


_pacers: dict[tuple[str | None, float, float], Pacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(
    calls_per_second: float,
    *,
    limit_name: str | None,
    margin_seconds: float = 0.005,
    timeout_seconds: float | None = None,
) -> Pacer:
    """One pacer per limit and rate in this process, so consecutive batch task runs share their last grant.

    Args:
        calls_per_second: the account's allowed rate.
        limit_name: the Prefect global limit, or `None` to pace locally only.
        margin_seconds: extra spacing between calls.
        timeout_seconds: longest wait for the limit's slot before `RateLimitTimeout` (`None`: no bound);
            the latest caller's value applies to the shared pacer.
    """
    key = (limit_name, calls_per_second, margin_seconds)
    with _pacers_lock:
        if key not in _pacers:
            _pacers[key] = Pacer(calls_per_second, limit_name=limit_name, margin_seconds=margin_seconds)
        _pacers[key].timeout_seconds = timeout_seconds
        return _pacers[key]
