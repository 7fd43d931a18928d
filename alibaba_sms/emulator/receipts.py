"""Delivery receipts from the emulator: decided outcomes, QueryMessage answers, and HTTP pushes.

With `EmulatorConfig.receipt_callback_url` set (or `ReceiptSettings.simulate` on), every accepted message
gets an outcome the moment it is accepted, drawn from a seeded `random.Random`: delivered, failed (with an
error code) or expired, at a weighted mix; optionally `stuck` (never settles). The outcome becomes final
`delay_seconds` (+ jitter) after acceptance, on the emulator's clock. QueryMessage answers consistently:

| outcome | QueryMessage before it settles | after | receipt pushed (webhook `Status`) |
|---|---|---|---|
| delivered | `3` sending | `1`, `DELIVERED` | `1`, `DELIVERED` |
| failed | `3` sending | `2`, the error code | `2`, the error code |
| expired | `3` sending | `6`, `EXPIRED` | `6`, `EXPIRED` |
| stuck | `3` sending | `3` sending, for ever | nothing |

A background thread POSTs due receipts to the callback URL as JSON arrays of at most `max_per_post`, in
Alibaba's camelCase spelling (`MessageId`, `To`, `Status`, ...) or the China site's snake_case
(`message_id`, `to`, `status`, ...). The misbehaviour the real push is documented to have is switchable:

* `duplicate_rate`: the same receipt again, later;
* `interim_rate`: a non-final `Status` `3` receipt too; with `reorder` it may arrive *after* the final one;
* `reorder`: every POST is shuffled, and duplicates and interim receipts may come in a later POST;
* `lost_rate`: the outcome is decided (QueryMessage tells it) but its receipt is never pushed.

A POST that is not answered HTTP 200 with `{"code": 0}` is retried `retry_seconds` later, up to
`max_attempts` times (Alibaba: after 1, 5 and 10 minutes, then it gives up). The callback URL is used as
given, so it may carry the receiver's token (`http://host:port/receipts/<token>`); logs (httpx's request
lines included) and the admin endpoint show it with everything after its first path segment masked. With
no receipt settings the emulator behaves as before: QueryMessage reports every accepted message delivered 3
seconds after sending.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from alibaba_sms.emulator.state import MessageRecord

logger = logging.getLogger(__name__)

ALIBABA_TZ = timezone(timedelta(hours=8))
Outcome = Literal["delivered", "failed", "expired", "stuck"]
WEBHOOK_STATUS = {"delivered": "1", "failed": "2", "expired": "6"}
SENDING_STATUS = "3"
DEFAULT_FAILURE_CODES = {
    # Temporary (the handset or the network): worth a retry.
    "ABSENT_SUBSCRIBER": 4.0,
    "CARRIER_BUSY": 2.0,
    # Permanent (the number or the recipient): never worth a retry.
    "UNKNOWN_SUBSCRIBER": 3.0,
    "BLACKLISTED": 1.0,
}
FAILURE_DESCRIPTIONS = {
    "ABSENT_SUBSCRIBER": "The handset is switched off or out of coverage.",
    "CARRIER_BUSY": "The carrier is temporarily unable to deliver.",
    "UNKNOWN_SUBSCRIBER": "The number is not allocated to a subscriber.",
    "BLACKLISTED": "The recipient is on a blacklist.",
    "EXPIRED": "The validity period expired before delivery.",
}


class ReceiptSettings(BaseModel):
    """How the emulator settles accepted messages and pushes their receipts (all knobs seeded)."""

    model_config = ConfigDict(extra="forbid")

    simulate: bool = Field(
        default=False,
        description="Decide outcomes with no callback URL too (QueryMessage reports them, nothing pushed).",
    )
    delivered_weight: float = Field(default=0.90, ge=0, description="Relative weight of delivered outcomes.")
    failed_weight: float = Field(default=0.07, ge=0, description="Relative weight of failed outcomes.")
    expired_weight: float = Field(default=0.03, ge=0, description="Relative weight of expired outcomes.")
    stuck_weight: float = Field(
        default=0.0, ge=0, description="Relative weight of messages that never settle."
    )
    failure_codes: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_FAILURE_CODES),
        description="ErrorCode of failed messages -> relative weight.",
    )
    delay_seconds: float = Field(default=1.0, ge=0, description="From acceptance to the final outcome.")
    delay_jitter_seconds: float = Field(
        default=0.0, ge=0, description="Extra uniform random delay, 0..jitter."
    )
    duplicate_rate: float = Field(default=0.0, ge=0, le=1, description="Chance a receipt is pushed twice.")
    interim_rate: float = Field(
        default=0.0, ge=0, le=1, description="Chance of an extra non-final Status 3 receipt per message."
    )
    reorder: bool = Field(
        default=False, description="Shuffle each POST; duplicates and interim receipts may come late."
    )
    lost_rate: float = Field(default=0.0, ge=0, le=1, description="Chance a final receipt is never pushed.")
    spelling: Literal["camel", "snake"] = Field(
        default="camel", description="Field names of pushed receipts."
    )
    max_per_post: int = Field(default=100, ge=1, le=10_000, description="Receipts per POST at most.")
    poll_seconds: float = Field(
        default=0.02, gt=0, le=5, description="How often the pusher looks for due receipts."
    )
    retry_seconds: float = Field(default=0.5, ge=0, description="Wait before re-POSTing a refused batch.")
    max_attempts: int = Field(
        default=3, ge=1, le=20, description="POST attempts per receipt before giving up."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one POST.")


@dataclass
class Plan:
    """The decided fate of one accepted message."""

    message_id: str
    outcome: Outcome
    error_code: str
    settle_at: float
    sent_at: float


@dataclass(order=True)
class _Queued:
    due: float
    seq: int
    payload: dict[str, str] = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class PushStats:
    """What the pusher did, for tests and the admin endpoint."""

    posts: int = 0
    receipts: int = 0
    refused_posts: int = 0
    dropped_receipts: int = 0


def alibaba_date(moment: float, spelling: str = "camel") -> str:
    """`Thu, 25 Nov 2021 10:25:00 +0800` (camelCase, QueryMessage) or `2021-11-25 10:25:00` (snake_case)."""
    local = datetime.fromtimestamp(moment, UTC).astimezone(ALIBABA_TZ).replace(microsecond=0)
    return format_datetime(local) if spelling == "camel" else local.strftime("%Y-%m-%d %H:%M:%S")


_SNAKE = {
    "MessageId": "message_id",
    "To": "to",
    "Status": "status",
    "ErrorCode": "error_code",
    "ErrorDescription": "error_description",
    "SendDate": "send_date",
    "ReceiveDate": "receive_date",
    "SmsSize": "sms_size",
    "TaskId": "task_id",
}


class ReceiptEngine:
    """Decides outcomes for accepted messages, answers QueryMessage for them, and pushes their receipts.

    Thread-safe. The pusher thread starts with the first message that has a receipt to push, and stops on
    `close()`. It takes only this engine's lock, never the emulator state's.

    Args:
        settings: the knobs.
        callback_url: where receipts are POSTed; None pushes nothing.
        clock: the emulator's wall clock (seconds since the epoch).
        seed: seeds the outcome draws (None: random).
    """

    def __init__(
        self,
        settings: ReceiptSettings,
        callback_url: str | None,
        clock: Callable[[], float],
        seed: int | None,
    ) -> None:
        self.settings = settings
        self.callback_url = callback_url
        self._clock = clock
        self._seed = seed
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_flight = 0
        self._reset_locked()

    @property
    def enabled(self) -> bool:
        """Whether accepted messages get decided outcomes."""
        return self.callback_url is not None or self.settings.simulate

    def _reset_locked(self) -> None:
        self._rng = random.Random(None if self._seed is None else f"receipts:{self._seed}")
        # Shuffling draws from its own generator: outcomes must not depend on when the pusher ran.
        self._order_rng = random.Random(None if self._seed is None else f"receipt-order:{self._seed}")
        self._plans: dict[str, Plan] = {}
        self._queue: list[_Queued] = []
        self._seq = itertools.count()
        self._posted: list[list[dict[str, str]]] = []
        self.stats = PushStats()

    def reset(self) -> None:
        """Forget every plan, queued receipt and pushed POST (the emulator's `reset`)."""
        with self._lock:
            self._reset_locked()

    # --- deciding ---------------------------------------------------------------------------------------

    def _draw_outcome(self) -> tuple[Outcome, str]:
        s = self.settings
        outcomes: list[Outcome] = ["delivered", "failed", "expired", "stuck"]
        weights = [s.delivered_weight, s.failed_weight, s.expired_weight, s.stuck_weight]
        if sum(weights) <= 0:
            return "delivered", "DELIVERED"
        outcome = self._rng.choices(outcomes, weights)[0]
        if outcome == "failed":
            codes = s.failure_codes or {"UNDELIV": 1.0}
            return outcome, self._rng.choices(list(codes), list(codes.values()))[0]
        return outcome, {"delivered": "DELIVERED", "expired": "EXPIRED", "stuck": ""}[outcome]

    def on_accepted(self, records: Iterable[MessageRecord]) -> None:
        """Decide each message's fate and queue its receipts (a no-op when receipts are off)."""
        if not self.enabled:
            return
        s = self.settings
        push = self.callback_url is not None
        with self._lock:
            for record in records:
                outcome, code = self._draw_outcome()
                settle_at = record.time + s.delay_seconds + self._rng.uniform(0, s.delay_jitter_seconds)
                plan = Plan(record.message_id, outcome, code, settle_at, record.time)
                self._plans[record.message_id] = plan
                # Draw every chance for every message: the same seed gives the same fates whatever is pushed.
                lost = self._rng.random() < s.lost_rate
                duplicate = self._rng.random() < s.duplicate_rate
                interim = self._rng.random() < s.interim_rate
                late = s.reorder and self._rng.random() < 0.5
                lag = self._rng.uniform(0, max(s.delay_seconds, 0.05)) if s.reorder else 0.0
                if not push:
                    continue
                if interim:
                    due = settle_at + lag if late else record.time + (settle_at - record.time) / 2
                    self._enqueue(due, self._payload(record, plan, final=False))
                if outcome == "stuck" or lost:
                    continue
                final = self._payload(record, plan, final=True)
                self._enqueue(settle_at, final)
                if duplicate:
                    self._enqueue(settle_at + lag, dict(final))
            self._start_locked()
            self._wake.notify_all()

    def _payload(self, record: MessageRecord, plan: Plan, *, final: bool) -> dict[str, str]:
        spelling = self.settings.spelling
        if final:
            status, code = WEBHOOK_STATUS[plan.outcome], plan.error_code
            description = "success" if plan.outcome == "delivered" else FAILURE_DESCRIPTIONS.get(code, code)
            receive = alibaba_date(plan.settle_at, spelling)
        else:
            status, code, description, receive = SENDING_STATUS, "", "", ""
        camel = {
            "To": record.to,
            "SendDate": alibaba_date(record.time, spelling),
            "ReceiveDate": receive,
            "Status": status,
            "ErrorCode": code,
            "ErrorDescription": description,
            "TaskId": record.task_id or "",
            "SmsSize": str(record.segments),
            "MessageId": record.message_id,
        }
        return camel if spelling == "camel" else {_SNAKE[key]: value for key, value in camel.items()}

    def _enqueue(self, due: float, payload: dict[str, str], attempts: int = 0) -> None:
        heapq.heappush(self._queue, _Queued(due, next(self._seq), payload, attempts))

    # --- QueryMessage -----------------------------------------------------------------------------------

    def query_fields(self, record: MessageRecord) -> dict[str, str]:
        """`Status`, `ErrorCode`, `ErrorDescription` and `ReceiveDate` of a QueryMessage answer."""
        with self._lock:
            plan = self._plans.get(record.message_id)
        if plan is None:  # receipts off (or a message accepted before they were on): delivered after 3 s
            return {
                "Status": "1",
                "ErrorCode": "DELIVERED",
                "ErrorDescription": "success",
                "ReceiveDate": alibaba_date(record.time + 3),
            }
        if plan.outcome == "stuck" or self._clock() < plan.settle_at:
            return {"Status": SENDING_STATUS, "ErrorCode": "", "ErrorDescription": "", "ReceiveDate": ""}
        description = (
            "success" if plan.outcome == "delivered" else FAILURE_DESCRIPTIONS.get(plan.error_code, "")
        )
        return {
            "Status": WEBHOOK_STATUS[plan.outcome],
            "ErrorCode": plan.error_code,
            "ErrorDescription": description,
            "ReceiveDate": alibaba_date(plan.settle_at),
        }

    def plans(self) -> dict[str, Plan]:
        """Every decided fate by message id (tests compare what arrived with what was decided)."""
        with self._lock:
            return dict(self._plans)

    # --- pushing ----------------------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._thread is None and not self._closed and self.callback_url is not None and self._queue:
            self._thread = threading.Thread(target=self._run, name="emulator-receipts", daemon=True)
            self._thread.start()

    def _take_due_locked(self) -> list[_Queued]:
        now = self._clock()
        batch: list[_Queued] = []
        while self._queue and self._queue[0].due <= now and len(batch) < self.settings.max_per_post:
            batch.append(heapq.heappop(self._queue))
        return batch

    def _run(self) -> None:
        url = str(self.callback_url)
        _HTTPX_MASK.add(url)
        try:
            self._push_loop()
        finally:
            _HTTPX_MASK.discard(url)

    def _push_loop(self) -> None:
        with httpx.Client(timeout=self.settings.timeout_seconds, trust_env=False) as http:
            while True:
                with self._lock:
                    while not self._closed:
                        batch = self._take_due_locked()
                        if batch:
                            break
                        self._wake.wait(self.settings.poll_seconds)
                    if self._closed:
                        return
                    self._in_flight += 1
                    if self.settings.reorder:
                        self._order_rng.shuffle(batch)
                try:
                    self._post(http, batch)
                finally:
                    with self._lock:
                        self._in_flight -= 1
                        self._wake.notify_all()

    def _post(self, http: httpx.Client, batch: list[_Queued]) -> None:
        payloads = [item.payload for item in batch]
        accepted = False
        try:
            response = http.post(
                str(self.callback_url),
                content=json.dumps(payloads),
                headers={"content-type": "application/json"},
            )
            accepted = response.status_code == 200 and _code_zero(response)
        except httpx.HTTPError as exc:
            shown = masked_url(self.callback_url) or ""
            reason = str(exc).replace(str(self.callback_url), shown)  # some httpx errors quote the URL
            logger.info("receipt push to %s failed: %s: %s", shown, type(exc).__name__, reason)
        with self._lock:
            if accepted:
                self.stats.posts += 1
                self.stats.receipts += len(payloads)
                self._posted.append(payloads)
                return
            self.stats.refused_posts += 1
            retry_at = self._clock() + self.settings.retry_seconds
            for item in batch:
                if item.attempts + 1 < self.settings.max_attempts:
                    self._enqueue(retry_at, item.payload, item.attempts + 1)
                else:
                    self.stats.dropped_receipts += 1

    def posted(self) -> list[list[dict[str, str]]]:
        """Every POST the receiver accepted, in order, as the JSON arrays that were sent."""
        with self._lock:
            return [list(post) for post in self._posted]

    def drain(self, timeout: float) -> bool:
        """Wait until every queued receipt was pushed or given up; True if the queue emptied in time.

        Receipts fall due on the emulator's clock: with an injected clock, move it first.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._wake.wait(min(remaining, 0.05))
            return True

    def close(self) -> None:
        """Stop the pusher thread (queued receipts are not pushed); safe to call twice."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.settings.timeout_seconds + 1)

    def summary(self) -> dict[str, Any]:
        """Counts for `GET /_emulator/receipts`."""
        with self._lock:
            outcomes: dict[str, int] = {}
            for plan in self._plans.values():
                outcomes[plan.outcome] = outcomes.get(plan.outcome, 0) + 1
            return {
                "enabled": self.enabled,
                "callback_url": masked_url(self.callback_url),
                "outcomes": outcomes,
                "queued": len(self._queue) + self._in_flight,
                "posts": self.stats.posts,
                "receipts_pushed": self.stats.receipts,
                "refused_posts": self.stats.refused_posts,
                "dropped_receipts": self.stats.dropped_receipts,
            }


def masked_url(url: str | None) -> str | None:
    """The callback URL fit for a log: scheme, host and first path segment; the rest and any query `****`."""
    if url is None:
        return None
    parts = urlsplit(url)
    first, _, rest = parts.path.lstrip("/").partition("/")
    path = "/" + first + ("/****" if rest else "")
    return urlunsplit((parts.scheme, parts.netloc, path, "****" if parts.query else "", ""))


class _MaskCallbackUrls(logging.Filter):
    """httpx logs each request's full URL at INFO (`HTTP Request: POST http://...`); mask ours there."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        if masked_url(url) == url:
            return  # nothing secret-looking to hide
        with self._lock:
            self._urls[url] += 1
        httpx_logger = logging.getLogger("httpx")
        if self not in httpx_logger.filters:
            httpx_logger.addFilter(self)

    def discard(self, url: str) -> None:
        with self._lock:
            self._urls[url] -= 1
            if self._urls[url] <= 0:
                del self._urls[url]

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self._urls:
            record.args = tuple(
                masked_url(str(arg)) if isinstance(arg, httpx.URL) and str(arg) in self._urls else arg
                for arg in record.args
            )
        return True


_HTTPX_MASK = _MaskCallbackUrls()


def _code_zero(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == 0
