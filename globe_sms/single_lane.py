"""The single lane's engine: SendMessageToGlobe calls, many in flight, on one event loop of its own.

`SingleLane` owns an `AsyncSmsClient` (its own HTTP/1.1 transport) on an event loop (uvloop's where it is
installed) running in a background thread, and the lane's pacer (`globe_sms.single_pacing`). Task runs call
`send_chunk` from their own threads: it blocks until every call of the chunk has an answer (or was never
started), while the chunks of other task runs share the same loop, connections, pacer and in-flight bound
(`concurrency`). No ledger here: the caller writes the chunk `submitting` before `send_chunk` and records the
answers after it (`tasks/send_single.py`).

**In-flight window.** At most `concurrency` calls are in flight, and fewer while the gateway answers slowly:
the window shrinks by a third (at most every `latency_target` seconds) when calls take longer than
`latency_target` (a tenth of the read timeout by default), and grows back by one per call answered faster
than half of it. A gateway that is slower than the rate (an overloaded emulator, a congested network) then
sees a short queue, not hundreds of waiting calls, so calls are not left to time out (their outcome would be
unknown). At the rate, calls in flight are the rate times the round trip: 2,000/s at 50 ms is 100.

A call never leaves once the lane is *stopped*: an answer that will be the same for every other call (a
refused signature or AccessKey, an unapproved sender ID, no balance: `stops_the_lane`) stops it, and so does
the pacer's timeout; the calls of the chunk not yet started come back `sent=False`, so their rows go back to
`pending`, safely. A refusal that concerns one number only (`RECIPIENT_CODES`) fails that recipient and the
lane goes on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alibaba_sms.async_client import AsyncSmsClient, PreparedSend
from alibaba_sms.errors import BusinessError, PermanentError, SmsApiError, ThrottledError
from alibaba_sms.models import SendResult
from globe_sms.single_pacing import SingleLanePacer, ensure_single_limit, lane_margin, single_limit_name

if TYPE_CHECKING:
    from globe_sms.campaign import GatewaySettings
    from globe_sms.gateway import GatewaySession

RECIPIENT_CODES = frozenset(
    {
        "MOBILE_NUMBER_ILLEGAL",
        "NOT_SUPPORTED_COUNTRY",
        "BUSINESS_LIMIT_CONTROL_PHONE",
        "BLACK_KEY_CONTROL_LIMIT",
        "COUNTRY_RESTRICTED",
    }
)
"""Business codes that concern the one number of a call: that recipient fails, the lane goes on."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a dependency except on Windows): the lane's calls cost
    less CPU on it (bench/README-single.md), and the lane is GIL-bound; asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def stops_the_lane(error: BaseException) -> bool:
    """Whether an answer will be the same for every call (permanent, and not about one number)."""
    if not isinstance(error, PermanentError):
        return False
    return not (isinstance(error, BusinessError) and (error.code or "") in RECIPIENT_CODES)


@dataclass(frozen=True)
class CallAnswer:
    """What became of one call: its result, its error, or (`sent=False`) that it never left."""

    phone: str
    result: SendResult | None = None
    error: BaseException | None = None
    sent: bool = True


