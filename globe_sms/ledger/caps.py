"""Frequency caps over the ledger: how many messages each number got from other campaigns in a window.

A message counts when its row is `accepted`, `unknown` (it may have been delivered) or `submitting` (in
flight in another run), was submitted at or after `since`, belongs to another campaign, and, when the cap
names message types, has one of them (rows from before revision 0003 have no type and always count). Purged
rows (`globe_sms.ledger.purge`) no longer hold their number; they are matched by their keyed hash, which the
caller computes with the retention key (`globe_sms.retention`) only when such rows exist in the window.

The lookups are one statement per chunk of numbers, joined through `ix_send_ledger_phone_submitted` (and the
partial `ix_send_ledger_phone_key_submitted` for purged rows): a probe per number, never a scan of the ledger.
`skip` moves the capped numbers `pending` -> `skipped` (error code `frequency_cap`) in one conditional UPDATE.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select, update

from globe_sms.ledger._sql import phone_list
from globe_sms.ledger.backends import values_table
from globe_sms.ledger.schema import Status, send_ledger
from globe_sms.ledger.store import Ledger

COUNTED = (Status.ACCEPTED, Status.UNKNOWN, Status.SUBMITTING)
"""The statuses of a message that counts against a cap."""
CHUNK = 20_000
_c = send_ledger.c


def _counted(campaign_id: str, since: datetime, message_types: Collection[str]) -> ColumnElement[bool]:
    condition = (_c.submitted_at >= since) & _c.status.in_(COUNTED) & (_c.campaign_id != campaign_id)
    if message_types:
        condition = condition & (_c.message_type.in_(sorted(message_types)) | _c.message_type.is_(None))
    return condition


def count_query(dialect: str, phones: Sequence[str], condition: ColumnElement[bool]) -> Select[Any]:
    """`(phone, messages)` of the numbers with messages matching `condition`: one index probe per number."""
    src = values_table(dialect, ("phone",), [(p,) for p in phones])
    return (
        select(src.c.phone, func.count())
        .select_from(src.join(send_ledger, _c.phone == src.c.phone))
        .where(condition)
        .group_by(src.c.phone)
    )


def counted(campaign_id: str, since: datetime, message_types: Collection[str] = ()) -> ColumnElement[bool]:
    """The rows that count against a cap for `campaign_id` (see the module docstring)."""
    return _counted(campaign_id, since, message_types)


def purged_in_window(ledger: Ledger, since: datetime) -> bool:
    """Whether a purged row submitted at or after `since` exists (then numbers must be matched by key too)."""
    query = select(exists().where(_c.phone_key.is_not(None), _c.submitted_at >= since))
    with ledger._engine.connect() as conn:
        return bool(conn.execute(query).scalar())


def sent_counts(
    ledger: Ledger,
    campaign_id: str,
    phones: Sequence[str],
    since: datetime,
    message_types: Collection[str] = (),
    phone_keys: Callable[[Sequence[str]], list[str]] | None = None,
) -> Counter[str]:
    """Messages each number got from other campaigns since `since` (numbers with none are absent).

    Args:
        ledger: the ledger.
        campaign_id: the campaign being planned (its own rows do not count).
        phones: the numbers (E.164 digits).
        since: the start of the window (aware).
        message_types: only messages of these types count (empty: all).
        phone_keys: the retention key's hash (`RetentionKey.phone_keys`), to count purged rows as well;
            None when no purged row is in the window.
    """
    counts: Counter[str] = Counter()
    condition = _counted(campaign_id, since, message_types)
    dialect = ledger._dialect
    with ledger._engine.connect() as conn:
        for start in range(0, len(phones), CHUNK):
            chunk = list(phones[start : start + CHUNK])
            counts.update(
                {phone: int(n) for phone, n in conn.execute(count_query(dialect, chunk, condition))}
            )
            if phone_keys is not None:
                keyed = values_table(
                    dialect, ("phone", "key"), list(zip(chunk, phone_keys(chunk), strict=True))
                )
                query = (
                    select(keyed.c.phone, func.count())
                    .select_from(keyed.join(send_ledger, _c.phone_key == keyed.c.key))
                    .where(condition)
                    .group_by(keyed.c.phone)
                )
                counts.update({phone: int(n) for phone, n in conn.execute(query)})
    return counts


def skip(ledger: Ledger, campaign_id: str, phones: Sequence[str], reason: str) -> int:
    """Move the numbers still `pending` in the campaign to `skipped` with error code `reason`; how many moved.

    Renews the campaign's run lease this ledger holds (or checks that no other run holds one), like every
    write that changes a campaign's rows.
    """
    moved = 0
    now = ledger.now()
    with ledger._write() as conn:
        ledger._fence(conn, campaign_id, now)
        for start in range(0, len(phones), CHUNK):
            chunk = list(dict.fromkeys(phones[start : start + CHUNK]))
            moved += conn.execute(
                update(send_ledger)
                .where(
                    _c.campaign_id == campaign_id,
                    _c.status == Status.PENDING,
                    _c.phone.in_(phone_list(ledger._dialect, chunk)),
                )
                .values(status=Status.SKIPPED, error_code=reason, updated_at=now)
            ).rowcount
    return moved
