"""Send one chunk of the single lane and record every recipient's outcome: `send_and_record_chunk`, and the
`send-single-chunk` task that runs it as a task run of its own, `<campaign>-single-<n>`.

A chunk is up to `single_chunk_size` recipients, one SendMessageToGlobe call each, sent concurrently through
the lane's engine (`globe_sms.single_lane`). It keeps the batch lane's order of writes, in bulk: one
transaction before the calls, one after them (not one per call):

1. every call is built and signed;
2. the chunk's rows become `submitting` (lane `single`), committed, before any call leaves: a crash from here
   on leaves them `submitting`, which the next run turns into `unknown`;
3. the calls go out, paced by the account's shared single-call limit;
4. every row's outcome is committed in one transaction (`Ledger.record_singles`):

   ==========================================  ===============================================================
   answer to a call                            the row
   ==========================================  ===============================================================
   OK                                          accepted (MessageId, Segments, carrier, RequestId)
   throttled, 503, connection refused          pending: sent again later in the run, through the same pacer
   never started (the lane stopped)            pending
   permanent gateway refusal (signature)       pending (not processed); the lane stops
   business code about the number              failed with the code; the lane goes on
   other business code (balance, sender ID)    failed with the code; the lane stops
   ambiguous (read timeout, drop, 500)         unknown: resent only if the user asks (`resend_unknown`)
   ==========================================  ===============================================================

The chunk's number is a batch number of the campaign (the same sequence as the batch lane's, so its TaskId,
`<campaign>-b<n>`, is unique and joins delivery receipts back to it), and names its task run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task

from alibaba_sms.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    RetryableError,
    SmsApiError,
)
from globe_sms.campaign import Campaign, GatewaySettings
from globe_sms.ledger import INTERRUPTED, Lane, Ledger, Status
from globe_sms.ledger.store import SingleOutcome
from globe_sms.single_lane import CallAnswer, SingleLane, stops_the_lane
from tasks.send import Batch, is_transient

logger = logging.getLogger(__name__)
NOT_SENT = "NotSent"
"""The error_code of a row whose call never left (the lane stopped first)."""


Chunk = Batch
"""A chunk of the single lane has a batch's shape: its batch number, and parallel numbers and texts."""


@dataclass(frozen=True)
class ChunkOutcome:
    """What happened to one chunk. `released` rows are pending again (throttled, refused before sending, or
    never started): the lane sends them again later."""

    batch_no: int
    recipients: int
    accepted: int
    failed: int
    unknown: int
    released: tuple[str, ...] = ()
    segments: int = 0
    throttled: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)


@dataclass
class SingleContext:
    """Everything a chunk needs, built once per flow run (not serialisable, so never cached)."""

    campaign: Campaign
    lane: SingleLane
    ledger: Ledger
    recorded: dict[int, ChunkOutcome] = field(default_factory=dict)
    """Every recorded chunk's outcome by batch number, also of chunks whose task then raised."""


class ChunkNotSent(RetryableError):
    """No call of the chunk was processed (every one throttled, refused before sending, or not started);
    its rows are pending again and retrying the chunk is safe."""


def outcome_of(answer: CallAnswer) -> SingleOutcome:
    """The ledger outcome of one call (the table in the module docstring)."""
    result, error = answer.result, answer.error
    if result is not None:
        carrier = result.number_detail.carrier if result.number_detail else None
        return SingleOutcome(
            Status.ACCEPTED,
            result.message_id or None,
            None,
            result.request_id or None,
            result.segments,
            carrier,
        )
    if not answer.sent:
        code = getattr(error, "code", None) or (type(error).__name__ if error is not None else NOT_SENT)
        return SingleOutcome(Status.PENDING, error_code=code)
    request_id = getattr(error, "request_id", None)
    code = getattr(error, "code", None) or type(error).__name__
    if isinstance(error, AmbiguousOutcomeError):
        return SingleOutcome(Status.UNKNOWN, error_code=code, request_id=request_id)
    if isinstance(error, RetryableError):
        return SingleOutcome(Status.PENDING, error_code=code, request_id=request_id)
    if isinstance(error, BusinessError):
        return SingleOutcome(Status.FAILED, error_code=code, request_id=request_id)
    if isinstance(error, SmsApiError):  # a gateway refusal: never processed
        return SingleOutcome(Status.PENDING, error_code=code, request_id=request_id)
    return SingleOutcome(Status.UNKNOWN, error_code=INTERRUPTED if error is None else code)


