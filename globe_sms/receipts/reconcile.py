"""Reconciliation: ask QueryMessage about accepted messages whose receipt has not come, and settle them.

Receipts get lost (the push gives up after three tries), arrive late, or never come. For every accepted
message submitted more than `older_than` ago with no final state, QueryMessage is asked, paced to at most
`queries_per_second` (the API allows 300/s per account) by a `QueryPacer` (process-local: the query quota is
not the sending quota, so no Prefect limit is involved). With an `AsyncSmsClient` (what
`globe_sms.gateway.query_client` gives) up to `workers` queries are in flight at once in one event loop, so
the pace, not the round trip, sets the rate: 300/s needs about 30 in flight at 100 ms round trips, which four
threads (40/s) never reached; a plain `SmsClient` is still served by `workers` threads.

| QueryMessage says | stored |
|---|---|
| `Status` 1 / 2 (/ 6) | `delivered` / `undelivered` (/ `expired`), source `query` |
| `Status` 3 (being sent) | `sending`; then, submitted more than `unknown_after` ago (72 h), final `unknown` |
| `DATA_NOT_EXIST` | nothing; submitted more than `unknown_after` ago: final `unknown` |
| throttled (async client) | asked again after a second, up to `THROTTLED_ATTEMPTS` times in all |
| a retryable or ambiguous error | nothing this time (the next run asks again) |
| a permanent error (credentials, signature, ...) | the run stops: every other query would fail alike |

Answers go through `ReceiptStore.record`, so they merge with pushed receipts by the same rules: a query never
moves a final state back, and a receipt that arrives even after `unknown` still settles the message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from alibaba_sms import SmsClient
from alibaba_sms.async_client import AsyncSmsClient
from alibaba_sms.errors import BusinessError, PermanentError, SmsApiError, ThrottledError
from globe_sms.ids import task_id
from globe_sms.receipts.model import DeliveryStatus, Receipt
from globe_sms.receipts.store import ReceiptStore, Unsettled

QUERY_CALLS_PER_SECOND = 300.0
UNKNOWN_AFTER = timedelta(hours=72)
QUERY_CONCURRENCY = 64
"""Default queries in flight: 300/s with up to ~200 ms round trips."""
THROTTLED_ATTEMPTS = 3
WINDOW_MARGIN = 0.08
"""Seconds added to the rolling second the async pacer keeps its departures in (network jitter, a loop that
wakes late): 300 in any 1.08 s, 277 queries/s. With 50 ms, 1 of 20,000 queries was throttled on the idle
machine (285/s; 8-16 under load); with 80 ms, none (`bench/bench_single_client.py reconcile`)."""
THROTTLED_WINDOW_STEP = 0.05
"""How much a throttled query widens that window (`QueryPacer.throttled`)."""
T = TypeVar("T")
Answer = tuple[Unsettled, Receipt | None, SmsApiError | None]


@dataclass
class ReconcileResult:
    """What one reconciliation pass did."""

    candidates: int = 0
    queried: int = 0
    settled: dict[str, int] = field(default_factory=dict)  # final state reached through QueryMessage
    still_sending: int = 0
    not_found: int = 0
    timed_out: int = 0  # given final `unknown`
    errors: dict[str, int] = field(default_factory=dict)  # query errors by code, left for the next run
    campaigns: list[str] = field(default_factory=list)
    query_seconds: float = 0.0

    @property
    def queries_per_second(self) -> float:
        """Achieved query rate."""
        return self.queried / self.query_seconds if self.query_seconds > 0 else 0.0


class Waits(Protocol):
    """Anything with a blocking `wait()` before each call (`QueryPacer`, `globe_sms.pacing.Pacer`)."""

    def wait(self) -> None: ...


class QueryPacer:
    """Starts calls at least `1 / calls_per_second` apart, across the threads or coroutines that share it
    (the coroutines of one event loop also keep at most `calls_per_second` in any rolling second).

    Each caller reserves the next free slot (`reserve`) and waits for it outside the lock, so that many
    waiters hold consecutive slots: a late wake-up does not push the slots after it back, and the rate stays
    the given one (a caller that comes after an idle spell starts at once and does not catch up).

    Args:
        calls_per_second: the allowed rate.
        clock, sleep: injected in tests.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        window_margin: float = WINDOW_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.interval = 1.0 / calls_per_second
        self.window = 1.0 + window_margin
        self._base_window = self.window
        self.throttles = 0
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None
        self._lock = threading.Lock()
        self._departed: deque[float] = deque(maxlen=max(1, int(calls_per_second)))

    def throttled(self) -> None:
        """The gateway throttled a query all the same: the calls arrive there bunched closer than they
        leave (a loaded machine, a stalled loop). Widen the rolling window the departures keep to by 50 ms,
        up to half a second; every departure narrows it again by 0.5 ms."""
        self.window = min(self.window + THROTTLED_WINDOW_STEP, self._base_window + 0.5)
        self.throttles += 1

    def reserve(self) -> float:
        """Take the next slot; the seconds until it (0: go now)."""
        with self._lock:
            now = self._clock()
            slot = now if self._next is None or self._next <= now else self._next
            self._next = slot + self.interval
            return slot - now

    def wait(self) -> None:
        """Block until the next call may start."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)

    async def wait_async(self) -> None:
        """Wait, without blocking the event loop, until the next call may start.

        Then, as the gateway counts calls per rolling second: never more than `calls_per_second` departures
        in any `window` (1 s plus a margin for the network's jitter). Coroutines that woke late after a
        stall of the loop would otherwise leave together, on top of the ones on time, and be throttled.
        """
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        departed = self._departed
        while len(departed) == departed.maxlen:
            gap = departed[0] + self.window - self._clock()
            if gap <= 0:
                break
            await asyncio.sleep(gap)
        departed.append(self._clock())  # one event loop: nothing runs between the check and this
        self.window = max(self._base_window, self.window - THROTTLED_WINDOW_STEP / 100)


def query_pacer(queries_per_second: float = QUERY_CALLS_PER_SECOND) -> QueryPacer:
    """The pacer reconciliation uses by default: 300 QueryMessage calls per second."""
    return QueryPacer(queries_per_second)


def reconcile(
    store: ReceiptStore,
    client: AsyncSmsClient | SmsClient,
    *,
    campaign_id: str | None = None,
    older_than: timedelta = timedelta(minutes=30),
    unknown_after: timedelta = UNKNOWN_AFTER,
    pacer: Waits | None = None,
    workers: int = QUERY_CONCURRENCY,
    limit: int | None = None,
    monotonic: Callable[[], float] | None = None,
) -> ReconcileResult:
    """Query the unsettled accepted messages of a campaign (or of all) and record what QueryMessage says.

    Args:
        store: the receipts, in the ledger's database.
        client: a signed client for the account that sent the messages. An `AsyncSmsClient` runs the
            queries in an event loop of their own and is closed at the end; an `SmsClient` (left open) is
            shared by `workers` threads.
        campaign_id: one campaign, or None for every campaign in the ledger.
        older_than: only messages submitted at least this long ago (their receipt is overdue).
        unknown_after: a message still unsettled this long after submission becomes final `unknown`.
        pacer: spaces the queries; default `query_pacer()` (300/s).
        workers: queries in flight at once (the pacer keeps the rate whatever their number).
        limit: query at most this many messages in this pass.

    Raises:
        PermanentError: QueryMessage refused for a reason every query shares (credentials, signature).
    """
    clock = monotonic or time.monotonic
    pacer = pacer or query_pacer()
    store.adopt_orphans()
    now = store.now()
    candidates = store.unsettled(campaign_id, now - older_than, limit)
    result = ReconcileResult(
        candidates=len(candidates), campaigns=sorted({c.campaign_id for c in candidates})
    )
    started = clock()
    if isinstance(client, AsyncSmsClient):
        answers = run_coroutine(_ask_all(client, candidates, pacer, max(1, workers)))
    else:
        answers = _ask_all_threaded(client, candidates, pacer, max(1, workers))
    result.query_seconds = clock() - started

    receipts: list[Receipt] = []
    timeouts: list[Receipt] = []
    settled: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    fatal: SmsApiError | None = None
    for candidate, receipt, error in answers:
        overdue = candidate.submitted_at is not None and candidate.submitted_at <= now - unknown_after
        if receipt is not None:
            result.queried += 1
            receipts.append(receipt)
            if receipt.status.is_final:
                settled[receipt.status.value] += 1
                continue
            result.still_sending += 1
        elif error is not None and error.code == "DATA_NOT_EXIST":
            result.queried += 1
            result.not_found += 1
        elif error is not None:
            errors[error.code or type(error).__name__] += 1
            if _fatal(error):
                fatal = fatal or error
            continue
        else:  # skipped after a fatal error
            continue
        if overdue:
            timeouts.append(
                Receipt(
                    candidate.message_id,
                    DeliveryStatus.UNKNOWN,
                    task_id=receipt.task_id if receipt else None,
                    error_code="NO_FINAL_RECEIPT",
                    error_description=f"no final delivery state {unknown_after} after submission",
                )
            )
    store.record(receipts, source="query")
    store.record(timeouts, source="timeout")
    result.settled = dict(settled)
    result.timed_out = len(timeouts)
    result.errors = dict(errors)
    if fatal is not None:
        raise fatal
    return result


def _receipt(candidate: Unsettled, answer: Any) -> Receipt:
    batch = task_id(candidate.campaign_id, candidate.batch_no) if candidate.batch_no is not None else None
    return Receipt.from_query(answer, batch)


def _ask_all_threaded(
    client: SmsClient, candidates: list[Unsettled], pacer: Waits, workers: int
) -> list[Answer]:
    """The queries through a sync client, `workers` threads sharing the pacer."""
    stop = threading.Event()

    def ask(candidate: Unsettled) -> Answer:
        if stop.is_set():
            return candidate, None, None
        pacer.wait()
        try:
            answer = client.query(candidate.message_id)
        except SmsApiError as exc:
            if _fatal(exc):
                stop.set()
            return candidate, None, exc
        return candidate, _receipt(candidate, answer), None

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="query-message") as pool:
        return list(pool.map(ask, candidates))


async def _ask_all(
    client: AsyncSmsClient, candidates: list[Unsettled], pacer: Waits, workers: int
) -> list[Answer]:
    """The queries through the async client, at most `workers` in flight; closes the client at the end."""
    answers: list[Answer] = [(candidate, None, None) for candidate in candidates]
    pending = iter(range(len(candidates)))
    stopped = False
    wait_async = getattr(pacer, "wait_async", None)
    throttled = getattr(pacer, "throttled", None)  # a pacer that slows down when the gateway throttles

    async def pace() -> None:
        if wait_async is not None:
            await wait_async()
        else:  # a blocking pacer (e.g. `globe_sms.pacing.Pacer`): wait for it off the loop
            await asyncio.to_thread(pacer.wait)

    async def ask(candidate: Unsettled) -> Answer:
        for attempt in range(1, THROTTLED_ATTEMPTS + 1):
            await pace()
            try:
                return candidate, _receipt(candidate, await client.query(candidate.message_id)), None
            except ThrottledError as exc:
                if throttled is not None:
                    throttled()
                if attempt == THROTTLED_ATTEMPTS:
                    return candidate, None, exc
                await asyncio.sleep(1.0)  # flow control counts per second: let the window pass
            except SmsApiError as exc:
                return candidate, None, exc
        raise AssertionError("unreachable")

    async def worker() -> None:
        nonlocal stopped
        for index in pending:  # one iterator shared by every worker: each candidate is asked once
            if stopped:
                return
            answers[index] = answer = await ask(candidates[index])
            if answer[2] is not None and _fatal(answer[2]):
                stopped = True

    try:
        await asyncio.gather(*(worker() for _ in range(min(workers, len(candidates)))))
    finally:
        await client.aclose()
    return answers


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code: in this thread, or in a thread of its own when this one
    already runs an event loop (an async caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-message-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _fatal(error: SmsApiError) -> bool:
    """A gateway refusal that every query shares (credentials, signature): stop asking."""
    return isinstance(error, PermanentError) and not isinstance(error, BusinessError)
