"""Send one batch and record every recipient's outcome in the ledger: `send_and_record_batch`, and the
`send-batch` task (`send_batch`) that runs it as a task run of its own, `<campaign>-batch-<n>`.

The order of writes is what makes "never twice" hold across crashes and retries:

1. the payload is built and signed;
2. the pacer waits until shortly before the batch's departure time (nothing is written yet: a crash while
   waiting leaves the rows `pending`, and the next run sends them; a stop request ends the wait with
   `StoppedBeforeSending`);
3. the batch's rows become `submitting`, committed, then the account's slot is asked for (the write-ahead
   record: a crash from here on leaves them `submitting`, which the next run turns into `unknown`); if no
   slot comes within a few ms, or the wait ends with an error, the rows go back to `pending` and the wait
   goes on (`globe_sms.pacing.Pacer`);
4. the request goes out at its departure time, the next call timed from it, and the outcome is committed
   right after the response:

   ======================================  =============================================================
   answer                                  ledger
   ======================================  =============================================================
   OK                                      accepted (MessageId) / failed (in FailedList)
   retryable (throttled, 503, no connect)  back to pending, then the task raises and Prefect retries it
   permanent gateway refusal (signature)   back to pending (not processed), the task fails, no retry
   permanent business code (balance...)    failed with the code, the task fails, no retry
   ambiguous (read timeout, drop, 500)     unknown: resent only if the user asks (`resend_unknown`)
   ======================================  =============================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task

from alibaba_sms import BatchSendResult, PreparedBatch, SmsClient
from alibaba_sms.errors import (
    AmbiguousOutcomeError,
    BusinessError,
    RetryableError,
    SmsApiError,
    ThrottledError,
)
from globe_sms.campaign import Campaign, GatewaySettings
from globe_sms.ids import task_id
from globe_sms.ledger import INTERRUPTED, Ledger
from globe_sms.masking import mask_number
from globe_sms.pacing import Pacer
from tasks.stop import StoppedBeforeSending, interruptible

logger = logging.getLogger(__name__)

FAILED_SAMPLE = 3  # masked numbers from FailedList shown per batch
NO_SLOT = "NO_SLOT"  # why written-ahead rows went back to pending unsent: the slot did not come (or a stop)
BATCH_TABLE_ROWS = 1000  # a 1,000,000-recipient campaign has 1,000 batches


@dataclass(frozen=True)
class Batch:
    """One planned call: its number within the campaign, and parallel numbers and texts."""

    batch_no: int
    phones: tuple[str, ...]
    messages: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.phones)


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one batch."""

    batch_no: int
    recipients: int
    accepted: int
    failed: int
    unknown: int
    request_id: str | None
    error_code: str | None = None
    failed_sample: tuple[str, ...] = ()  # the first numbers in FailedList, already masked


@dataclass
class SendContext:
    """Everything a batch needs, built once per flow run (not serialisable, so never cached)."""

    campaign: Campaign
    client: SmsClient
    ledger: Ledger
    pacer: Pacer
    fresh_connection: bool = True


def _transmit(context: SendContext, prepared: PreparedBatch) -> BatchSendResult:
    """Send a prepared batch, telling the pacer when it left (`Pacer.call_sent`: a call that left late after
    its grant stamps the slot again; after a call that opened the connection the next is timed from then)
    and when it was answered (`Pacer.call_answered`)."""
    try:
        return context.client.send_prepared_batch(prepared, on_sent=context.pacer.call_sent)
    finally:
        opened, context.fresh_connection = context.fresh_connection, False
        context.pacer.call_answered(opened_connection=opened)


