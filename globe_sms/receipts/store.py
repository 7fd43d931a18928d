"""`delivery_receipts`: one row per MessageId, next to the send ledger, and the idempotent upsert into it.

The table lives in the ledger's database (SQLite or PostgreSQL, same URL), in its own `MetaData`; the ledger's
migrations (`globe_sms/ledger/migrations/`) create it with the send ledger's tables, one history for both.
A receipt joins its `send_ledger` row through MessageId, and through TaskId (`<campaign>-b<batch>`) when
several rows carry the same MessageId; the row's campaign, number and batch are copied in. A receipt whose
MessageId the ledger does not know is kept as an **orphan** (`matched = false`, campaign and batch taken from
its TaskId when it parses) and counted; `adopt_orphans` joins it later, once the ledger has caught up (a
receipt can beat `record_accepted` to the database).

`ReceiptStore.record` is one transaction per call: it locks the rows of the MessageIds it was given, folds
every receipt into them in order with `globe_sms.receipts.model.merge` (so a final state never moves back,
duplicates and stale receipts are counted, a second different final is a conflict), and writes the result.
Two concurrent calls that both insert the same new MessageId on PostgreSQL: the loser's transaction fails
on the primary key and is replayed, and then sees the winner's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from globe_sms.ids import parse_task_id
from globe_sms.ledger import Status, send_ledger
from globe_sms.ledger.backends import values_table
from globe_sms.ledger.database import LedgerDatabase
from globe_sms.ledger.schema import StatusType, UtcDateTime
from globe_sms.receipts.model import FINAL_STATUSES, DeliveryStatus, Receipt, merge

_ATTEMPTS = 3
_LOOKUP_CHUNK = 5_000

delivery_metadata = MetaData()

delivery_receipts = Table(
    "delivery_receipts",
    delivery_metadata,
    Column("message_id", String, primary_key=True),
    Column("campaign_id", String),  # the ledger row's, else parsed from TaskId (orphans)
    Column("phone", String),  # the ledger row's number, else the receipt's To
    Column("batch_no", Integer),
    Column("task_id", String),
    Column("matched", Boolean, nullable=False),  # joined a send_ledger row; false = orphan
    Column("delivery_status", StatusType, nullable=False),
    Column("status_code", String(8)),  # Status as received: "1", "2", "3", "6" ...
    Column("error_code", String),
    Column("error_description", String),
    Column("send_date", UtcDateTime),
    Column("receive_date", UtcDateTime),
    Column("segments", Integer),
    Column("source", String(16), nullable=False),  # receipt | query | timeout
    Column("receipts", Integer, nullable=False),  # receipts and answers seen for this MessageId
    Column("duplicates", Integer, nullable=False),  # the same state again
    Column("stale", Integer, nullable=False),  # an earlier state after a later one (out of order)
    Column("conflicts", Integer, nullable=False),  # a different final state after a final one (ignored)
    Column("first_seen", UtcDateTime, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
    Column("settled_at", UtcDateTime),  # when it reached its present final state
    CheckConstraint(
        "delivery_status IN ({})".format(", ".join(f"'{s}'" for s in DeliveryStatus)),
        name="ck_delivery_receipts_status",
    ),
    Index("ix_delivery_receipts_campaign_status", "campaign_id", "delivery_status"),
    Index("ix_delivery_receipts_matched", "matched"),
)

_r, _l = delivery_receipts.c, send_ledger.c
_FOLDED = ("receipts", "duplicates", "stale", "conflicts")


@dataclass
class ApplyResult:
    """What one `record` call did, receipt by receipt."""

    received: int = 0
    new: int = 0
    advanced: int = 0
    duplicates: int = 0
    stale: int = 0
    conflicts: int = 0
    orphans: int = 0  # receipts (not messages) that joined no ledger row
    skipped: int = 0  # items of a push body that were not usable receipts

    def add(self, other: ApplyResult) -> ApplyResult:
        """Sum of two results."""
        return ApplyResult(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class Unsettled:
    """An accepted message with no final delivery state yet."""

    message_id: str
    campaign_id: str
    phone: str
    batch_no: int | None
    submitted_at: datetime | None
    delivery_status: str | None  # None: nothing heard; "sending": only non-final news


@dataclass(frozen=True)
class _Match:
    campaign_id: str
    phone: str
    batch_no: int | None


class ReceiptStore(LedgerDatabase):
    """Delivery states by MessageId in the ledger's database; thread-safe (one pooled connection per call).

    Args:
        url: the ledger's SQLAlchemy URL.
        clock: returns the current aware datetime; tests inject a fixed one.
    """

    # -- writes ----------------------------------------------------------------------------------

    def record(self, receipts: Sequence[Receipt], source: str = "receipt") -> ApplyResult:
        """Fold receipts into the stored states, in the order given, in one transaction.

        Args:
            receipts: from a push (`parse_receipts`), from QueryMessage, or `unknown` after the timeout.
            source: `receipt`, `query` or `timeout`, kept with the state it sets.

        Returns:
            Counts of new, advanced, duplicate, stale, conflicting and orphan receipts.
        """
        if not receipts:
            return ApplyResult()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    return self._record(conn, receipts, source)
            except (IntegrityError, OperationalError):
                # A concurrent insert of the same MessageId, or a deadlock between two pushes: replay.
                if attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ids_select(self, ids: Sequence[str]) -> Select[tuple[str]]:
        source = values_table(self._dialect, ("message_id",), [(i,) for i in ids])
        return select(source.c.message_id)

    def _record(self, conn: Connection, receipts: Sequence[Receipt], source: str) -> ApplyResult:
        now = self.now()
        ids = list(dict.fromkeys(r.message_id for r in receipts))
        locked = (
            select(delivery_receipts)
            .where(_r.message_id.in_(self._ids_select(ids)))
            .order_by(_r.message_id)
            .with_for_update(of=delivery_receipts)
        )
        rows: dict[str, dict[str, Any]] = {row.message_id: dict(row._mapping) for row in conn.execute(locked)}
        to_match = [i for i in ids if i not in rows or not rows[i]["matched"]]
        task_ids = {r.message_id: r.task_id for r in receipts if r.task_id}
        matches = self._matches(conn, to_match, task_ids)
        result = ApplyResult(received=len(receipts))
        inserted: set[str] = set()
        changed: set[str] = set()
        for receipt in receipts:
            row = rows.get(receipt.message_id)
            match = matches.get(receipt.message_id)
            if match is None and (row is None or not row["matched"]):
                result.orphans += 1
            verdict = merge(None if row is None else DeliveryStatus(row["delivery_status"]), receipt.status)
            if verdict == "new":
                row = rows[receipt.message_id] = _new_row(receipt, match, source, now)
                inserted.add(receipt.message_id)
                result.new += 1
                continue
            assert row is not None
            row["receipts"] += 1
            row["updated"] = now
            if verdict == "advance":
                _advance(row, receipt, source, now)
                result.advanced += 1
            elif verdict == "duplicate":
                row["duplicates"] += 1
                result.duplicates += 1
            elif verdict == "stale":
                row["stale"] += 1
                result.stale += 1
            else:
                row["conflicts"] += 1
                result.conflicts += 1
            if match is not None and not row["matched"]:
                _adopt(row, match)
            changed.add(receipt.message_id)
        if inserted:
            conn.execute(insert(delivery_receipts), [rows[i] for i in ids if i in inserted])
        updates = [rows[i] for i in ids if i in changed and i not in inserted]
        if updates:
            self._update_rows(conn, updates)
        return result

    def _update_rows(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        names = [c.name for c in delivery_receipts.columns if c.name != "message_id"]
        statement = (
            update(delivery_receipts)
            .where(_r.message_id == bindparam("b_message_id"))
            .values({name: bindparam(f"b_{name}") for name in names})
        )
        conn.execute(statement, [{f"b_{key}": value for key, value in row.items()} for row in rows])

    def _matches(self, conn: Connection, ids: Sequence[str], task_ids: dict[str, str]) -> dict[str, _Match]:
        """The ledger row of each MessageId. A globe-sms TaskId must agree on the campaign (and picks the
        batch); without one, the first row registered with that MessageId."""
        found: dict[str, list[_Match]] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            query = select(_l.message_id, _l.campaign_id, _l.phone, _l.batch_no).where(
                _l.message_id.in_(self._ids_select(chunk))
            )
            for message_id, campaign_id, phone, batch_no in conn.execute(query.order_by(_l.id)):
                found.setdefault(message_id, []).append(_Match(campaign_id, phone, batch_no))
        matches: dict[str, _Match] = {}
        for message_id, candidates in found.items():
            wanted = _parse_task_id(task_ids.get(message_id))
            if wanted is not None:
                same = [m for m in candidates if (m.campaign_id, m.batch_no) == wanted]
                if same:
                    matches[message_id] = same[0]
                    continue
                same_campaign = [m for m in candidates if m.campaign_id == wanted[0]]
                if same_campaign:
                    matches[message_id] = same_campaign[0]
                # Only other campaigns' rows carry this id: an orphan until its own row is written.
                continue
            matches[message_id] = candidates[0]
        return matches

    def adopt_orphans(self) -> int:
        """Join orphans whose MessageId the ledger now knows; returns how many were joined."""
        with self._write() as conn:
            query = select(_r.message_id, _r.task_id).where(_r.matched.is_(False)).with_for_update()
            orphans: dict[str, str | None] = {message_id: task for message_id, task in conn.execute(query)}
            if not orphans:
                return 0
            matches = self._matches(conn, list(orphans), {i: task for i, task in orphans.items() if task})
            if not matches:
                return 0
            statement = (
                update(delivery_receipts)
                .where(_r.message_id == bindparam("b_message_id"))
                .values(
                    matched=True,
                    campaign_id=bindparam("b_campaign_id"),
                    phone=bindparam("b_phone"),
                    batch_no=bindparam("b_batch_no"),
                    updated=self.now(),
                )
            )
            conn.execute(
                statement,
                [
                    {
                        "b_message_id": i,
                        "b_campaign_id": m.campaign_id,
                        "b_phone": m.phone,
                        "b_batch_no": m.batch_no,
                    }
                    for i, m in matches.items()
                ],
            )
            return len(matches)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, message_id: str) -> dict[str, Any] | None:
        """The stored row of one MessageId, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(select(delivery_receipts).where(_r.message_id == message_id)).first()
        return None if row is None else dict(row._mapping)

    def unsettled(
        self, campaign_id: str | None, submitted_before: datetime, limit: int | None = None
    ) -> list[Unsettled]:
        """Accepted messages submitted at or before `submitted_before` whose state is not final yet.

        Args:
            campaign_id: one campaign, or None for every campaign in the ledger.
            submitted_before: only messages submitted at or before this moment.
            limit: at most this many, oldest registration first.
        """
        joined = send_ledger.outerjoin(delivery_receipts, _r.message_id == _l.message_id)
        query = (
            select(_l.message_id, _l.campaign_id, _l.phone, _l.batch_no, _l.submitted_at, _r.delivery_status)
            .select_from(joined)
            .where(
                _l.status == Status.ACCEPTED,
                _l.message_id.is_not(None),
                _l.submitted_at <= submitted_before,
                or_(_r.message_id.is_(None), _r.delivery_status.not_in([s.value for s in FINAL_STATUSES])),
            )
            .order_by(_l.id)
        )
        if campaign_id is not None:
            query = query.where(_l.campaign_id == campaign_id)
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [Unsettled(*row) for row in conn.execute(query)]

    def delivery_rows(self, campaign_id: str) -> pl.DataFrame:
        """Every ledger row of the campaign with its delivery state (null: no receipt), registration order.

        Columns: `phone`, `country`, `status` (the ledger's), `message_id`, `delivery_status`,
        `error_code` (the receipt's), `status_code`.
        """
        joined = send_ledger.outerjoin(delivery_receipts, _r.message_id == _l.message_id)
        query = (
            select(
                _l.phone,
                _l.country,
                _l.status,
                _l.message_id,
                _r.delivery_status,
                _r.error_code,
                _r.status_code,
            )
            .select_from(joined)
            .where(_l.campaign_id == campaign_id)
            .order_by(_l.id)
        )
        schema = {
            "phone": pl.String,
            "country": pl.String,
            "status": pl.String,
            "message_id": pl.String,
            "delivery_status": pl.String,
            "error_code": pl.String,
            "status_code": pl.String,
        }
        with self._engine.connect() as conn:
            data = [tuple(row) for row in conn.execute(query)]
        return pl.DataFrame(data, schema=schema, orient="row")

    def anomalies(self, campaign_id: str | None = None) -> dict[str, int]:
        """Duplicates, stale and conflicting receipts, and orphan messages (of the campaign, or all)."""
        query = select(
            func.coalesce(func.sum(_r.duplicates), 0),
            func.coalesce(func.sum(_r.stale), 0),
            func.coalesce(func.sum(_r.conflicts), 0),
            func.coalesce(func.sum(case((_r.matched.is_(False), 1), else_=0)), 0),
        )
        if campaign_id is not None:
            query = query.where(_r.campaign_id == campaign_id)
        with self._engine.connect() as conn:
            duplicates, stale, conflicts, orphans = conn.execute(query).one()
        return {
            "duplicates": int(duplicates),
            "stale": int(stale),
            "conflicts": int(conflicts),
            "orphans": int(orphans),
        }

    def failed_deliveries(self, campaign_id: str) -> list[tuple[str, str, str, str | None]]:
        """(message_id, phone, delivery_status, error_code) of the campaign's accepted rows whose
        current message was reported `undelivered` or `expired`."""
        query = (
            select(_l.message_id, _l.phone, _r.delivery_status, _r.error_code)
            .select_from(send_ledger.join(delivery_receipts, _r.message_id == _l.message_id))
            .where(
                _l.campaign_id == campaign_id,
                _l.status == Status.ACCEPTED,
                _r.delivery_status.in_([DeliveryStatus.UNDELIVERED.value, DeliveryStatus.EXPIRED.value]),
            )
            .order_by(_l.id)
        )
        with self._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def _parse_task_id(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    try:
        return parse_task_id(value)
    except ValueError:
        return None


def _new_row(receipt: Receipt, match: _Match | None, source: str, now: datetime) -> dict[str, Any]:
    parsed = _parse_task_id(receipt.task_id)
    return {
        "message_id": receipt.message_id,
        "campaign_id": match.campaign_id if match else (parsed[0] if parsed else None),
        "phone": match.phone if match else receipt.to,
        "batch_no": match.batch_no if match else (parsed[1] if parsed else None),
        "task_id": receipt.task_id,
        "matched": match is not None,
        "delivery_status": receipt.status.value,
        "status_code": receipt.status_code,
        "error_code": receipt.error_code,
        "error_description": receipt.error_description,
        "send_date": receipt.send_date,
        "receive_date": receipt.receive_date,
        "segments": receipt.segments,
        "source": source,
        "receipts": 1,
        "duplicates": 0,
        "stale": 0,
        "conflicts": 0,
        "first_seen": now,
        "updated": now,
        "settled_at": now if receipt.status.is_final else None,
    }


def _advance(row: dict[str, Any], receipt: Receipt, source: str, now: datetime) -> None:
    """A higher state replaces the stored one; dates, size and TaskId are kept when the new one lacks them."""
    row.update(
        delivery_status=receipt.status.value,
        status_code=receipt.status_code,
        error_code=receipt.error_code,
        error_description=receipt.error_description,
        source=source,
        settled_at=now if receipt.status.is_final else None,
    )
    for name in ("send_date", "receive_date", "segments", "task_id"):
        value = getattr(receipt, name)
        if value is not None:
            row[name] = value


def _adopt(row: dict[str, Any], match: _Match) -> None:
    row.update(matched=True, campaign_id=match.campaign_id, phone=match.phone, batch_no=match.batch_no)