def send_and_record_chunk(context: SingleContext, chunk: Chunk) -> ChunkOutcome:
    """Send a chunk of single calls and commit every row's outcome to the ledger in one transaction.

    Returns:
        The outcome; `released` lists the rows pending again, for the lane to send later.

    Raises:
        ChunkNotSent: no call was processed and every row is pending again (Prefect retries the chunk).
        PermanentError, RateLimitTimeout, ...: the lane stopped (`SingleLane.stop_reason`), after recording.
    """
    campaign, ledger, lane = context.campaign, context.ledger, context.lane
    cid, no = campaign.campaign_id, chunk.batch_no
    if lane.stopped.is_set():  # nothing written: the rows simply stay pending
        raise lane.stop_reason or RuntimeError("the single lane stopped")
    options = {
        "sender": campaign.sender_id,
        "message_type": campaign.message_type,
        "task_id": campaign.task_id(no),
        "validity_period": campaign.validity_period,
    }
    prepared = lane.prepare_chunk(chunk.phones, chunk.messages, **options)
    # From this commit on, any call may have left: a crash leaves the chunk `submitting`, never `pending`.
    ledger.mark_submitting(cid, no, chunk.phones, Lane.SINGLE)
    try:
        answers = lane.send_chunk(prepared)
    except BaseException:
        # Interrupted while calls were in flight: any of them may have gone out.
        ledger.record_singles(
            cid, no, {phone: SingleOutcome(Status.UNKNOWN, error_code=INTERRUPTED) for phone in chunk.phones}
        )
        raise
    outcomes = {answer.phone: outcome_of(answer) for answer in answers}
    ledger.record_singles(cid, no, outcomes)
    counts = {"accepted": 0, "failed": 0, "unknown": 0, "pending": 0}
    codes: dict[str, int] = {}
    for single in outcomes.values():
        counts[Status(single.status).value] += 1
        if single.error_code:
            codes[single.error_code] = codes.get(single.error_code, 0) + 1
    released = tuple(phone for phone, single in outcomes.items() if single.status == Status.PENDING)
    throttled = sum(1 for answer in answers if answer.error is not None and is_throttled(answer.error))
    outcome = ChunkOutcome(
        no,
        len(chunk),
        counts["accepted"],
        counts["failed"],
        counts["unknown"],
        released,
        sum(single.segments or 0 for single in outcomes.values()),
        throttled,
        codes,
    )
    context.recorded[no] = outcome
    if lane.stopped.is_set() and lane.stop_reason is not None:
        raise lane.stop_reason
    if len(released) == len(chunk):
        raise ChunkNotSent(f"chunk {no}: no call was processed ({', '.join(sorted(codes)) or 'not sent'})")
    return outcome


def is_throttled(error: BaseException) -> bool:
    from alibaba_sms.errors import ThrottledError

    return isinstance(error, ThrottledError)


_DEFAULT_TIMING = GatewaySettings().batch_timing


@task(
    name="send-single-chunk",
    task_run_name="{campaign_id}-single-{chunk_no}",
    cache_policy=NO_CACHE,
    retries=_DEFAULT_TIMING.retries,
    retry_delay_seconds=_DEFAULT_TIMING.retry_delays(),
    retry_jitter_factor=_DEFAULT_TIMING.retry_jitter,
    retry_condition_fn=is_transient,
)
def send_single_chunk(context: SingleContext, chunk: Chunk, campaign_id: str, chunk_no: int) -> ChunkOutcome:
    """One chunk of SendMessageToGlobe calls as its own task run, observable and retried in the Prefect UI.

    `campaign_id` and `chunk_no` (the chunk's batch number) are repeated as plain arguments to name the run.
    """
    from prefect import get_run_logger

    outcome = send_and_record_chunk(context, chunk)
    get_run_logger().info(
        "single chunk %s of %s: %s recipients, %s accepted, %s failed, %s unknown, %s pending again "
        "(%s throttled)",
        chunk_no, campaign_id, outcome.recipients, outcome.accepted, outcome.failed, outcome.unknown,
        len(outcome.released), outcome.throttled,
    )
    return outcome


def send_single_chunk_with_retries(settings: GatewaySettings) -> Task[..., ChunkOutcome]:
    """`send_single_chunk` retried as the gateway settings say (as `tasks.send.send_batch_with_retries`)."""
    timing = settings.batch_timing
    return send_single_chunk.with_options(
        retries=timing.retries,
        retry_delay_seconds=timing.retry_delays(),
        retry_jitter_factor=timing.retry_jitter,
    )


def chunk_report(
    campaign_id: str, chunk: Chunk, outcome: ChunkOutcome | None, error: BaseException | None = None
) -> dict[str, Any]:
    """One row of the per-chunk table, also the payload of the chunk's event (counts and ids, no number)."""
    from globe_sms.ids import task_id

    row: dict[str, Any] = {
        "lane": "single",
        "batch_no": chunk.batch_no,
        "task_id": task_id(campaign_id, chunk.batch_no),
        "recipients": len(chunk),
    }
    if outcome is not None:
        status = "unknown" if outcome.unknown else "accepted"
        counts = {
            "accepted": outcome.accepted,
            "failed": outcome.failed,
            "unknown": outcome.unknown,
            "pending": len(outcome.released),
        }
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(outcome.error_codes.items()))
        return {**row, "status": status, **counts, "request_id": None, "error_code": codes or None,
                "failed_numbers": ""}
    code = getattr(error, "code", None) or type(error).__name__
    return {**row, "status": "failed", "accepted": 0, "failed": 0, "unknown": 0, "pending": len(chunk),
            "request_id": getattr(error, "request_id", None), "error_code": code, "failed_numbers": ""}


def stops(error: BaseException) -> bool:
    """Whether a chunk's error stops the lane (re-exported for the send loop)."""
    return stops_the_lane(error)
