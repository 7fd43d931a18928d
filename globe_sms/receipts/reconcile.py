"""Reconciliation: ask QueryMessage about accepted messages whose receipt has not come, and settle them.

Receipts get lost (the push gives up after three tries), arrive late, or never come. For every accepted
message submitted more than `older_than` ago with no final state, QueryMessage is asked, paced to at most
`queries_per_second` (the API allows 300/s per account) by a `QueryPacer` shared by a few worker threads
(process-local: the query quota is not the sending quota, so no Prefect limit is involved):

| QueryMessage says | stored |
|---|---|
| `Status` 1 / 2 (/ 6) | `delivered` / `undelivered` (/ `expired`), source `query` |
| `Status` 3 (being sent) | `sending`; then, submitted more than `unknown_after` ago (72 h), final `unknown` |
| `DATA_NOT_EXIST` | nothing; submitted more than `unknown_after` ago: final `unknown` |
| a retryable or ambiguous error | nothing this time (the next run asks again) |
| a permanent error (credentials, signature, ...) | the run stops: every other query would fail alike |

Answers go through `ReceiptStore.record`, so they merge with pushed receipts by the same rules: a query never
moves a final state back, and a receipt that arrives even after `unknown` still settles the message.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from alibaba_sms import SmsClient
from alibaba_sms.errors import BusinessError, PermanentError, SmsApiError
from globe_sms.ids import task_id
from globe_sms.receipts.model import DeliveryStatus, Receipt
from globe_sms.receipts.store import ReceiptStore, Unsettled

QUERY_CALLS_PER_SECOND = 300.0
UNKNOWN_AFTER = timedelta(hours=72)


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
    """Starts calls at least `1 / calls_per_second` apart, across the threads that share it.

    Args:
        calls_per_second: the allowed rate.
        clock, sleep: injected in tests.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.interval = 1.0 / calls_per_second
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next call may start."""
        with self._lock:
            now = self._clock()
            if self._next is not None and self._next > now:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def query_pacer(queries_per_second: float = QUERY_CALLS_PER_SECOND) -> QueryPacer:
    """The pacer reconciliation uses by default: 300 QueryMessage calls per second."""
    return QueryPacer(queries_per_second)


def reconcile(
    store: ReceiptStore,
    client: SmsClient,
    *,
    campaign_id: str | None = None,
    older_than: timedelta = timedelta(minutes=30),
    unknown_after: timedelta = UNKNOWN_AFTER,
    pacer: Waits | None = None,
    workers: int = 4,
    limit: int | None = None,
    monotonic: Callable[[], float] | None = None,
) -> ReconcileResult:
    """Query the unsettled accepted messages of a campaign (or of all) and record what QueryMessage says.

    Args:
        store: the receipts, in the ledger's database.
        client: a signed client for the account that sent the messages.
        campaign_id: one campaign, or None for every campaign in the ledger.
        older_than: only messages submitted at least this long ago (their receipt is overdue).
        unknown_after: a message still unsettled this long after submission becomes final `unknown`.
        pacer: spaces the queries; default `query_pacer()` (300/s).
        workers: concurrent queries (the pacer keeps the rate whatever their number).
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
    stop = threading.Event()

    def ask(candidate: Unsettled) -> tuple[Unsettled, Receipt | None, SmsApiError | None]:
        if stop.is_set():
            return candidate, None, None
        pacer.wait()
        try:
            answer = client.query(candidate.message_id)
        except SmsApiError as exc:
            if _fatal(exc):
                stop.set()
            return candidate, None, exc
        batch = task_id(candidate.campaign_id, candidate.batch_no) if candidate.batch_no is not None else None
        return candidate, Receipt.from_query(answer, batch), None

    started = clock()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="query-message") as pool:
        answers = list(pool.map(ask, candidates))
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


def _fatal(error: SmsApiError) -> bool:
    """A gateway refusal that every query shares (credentials, signature): stop asking."""
    return isinstance(error, PermanentError) and not isinstance(error, BusinessError)
