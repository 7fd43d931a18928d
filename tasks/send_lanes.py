"""Send a run's planned recipients through the campaign's lane(s): `send_via` batch, single or both.

* `batch`: `tasks.send_batches.send_batches`, unchanged.
* `single`: chunks of `single_chunk_size` recipients, each a `send-single-chunk` task run
  (`<campaign>-single-<n>`, `tasks/send_single.py`), a few in flight at once (`CHUNKS_IN_FLIGHT`) so that
  the ledger writes of one chunk overlap the calls of the next, all sharing the lane's engine and pacer.
* `both`: the batch lane (in a thread of its own, one `send-batch` task run per call, paced as always) and the
  single lane take their recipients from **one queue** (`RecipientQueue`), each as fast as its rate allows,
  so neither waits for the other and both finish together: near the end the batch lane takes only its share
  of what is left (in proportion to the two lanes' rates, the single lane's as measured once it has sent for
  a few seconds), not a full batch.

Recipients a chunk hands back (throttled, refused before sending, never started) go back to the front of the
queue and are sent again, through the same pacer, by whichever lane takes them, at most `max_attempts` times
in a run; then they stay `pending` for the next run. After each chunk or batch the summary, the progress
artifact (`<campaign>-progress`), the event (`globe-sms.batch.<status>`, with `lane` in the payload) and the
terminal's progress line are updated; the per-batch table (`<campaign>-batches`) lists both lanes.

An error that stops a lane (a permanent error such as a refused signature or no balance, exhausted retries,
a rate-limit slot that never came, a lost run lease) stops both lanes: the summary's `error` says where, and
what was not sent stays `pending` in the ledger for the next run.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import Abort, Pause
from prefect.utilities.annotations import quote

from globe_sms.campaign import Campaign
from globe_sms.gateway import open_gateway
from globe_sms.ledger import Ledger
from globe_sms.progress import SendProgress, announce
from globe_sms.single_lane import open_single_lane
from globe_sms.single_pacing import lane_margin, lane_rate
from tasks.plan import PlannedBatches, SendPlan
from tasks.report import CampaignSummary, LaneSummary
from tasks.send import (
    Batch,
    SendContext,
    batch_report,
    emit_batch_event,
    publish_batch_table,
    send_batch_with_retries,
)
from tasks.send_batches import STOPPING_ERRORS, send_batches
from tasks.send_single import (
    Chunk,
    ChunkNotSent,
    ChunkOutcome,
    SingleContext,
    chunk_report,
    send_single_chunk_with_retries,
)
from tasks.stop import STOP_REQUESTS, StopReason, StopWatch

CHUNKS_IN_FLIGHT = 3
"""Single-lane chunks sent at once: one's ledger writes overlap the others' calls."""

PROGRESS_INTERVAL = 0.5
"""Seconds between two updates of the progress artifact (and on the last chunk or batch): at 2,000 recipients
a second an update per chunk is several Prefect calls a second on the lane's path, and the server's CPU (on
the same machine) is the lane's too. The stop check still reads the flow run's state before every chunk."""


class RecipientQueue:
    """The run's pending recipients (`phone`, `message`), taken by the lanes in order; thread-safe.

    Reads the plan parts one at a time; recipients handed back (`give_back`) are taken first. Numbers the
    batches and chunks from one sequence, so every TaskId of the campaign stays unique.
    """

    def __init__(self, parts: Sequence[pl.DataFrame | Any], first_batch_no: int, recipients: int) -> None:
        self._parts = deque(parts)
        self._rows: deque[tuple[str, str]] = deque()
        self._next_no = first_batch_no
        self._lock = threading.Lock()
        self.remaining = recipients

    @classmethod
    def of(cls, plan: SendPlan) -> RecipientQueue:
        batches = plan.batches
        if isinstance(batches, PlannedBatches):
            return cls(batches.parts, batches.first_batch_no, batches.recipients)
        rows = [(p, m) for batch in batches for p, m in zip(batch.phones, batch.messages, strict=True)]
        frame = pl.DataFrame(rows, schema={"phone": pl.String, "message": pl.String}, orient="row")
        first = min((batch.batch_no for batch in batches), default=1)
        return cls([frame], first, len(rows))

    def _fill(self, wanted: int) -> None:
        while len(self._rows) < wanted and self._parts:
            part = self._parts.popleft()
            if not isinstance(part, pl.DataFrame):
                part = pl.read_parquet(part, columns=["phone", "message"])
            self._rows.extend(zip(part["phone"].to_list(), part["message"].to_list(), strict=True))

    def take(self, wanted: int) -> tuple[int, tuple[str, ...], tuple[str, ...]] | None:
        """Up to `wanted` recipients and the batch number for them; None when the queue is empty."""
        with self._lock:
            self._fill(wanted)
            n = min(wanted, len(self._rows))
            if n <= 0:
                return None
            rows = [self._rows.popleft() for _ in range(n)]
            self.remaining -= n
            number = self._next_no
            self._next_no += 1
        return number, tuple(p for p, _ in rows), tuple(m for _, m in rows)

    def give_back(self, rows: Sequence[tuple[str, str]]) -> None:
        """Put recipients back at the front (they are `pending` again), to be taken first."""
        with self._lock:
            self._rows.extendleft(reversed(list(rows)))
            self.remaining += len(rows)

    def __len__(self) -> int:
        return self.remaining


@dataclass
class LaneTally:
    """What one lane did in this run."""

    lane: str
    recipients: int = 0  # recipients whose call was answered or recorded (accepted, failed or unknown)
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    calls: int = 0
    segments: int = 0
    throttled: int = 0
    requeued: int = 0
    first: float | None = None
    last: float | None = None
    pacing: Any = None  # the single lane's SinglePacingStats
    reports: list[dict[str, Any]] = field(default_factory=list)

    def count(self, accepted: int, failed: int, unknown: int, calls: int) -> None:
        now = time.monotonic()
        self.first = self.first if self.first is not None else now
        self.last = now
        self.accepted += accepted
        self.failed += failed
        self.unknown += unknown
        self.recipients += accepted + failed + unknown
        self.calls += calls


class _Run:
    """The shared state of one run's lanes: queue, tallies, progress, the first stopping error."""

    def __init__(self, campaign: Campaign, plan: SendPlan, summary: CampaignSummary) -> None:
        self.campaign = campaign
        self.summary = summary
        self.queue = RecipientQueue.of(plan)
        self.total = self.queue.remaining
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: str | None = None
        self.done = 0
        self.tries: dict[str, int] = {}
        self.max_attempts = campaign.gateway.max_attempts
        self.progress_id = create_progress_artifact(
            0.0, key=f"{campaign.campaign_id}-progress", description=f"Recipients sent of {self.total:,}"
        )
        self.started = time.monotonic()
        self.single: LaneTally | None = None
        self.stop_reason: StopReason | None = None  # a stop request (signal, Cancel, Suspend) ended the lanes
        self.last_sent: int | None = None  # the last chunk or batch number answered before a stop
        self.watch: StopWatch | None = None
        self._progress_at = -math.inf  # the last progress artifact update (monotonic)

    def stop_requested(self, reason: StopReason) -> None:
        """A stop request: no new chunk or batch leaves; those in flight finish and are recorded."""
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            self.stop.set()

    def stop_reason_now(self) -> StopReason | None:
        """A stop request now: the flow run's state (one read) or a signal to this process."""
        return self.watch.reason() if self.watch is not None else STOP_REQUESTS.requested

    def state_reason(self) -> StopReason | None:
        return self.watch.state_reason() if self.watch is not None else None

    def answered(self, number: int) -> None:
        with self.lock:
            self.last_sent = number if self.last_sent is None else max(self.last_sent, number)

    def single_rate(self, nominal: float) -> float:
        """The single lane's rate: measured once it has sent for a few seconds, else its nominal rate."""
        tally = self.single
        if tally is None or tally.first is None or tally.last is None or tally.last - self.started < 3:
            return nominal
        return max(tally.recipients / (tally.last - self.started), 1.0)

    def stopped_by(self, where: str, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = f"{where}: {exc}"
            self.stop.set()

    def progressed(self, n: int, *, final: bool = False) -> None:
        """Count `n` more recipients sent; update the progress artifact at most every
        `PROGRESS_INTERVAL` seconds (and on the `final` call), the terminal's line every time."""
        now = time.monotonic()
        with self.lock:
            self.done += n
            done = self.done
            due = final or now - self._progress_at >= PROGRESS_INTERVAL
            if due:
                self._progress_at = now
        if due:
            update_progress_artifact(self.progress_id, 100.0 * done / max(self.total, 1))
        if n == 0 and final:
            return
        rate = done / max(time.monotonic() - self.started, 1e-9)
        cid = self.campaign.campaign_id
        announce(SendProgress(cid, self.total, done, self.total, done, rate, unit="recipients"))

    def requeue(self, phones: Sequence[str], texts: dict[str, str]) -> int:
        """Give back the released recipients that have tries left; the others stay pending for a later run."""
        again = []
        with self.lock:
            for phone in phones:
                self.tries[phone] = self.tries.get(phone, 1) + 1
                if self.tries[phone] <= self.max_attempts:
                    again.append((phone, texts[phone]))
        if again and not self.stop.is_set():
            self.queue.give_back(again)
            return len(again)
        return 0


def send_lanes(
    campaign: Campaign,
    ledger: Ledger,
    plan: SendPlan,
    summary: CampaignSummary,
    stop: StopWatch | None = None,
) -> StopReason | None:
    """Send the planned recipients through `campaign.send_via`; fill the summary (counts, lanes, error).

    `stop` is asked before every chunk or batch (`tasks/stop.py`): on a stop request no new one leaves, those
    in flight finish and are recorded, and the request is returned (None when the lanes ran to the end).
    """
    summary.send_via = campaign.send_via  # (the resend flow's summary learns it here)
    if campaign.send_via == "batch":
        stopped = send_batches(campaign, ledger, plan, summary, stop)
        summary.lanes = [
            LaneSummary(lane="batch", recipients=summary.accepted + summary.failed + summary.unknown,
                        accepted=summary.accepted, failed=summary.failed, unknown=summary.unknown,
                        calls=summary.batches, seconds=summary.sending_seconds)
        ]
        return stopped
    run = _Run(campaign, plan, summary)
    run.watch = stop
    single = run.single = LaneTally("single")
    batch = LaneTally("batch")
    with open_gateway(campaign.gateway, ledger_url=campaign.ledger_location) as gateway:
        with open_single_lane(campaign.gateway, gateway, beside_batch=campaign.send_via == "both") as lane:
            context = SingleContext(campaign, lane, ledger)
            run.started = time.monotonic()  # the lanes' sending time, without opening them
            batch_thread = None
            if campaign.send_via == "both":
                batch_context = SendContext(campaign, gateway.client, ledger, gateway.pacer)
                copied = contextvars.copy_context()  # the flow run's context, for the batch task runs
                batch_thread = threading.Thread(
                    target=copied.run, args=(_batch_lane, run, batch_context, batch), name="batch-lane"
                )
                batch_thread.start()
            try:
                _single_lane(run, context, single)
            except KeyboardInterrupt:  # the hard stop (a second signal): the batch lane stops too
                run.stop.set()
                raise
            finally:
                if batch_thread is not None:
                    batch_thread.join()
            single.throttled = lane.pacer.stats.throttled
            single.pacing = lane.pacer.stats
    run.progressed(0, final=True)
    reports = batch.reports + single.reports
    sent = sum(t.recipients for t in (single, batch))
    stopped_text = None
    if run.stop_reason is not None:
        summary.stopped, summary.stopped_after_batch = str(run.stop_reason), run.last_sent
        stopped_text = summary.stop_text(pending=max(run.total - sent, 0))
        from prefect import get_run_logger

        get_run_logger().warning(
            "campaign %s: stop requested (%s): %s of %s recipients sent this run, nothing further leaves",
            campaign.campaign_id, run.stop_reason, sent, run.total,
        )
    publish_batch_table(campaign.campaign_id, reports, len(reports), stopped=stopped_text)
    summary.accepted += single.accepted + batch.accepted
    summary.failed += single.failed + batch.failed
    summary.unknown += single.unknown + batch.unknown
    summary.error = run.error
    firsts = [t.first for t in (single, batch) if t.first is not None]
    lasts = [t.last for t in (single, batch) if t.last is not None]
    summary.sending_seconds = (max(lasts) - run.started) if firsts and lasts else 0.0
    summary.lanes = [_lane_summary(t, run.started) for t in (batch, single) if t.calls or t is single]
    if batch.calls > 1 and batch.first is not None and batch.last is not None and batch.last > batch.first:
        summary.calls_per_second = (batch.calls - 1) / (batch.last - batch.first)
    return run.stop_reason


def _lane_summary(tally: LaneTally, started: float) -> LaneSummary:
    seconds = (tally.last - started) if tally.last is not None else 0.0
    return LaneSummary(
        lane=tally.lane,
        recipients=tally.recipients,
        accepted=tally.accepted,
        failed=tally.failed,
        unknown=tally.unknown,
        calls=tally.calls,
        seconds=seconds,
        segments=tally.segments,
        throttled=tally.throttled,
        requeued=tally.requeued,
        limit_requests=tally.pacing.asks if tally.pacing is not None else 0,
        limit_grants=tally.pacing.grants if tally.pacing is not None else 0,
    )


def _single_lane(run: _Run, context: SingleContext, tally: LaneTally) -> None:
    """Keep `CHUNKS_IN_FLIGHT` chunk task runs going until the queue is empty or a lane stops."""
    campaign = run.campaign
    cid = campaign.campaign_id
    send_chunk = send_single_chunk_with_retries(campaign.gateway)
    finished: queue.Queue[Any] = queue.Queue()
    in_flight: dict[Any, Chunk] = {}
    size = campaign.single_chunk_size
    while True:
        while len(in_flight) < CHUNKS_IN_FLIGHT and not run.stop.is_set():
            if (reason := run.stop_reason_now()) is not None:
                run.stop_requested(reason)
                break
            taken = run.queue.take(size)
            if taken is None:
                break
            chunk = Chunk(*taken)
            future = send_chunk.submit(quote(context), quote(chunk), cid, chunk.batch_no)
            future.add_done_callback(finished.put)
            in_flight[future] = chunk
        if not in_flight:
            if run.stop.is_set() or len(run.queue) == 0:
                return
            continue
        future = finished.get()
        chunk = in_flight.pop(future)
        try:
            outcome: ChunkOutcome | None = future.result()
            error = None
        except (Abort, Pause):
            # Prefect refused to start the chunk's task run: the flow run is Cancelling or Suspended.
            # Nothing of this chunk ran; its rows are still pending.
            run.stop_requested(run.state_reason() or StopReason("cancel", "stopped by Prefect"))
            continue
        except ChunkNotSent as exc:  # retries exhausted: its rows are pending; stop like a batch would
            outcome, error = context.recorded.get(chunk.batch_no), exc
        except BaseException as exc:  # noqa: BLE001 - recorded; STOPPING_ERRORS and bugs alike stop the run
            outcome, error = context.recorded.get(chunk.batch_no), exc
        if outcome is not None:
            run.answered(chunk.batch_no)
            tally.count(outcome.accepted, outcome.failed, outcome.unknown, len(chunk) - len(outcome.released))
            tally.segments += outcome.segments
            texts = dict(zip(chunk.phones, chunk.messages, strict=True))
            if error is None:
                tally.requeued += run.requeue(outcome.released, texts)
            run.progressed(outcome.accepted + outcome.failed + outcome.unknown)
        report = chunk_report(cid, chunk, outcome if error is None else None, error)
        if error is not None and outcome is not None:
            report.update(
                accepted=outcome.accepted, failed=outcome.failed, unknown=outcome.unknown,
                pending=len(outcome.released),
            )
        tally.reports.append(report)
        emit_batch_event(cid, report)
        if error is not None:
            run.stopped_by(f"single chunk {chunk.batch_no}", error)
            if not isinstance(error, (*STOPPING_ERRORS, ChunkNotSent)):
                # a bug: let the in-flight chunks finish, then raise it
                _drain(in_flight, finished)
                raise error


def _drain(in_flight: dict[Any, Chunk], finished: queue.Queue[Any]) -> None:
    while in_flight:
        in_flight.pop(finished.get(), None)


def _batch_lane(run: _Run, context: SendContext, tally: LaneTally) -> None:
    """The batch lane of `both`: a batch at a time from the shared queue, its share of the tail only."""
    campaign = run.campaign
    cid = campaign.campaign_id
    send_with_retries = send_batch_with_retries(campaign.gateway)
    batch_rate = campaign.batch_size * campaign.gateway.calls_per_second
    nominal = lane_rate(campaign.gateway.single_calls_per_second, lane_margin(beside_batch=True))
    while not run.stop.is_set():
        # A stop request before each batch, as the single lane asks before each chunk: the single lane may be
        # waiting for a long chunk, and must not be the only one to notice (one state read per batch).
        if (reason := run.stop_reason_now()) is not None:
            run.stop_requested(reason)
            return
        share = batch_rate / (batch_rate + run.single_rate(nominal))
        wanted = min(campaign.batch_size, math.ceil(len(run.queue) * share))
        taken = run.queue.take(max(wanted, 1)) if wanted > 0 else None
        if taken is None:
            return
        batch = Batch(*taken)
        try:
            outcome = send_with_retries(quote(context), quote(batch), cid, batch.batch_no)
        except (Abort, Pause):  # the flow run is Cancelling or Suspended: this batch did not run
            run.queue.give_back(list(zip(batch.phones, batch.messages, strict=True)))
            run.stop_requested(run.state_reason() or StopReason("cancel", "stopped by Prefect"))
            return
        except STOPPING_ERRORS as exc:
            report = {"lane": "batch", **batch_report(cid, batch, None, exc)}
            tally.reports.append(report)
            emit_batch_event(cid, report)
            run.stopped_by(f"batch {batch.batch_no}", exc)
            return
        except BaseException as exc:
            run.stopped_by(f"batch {batch.batch_no}", exc)
            raise
        if outcome is None:  # held back while waiting for its slot by a stop request: still pending
            run.queue.give_back(list(zip(batch.phones, batch.messages, strict=True)))
            run.stop_requested(run.stop_reason_now() or StopReason("terminate", "stop requested"))
            return
        run.answered(batch.batch_no)
        tally.count(outcome.accepted, outcome.failed, outcome.unknown, 1)
        report = {"lane": "batch", **batch_report(cid, batch, outcome)}
        tally.reports.append(report)
        emit_batch_event(cid, report)
        run.progressed(outcome.recipients)