def send_and_record_batch(context: SendContext, batch: Batch) -> BatchOutcome:
    """Send a batch and commit its outcome to the ledger.

    Returns:
        The outcome, also for ambiguous answers (recorded as unknown).

    Raises:
        RetryableError: nothing was processed and the rows are pending again; retrying is safe.
        PermanentError: the batch will not succeed as is.
    """
    campaign, ledger = context.campaign, context.ledger
    cid, no = campaign.campaign_id, batch.batch_no
    prepared = context.client.prepare_batch(
        batch.phones,
        batch.messages,
        sender=campaign.sender_id,
        message_type=campaign.message_type,
        task_id=campaign.task_id(no),
        validity_period=campaign.validity_period,
    )
    # The write-ahead: from this commit on the batch may leave, so a crash leaves it `submitting`, never
    # `pending`. The pacer runs it right before it asks for the slot (so that neither the commit nor the
    # slot's round trip adds to the spacing) and undoes it if no slot came (the rows back to `pending`).
    while True:
        granted = False
        try:
            with interruptible():  # a stop request ends the wait: nothing is sent, the rows stay `pending`
                context.pacer.wait(
                    write_ahead=lambda: ledger.mark_submitting(cid, no, batch.phones),
                    undo=lambda: ledger.release(cid, no, batch.phones, NO_SLOT),
                )
                granted = True
        except StoppedBeforeSending:
            if granted:  # a stop request seen right after the grant: the batch was written ahead, not sent
                ledger.release(cid, no, batch.phones, NO_SLOT)
                context.pacer.call_abandoned()
            raise
        if context.pacer.departing():
            break
        ledger.release(cid, no, batch.phones, NO_SLOT)  # the grant went stale before the call left: unsent
    try:
        result = _transmit(context, prepared)
    except AmbiguousOutcomeError as exc:
        ledger.mark_unknown(cid, no, batch.phones, exc.code or type(exc).__name__, exc.request_id)
        logger.warning("batch %s: outcome unknown (%s); %s recipients marked unknown", no, exc, len(batch))
        return BatchOutcome(no, len(batch), 0, 0, len(batch), exc.request_id, exc.code)
    except RetryableError as exc:
        ledger.release(cid, no, batch.phones, exc.code)
        if isinstance(exc, ThrottledError):
            context.pacer.throttled()
        raise
    except BusinessError as exc:
        ledger.record_failed(cid, no, batch.phones, exc.code or "UNKNOWN", exc.request_id)
        raise
    except SmsApiError as exc:
        # Gateway refusals (signature, parameters): the service never processed the batch.
        ledger.release(cid, no, batch.phones, exc.code)
        raise
    except BaseException:
        # Anything else after the request left (interrupt, bug): it may have gone out.
        ledger.mark_unknown(cid, no, batch.phones, INTERRUPTED, None)
        raise
    in_batch = set(batch.phones)
    failed = {phone: "FAILED_LIST" for phone in result.failed if phone in in_batch}
    ledger.record_accepted(cid, no, result.accepted, failed, result.request_id)
    if failed:
        logger.info(
            "batch %s: %s numbers in FailedList, e.g. %s", no, len(failed), mask_number(next(iter(failed)))
        )
    sample = tuple(mask_number(phone) for phone in list(failed)[:FAILED_SAMPLE])
    return BatchOutcome(no, len(batch), len(result.accepted), len(failed), 0, result.request_id, None, sample)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only errors that guarantee nothing was processed."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(error, RetryableError)


_DEFAULT_TIMING = GatewaySettings().batch_timing  # a campaign's own: `send_batch_with_retries`


@task(
    name="send-batch",
    task_run_name="{campaign_id}-batch-{batch_no}",
    cache_policy=NO_CACHE,
    retries=_DEFAULT_TIMING.retries,
    retry_delay_seconds=_DEFAULT_TIMING.retry_delays(),
    retry_jitter_factor=_DEFAULT_TIMING.retry_jitter,
    retry_condition_fn=is_transient,
)
def send_batch(context: SendContext, batch: Batch, campaign_id: str, batch_no: int) -> BatchOutcome | None:
    """One BatchSendMessageToGlobe call as its own task run, observable and retried in the Prefect UI.

    `campaign_id` and `batch_no` are repeated as plain arguments so that they name the task run.

    Returns:
        The outcome, or None when a stop request held the batch back while it waited for its rate-limit
        slot (`tasks/stop.py`): nothing was sent or written, its rows stay `pending`.
    """
    from prefect import get_run_logger

    try:
        outcome = send_and_record_batch(context, batch)
    except StoppedBeforeSending as exc:
        get_run_logger().info("batch %s of %s not sent: %s", batch_no, campaign_id, exc)
        return None
    get_run_logger().info(
        "batch %s of %s: %s recipients, %s accepted, %s failed, %s unknown",
        batch_no, campaign_id, outcome.recipients, outcome.accepted, outcome.failed, outcome.unknown,
    )
    return outcome


