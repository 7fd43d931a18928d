"""The emulator's configuration and its mutable state: accounts, nonces, rate windows, messages, journal.

`EmulatorState` is shared between the server thread (uvicorn's event loop) and the test thread, so every
method takes a lock. The journal keeps every request and every accepted message in memory and, when
`EmulatorConfig.journal_path` is set, appends each as one JSON line (flushed as each call ends), so that a
process outside the emulator can count what was delivered.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from alibaba_sms.credentials import ACCESS_KEY_ID_ENV, ACCESS_KEY_SECRET_ENV
from alibaba_sms.emulator.faults import FaultConfig, FaultInjector
from alibaba_sms.emulator.receipts import ReceiptEngine, ReceiptSettings

logger = logging.getLogger(__name__)

BATCH_ACTION = "BatchSendMessageToGlobe"


class EmulatorConfig(BaseModel):
    """How the emulated gateway behaves. Limits drift between doc versions, so they are all settable."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    credentials: dict[str, str] = Field(
        default_factory=lambda: {"testid": "testsecret"},
        repr=False,  # secrets never appear in a repr
        description="AccessKeyId -> AccessKey secret, for verifying signatures.",
    )
    batch_calls_per_second: float | None = Field(
        default=1.0,
        ge=0,
        description="BatchSendMessageToGlobe calls per second per AccessKeyId; 0 or None = unlimited.",
    )
    single_calls_per_second: float | None = Field(
        default=2000.0,
        ge=0,
        description="SendMessageToGlobe calls per second per AccessKeyId, in any rolling second (a limit "
        "separate from the batch operation's); 0 or None = unlimited.",
    )
    query_calls_per_second: float | None = Field(
        default=None,
        ge=0,
        description="QueryMessage calls per second per AccessKeyId, in any rolling second (Alibaba documents "
        "300); 0 or None = unlimited (the default).",
    )
    max_numbers_per_call: int = Field(default=1000, ge=1, description="Above this, MOBILE_COUNT_OVER_LIMIT.")
    max_clock_skew_seconds: int = Field(
        default=900, ge=0, description="Above this, InvalidTimeStamp.Expired."
    )
    faults: FaultConfig = Field(default_factory=FaultConfig, description="Initial random fault injection.")
    journal_path: Path | None = Field(default=None, description="Append the journal here as JSON lines.")
    seed: int | None = Field(default=None, description="Seeds faults, message ids and request ids.")
    clock: Callable[[], float] = Field(
        default=time.time, repr=False, exclude=True, description="Wall-clock seconds since the epoch."
    )
    host_id: str = Field(
        default="dysmsapi.ap-southeast-1.aliyuncs.com", description="`HostId` in error bodies."
    )
    receipt_callback_url: str | None = Field(
        default=None,
        repr=False,  # it may carry the receiver's push token
        description="POST delivery receipts of accepted messages here (see `receipts.py`).",
    )
    receipts: ReceiptSettings = Field(
        default_factory=ReceiptSettings, description="Outcome mix, delays, duplicates, reordering."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> EmulatorConfig:
        """Accept the AccessKey in `ALIBABA_CLOUD_ACCESS_KEY_ID`/`_SECRET`, else `testid`/`testsecret`.

        Raises:
            ValueError: only one of the two variables is set.
        """
        env = os.environ if environ is None else environ
        key_id, secret = env.get(ACCESS_KEY_ID_ENV, ""), env.get(ACCESS_KEY_SECRET_ENV, "")
        if bool(key_id) != bool(secret):
            raise ValueError(f"set both {ACCESS_KEY_ID_ENV} and {ACCESS_KEY_SECRET_ENV}, or neither")
        if key_id:
            overrides.setdefault("credentials", {key_id: secret})
        return cls(**overrides)


class RollingWindow:
    """Flow control of one operation: at most `limit` admitted calls per AccessKeyId in any `window` seconds.

    A rate of 2,000/s admits 2,000 calls in any rolling second; a rate under 1/s (0.5) one call in any
    1/rate seconds (2 s). Only admitted calls count: a throttled call does not use up the window.
    """

    def __init__(self, calls_per_second: float) -> None:
        self.window = max(1.0, 1.0 / calls_per_second)
        self.limit = max(1, round(calls_per_second * self.window))
        self._times: dict[str, deque[float]] = {}

    def admit(self, access_key_id: str, now: float) -> bool:
        """Count a call made at `now` if the window has room; False (not counted) if it has none."""
        times = self._times.get(access_key_id)
        if times is None:
            times = self._times[access_key_id] = deque()
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def uuid4_text(bits: int) -> str:
    """`str(uuid.UUID(int=bits, version=4)).upper()` without building a `UUID` (a third of its cost)."""
    value = (bits & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    text = f"{value:032X}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def iso_millis(moment: float) -> str:
    """UTC ISO 8601 with milliseconds, as journal times are written."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shallow_dict(record: Any) -> dict[str, Any]:
    """A flat dataclass's fields as a dict (`dataclasses.asdict` deep-copies every value: 10x slower)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


@dataclass(frozen=True)
class RequestRecord:
    """One API call as the gateway answered it."""

    time: float  # when the gateway decided on it (flow control counts the call then), not when it answered
    action: str
    access_key_id: str
    status: int
    code: str
    numbers: int
    task_id: str | None
    request_id: str
    signature: str  # "v3", "v1" or "" when it could not be told
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal line for this record."""
        return {"kind": "request", "iso_time": iso_millis(self.time), **shallow_dict(self)}


@dataclass(frozen=True)
class MessageRecord:
    """One message the gateway accepted (billed at submission, like the real one)."""

    time: float
    message_id: str
    to: str
    message: str
    task_id: str | None
    sender: str | None
    type: str | None
    segments: int
    action: str
    request_id: str

    def to_json(self) -> dict[str, Any]:
        """The journal line for this record (`sender` is written as `from`)."""
        data = shallow_dict(self)
        data["from"] = data.pop("sender")
        return {"kind": "message", "iso_time": iso_millis(self.time), **data}


class EmulatorState:
    """Accounts, nonces, rate windows, the message store and the journal of one emulator; thread-safe."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = FaultInjector(config.faults, config.seed)
        self.receipts = ReceiptEngine(config.receipts, config.receipt_callback_url, self.now, config.seed)
        self._lock = threading.RLock()
        self._file: IO[str] | None = None
        if config.journal_path is not None:
            config.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = config.journal_path.open("a", encoding="utf-8")
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._nonces: dict[str, dict[str, float]] = {}
        self._last_batch_call: dict[str, float] = {}
        config = self.config
        self._windows = {
            action: RollingWindow(rate)
            for action, rate in (
                ("SendMessageToGlobe", config.single_calls_per_second),
                ("QueryMessage", config.query_calls_per_second),
            )
            if rate
        }
        self._batch_times: list[float] = []
        self._messages: dict[str, MessageRecord] = {}
        self._requests: list[RequestRecord] = []
        self._accepted: list[MessageRecord] = []
        self._ids = random.Random(None if self.config.seed is None else f"ids:{self.config.seed}")
        self._next_message_id = self._ids.randrange(10**15, 9 * 10**15)

    def reset(self) -> None:
        """Forget nonces, rate windows, messages and the in-memory journal; restore the initial faults.

        The journal file is kept; a `{"kind": "reset"}` line marks the point.
        """
        with self._lock:
            self._reset_locked()
            self._write({"kind": "reset", "iso_time": iso_millis(self.now())})
        self.faults.reset()
        self.receipts.reset()

    def close(self) -> None:
        """Stop pushing receipts; close the journal file."""
        self.receipts.close()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # --- clock, ids, accounts ---------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's wall clock (injectable through `EmulatorConfig.clock`)."""
        return self.config.clock()

    def new_request_id(self) -> str:
        """An Alibaba-style request id (uppercase UUID), reproducible under a seed."""
        with self._lock:
            bits = self._ids.getrandbits(128)
        return uuid4_text(bits)

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of a known AccessKeyId, for the verifier only."""
        return self.config.credentials.get(access_key_id)

    def use_nonce(self, access_key_id: str, nonce: str) -> bool:
        """Record a nonce for a key; False if that key already used it."""
        now = self.now()
        # A nonce only needs remembering while its timestamp could still pass the skew check.
        horizon = now - 2 * self.config.max_clock_skew_seconds - 60
        with self._lock:
            seen = self._nonces.setdefault(access_key_id, {})
            if nonce in seen:
                return False
            # Oldest first (a dict keeps insertion order): forget from the front, so each call costs O(1)
            # whatever the number remembered (scanning them all made every call slower at 2,000 calls/s).
            while seen:
                oldest = next(iter(seen))
                if seen[oldest] >= horizon:
                    break
                del seen[oldest]
            seen[nonce] = now
            return True

    # --- flow control -----------------------------------------------------------------------------------

    def batch_call_allowed(self, access_key_id: str) -> bool:
        """Whether a batch call now keeps at least 1/rate seconds after the key's last admitted one."""
        rate = self.config.batch_calls_per_second
        if not rate:
            return True
        with self._lock:
            last = self._last_batch_call.get(access_key_id)
            return last is None or self.now() - last >= 1.0 / rate

    def admit_call(self, action: str, access_key_id: str) -> bool:
        """Whether a SendMessageToGlobe or QueryMessage call now fits its rolling window; counts it if so."""
        window = self._windows.get(action)
        if window is None:
            return True
        with self._lock:
            return window.admit(access_key_id, self.now())

    def admit_batch_call(self, access_key_id: str) -> None:
        """Count a batch call against the key's rate window (every call not answered with throttling)."""
        with self._lock:
            now = self.now()
            self._last_batch_call[access_key_id] = now
            self._batch_times.append(now)

    # --- messages and journal ---------------------------------------------------------------------------

    def accept_messages(
        self,
        action: str,
        request_id: str,
        items: Iterable[tuple[str, str, int]],
        *,
        task_id: str | None,
        sender: str | None,
        message_type: str | None,
    ) -> list[MessageRecord]:
        """Store and journal accepted messages, given as (to, text, segments); returns them with their ids."""
        now = self.now()
        with self._lock:
            records = []
            for to, text, segments in items:
                message_id = str(self._next_message_id)
                self._next_message_id += 1
                record = MessageRecord(
                    now, message_id, to, text, task_id, sender, message_type, segments, action, request_id
                )
                self._messages[message_id] = record
                self._accepted.append(record)
                if self._file is not None:  # the JSON line costs more than the rest: only build it to write
                    self._write(record.to_json(), flush=False)  # flushed with its call's request line
                records.append(record)
            self.receipts.on_accepted(records)
            return records

    def message(self, message_id: str) -> MessageRecord | None:
        """An accepted message by id."""
        with self._lock:
            return self._messages.get(message_id)

    def record_request(self, record: RequestRecord) -> None:
        """Journal one answered API call."""
        with self._lock:
            self._requests.append(record)
            if self._file is not None:
                self._write(record.to_json())
        logger.debug("%s %s -> %s %s", record.action, record.request_id, record.status, record.code)

    def _write(self, entry: dict[str, Any], *, flush: bool = True) -> None:
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            if flush:
                self._file.flush()

    # --- views for tests ----------------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """How many API calls were answered (cheap: no copy of the journal)."""
        return len(self._requests)

    def requests(self, action: str | None = None) -> list[RequestRecord]:
        """Every answered API call, oldest first, optionally of one action."""
        with self._lock:
            return [r for r in self._requests if action is None or r.action == action]

    def accepted_messages(self) -> list[MessageRecord]:
        """Every accepted message, in acceptance order."""
        with self._lock:
            return list(self._accepted)

    def accepted_numbers(self) -> Counter[str]:
        """How many messages each number was sent: a count above 1 is a duplicate send."""
        with self._lock:
            return Counter(record.to for record in self._accepted)

    def batch_call_times(self) -> list[float]:
        """Clock times of the batch calls admitted by flow control (what the rate limit spaces apart)."""
        with self._lock:
            return list(self._batch_times)

    def journal(self) -> dict[str, list[dict[str, Any]]]:
        """The in-memory journal as JSON-ready dicts: `{"requests": [...], "messages": [...]}`."""
        with self._lock:
            return {
                "requests": [r.to_json() for r in self._requests],
                "messages": [m.to_json() for m in self._accepted],
            }
