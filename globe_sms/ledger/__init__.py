"""The send ledger: one row per (campaign, recipient), moved through a small state machine.

```
pending ──► submitting ──► accepted   (number not in FailedList; MessageId recorded)
               │      └──► failed     (in FailedList, or a permanent business error for the batch)
               ├─────────► pending    (definitely not processed: refused before sending, throttled, signature)
               └─────────► unknown    (maybe processed: read timeout, dropped connection, HTTP 500)
a crash leaves rows in submitting ─► the next run turns them into unknown     recover_interrupted
unknown ──► pending  only when the user asks                                  resend_unknown
failed  ──► pending  on a rerun, for the error codes the caller calls retryable  reopen_retryable_failures
pending ──► skipped  a frequency cap holds the number back: final for the campaign  caps.skip
accepted ─► pending  when its delivery receipt says it failed, at the user's request  reopen_undelivered
```

Every `Ledger` method is one committed transaction and every transition a conditional UPDATE
(`WHERE status = <expected>`), so an illegal move changes nothing. The moves that name numbers are
all-or-nothing and raise `LedgerStateError` on any mismatch:

- `mark_submitting` needs every number `pending`. It is committed before it returns, because the request
  leaves right after: that ordering is what makes "never twice" hold across crashes.
- the outcomes (`record_accepted`, `record_failed`, `release`, `mark_unknown`) must name exactly the rows of
  the batch still in `submitting`. When one raises, the rows stay `submitting`: the caller can fall back to
  `mark_unknown`, and after a crash they are recovered as `unknown`. Never a silent resend.

`campaign_batches` keeps one row per batch number (`submitting`, then `accepted` / `failed` / `released` /
`unknown`) for summaries, and for joining delivery receipts through `globe_sms.ids.task_id(campaign_id,
batch_no)`.
A batch number is used once; only a `released` batch (nothing was processed) may be submitted again.

One run at a time changes a campaign's rows: a run takes the campaign's run lease (`campaign_runs`,
`acquire_run_lease`) before it recovers or registers anything, and releases it at the end. Another run then
fails at once with `CampaignBusy` instead of turning the first run's batch in flight into `unknown`; a
crashed run's lease expires by itself (`globe_sms.ledger.lease` tells the whole story).

Backends: SQLite (WAL, busy_timeout, `BEGIN IMMEDIATE` for writes) and PostgreSQL (psycopg 3). The schema is
versioned with Alembic (`globe_sms.ledger.migration`; revisions in `migrations/versions/`).
Typical use by the send task::

    ledger.mark_submitting(campaign_id, batch_no, phones)       # committed
    try:
        response = client.send_batch(..., task_id=task_id(campaign_id, batch_no))
    except NotProcessed as exc:                                  # throttled, refused, bad signature
        ledger.release(campaign_id, batch_no, phones, exc.code)
    except MaybeProcessed as exc:                                # timeout, dropped connection, 5xx
        ledger.mark_unknown(campaign_id, batch_no, phones, exc.code, exc.request_id)
    else:
        ledger.record_accepted(campaign_id, batch_no, accepted, failed, response.request_id)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# What the package offers, by the submodule it lives in, loaded on first use (PEP 562): importing
# `globe_sms.ledger.url` or `.errors`, as the campaign model does, must not load SQLAlchemy and the tables.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "errors": (
        "CampaignBusy",
        "LedgerError",
        "LedgerSchemaAhead",
        "LedgerSchemaBehind",
        "LedgerSchemaError",
        "LedgerSchemaUnrecognised",
        "LedgerStateError",
        "LedgerUnreachable",
        "LedgerUrlError",
        "RunLeaseLost",
    ),
    "lease": ("RunLease", "RunOwner"),
    "schema": (
        "BATCH_SCHEMA",
        "INTERRUPTED",
        "PURGED_PREFIX",
        "ROW_SCHEMA",
        "Lane",
        "BatchStatus",
        "Status",
        "account_volume",
        "campaign_batches",
        "campaign_runs",
        "metadata",
        "plan_claims",
        "send_ledger",
    ),
    "store": ("Ledger",),
    "url": ("LedgerLocation",),
}
_HOME = {name: f"{__name__}.{module}" for module, names in _SUBMODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
