"""Pace BatchSendMessageToGlobe calls to the account's rate, across processes and within one.

Two layers, as `shared/ARCHITECTURE.md` sketches:

* **Server side**: a Prefect global concurrency limit with `limit=1` and `slot_decay_per_second=rate` (a leaky
  bucket on the Prefect server). Every run, worker and machine that shares the server shares the account's
  rate. It is acquired with `strict=True`: a missing limit is an error, never a silently unthrottled send.
* **Client side**: Prefect's `rate_limit` alone retries a denied grant after a jittered `Retry-After` of about
  a second, which measured only ~0.6 calls/s. So the pacer times every call itself: one interval (the
  spacing plus `margin_seconds`) after the previous *departure*, and asks for the slot with one request to
  the limit's increment endpoint (`try_rate_limit`, as strict as `rate_limit(strict=True)`), which never
  waits on the server's side. A denial costs nothing but its round trip: the denied request's transaction
  is rolled back, so the slot's `updated` time does not move (pinned by
  tests/integration/test_prefect_client.py).

**Hiding the write-ahead and the grant in the wait.** The caller builds and signs the payload before
`wait()`, and gives it the write-ahead (committing the batch `submitting`) and its undo. The pacer starts the
write-ahead early enough (the slowest recent commit, plus 10 ms for waking up) that the ask can leave at
`departure - ask_lead` (the slowest recent round trip and 3 ms, at most `MAX_HOLD_SECONDS`, 10 ms), and not
before the slot frees (read from the limit: its last grant plus one spacing, less how long an ask takes to
reach the server, learnt from this process's own grants). `departing()` then holds the request until its
departure time. The gateway sees one interval between two calls of a campaign alone (0.99 of the rate with
the 10 ms default margin), where the old order (wait, ask, commit, send) added the grant's round trip and the
commit to every gap (0.97). An ask that comes too early is asked again every 3 ms for a few tens of ms; if
still no slot, the write-ahead is undone (the rows back to `pending`, nothing sent) and the wait turns into
the fair one below, which writes ahead again before it asks. The order stays crash-safe: a crash before the
write-ahead leaves the rows `pending`, after it `submitting` (then `unknown`): never sent twice.

**Throttled anyway.** Calls reach the gateway a few ms later or sooner than they leave (a loaded machine, a
congested network). The margin is room for that; when the gateway throttles a batch call all the same
(`throttled()`), the pacer widens the margin by 10 ms (up to 100 ms more) and narrows it by 1 ms per grant.

**Fairness between processes.** The server grants the slot to whichever request arrives first after it
frees, and the process that just sent knows best when that is: measured with two campaigns on two workers,
one campaign sent all its batches while the other waited 17 s. So processes take turns:

* a process that is denied the slot joins a *waiting room* (a slot of the Prefect concurrency limit
  `<limit>-waiting`, held under a 60 s lease while it waits, so that a crashed waiter drops out by itself)
  and reads the limit (cheap: no write lock on the server's database) to compute when the slot frees, asking
  again then (`take_slot_fairly`), instead of Prefect's ~1 s jittered retry;
* before asking, a process looks into the waiting room (ahead of time, so that the look never delays a call);
  if someone else waits, it steps aside for `yield_seconds` (0.5 s): the waiter takes the freed slot first,
  and the process that stepped aside is then denied and waits its turn.

Two campaigns alternate (each gets every other second); alone, a campaign never yields, so its throughput is
unchanged. With three or more, each waiting campaign has an equal chance at each freed slot. If stepping
aside is useless five times in a row (nobody took the slot: a stale room, e.g. after a server restart with
in-memory lease storage), the pacer stops yielding for 30 s.

**Hand-over margin.** The server spaces *grants* one interval apart, but each process sends a little after
its grant, and not always equally soon. So when the slot may pass from another process (this process was
denied, stepped aside, or had no grant of its own in the last two intervals), the pacer reads the limit's
last grant and holds the departure until `handover_seconds` (25 ms: 10 ms of hold, 5 ms of slack for
waking up, and the 10 ms margin) after the slot frees, asking one round trip before that, at most
`MAX_HOLD_SECONDS` (10 ms) (and never so early that the ask reaches the server before the slot frees). The
other process left at most 15 ms after its ask (every ask, a hand-over's too, is timed at most 10 ms ahead of
its departure), and its slot was stamped after that ask left, so the gateway sees at least one interval and
the margin between them.

**A call that leaves late restamps the slot.** The slot frees one spacing after its stamp, and the stamp is
when the server began granting it (on PostgreSQL, the start of the granting transaction), which comes after
the ask left. A call that left more than 15 ms after its ask (the grant came back slowly from a loaded
server; on PostgreSQL it was stamped as its transaction began, measured up to 130 ms before the grant
returned; the process was not scheduled; a TLS handshake came first) could reach the gateway less than an
interval before the next holder's call. So as soon as its request has left (`call_sent`, from httpcore's
public `trace` extension), the pacer stamps the slot again with an update of the limit that changes nothing
else (`restamp_slot`): the next grant, whoever asks, comes at least one spacing after the stamp, hence after
this call left. The stamp must land before the slot frees, so a call still held up half a spacing after its
ask is not sent at all (`departing()` says so): its rows go back to `pending` and it waits again. (Stamping
once the answer was in, as before, raced the next holder: the answer, a read and a write on a loaded SQLite
server took most of a second, and a busy server's 503 dropped the stamp; CI saw two calls 0.88 s apart.)
On an idle machine a restamp is rare; it costs the next call a few ms.

**Lateness is made up, a little at a time.** A call due at its time sometimes leaves a few ms after it (its
grant came back slowly, the thread woke up late). Timed from such a departure, every later call would carry
the lateness, and the batch lane lost 0.0005 of its rate to it (0.9896 where the ceiling is 0.9901). So the
next calls keep to the schedule: each may leave up to 0.3 of the margin (`CATCH_UP_SHARE`, 3 ms of 10) sooner
after its predecessor until the lateness is made up, at most ten times (`CATCH_UP_CALLS`), and not at all
while a throttled call has widened the margin. Two calls of a process are never less than the spacing and
0.7 of the margin apart; that stays room for the way to the gateway. A call that opened the connection
times the next from the moment its request had left (the handshake done), not from its answer; and a waiter
leaves the waiting room once its call has left (or at once when the call will not be sent,
`call_abandoned`), so that the leave's write, in a thread of its own, never competes with the call between
its grant and its departure.

Two campaigns that alternate pay about 25-35 ms on every call (about 0.97 of the rate together). (The old
rule, "ask 250 ms after the previous grant has aged one interval", was needed while the commit sat between
the grant and the request, where the other campaign's ledger writes could stretch it: it cost a
pair a fifth of the rate.)

**Prefect's public client only.** Every request goes through the methods of Prefect's public client
(`increment_concurrency_slots`, `read_global_concurrency_limit_by_name`, the `*_with_lease` and
`renew_concurrency_lease` methods), so it carries the headers the client adds, such as the CSRF token a server
with `PREFECT_SERVER_CSRF_PROTECTION_ENABLED` requires. The pacer keeps one client (`open_pacing_client`)
from call to call, whose 503s come back at once through an httpx response hook instead of after the
client's own 2-s retry sleep; what the pacer relies on in that client is pinned by
tests/integration/test_prefect_client.py.

Waiting for the slot is bounded (`GatewaySettings.rate_limit_timeout_seconds`): past it, a `RateLimitTimeout`
names the limit. Nothing has been sent at that point, so the batch goes back to pending.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
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
    from prefect.concurrency.sync import rate_limit

    try:
        rate_limit(name, occupy=1, timeout_seconds=timeout_seconds, strict=True)
    except TimeoutError as exc:  # documented: Prefect's AcquireConcurrencySlotTimeoutError is a TimeoutError
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


class ServerBusy(Exception):
    """The Prefect server answered 503 (on SQLite: "database is locked"); worth asking again soon."""

    def __init__(self, response: Any) -> None:
        self.response = response
        super().__init__(f"the Prefect server is busy (503) at {response.request.url.path}")


def raise_when_busy(response: Any) -> None:
    """An httpx response hook: a 503 raises `ServerBusy` before Prefect's client sleeps to retry it.

    Prefect's public client retries a 503 by itself after sleeping 2 s, then 4 s, 8 s...; it sleeps 2 s even
    with `PREFECT_CLIENT_MAX_RETRIES=0` (the sleep comes before the retry count is checked), and no setting
    takes 503 out of its retried codes. For a process waiting for the slot that is a missed turn: the pacer
    asks again within ~50 ms itself instead. tests/integration/test_prefect_client.py pins this behaviour.
    """
    if response.status_code == 503:
        raise ServerBusy(response)


def open_pacing_client() -> Any:
    """A public Prefect sync client (not yet entered) whose 503s raise `ServerBusy` at once.

    Built with `get_client`'s public `httpx_settings` (an httpx response hook): every other header, such as
    the CSRF token a server with `PREFECT_SERVER_CSRF_PROTECTION_ENABLED` requires, is the client's own.
    """
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True, httpx_settings={"event_hooks": {"response": [raise_when_busy]}})


def is_busy(exc: Exception) -> bool:
    """Whether a failed request to a limit is the slot denied (423) or a busy server, not an error.

    The public client raises on every status >= 400 (`httpx.HTTPStatusError`, response attached); it never
    retries a 423. A 503 raises `ServerBusy` through `raise_when_busy`, or comes as a 503 status error from
    a client without that hook once it has given up retrying.
    """
    import httpx

    if isinstance(exc, ServerBusy):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (423, 503)


BUSY_RETRIES = 8  # a waiting-room write the busy server refused (503) is tried again this many times ...
BUSY_PAUSE_SECONDS = 0.02  # ... about this long apart


def unless_busy(
    call: Callable[[], Any],
    *,
    attempts: int = BUSY_RETRIES,
    pause: float = BUSY_PAUSE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """`call()`, tried again (up to `attempts` times in all, `pause` apart, jittered) while the server
    answers 503 (`ServerBusy`).

    A Prefect server on SQLite answers 503 ("database is locked") to a write that meets another one, often
    when two campaigns and their workers share it. A waiter whose join of the waiting room fails is not seen
    by the slot's holder, which then takes the next slot too, and the next (measured: one campaign waited
    6 s while the other sent five calls). Joining a few tens of ms later costs the waiter nothing: it is
    waiting anyway.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except ServerBusy:
            if attempt == attempts:
                raise
            sleep(pause * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class PrefectWaitingRoom:
    """The waiting room as the Prefect concurrency limit `<limit>-waiting`: one leased slot per waiter.

    Args:
        limit_name: the rate limit whose waiters the room holds.
        client: gives the Prefect client `others_waiting` reads with (the pacer's own); by default a new
            `open_pacing_client()` for each look.
    """

    def __init__(self, limit_name: str, client: Callable[[], Any] | None = None) -> None:
        self.name = waiting_room_name(limit_name)
        self._client_for_looks = client

    def others_waiting(self) -> bool:
        """Whether any process holds a slot of the room (this one holds none while it asks)."""
        from prefect.exceptions import ObjectNotFound

        with ExitStack() as stack:
            if self._client_for_looks is not None:
                client = self._client_for_looks()
            else:
                client = stack.enter_context(open_pacing_client())
            try:
                # A look is made 50 ms ahead of the ask: a busy server gets two more tries within that.
                room = unless_busy(
                    lambda: client.read_global_concurrency_limit_by_name(self.name), attempts=3
                )
            except ObjectNotFound:  # a server set up before the room existed: no fairness, no error
                return False
        return room.active_slots > 0

    def join(self, client: Any) -> UUID | None:
        response = unless_busy(
            lambda: client.increment_concurrency_slots_with_lease(
                names=[self.name], slots=1, mode="concurrency", lease_duration=WAITING_LEASE_SECONDS
            )
        )
        return UUID(response.json()["lease_id"])

    def renew(self, client: Any, ticket: UUID) -> None:
        client.renew_concurrency_lease(ticket, lease_duration=WAITING_LEASE_SECONDS)

    def leave(self, client: Any, ticket: UUID) -> None:
        import httpx

        for _ in range(5):  # a lease left behind makes others step aside for nobody until it expires
            try:
                client.release_concurrency_slots_with_lease(ticket)
            except (httpx.HTTPStatusError, ServerBusy) as exc:
                if is_busy(exc):
                    time.sleep(0.05)
                    continue
                if exc.response.status_code == 404:  # the lease is gone already (expired, revoked)
                    return
                raise
            return


def try_rate_limit(client: Any, name: str) -> bool:
    """One attempt at a slot of the rate limit `name`: True if granted; False if denied (423) or busy.

    Uses the public `increment_concurrency_slots`, which raises on a denial (423, with the server's
    `Retry-After`, which the pacer does not need: it watches the limit instead) and never retries one. With
    a client from `open_pacing_client()`, a busy server is handed back at once too.
    tests/integration/test_prefect_client.py pins both behaviours.

    Raises:
        ConcurrencySlotAcquisitionError: the limit does not exist (as `rate_limit(strict=True)`).
    """
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    try:
        response = client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
    except (httpx.HTTPStatusError, ServerBusy) as exc:
        if is_busy(exc):
            return False
        raise
    if not response.json():
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limits {[name]!r} must be created before acquiring slots"
        )
    return True


