"""The ledger's own SQL: a batch's numbers as one sub-select, where numbers are, outcomes in one round trip.

Private to `globe_sms.ledger`; the backend plumbing others share is `globe_sms.ledger.backends`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

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
        sqlite = conn.dialect
        stamp = c.updated_at.type.bind_processor(sqlite)
        status_of = c.status.type.bind_processor(sqlite)
        submitting = status_of(Status.SUBMITTING) if status_of else Status.SUBMITTING.value
        updated_at = stamp(now) if stamp else now
        params = [
            (
                status_of(status) if status_of else status.value,
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
