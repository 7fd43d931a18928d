"""The ledger's errors.

```
LedgerError
├── LedgerStateError   a transition named rows that were not in the expected state; nothing was changed
├── CampaignBusy       another run holds the campaign's run lease; nothing was changed
├── RunLeaseLost       this run's lease was taken over (it had expired); the write was refused
├── LedgerUrlError     the ledger's URL is malformed, of an unsupported database, or its secret is missing
├── LedgerUnreachable  the ledger's database cannot be reached or opened
└── LedgerSchemaError  the database's schema is not one this globe-sms can use as it is (nothing was changed)
    ├── LedgerSchemaBehind        an older schema revision: run `globe-sms ledger upgrade`
    ├── LedgerSchemaAhead         a newer globe-sms migrated it: this one must not touch it
    └── LedgerSchemaUnrecognised  globe-sms tables without a revision that differ from what it ever created
```
No message ever shows a password: URLs are rendered masked (`postgresql://user:***@host/db`).
Bad arguments (a malformed number, a repeated number in one batch) raise the built-in `ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import islice

from globe_sms.masking import mask_number


class LedgerError(Exception):
    """Base class of the ledger's errors."""


class LedgerStateError(LedgerError):
    """A transition named rows that were not in the expected state; the transaction was rolled back.

    The message counts the offenders by reason and shows a few masked numbers, never whole ones.

    Attributes:
        campaign_id: the campaign.
        batch_no: the batch concerned, if any.
        offenders: number -> why it did not fit: its status (`"accepted"`, `"submitting in batch 3"`),
            `None` when the campaign has no such number, `"missing from the call"` for a batch row left out.
    """

    def __init__(
        self,
        message: str,
        *,
        campaign_id: str,
        batch_no: int | None = None,
        offenders: Mapping[str, str | None] | None = None,
    ) -> None:
        self.campaign_id = campaign_id
        self.batch_no = batch_no
        self.offenders: dict[str, str | None] = dict(offenders or {})
        if self.offenders:
            tally: dict[str, int] = {}
            for why in self.offenders.values():
                reason = why or "not registered"
                tally[reason] = tally.get(reason, 0) + 1
            detail = ", ".join(f"{count} {reason}" for reason, count in sorted(tally.items()))
            examples = ", ".join(mask_number(phone) for phone in islice(self.offenders, 5))
            message = f"{message} ({detail}; e.g. {examples})"
        super().__init__(message)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class CampaignBusy(LedgerError):
    """Another run holds the campaign's run lease (`globe_sms.ledger.lease`); this one changed nothing.

    The message names the other run and when its lease expires, never a number or a secret.

    Attributes:
        campaign_id: the campaign.
        holder: the other run, as it described itself (flow run name and id, host, pid).
        acquired_at: since when it holds the lease.
        expires_at: when the lease expires unless that run renews it.
    """

    def __init__(self, campaign_id: str, holder: str, acquired_at: datetime, expires_at: datetime) -> None:
        self.campaign_id = campaign_id
        self.holder = holder
        self.acquired_at = acquired_at
        self.expires_at = expires_at
        super().__init__(
            f"campaign {campaign_id!r} is being sent by another run: {holder}, since {_utc(acquired_at)}. "
            "Nothing was sent and the ledger was not changed. Wait for that run to finish, then run again; "
            f"if it crashed, its lease expires by itself at {_utc(expires_at)} (a Retry of that same flow "
            "run in the Prefect UI takes it back at once)."
        )


class RunLeaseLost(LedgerError):
    """This run's lease on the campaign expired and another run took it over: the write was refused.

    Attributes:
        campaign_id: the campaign.
        holder: the run that holds the lease now, as it described itself; None if nobody does.
        expires_at: when that run's lease expires; None if nobody holds it.
    """

    def __init__(self, campaign_id: str, holder: str | None, expires_at: datetime | None) -> None:
        self.campaign_id = campaign_id
        self.holder = holder
        self.expires_at = expires_at
        now = (
            "nobody holds it now"
            if holder is None or expires_at is None
            else (f"{holder} holds it until {_utc(expires_at)}")
        )
        super().__init__(
            f"campaign {campaign_id!r}: this run's lease expired and was taken over ({now}); this run stops "
            "before sending another batch, and what it did not send stays pending for the next run. If this "
            "run was only slow, raise gateway.run_lease_seconds."
        )


class LedgerUrlError(LedgerError, ValueError):
    """The ledger's URL cannot be used: malformed, not SQLite or PostgreSQL, or its secret is not found."""


class LedgerUnreachable(LedgerError):
    """The ledger's database did not answer or refused the connection (the URL is shown masked)."""


class LedgerSchemaError(LedgerError):
    """The ledger database's schema is not one this globe-sms can use; nothing was changed.

    The message names the database with its password masked.

    Attributes:
        url: the database's URL, password masked.
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)


class LedgerSchemaBehind(LedgerSchemaError):
    """The database is at an older revision and is not upgraded automatically (PostgreSQL).

    Attributes:
        current: the database's revision(s).
        head: the revision this globe-sms needs.
    """

    def __init__(self, url: str, current: tuple[str, ...], head: str, pending: list[str]) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the ledger at {url} has schema revision {', '.join(current)}; this globe-sms needs {head} "
            f"({len(pending)} migration(s) to apply: {'; '.join(pending)}). Nothing was changed. Back the "
            "database up, stop the runs that use it, then run `globe-sms ledger upgrade <ledger URL>`.",
            url=url,
        )


class LedgerSchemaAhead(LedgerSchemaError):
    """The database was migrated by a newer globe-sms: its revision is unknown to this one.

    Attributes:
        current: the database's revision(s).
        head: the newest revision this globe-sms knows.
    """

    def __init__(self, url: str, current: tuple[str, ...], head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the ledger at {url} has schema revision {', '.join(current)}, which this globe-sms does not "
            f"know (its newest is {head}): a newer globe-sms migrated it. Nothing was changed; use that "
            "newer globe-sms with this ledger.",
            url=url,
        )


class LedgerSchemaUnrecognised(LedgerSchemaError):
    """Globe-sms tables without a schema revision, unlike the ones globe-sms created before migrations.

    Attributes:
        differences: what differs, one line each.
    """

    def __init__(self, url: str, differences: list[str]) -> None:
        self.differences = differences
        shown = "; ".join(differences[:10]) + ("; ..." if len(differences) > 10 else "")
        super().__init__(
            f"the ledger at {url} has globe-sms tables but no schema revision (no globe_sms_ledger_version "
            f"table), and they are not the ones globe-sms created before it had migrations: {shown}. Nothing "
            "was changed.",
            url=url,
        )