def send_batch_with_retries(settings: GatewaySettings) -> Task[..., BatchOutcome | None]:
    """`send_batch` retried as `settings` say: `max_attempts - 1` retries, one delay per retry, from the
    same `BatchTiming` the client's timeouts and the lease check read."""
    timing = settings.batch_timing
    return send_batch.with_options(
        retries=timing.retries,
        retry_delay_seconds=timing.retry_delays(),
        retry_jitter_factor=timing.retry_jitter,
    )


def batch_report(
    campaign_id: str, batch: Batch, outcome: BatchOutcome | None, error: BaseException | None = None
) -> dict[str, Any]:
    """One row of the per-batch table, also the payload of the batch's event: counts and ids, no raw number.

    `status` is `accepted` (answered; numbers in FailedList are counted as failed), `unknown` (the answer
    was lost: maybe processed) or `failed` (the batch raised: a permanent business error fails its rows,
    anything else leaves them pending for a later run).
    """
    row: dict[str, Any] = {
        "batch_no": batch.batch_no,
        "task_id": task_id(campaign_id, batch.batch_no),
        "recipients": len(batch),
    }
    if outcome is not None:
        status = "unknown" if outcome.unknown else "accepted"
        counts = {"accepted": outcome.accepted, "failed": outcome.failed, "unknown": outcome.unknown}
        counts["pending"] = 0
        request_id, code, sample = outcome.request_id, outcome.error_code, outcome.failed_sample
    else:
        status = "failed"
        rows_failed = isinstance(error, BusinessError) and not isinstance(error, RetryableError)
        n = len(batch)
        counts = {"accepted": 0, "failed": n if rows_failed else 0, "unknown": 0}
        counts["pending"] = 0 if rows_failed else n
        request_id = getattr(error, "request_id", None)
        code = getattr(error, "code", None) or type(error).__name__
        sample = ()
    return {
        **row,
        "status": status,
        **counts,
        "request_id": request_id,
        "error_code": code,
        "failed_numbers": ", ".join(sample),
    }


def emit_batch_event(campaign_id: str, report: dict[str, Any]) -> None:
    """Emit `globe-sms.batch.<status>` about `globe-sms.campaign.<id>`, with the batch's report as payload.

    Automations can hang on it (e.g. notify on `globe-sms.batch.failed`). The payload holds counts, ids and
    codes only, not even masked numbers; Prefect relates the event to the flow run, flow and deployment.
    """
    from prefect.events import emit_event

    emit_event(
        event=f"globe-sms.batch.{report['status']}",
        resource={
            "prefect.resource.id": f"globe-sms.campaign.{campaign_id}",
            "prefect.resource.name": campaign_id,
        },
        payload={key: value for key, value in report.items() if key != "failed_numbers"},
    )


def publish_batch_table(
    campaign_id: str, reports: list[dict[str, Any]], planned: int, stopped: str | None = None
) -> None:
    """The per-batch table artifact of a run (`<campaign>-batches`): counts, request ids, masked numbers.

    `stopped` (`stopped after batch 5 (Ctrl-C (SIGINT)); 50 pending`) heads the description of a run that
    stopped on request; such a run publishes its table even when it stopped before its first batch.
    """
    from prefect.artifacts import create_table_artifact

    if not reports and not stopped:
        return
    shown = reports[:BATCH_TABLE_ROWS]
    create_table_artifact(
        shown,
        key=f"{campaign_id}-batches",
        description=batch_table_description(len(reports), len(shown), planned, stopped),
    )


def batch_table_description(sent: int, shown: int, planned: int, stopped: str | None = None) -> str:
    """`[Stopped after batch 5 (SIGTERM); 40 pending. ]Batches of this run: 5 of 15 planned; ...`"""
    return (
        (f"{stopped[0].upper()}{stopped[1:]}. " if stopped else "")
        + f"Batches of this run: {sent} of {planned} planned"
        + (f" (first {shown} shown)" if shown < sent else "")
        + "; failed numbers masked"
    )