def last_grant_age(client: Any, name: str) -> tuple[float, float] | None:
    """How long ago the rate limit `name` last granted its slot, and its spacing (seconds per grant); None
    when it never did.

    The server answers with `updated`, the time of the slot's last grant (a denial does not move it: the
    denied request's transaction is rolled back, pinned by tests/integration/test_prefect_client.py), and
    the slot frees exactly one spacing later (`limit=1`, decaying at the rate). The age is read against the
    local clock: keep the machines' clocks in sync (NTP).
    """
    from globe_sms.clock import utc_now

    limit = client.read_global_concurrency_limit_by_name(name)
    if limit.updated is None:
        return None
    return (utc_now() - limit.updated).total_seconds(), 1.0 / limit.slot_decay_per_second


def slot_wait(client: Any, name: str, margin_seconds: float) -> float:
    """How long to wait before asking for the rate limit `name` so that the previous grant, whoever took it,
    lies at least one interval plus `margin_seconds` back (0 when it already does).

    Computed from the slot's last grant (`last_grant_age`), not polled for: a process waiting for the slot
    asks within milliseconds of the moment it may, not up to a poll interval later.
    """
    age = last_grant_age(client, name)
    if age is None:
        return 0.0
    since, spacing = age
    return max(0.0, spacing + margin_seconds - since)


