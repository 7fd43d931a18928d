"""Frequency caps over the ledger: how many messages each number got from other campaigns in a window.

A message counts when its row is `accepted`, `unknown` (it may have been delivered) or `submitting` (in
flight in another run), was submitted at or after `since`, belongs to another campaign, and, when the cap
names message types, has one of them (rows from before revision 0003 have no type and always count). Purged
rows (`globe_sms.ledger.purge`) no longer hold their number; they are matched by their keyed hash, which the
caller computes with the retention key (`globe_sms.retention`) only when such rows exist in the window.

The lookups are one statement per chunk of numbers, joined through `ix_send_ledger_phone_submitted` (and the
partial `ix_send_ledger_phone_key_submitted` for purged rows): a probe per number, never a scan of the ledger.
`skip` moves the capped numbers `pending` -> `skipped` (error code `frequency_cap`) in one conditional UPDATE.

Runs planning at the same time: every run, capped or not, `claim`s its campaign once its rows are registered
(`plan_claims`, under the claims lock: PostgreSQL's advisory lock, SQLite's write lock). A capped run then
also counts, chunk by chunk under the same lock as it skips (`skip_claimed`), the rows of the campaigns that
claimed *before* it and still hold their run lease: their pending rows (about to be sent) and those they
submitted since this run's count began. Two runs never both count each other (the one that claimed later
yields), so a number gets at most `max_messages` even from campaigns started together. A claimed campaign's
pending rows count even when its send window or volume limit defers them: the cap errs on the side of
sending less.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from globe_sms.ledger._sql import phone_list
from globe_sms.ledger.backends import values_table
from globe_sms.ledger.schema import Status, campaign_runs, plan_claims, send_ledger
from globe_sms.ledger.store import Ledger

COUNTED = (Status.ACCEPTED, Status.UNKNOWN, Status.SUBMITTING)
"""The statuses of a message that counts against a cap."""
CHUNK = 20_000
_CLAIMS_LOCK = 0x636C61696D73  # advisory lock key ("claims")
_c, _k, _r = send_ledger.c, plan_claims.c, campaign_runs.c


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


def _lock_claims(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIMS_LOCK})


def claim(ledger: Ledger, campaign_id: str) -> datetime:
    """Record that the campaign's run has registered its rows and will send its pending ones; the time."""
    now = ledger.now()
    insert = sqlite_insert if ledger._dialect == "sqlite" else pg_insert
    with ledger._write() as conn:
        _lock_claims(conn)
        statement = insert(plan_claims).values(campaign_id=campaign_id, claimed_at=now)
        conn.execute(
            statement.on_conflict_do_update(index_elements=["campaign_id"], set_={"claimed_at": now})
        )
    return now


def skip_claimed(
    ledger: Ledger,
    campaign_id: str,
    phones: Sequence[str],
    counts: Counter[str],
    cap_max: int,
    claimed_at: datetime,
    counted_since: datetime,
    message_types: Collection[str],
    reason: str,
) -> int:
    """Skip those of `phones` (pending) at the cap, adding to `counts` (earlier campaigns' messages) the
    rows of runs that claimed before `claimed_at` and are still running; chunk by chunk, each under the
    claims lock. Returns how many were skipped."""
    now = ledger.now()
    earlier = (
        select(_k.campaign_id)
        .join(campaign_runs, _r.campaign_id == _k.campaign_id)
        .where(
            _k.campaign_id != campaign_id,
            _k.claimed_at < claimed_at,
            _k.claimed_at >= _r.acquired_at,  # claimed by the run that holds the lease now
            _r.expires_at > now,
        )
    )
    in_flight = (_c.status == Status.PENDING) | (_c.status.in_(COUNTED) & (_c.submitted_at >= counted_since))
    typed = _c.message_type.in_(sorted(message_types)) | _c.message_type.is_(None) if message_types else None
    skipped = 0
    for start in range(0, len(phones), CHUNK):
        chunk = list(phones[start : start + CHUNK])
        with ledger._write() as conn:
            _lock_claims(conn)
            ledger._fence(conn, campaign_id, now)
            others = list(conn.execute(earlier).scalars())
            found: Counter[str] = Counter()
            if others:
                src = values_table(ledger._dialect, ("phone",), [(p,) for p in chunk])
                condition = _c.campaign_id.in_(others) & in_flight
                if typed is not None:
                    condition = condition & typed
                query = (
                    select(src.c.phone, func.count())
                    .select_from(src.join(send_ledger, _c.phone == src.c.phone))
                    .where(condition)
                    .group_by(src.c.phone)
                )
                found.update({phone: int(n) for phone, n in conn.execute(query)})
            capped = [p for p in chunk if counts.get(p, 0) + found.get(p, 0) >= cap_max]
            if capped:
                skipped += conn.execute(
                    update(send_ledger)
                    .where(
                        _c.campaign_id == campaign_id,
                        _c.status == Status.PENDING,
                        _c.phone.in_(phone_list(ledger._dialect, capped)),
                    )
                    .values(status=Status.SKIPPED, error_code=reason, updated_at=now)
                ).rowcount
    return skipped
