"""The ledger's own SQL: a batch's numbers as one sub-select, where numbers are, outcomes in one round trip.

Private to `globe_sms.ledger`; the backend plumbing others share is `globe_sms.ledger.backends`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, Select, bindparam, cast, select, update

from globe_sms.ledger.backends import values_table
from globe_sms.ledger.schema import Status, send_ledger

Outcome = tuple[Status, str | None, str | None]
"""What a row becomes: (status, message_id, error_code)."""
SingleExtra = tuple[str | None, int | None, str | None]
"""What a single call adds to its row: (request_id, segments, carrier)."""


def phone_list(dialect: str, phones: Sequence[str]) -> Select[tuple[str]]:
    """A sub-select of the given numbers, for `phone IN (...)` with one bound parameter."""
    source = values_table(dialect, ("phone",), [(phone,) for phone in phones])
    return select(source.c.phone)


def where_they_are(
    conn: Connection, dialect: str, campaign_id: str, phones: Sequence[str]
) -> dict[str, str | None]:
    """Each number's place, for error messages: `"accepted in batch 3"`, `"pending"`, or None (absent)."""
    c = send_ledger.c
    query = select(c.phone, c.status, c.batch_no).where(
        c.campaign_id == campaign_id, c.phone.in_(phone_list(dialect, phones))
    )
    found = {
        phone: status if batch is None else f"{status} in batch {batch}"
        for phone, status, batch in conn.execute(query)
    }
    return {phone: found.get(phone) for phone in phones}


def sqlite_bound(conn: Connection, column: str, value: Any) -> Any:
    """A value as SQLite stores it in a `send_ledger` column, through the column type's bind processing
    (its dialect's: a datetime becomes SQLAlchemy's text, with microseconds), for the driver's own
    executemany (`exec_driver_sql`): processed once per statement, not once per row."""
    dialect = conn.dialect
    processor = send_ledger.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor is not None else value


def mark_rows_submitting(
    conn: Connection,
    dialect: str,
    campaign_id: str,
    phones: Sequence[str],
    set_values: Mapping[str, Any],
) -> int:
    """`pending` -> `submitting` for the campaign's rows with these numbers, one UPDATE; returns the rows
    changed. `set_values`: the other columns (batch_no, submitted_at, updated_at, lane); `attempts` + 1.

    SQLite: an executemany, one row per number, each found through the (campaign_id, phone) key. A
    `phone IN (json_each)` there is planned as a scan of the campaign's pending rows
    (ix_send_ledger_campaign_status) per statement: a chunk of 500 cost 12 ms at 20,000 pending rows,
    50-70 ms at 200,000. PostgreSQL: one UPDATE joined to the numbers (`phone_list`)."""
    c = send_ledger.c
    if dialect == "sqlite":
        names = list(set_values)
        assignments = ", ".join(f"{name} = ?" for name in names)
        fixed = [sqlite_bound(conn, name, set_values[name]) for name in names]
        fixed += [campaign_id, sqlite_bound(conn, "status", Status.PENDING)]
        sql = (
            f"UPDATE send_ledger SET status = ?, attempts = attempts + 1, {assignments} "
            "WHERE campaign_id = ? AND status = ? AND phone = ?"
        )
        submitting = sqlite_bound(conn, "status", Status.SUBMITTING)
        return conn.exec_driver_sql(sql, [(submitting, *fixed, phone) for phone in phones]).rowcount
    statement = (
        update(send_ledger)
        .where(c.campaign_id == campaign_id, c.status == Status.PENDING)
        .where(c.phone.in_(phone_list(dialect, phones)))
        .values(status=Status.SUBMITTING, attempts=c.attempts + 1, **set_values)
    )
    return conn.execute(statement).rowcount


def apply_outcomes(
    conn: Connection,
    dialect: str,
    rows_in_batch: ColumnElement[bool],
    outcome: Mapping[str, Outcome],
    request_id: str | None,
    now: datetime,
) -> int:
    """UPDATE each row of the batch to its own outcome in one round trip; returns the rows changed."""
    c = send_ledger.c
    statement = update(send_ledger).where(rows_in_batch)
    if dialect == "sqlite":
        # An in-process executemany is cheap; an UPDATE ... FROM json_each makes SQLite's planner
        # rescan the JSON for every ledger row (1,000 x 1,000).
        params = [
            {"o_phone": p, "o_status": status.value, "o_message_id": message_id, "o_error_code": code}
            for p, (status, message_id, code) in outcome.items()
        ]
        statement = statement.where(c.phone == bindparam("o_phone")).values(
            status=bindparam("o_status"),
            message_id=bindparam("o_message_id"),
            error_code=bindparam("o_error_code"),
            request_id=request_id,
            updated_at=now,
        )
        return conn.execute(statement, params).rowcount
    rows = [(p, status.value, message_id, code) for p, (status, message_id, code) in outcome.items()]
    src = values_table(dialect, ("phone", "status", "message_id", "error_code"), rows)
    statement = statement.where(c.phone == src.c.phone).values(
        status=src.c.status,
        message_id=src.c.message_id,
        error_code=src.c.error_code,
        request_id=request_id,
        updated_at=now,
    )
    return conn.execute(statement).rowcount


def apply_single_outcomes(
    conn: Connection,
    dialect: str,
    rows_in_chunk: ColumnElement[bool],
    outcome: Mapping[str, Outcome],
    extra: Mapping[str, SingleExtra],
    now: datetime,
    *,
    campaign_id: str,
    batch_no: int,
) -> int:
    """`apply_outcomes` for a chunk of single calls: each row also gets its own request_id, segments and
    carrier. One round trip (an executemany on SQLite, one UPDATE ... FROM unnest on PostgreSQL).

    `rows_in_chunk` is the chunk's `submitting` rows, `campaign_id` and `batch_no` the same condition's
    values: SQLite's executemany is the driver's own (`exec_driver_sql`), the columns' bind processing done
    once per chunk instead of once per row (at 2,000 rows a second SQLAlchemy's per-row parameter processing
    was most of the single lane's ledger time)."""
    c = send_ledger.c
    statement = update(send_ledger).where(rows_in_chunk)
    if dialect == "sqlite":
        submitting = sqlite_bound(conn, "status", Status.SUBMITTING)
        updated_at = sqlite_bound(conn, "updated_at", now)
        params = [
            (
                str(status),  # StatusType's bind processing
                message_id,
                code,
                *extra[p],
                updated_at,
                campaign_id,
                submitting,
                batch_no,
                p,
            )
            for p, (status, message_id, code) in outcome.items()
        ]
        sql = (
            "UPDATE send_ledger SET status = ?, message_id = ?, error_code = ?, request_id = ?, "
            "segments = ?, carrier = ?, updated_at = ? "
            "WHERE campaign_id = ? AND status = ? AND batch_no = ? AND phone = ?"
        )
        return conn.exec_driver_sql(sql, params).rowcount
    names = ("phone", "status", "message_id", "error_code", "request_id", "segments", "carrier")
    rows = [
        (
            p,
            status.value,
            message_id,
            code,
            extra[p][0],
            None if extra[p][1] is None else str(extra[p][1]),
            extra[p][2],
        )
        for p, (status, message_id, code) in outcome.items()
    ]
    src = values_table(dialect, names, rows)
    statement = statement.where(c.phone == src.c.phone).values(
        status=src.c.status,
        message_id=src.c.message_id,
        error_code=src.c.error_code,
        request_id=src.c.request_id,
        segments=cast(src.c.segments, Integer),
        carrier=src.c.carrier,
        updated_at=now,
    )
    return conn.execute(statement).rowcount