def _courtesy(call: Callable[[], Any], default: Any = None) -> Any:
    """Run a fairness call; on any error log it and return `default` (fairness never fails a send)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - fairness is best effort
        logger.debug("pacing: %s", exc)
        return default


def take_slot_fairly(
    name: str,
    try_take: Callable[[str], bool],
    *,
    slot_wait: Callable[[str], float] | None = None,
    look_first: bool = False,
    room: WaitingRoom | None,
    leave: Callable[[UUID], None] | None = None,
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
        slot_wait: a read: how long to wait before asking (the slot's previous grant plus an interval
            and the hand-over margin); `None` polls with `try_take` itself.
        look_first: read before the first attempt too (the slot may come from another process), standing in
            the room meanwhile.
        room: the waiting room, or None.
        leave: how to leave the room once granted (e.g. from another thread, so that leaving never delays
            the call); default: `room.leave` at once.
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

    def look() -> bool:
        """Wait until the slot may be asked for (read from the limit, bounded by the timeout); True."""
        if slot_wait is None:
            return True
        wait = _courtesy(lambda: slot_wait(name))
        if isinstance(wait, (int, float)) and wait > 0:
            if timeout_seconds is not None:
                wait = min(wait, max(0.0, started + timeout_seconds - clock()))
            sleep(wait)
        return True

    try:
        if look_first:
            if room is not None:  # waiting for a slot that may come from another process: stand in the room,
                ticket = _courtesy(functools.partial(room.join, client))  # so that its holder steps aside
                joined = clock()
            look()
        while not try_take(name):
            denials += 1
            while True:
                now = clock()
                if timeout_seconds is not None and now - started >= timeout_seconds:
                    raise RateLimitTimeout(name, timeout_seconds)
                if room is not None and ticket is None:  # again after a failed join: a busy server
                    ticket = _courtesy(functools.partial(room.join, client))
                    joined = clock()
                elif room is not None and ticket is not None and now - joined > WAITING_LEASE_SECONDS / 2:
                    _courtesy(functools.partial(room.renew, client, ticket))
                    joined = now
                sleep(poll_seconds * random.uniform(0.8, 1.2))
                if look():
                    break
        return denials
    finally:
        if room is not None and ticket is not None:
            if leave is not None:
                leave(ticket)
            else:
                _courtesy(functools.partial(room.leave, client, ticket))


ASK_RETRY_SECONDS = 0.003  # between two asks while the slot, asked for a little early, is not free yet
CATCH_UP_SHARE = 0.3  # a late call's successors may each leave this share of the margin sooner, catching up
CATCH_UP_CALLS = 10  # ... at most this many times over: lateness beyond that is not made up
DEPARTURE_SLACK_SECONDS = 0.005  # a held call may leave this much after its time (a thread waking up late)
ASK_SOON_SECONDS = 0.25  # the write-ahead waits at most this long for the ask's moment
ASK_AFTER_FREE_SECONDS = 0.003  # an ask is timed to reach the server this long after the slot frees
WAKE_SECONDS = 0.01  # allowance for a sleeping thread waking up late
THROTTLED_MARGIN_STEP_SECONDS = 0.01  # the margin widens this much per throttled call ...
MAX_EXTRA_MARGIN_SECONDS = 0.1  # ... up to this much more than configured
MAX_HOLD_SECONDS = 0.010  # a slot is asked for at most this long before the departure it is for: so a call
# leaves at most this long (and the slack) after its ask, which the hand-over margin (25 ms) covers
RECENT = 8  # round trips and write-ahead commits remembered to time the next ask


@dataclass
class PacingStats:
    """What the pacer did, for the run summary."""

    grants: int = 0
    waited_seconds: float = 0.0
    acquire_seconds: float = 0.0
    yields: int = 0
    denials: int = 0
    handovers: int = 0
    early_asks: int = 0
    undone_write_aheads: int = 0
    throttled: int = 0
    restamps: int = 0
    stale_grants: int = 0


class Pacer:
    """Spaces departures at least `1 / calls_per_second + margin_seconds` apart, and takes the shared slot
    for each, with the write-ahead and the slot's round trip hidden in the wait.

    The order for one call (`wait(write_ahead, undo)`, then `departing()`), departure `due` one interval
    after the previous departure:

    1. sleep until `due - lead`, where `lead` is the slowest of the recent write-ahead commits plus the
       slowest of the recent round trips to the limit (and 2 ms);
    2. `write_ahead()`: the caller commits the batch `submitting`;
    3. ask for the slot; asked a little early, it is denied (cheaply: a denial does not move the limit) and
       asked again every 3 ms for as long as being early is plausible (`lead` + 10 ms); past that, the
       write-ahead is undone (`undo()`: the rows go back to `pending`, nothing was sent) and the wait turns
       into the fair one (the waiting room, the hand-over margin), which writes ahead again before asking;
    4. `departing()` holds the request until `due` if the grant came early, and times the next call from
       that moment. (Without a write-ahead, `wait()` itself holds until `due`: the call leaves when it
       returns.)

    The gateway then sees one interval plus the margin between two calls of a campaign sending alone: the
    commit and the grant's round trip no longer add to it. A crash during step 1 or during the fair wait
    leaves the rows `pending`; from step 2 to the answer they are `submitting` (then `unknown` after a
    crash), as before: never sent twice.

    Args:
        calls_per_second: the account's allowed rate.
        limit_name: the Prefect global limit to acquire; `None` paces locally only (for scripts without a
            Prefect server).
        margin_seconds: extra spacing for clock and network jitter between here and the gateway.
        acquire: how a slot is taken (injected in tests); defaults to the Prefect limit, asked for strictly
            (`take_slot_fairly`), bounded by `timeout_seconds`. An injected one is called after the
            write-ahead.
        timeout_seconds: longest wait for the Prefect slot before `RateLimitTimeout` (`None`: no bound).
        waiting_room: who else waits for the slot (see the module docstring); defaults to the Prefect one
            with the default `acquire`, and to none (no yielding) with an injected one.
        yield_seconds: how long to step aside when someone else waits (at most half an interval).
        handover_seconds: when the slot may pass from another process, it is asked for only this long after
            the slot's previous grant has aged one interval (the default `acquire` only).
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
        handover_seconds: float = 0.025,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.margin_seconds = margin_seconds  # the configured margin; `throttled()` widens it for a while
        self.interval = 1.0 / calls_per_second + margin_seconds
        self.limit_name = limit_name
        self.timeout_seconds = timeout_seconds
        self.yield_seconds = min(yield_seconds, self.interval / 2)
        self.poll_seconds = min(0.05, self.interval / 10)
        self.spacing = 1.0 / calls_per_second  # what the server keeps between two grants
        self._api: Any = None  # the pacer's own Prefect client, opened on first use
        self._api_url: str | None = None
        self._api_stack: ExitStack | None = None
        if waiting_room is None and acquire is None and limit_name is not None:
            waiting_room = PrefectWaitingRoom(limit_name, client=self._prefect_client)
        self.handover_seconds = min(handover_seconds, self.spacing / 4)
        self._handover = True  # whether the next slot may come from another process
        self._room = waiting_room
        self._injected_acquire = acquire is not None
        self._acquire = acquire if acquire is not None else self._take_prefect_slot
        self._clock = clock
        self._sleep = sleep
        self._last_grant: float | None = None
        self._last_departure: float | None = None
        self._due: float | None = None
        self._not_before: float | None = None  # a hand-over's departure, at the earliest
        self._ask_at: float | None = None  # when to ask for the slot, once written ahead
        self._ups: deque[float] = deque(maxlen=2 * RECENT)  # from sending an ask to the server granting it
        self._asked_wall: float | None = None  # the last granted ask: sent, and answered (wall clock)
        self._granted_wall: float | None = None
        self._granted_ask: float | None = None  # when the ask of the last grant was sent (local clock)
        self._restamp = False  # whether the last call left too late after its ask (see `call_sent`)
        self._leaving: tuple[UUID, contextvars.Context] | None = None  # the room to leave after the call
        self._behind = 0.0  # lateness the next calls still make up (see `departing`)
        self._departed: float | None = None  # when the last call was held until or released (`departing`)
        self._sent: float | None = None  # when the last call's request had left (`call_sent`)
        self._round_trips: deque[float] = deque(maxlen=RECENT)
        self._commits: deque[float] = deque(maxlen=RECENT)
        self._write_ahead: Callable[[], None] | None = None
        self._undo: Callable[[], None] | None = None
        self._written = False
        self._useless_yields = 0
        self._yielded_at: float | None = None  # when this process last stepped aside, during a wait
        self._taken_while_yielding = False  # whether another process took the slot meanwhile
        self._yields_paused_until = float("-inf")
        self._lock = threading.Lock()
        self._api_lock = threading.Lock()  # the pacer's Prefect client is used by one thread at a time
        self.stats = PacingStats()

    def _prefect_client(self) -> Any:
        """The pacer's Prefect client (`open_pacing_client`), kept from one call to the next.

        Kept, not opened per call: opening one costs tens of milliseconds (and a CSRF token request on a
        protected server), which would come straight off the pace. A new one is opened when
        `PREFECT_API_URL` changes. Used under the pacer's lock only.
        """
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        if self._api is None or url != self._api_url:
            self._close_client()
            self._api_stack = ExitStack()
            self._api = self._api_stack.enter_context(open_pacing_client())
            self._api_url = url
        return self._api

    def close(self) -> None:
        """Leave the waiting room if a grant left that to do, then close the pacer's Prefect client, if open;
        a later `wait()` opens a new one."""
        self._start_leaving()
        with self._api_lock:  # the leave, if any, finishes first
            self._close_client()

    def _close_client(self) -> None:
        if self._api_stack is not None:
            self._api_stack.close()
        self._api, self._api_url, self._api_stack = None, None, None

    # --- the write-ahead, around the ask ------------------------------------------------------------------

    def _commit_estimate(self) -> float:
        return max(self._commits, default=0.0)

    def _round_trip_estimate(self) -> float:
        return max(self._round_trips, default=0.0)

    def lead(self) -> float:
        """How long before a departure the write-ahead starts when its ask is timed by the departure: the
        slowest recent commit and round trip, and 10 ms for waking up late."""
        if self.limit_name is None:
            return self._commit_estimate()
        return self._commit_estimate() + self.ask_lead() + WAKE_SECONDS

    def ask_lead(self) -> float:
        """How long before a departure the slot is asked for: the slowest recent round trip and 3 ms, at most
        `MAX_HOLD_SECONDS` (also before any round trip was measured: a first ask, on a cold server, is the
        slowest). So the grant comes at most that long before the departure, which bounds how long after its
        grant a call leaves (the hand-over margin of the other processes covers it)."""
        if not self._round_trips:
            return MAX_HOLD_SECONDS
        return min(self._round_trip_estimate() + 0.003, MAX_HOLD_SECONDS)

    def _write(self) -> None:
        """Run the caller's write-ahead once per attempt, timing it."""
        if self._write_ahead is not None and not self._written:
            started = self._clock()
            self._write_ahead()
            self._commits.append(self._clock() - started)
            self._written = True

    def _unwrite(self) -> None:
        """Undo the write-ahead of an attempt that got no slot (nothing was sent)."""
        if self._written:
            self._written = False
            self.stats.undone_write_aheads += 1
            if self._undo is not None:
                self._undo()

    def _ask(self, try_take: Callable[[], bool]) -> bool:
        """Write ahead, wait for the ask's moment, then ask; while being early is plausible, ask again every
        few ms; else undo the write-ahead."""
        from globe_sms.clock import utc_now

        self._write()
        # The wait before the write ended just before the ask's moment; a moment further off means that wait
        # was cut short (the timeout): ask now, and let the denial lead back to the bounded wait.
        if self._ask_at is not None and self._ask_at - self._clock() < ASK_SOON_SECONDS:
            self._sleep_until(self._ask_at)
        first = self._clock()
        grace = self.ask_lead() + 0.02
        while True:
            asked, asked_wall = self._clock(), utc_now().timestamp()
            if try_take():
                self._granted_ask = asked
                self._round_trips.append(self._clock() - asked)
                logger.debug("pacing: granted in %.4f s", self._round_trips[-1])
                self._asked_wall, self._granted_wall = asked_wall, utc_now().timestamp()
                return True
            if self._clock() - first >= grace:
                self._unwrite()
                return False
            self.stats.early_asks += 1
            self._sleep(ASK_RETRY_SECONDS)

    def _up_estimate(self) -> float:
        """The shortest recent time from sending an ask to the server granting it (0 before any)."""
        return min(self._ups, default=0.0)

    def _slot_frees_at(self) -> float | None:
        """When (local clock) the slot frees: its last grant, read from the limit, plus one spacing. Learns
        from the read how long this process's last ask took to reach the server. None without a Prefect
        limit or when the read fails (the ask is then timed from the departure alone)."""
        from globe_sms.clock import utc_now

        if self._injected_acquire or self.limit_name is None:
            return None
        client = self._prefect_client()
        limit = _courtesy(lambda: client.read_global_concurrency_limit_by_name(self.limit_name))
        if limit is None or limit.updated is None:
            return None
        now, now_wall = self._clock(), utc_now().timestamp()
        granted = limit.updated.timestamp()
        if self._asked_wall is not None and self._granted_wall is not None:
            if self._asked_wall - 0.001 <= granted <= self._granted_wall + 0.001:  # our own last grant
                self._ups.append(granted - self._asked_wall)
        return now - (now_wall - granted) + 1.0 / limit.slot_decay_per_second

    def _hand_over_wait(self, client: Any, name: str) -> float:
        """When the slot may pass from another process: how long to wait before writing ahead, so that the
        ask reaches the server as the slot frees (asked a little early, it is only denied). The departure is
        held until the slot's previous grant plus one spacing and the hand-over margin (`departing()`), so
        that the other process's call, sent at most that long after its grant, is a full interval ahead at
        the gateway."""
        age = last_grant_age(client, name)
        if age is None:
            return 0.0
        since, spacing = age
        now = self._clock()
        frees = now - since + spacing
        if self._yielded_at is not None and now - since > self._yielded_at:
            self._taken_while_yielding = True  # another process took the slot while this one stepped aside
        # The other process left at most MAX_HOLD_SECONDS after its grant; the margin is room for jitter.
        margin = self.interval - self.spacing
        handover = max(self.handover_seconds, MAX_HOLD_SECONDS + DEPARTURE_SLACK_SECONDS + margin)
        self._not_before = max(self._not_before or 0.0, frees + handover)
        # Ask so that the grant returns as the hold ends (not a round trip later), but at most `ask_lead()`
        # (MAX_HOLD_SECONDS) before it: the call must leave soon after its ask, which the next holder's
        # hand-over margin counts on (`call_sent`); and never to reach the server before the slot frees.
        self._ask_at = max(
            frees - self._up_estimate() + ASK_AFTER_FREE_SECONDS,
            frees + handover - self.ask_lead(),
        )
        return max(0.0, self._ask_at - self._commit_estimate() - WAKE_SECONDS - now)

    def _leave_room_in_background(self, ticket: UUID) -> None:
        """Leave the waiting room once the call has left (`_start_leaving`), not right after the grant: the
        leave is a write on the server, and its thread, running Prefect's client between the grant and the
        call, would compete with the call's thread for the GIL in the few ms the call has to leave (a call
        late after its ask restamps the slot, which makes the next call late too)."""
        if self._room is not None and self._api is not None:
            self._leaving = (ticket, contextvars.copy_context())  # Prefect's settings travel with it

    def _start_leaving(self) -> None:
        """Leave the waiting room from a thread of its own, if a grant left it to do. It uses the pacer's
        client (opening one would cost the call's thread the GIL for tens of ms), under `_api_lock`, which the
        next `wait()` waits for before it uses the client."""
        leaving, self._leaving = self._leaving, None
        room, client = self._room, self._api
        if leaving is None or room is None or client is None:
            return
        ticket, context = leaving

        def leave() -> None:
            with self._api_lock:
                _courtesy(functools.partial(room.leave, client, ticket))

        threading.Thread(target=context.run, args=(leave,), name="pacing-leave-room", daemon=True).start()

    def _take_prefect_slot(self, name: str) -> int:
        client = self._prefect_client()
        return take_slot_fairly(
            name,
            lambda limit: self._ask(lambda: try_rate_limit(client, limit)),
            slot_wait=lambda limit: self._hand_over_wait(client, limit),
            look_first=self._handover,
            room=self._room,
            leave=self._leave_room_in_background,
            client=client,
            timeout_seconds=self.timeout_seconds,
            poll_seconds=self.poll_seconds,
            clock=self._clock,
            sleep=self._sleep,
        )

    # --- waiting -------------------------------------------------------------------------------------------

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
        """After stepping aside: was anyone there to take the slot (this process was denied, or the slot's
        last grant, read before asking, is newer than the step aside)? Pause yielding if not, repeatedly."""
        if denials is None or denials > 0 or self._taken_while_yielding:
            self._taken_while_yielding = False
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

    def wait(
        self, write_ahead: Callable[[], None] | None = None, undo: Callable[[], None] | None = None
    ) -> None:
        """Block until this process may make its next call, with the shared slot taken.

        Args:
            write_ahead: the caller's write-ahead record (the batch committed `submitting`), run right
                before the slot is asked for, once per attempt; its time is hidden in the wait.
            undo: reverts `write_ahead` (the rows back to `pending`) when an attempt gets no slot, or when
                the wait ends with an error (a timeout, a stop request) after it.

        Raises:
            RateLimitTimeout: the shared slot was not granted within the acquire function's timeout.
        """
        with self._lock:
            self._start_leaving()  # a caller that reported neither `call_sent` nor `call_answered`
            with self._api_lock:  # a leave of the waiting room still in flight finishes first (one client)
                pass
            previous = self._last_departure
            due = None if previous is None else previous + self.interval
            entered = self._clock()
            self._ask_at = None
            if due is not None:
                self._ask_at = due - self.ask_lead()
                if due - self._clock() > 0.05:  # time to read when the slot frees: ask no earlier
                    frees = self._slot_frees_at()
                    if frees is not None:
                        self._ask_at = max(self._ask_at, frees - self._up_estimate() + ASK_AFTER_FREE_SECONDS)
            start = None if self._ask_at is None else self._ask_at - self._commit_estimate() - WAKE_SECONDS
            courteous = False
            denials: int | None = None
            self._write_ahead, self._undo, self._written = write_ahead, undo, False
            self._not_before = None
            try:
                if self.limit_name is not None and self._room is not None:
                    # Look into the waiting room a little ahead, so that the look never delays the call.
                    self._sleep_until(None if start is None else start - min(0.05, self.interval / 4))
                    courteous = self._others_waiting()
                self._sleep_until(start)
                self._yielded_at = None
                if courteous:
                    self._yielded_at = self._clock()
                    self._sleep(self.yield_seconds)
                    self.stats.yields += 1
                if self.limit_name is None:
                    self._write()
                else:
                    # Nobody can have been granted between two of our grants less than two spacings apart:
                    # then the slot comes from this process, and needs no hand-over margin (or extra look).
                    last = self._last_grant
                    since = None if last is None else self._clock() - last
                    own_turn = since is not None and since < 2 * self.spacing - min(0.05, self.spacing / 4)
                    self._handover = courteous or not own_turn
                    if self._injected_acquire:
                        self._write()
                        self._sleep_until(self._ask_at)
                    started = self._clock()
                    denials = self._acquire(self.limit_name)
                    self.stats.acquire_seconds += self._clock() - started
                    if self._injected_acquire:
                        self._round_trips.append(self._clock() - started)
                    self.stats.denials += denials or 0
                    self.stats.handovers += bool(self._handover or denials)
                    if courteous:
                        self._count_yield(denials)
            except BaseException:
                self._unwrite()
                self._start_leaving()
                raise
            finally:
                self._write_ahead, self._undo = None, None
            self._written = False
            self._last_grant = self._clock()
            self.stats.grants += 1
            self._narrow_margin()
            logger.debug(
                "pacing: entered %+.4f s, granted %+.4f s from the departure time, %s early asks so far",
                entered - (due or 0.0), self._clock() - (due or 0.0), self.stats.early_asks,
            )
            if self._not_before is not None:
                due = max(due or 0.0, self._not_before)
            if write_ahead is None:  # the call leaves when this returns: hold it until its time here
                self._sleep_until(due)
                self._due = None
            else:
                self._due = due
            self._last_departure = self._clock()  # until `departing()` says when the call really left

    def throttled(self) -> None:
        """The gateway throttled a call this pacer spaced: its calls arrive there less evenly than the margin
        allows (a loaded machine, a congested network). Widen the margin by 10 ms (up to 100 ms more than
        configured); each call that goes through narrows it again by 1 ms."""
        with self._lock:
            widest = self.spacing + self.margin_seconds + MAX_EXTRA_MARGIN_SECONDS
            self.interval = min(self.interval + THROTTLED_MARGIN_STEP_SECONDS, widest)
            self.stats.throttled += 1

    def _narrow_margin(self) -> None:
        self.interval = max(self.spacing + self.margin_seconds, self.interval - 0.001)

    def departing(self) -> bool:
        """Hold the request until its departure time if the slot came early; time the next call from now.

        Call it right before the request leaves, then `call_sent()` once it has left. Two departures are then
        at least an interval apart, however long each write-ahead and grant took.

        Returns:
            True: send now. False: the grant went stale (this thread was held up for half a spacing after
            it; another process may be about to take the next slot), so nothing may be sent: undo the
            write-ahead and `wait()` again.
        """
        with self._lock:
            held_until, self._due = self._due, None
            if held_until is not None:
                self._sleep_until(held_until)
            asked = self._granted_ask
            self._granted_ask = None
            if asked is not None and self._clock() - asked > self.spacing / 2:
                self.stats.stale_grants += 1
                logger.warning(
                    "pacing: the slot of %s was granted %.3f s ago and the call has not left: asking again",
                    self.limit_name, self._clock() - asked,
                )
                self._start_leaving()
                return False
            self._departed, self._sent = self._clock(), None
            logger.debug(
                "pacing: departing %+.4f s from the hold, %.4f s after the ask",
                self._departed - (held_until or self._departed), self._departed - (asked or self._departed),
            )
            if self._last_departure is not None:
                # A sleep ends a little after its time, a grant from a loaded server comes a few ms after it:
                # the next calls keep to the schedule, each leaving at most `CATCH_UP_SHARE` of the margin
                # sooner after its predecessor, until up to `CATCH_UP_CALLS` such shares of lateness are made
                # up, so that it does not add up from call to call (measured: it cost the batch lane 0.0005
                # of its rate, 0.9896 instead of the 0.9901 ceiling). The gap between two calls is never
                # below the spacing and the rest of the margin, room for the way to the gateway.
                # (`wait()` set `_last_departure` to its grant's moment, a placeholder until now; `held_until`
                # is at least an interval after the previous departure.)
                now = self._clock()
                # Not while a throttled call has widened the margin: the calls reach the gateway unevenly.
                widened = self.interval > self.spacing + self.margin_seconds + 1e-9
                catch_up = 0.0 if widened else CATCH_UP_SHARE * self.margin_seconds
                owed = 0.0 if held_until is None else self._behind + max(0.0, now - held_until)
                owed = min(owed, CATCH_UP_CALLS * catch_up)
                credit = min(owed, catch_up)
                self._last_departure, self._behind = now - credit, owed - credit
            self._restamp = asked is not None and self._clock() - asked > self._late_after()
            return True

    def _late_after(self) -> float:
        """How long after its ask a call may leave without squeezing the next holder's call: an ask is timed
        at most `MAX_HOLD_SECONDS` before its departure, which may come a little late. Another process holds
        a hand-over departure that long and its margin after the slot frees, and the slot frees one spacing
        after the server began granting it, which is after the ask was sent: at least one interval."""
        return MAX_HOLD_SECONDS + DEPARTURE_SLACK_SECONDS

    def call_sent(self) -> None:
        """Call it once the request has left (the whole body written to the connection), before its answer.

        A call that leaves more than `_late_after()` after its ask (its grant came back slowly from a loaded
        Prefect server, which on PostgreSQL stamps the slot with the start of the granting transaction; the
        thread was held up; a connection was opened first) could reach the gateway less than an interval
        before the next holder's call, which is timed from the slot's stamp. So the slot is stamped again now,
        after the call left (`restamp_slot`): the next grant, whoever asks, comes one spacing after it.
        """
        with self._lock:
            self._sent = self._clock()
            logger.debug("pacing: sent %.4f s after departing", self._sent - (self._departed or self._sent))
        self._restamp_if_late()
        self._start_leaving()

    def call_abandoned(self) -> None:
        """Call it when the call the last `wait()` was granted for will not be sent (a stop request came right
        after the grant): the pacer leaves the waiting room now instead of at its next call."""
        self._start_leaving()

    def call_answered(self, *, opened_connection: bool = False) -> None:
        """Call it when the answer to a paced call arrives (or the call failed after it left).

        After a call that opened a connection (a TLS handshake with the real gateway), the next call of this
        process is timed from the moment its request had left (`call_sent()`: the handshake was done by
        then, and the gateway got the call a one-way trip later, as it gets every call), or from now when
        that moment is unknown (a transport without httpcore's trace: one round trip lost per connection). A
        late call whose departure `call_sent()` did not hear of stamps the slot again now.
        """
        with self._lock:
            if opened_connection and self._last_departure is not None:
                left = self._sent if self._sent is not None else self._clock()
                self._last_departure = max(self._last_departure, left)
        self._restamp_if_late()
        self._start_leaving()

    def _restamp_if_late(self) -> None:
        """Stamp the slot again if `departing()` found the call late, once per call."""
        with self._lock:
            late, self._restamp = self._restamp, False
        if late:
            self.restamp_slot()

    def restamp_slot(self) -> None:
        """Move the slot's stamp (its `updated` time, from which it decays) to now, with an update of the
        limit that changes nothing else (`active=True`: a granted slot belongs to an active limit). Prefect's
        public client; a busy server (503) is asked again a few times; a failure is logged and ignored (the
        gateway's throttling, handled by `throttled()`, is the fallback).
        """
        if self._injected_acquire or self.limit_name is None:
            return
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        name = self.limit_name
        update = GlobalConcurrencyLimitUpdate(active=True)
        with self._api_lock:
            client = self._prefect_client()

            def stamp() -> bool:
                unless_busy(lambda: client.update_global_concurrency_limit(name, update), attempts=4)
                return True

            if _courtesy(stamp, default=False):
                self.stats.restamps += 1
            else:
                logger.warning("pacing: could not stamp the slot of %s again after a late call", name)


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
