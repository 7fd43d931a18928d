"""Retention: purge the phone numbers of finished campaigns from the ledger database, keeping everything else.

`purge(ledger, older_than, key)` takes every *finished* campaign (no row `pending` or `submitting`, no run
lease held, and no row changed since `older_than`) that still has numbers, and in one transaction per
campaign replaces on each of its rows:

- `send_ledger.phone` with a marker, `#` and 14 characters of the number's keyed hash (never an E.164
  number, unique within the campaign), and sets `phone_key` to the whole keyed hash (HMAC-SHA256 with the
  retention key, `globe_sms.retention`);
- `delivery_receipts.phone` of the campaign's receipts with the same marker;
- any message text a table keeps (`TEXT_COLUMNS`, where the column exists) with NULL.

Counts, statuses, batch numbers, message ids, error codes and timestamps stay: reports and delivery
statistics still add up. Frequency caps (`globe_sms.ledger.caps`) count a purged row by its keyed hash, and a
rerun of a purged campaign recognises its numbers the same way (`purged_numbers`), so nobody is messaged
again because their number was purged. `plan(...)` lists what `purge` would do, changing nothing.

SQLite: the purge writes with `secure_delete` on (freed cells are zeroed) and truncates the write-ahead log
afterwards, so no old copy of a number stays in the file. PostgreSQL keeps the old row versions until
VACUUM reclaims them and new rows overwrite them: run `VACUUM` after a purge (docs/retention.md).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, MetaData, Table, bindparam, case, exists, func, inspect, select, update

from globe_sms.ledger.backends import values_table
from globe_sms.ledger.schema import PURGED_PREFIX, Status, campaign_runs, send_ledger
from globe_sms.ledger.store import Ledger

CHUNK = 20_000
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "send_ledger": ("message", "text"),
    "delivery_receipts": ("message",),
}
"""Columns that would hold message texts, emptied by a purge where a table has them (today none does: the
texts live in the run's spool, which is deleted when the run ends)."""
_c = send_ledger.c
_NOT_PURGED = _c.phone >= "1"  # E.164 digits start with 1-9; a purged marker starts with '#'


def marker(phone_key: str) -> str:
    """The `phone` a purged row keeps: `#` and 14 URL-safe base64 characters (84 bits) of its keyed hash."""
    return PURGED_PREFIX + base64.urlsafe_b64encode(bytes.fromhex(phone_key)).decode()[:14]


@dataclass(frozen=True)
class PurgeCandidate:
    """A finished campaign with numbers still in the ledger."""

    campaign_id: str
    rows: int
    numbers: int
    last_change: datetime


def plan(ledger: Ledger, older_than: datetime) -> list[PurgeCandidate]:
    """The finished campaigns `purge` would purge now (see the module), oldest change first; reads only."""
    unfinished = func.sum(case((_c.status.in_([Status.PENDING, Status.SUBMITTING]), 1), else_=0))
    numbers = func.sum(case((_NOT_PURGED, 1), else_=0))
    leased = exists().where(campaign_runs.c.campaign_id == _c.campaign_id)
    query = (
        select(_c.campaign_id, func.count(), numbers, func.max(_c.updated_at))
        .where(~leased)
        .group_by(_c.campaign_id)
        .having((unfinished == 0) & (numbers > 0) & (func.max(_c.updated_at) < older_than))
        .order_by(func.max(_c.updated_at), _c.campaign_id)
    )
    with ledger._engine.connect() as conn:
        found = conn.execute(query).all()
    return [PurgeCandidate(cid, int(rows), int(nums), _as_utc(last)) for cid, rows, nums, last in found]


def _as_utc(value: datetime) -> datetime:
    from globe_sms.ledger.schema import UtcDateTime

    return UtcDateTime().process_result_value(value, None)  # type: ignore[arg-type,return-value]


def purge(
    ledger: Ledger,
    older_than: datetime,
    phone_keys: Callable[[Sequence[str]], list[str]],
    campaigns: Sequence[str] | None = None,
) -> list[PurgeCandidate]:
    """Purge the finished campaigns `plan` lists (or only those of them named in `campaigns`).

    Args:
        ledger: the ledger.
        older_than: only campaigns with no row changed since this moment.
        phone_keys: the keyed hash of numbers (`RetentionKey.phone_keys`).
        campaigns: limit the purge to these campaign ids.

    Returns:
        The campaigns purged, with their rows and the numbers replaced.
    """
    done = []
    for candidate in plan(ledger, older_than):
        if campaigns is not None and candidate.campaign_id not in campaigns:
            continue
        with ledger._write() as conn:
            if ledger._dialect == "sqlite":  # zero the freed cells: no old number left in free pages
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            if _busy(conn, candidate.campaign_id, older_than):
                continue  # a run started on it since the plan was read: leave it
            _purge_campaign(conn, candidate.campaign_id, phone_keys)
        done.append(candidate)
    if done and ledger._dialect == "sqlite":
        _checkpoint(ledger)
    return done


def _checkpoint(ledger: Ledger) -> None:
    """SQLite: copy the write-ahead log into the database and empty it (it held the numbers' old pages)."""
    with ledger._engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _busy(conn: Connection, campaign_id: str, older_than: datetime) -> bool:
    """Inside the purge's transaction: whether the campaign is no longer finished, or leased."""
    return bool(
        conn.execute(
            select(
                exists().where(
                    (_c.campaign_id == campaign_id)
                    & ((_c.status.in_([Status.PENDING, Status.SUBMITTING])) | (_c.updated_at >= older_than))
                )
                | exists().where(campaign_runs.c.campaign_id == campaign_id)
            )
        ).scalar()
    )


def _receipts(conn: Connection) -> Table | None:
    """`delivery_receipts` (None in a database without it)."""
    from globe_sms.receipts.store import delivery_receipts

    return delivery_receipts if "delivery_receipts" in inspect(conn).get_table_names() else None


def _texts(table: Table | None, name: str) -> list[str]:
    return [] if table is None else [column for column in TEXT_COLUMNS[name] if column in table.c]


def _purge_campaign(
    conn: Connection, campaign_id: str, phone_keys: Callable[[Sequence[str]], list[str]]
) -> None:
    receipts = _receipts(conn)
    ledger_texts = _texts(Table("send_ledger", MetaData(), autoload_with=conn), "send_ledger")
    while True:
        rows = conn.execute(
            select(_c.id, _c.phone)
            .where(_c.campaign_id == campaign_id, _NOT_PURGED)
            .order_by(_c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        phones = [phone for _, phone in rows]
        keys = phone_keys(phones)
        params = [
            {"p_id": row_id, "p_phone": marker(key), "p_key": key}
            for (row_id, _), key in zip(rows, keys, strict=True)
        ]
        values = {"phone": bindparam("p_phone"), "phone_key": bindparam("p_key")}
        values.update({name: None for name in ledger_texts})
        conn.execute(update(send_ledger).where(_c.id == bindparam("p_id")).values(**values), params)
    if receipts is not None:
        _purge_receipts(conn, receipts, receipts.c.campaign_id == campaign_id, phone_keys)


def _purge_receipts(
    conn: Connection, receipts: Table, which: Any, phone_keys: Callable[[Sequence[str]], list[str]]
) -> int:
    """Replace the numbers of the receipts `which` selects by the markers their ledger rows got."""
    found = conn.execute(
        select(receipts.c.message_id, receipts.c.phone).where(
            which, receipts.c.phone.is_not(None), ~receipts.c.phone.startswith(PURGED_PREFIX)
        )
    ).all()
    if not found:
        return 0
    keys = phone_keys([phone.lstrip("+") for _, phone in found])  # a receipt's To may carry a '+'
    texts = {name: None for name in _texts(receipts, "delivery_receipts")}
    conn.execute(
        update(receipts)
        .where(receipts.c.message_id == bindparam("r_id"))
        .values(phone=bindparam("r_marker"), **texts),
        [{"r_id": mid, "r_marker": marker(key)} for (mid, _), key in zip(found, keys, strict=True)],
    )
    return len(found)


def purge_orphan_receipts(
    ledger: Ledger, older_than: datetime, phone_keys: Callable[[Sequence[str]], list[str]]
) -> int:
    """Receipts of no campaign (their `phone` is the receipt's To) last updated before `older_than`: their
    numbers replaced by markers too (the receipts of a purged campaign are purged with it). How many."""
    done = 0
    with ledger._write() as conn:
        if ledger._dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        receipts = _receipts(conn)
        if receipts is None:
            return 0
        done = _purge_receipts(
            conn, receipts, receipts.c.campaign_id.is_(None) & (receipts.c.updated < older_than), phone_keys
        )
    if done and ledger._dialect == "sqlite":
        _checkpoint(ledger)
    return done


def has_purged_rows(ledger: Ledger, campaign_id: str) -> bool:
    """Whether some of the campaign's rows were purged (then its numbers are recognised by keyed hash)."""
    query = select(exists().where(_c.campaign_id == campaign_id, _c.phone < "1"))
    with ledger._engine.connect() as conn:
        return bool(conn.execute(query).scalar())


def purged_numbers(
    ledger: Ledger, campaign_id: str, phones: Sequence[str], phone_keys: Callable[[Sequence[str]], list[str]]
) -> list[str]:
    """The numbers among `phones` that the campaign had before its rows were purged."""
    found: list[str] = []
    with ledger._engine.connect() as conn:
        for start in range(0, len(phones), CHUNK):
            chunk = list(phones[start : start + CHUNK])
            src = values_table(
                ledger._dialect, ("phone", "key"), list(zip(chunk, phone_keys(chunk), strict=True))
            )
            query = (
                select(src.c.phone)
                .select_from(src.join(send_ledger, _c.phone_key == src.c.key))
                .where(_c.campaign_id == campaign_id)
            )
            found += list(conn.execute(query).scalars())
    return found