class SingleLane:
    """Sends chunks of prepared SendMessageToGlobe calls, paced, up to `concurrency` in flight.

    Args:
        make_client: builds the async client; called on the lane's own loop (its connections belong there).
        pacer: the lane's pacer (started and closed with the lane).
        concurrency: most calls in flight at once, across every chunk.
        latency_target: answers slower than this shrink the in-flight window (see the module docstring).
    """

    def __init__(
        self,
        make_client: Callable[[], AsyncSmsClient],
        pacer: SingleLanePacer,
        concurrency: int,
        latency_target: float = 1.0,
    ) -> None:
        self.pacer = pacer
        self.concurrency = concurrency
        self.latency_target = latency_target
        self.window = float(concurrency)
        self.smallest_window = float(concurrency)
        self._last_shrink = 0.0
        self.stopped = threading.Event()
        self.stop_reason: BaseException | None = None
        self._make_client = make_client
        self._sms: AsyncSmsClient | None = None
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="single-lane-loop", daemon=True)
        self._in_flight = 0
        self._active_chunks = 0
        self._freed: asyncio.Event | None = None
        self._signer: AsyncSmsClient | None = None

    def __enter__(self) -> SingleLane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._run(self._open()).result()
        self.pacer.start()

    async def _open(self) -> None:
        self._sms = self._make_client()
        self._freed = asyncio.Event()

    def close(self) -> None:
        """Close the client and stop the loop and the pacer."""
        self.pacer.close()
        if self._thread.is_alive():
            if self._sms is not None:
                self._run(self._sms.aclose()).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def _run(self, coroutine) -> Future:  # noqa: ANN001 - a coroutine
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def prepare_chunk(
        self, phones: Sequence[str], texts: Sequence[str], **options: object
    ) -> list[PreparedSend]:
        """Build and sign a chunk's calls, which share their options (`AsyncSmsClient.prepare_sends`); any
        thread, before the chunk's ledger write, as the batch lane does."""
        assert self._sms is not None, "start() the lane first"
        return self._sms.prepare_sends(phones, texts, **options)  # type: ignore[arg-type]

    def _adapt(self, now: float, latency: float) -> None:
        """Shrink the in-flight window on slow answers, grow it back on fast ones (loop thread only)."""
        if latency > self.latency_target:
            if now - self._last_shrink >= self.latency_target:
                self._last_shrink = now
                self.window = max(1.0, self.window * 2 / 3)
                self.smallest_window = min(self.smallest_window, self.window)
        elif latency < self.latency_target / 2 and self.window < self.concurrency:
            self.window = min(float(self.concurrency), self.window + 1.0)

    def stop(self, reason: BaseException) -> None:
        """Start no more calls (in-flight ones finish)."""
        if not self.stopped.is_set():
            self.stop_reason = reason
            self.stopped.set()

    def send_chunk(self, calls: Sequence[PreparedSend]) -> list[CallAnswer]:
        """Send the calls (paced, concurrently) and return one answer per call, in order. Blocks.

        Never raises for a call's error: each answer carries its own. Calls not started because the lane
        stopped (or the pacer gave up) come back with `sent=False`.
        """
        return self._run(self._send_chunk(list(calls))).result()

    async def _send_chunk(self, calls: list[PreparedSend]) -> list[CallAnswer]:
        assert self._sms is not None and self._freed is not None
        answers: list[CallAnswer | None] = [None] * len(calls)
        tasks: set[asyncio.Task[None]] = set()
        client, freed = self._sms, self._freed
        loop = asyncio.get_running_loop()

        async def call(index: int, prepared: PreparedSend) -> None:
            started = loop.time()
            try:
                result = await client.send_prepared(prepared)
                answers[index] = CallAnswer(prepared.to, result=result)
            except ThrottledError as exc:
                self.pacer.throttled()
                answers[index] = CallAnswer(prepared.to, error=exc)
            except SmsApiError as exc:
                if stops_the_lane(exc):
                    self.stop(exc)
                answers[index] = CallAnswer(prepared.to, error=exc)
            except BaseException as exc:  # noqa: BLE001 - after the request may have left: unknown
                answers[index] = CallAnswer(prepared.to, error=exc)
            finally:
                self._in_flight -= 1
                self._adapt(loop.time(), loop.time() - started)
                freed.set()

        self._active_chunks += 1
        self.pacer.want(True)
        next_call = 0
        try:
            while next_call < len(calls) and not self.stopped.is_set():
                room = int(self.window) - self._in_flight
                if room <= 0:
                    freed.clear()
                    await freed.wait()
                    continue
                try:
                    n, delay = self.pacer.take(min(room, len(calls) - next_call))
                except BaseException as exc:  # noqa: BLE001 - a pacer timeout or a missing limit
                    self.stop(exc)
                    break
                if n == 0:
                    await asyncio.sleep(delay)
                    continue
                for _ in range(n):
                    self._in_flight += 1
                    task = asyncio.create_task(call(next_call, calls[next_call]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_call += 1
        finally:
            self._active_chunks -= 1
            if self._active_chunks == 0:
                self.pacer.want(False)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for index in range(next_call, len(calls)):
            answers[index] = CallAnswer(calls[index].to, error=self.stop_reason, sent=False)
        return [answer for answer in answers if answer is not None]


@contextmanager
def open_single_lane(
    settings: GatewaySettings,
    session: GatewaySession,
    *,
    use_prefect_limit: bool = True,
    beside_batch: bool = False,
) -> Iterator[SingleLane]:
    """The single lane of a run, beside the batch lane's gateway `session` (same endpoint, same key).

    Its rate limit is `<the session's limit>-single` (`single_limit_name`), created or updated here like the
    batch limit, so every campaign of the account shares it. `beside_batch` (the batch lane sends from the
    same process): the lane keeps the wider margin `BESIDE_BATCH_MARGIN` (see `globe_sms.single_pacing`).
    """
    import httpx

    from globe_sms.gateway import credentials_for

    credentials = credentials_for(settings)
    timing = settings.batch_timing
    name = single_limit_name(session.limit_name)
    if use_prefect_limit:
        ensure_single_limit(name, settings.single_calls_per_second)
    pacer = SingleLanePacer(
        settings.single_calls_per_second,
        limit_name=name if use_prefect_limit else None,
        margin=lane_margin(beside_batch),
        timeout_seconds=settings.rate_limit_timeout_seconds,
    )
    endpoint = session.emulator.url if session.emulator is not None else (settings.endpoint or None)

    def make_client() -> AsyncSmsClient:
        return AsyncSmsClient(
            credentials,
            endpoint=endpoint,
            region=settings.region,
            signature_version=settings.signature_version,
            timeout=httpx.Timeout(timing.read_timeout_seconds, connect=timing.connect_timeout_seconds),
            max_connections=settings.single_concurrency,
        )

    latency_target = max(0.2, timing.read_timeout_seconds / 10)
    with SingleLane(make_client, pacer, settings.single_concurrency, latency_target) as lane:
        yield lane
