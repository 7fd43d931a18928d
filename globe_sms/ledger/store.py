"""`Ledger`: the state machine of `globe_sms.ledger` over SQLAlchemy Core, one transaction per method."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from globe_sms.clock import utc_now
from globe_sms.ids import task_id
from globe_sms.ledger import lease
from globe_sms.ledger._sql import (
    Outcome,
    SingleExtra,
    apply_outcomes,
    apply_single_outcomes,
    mark_rows_submitting,
    phone_list,
    where_they_are,
)
from globe_sms.ledger.backends import values_table
from globe_sms.ledger.database import LedgerDatabase
from globe_sms.ledger.errors import LedgerStateError
from globe_sms.ledger.lease import HeldLease, RunLease, RunOwner
from globe_sms.ledger.schema import (
    BATCH_SCHEMA,
    INTERRUPTED,
    ROW_SCHEMA,
    BatchStatus,
    Lane,
    Status,
    UtcDateTime,
    campaign_batches,
    send_ledger,
)
from globe_sms.ledger.url import LedgerLocation
from globe_sms.masking import mask_number

_E164_DIGITS = re.compile(r"[1-9][0-9]{1,14}")  # E.164 without '+': no leading zero, at most 15 digits
_REGISTER_CHUNK = 50_000
_b, _c = campaign_batches.c, send_ledger.c


@dataclass(frozen=True)
class SingleOutcome:
    """What one SendMessageToGlobe call did to its row (`Ledger.record_singles`)."""

    status: Status
    message_id: str | None = None
    error_code: str | None = None
    request_id: str | None = None
    segments: int | None = None
    carrier: str | None = None


def _distinct(phones: Sequence[str], what: str) -> list[str]:
    """The numbers as a list; ValueError when empty or repeated (a repeat would be sent twice)."""
    out = list(phones)
    if not out:
        raise ValueError(f"{what}: no numbers given")
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: the same number appears more than once in one batch")
    return out


def _in_state(campaign_id: str, status: Status) -> ColumnElement[bool]:
    return (_c.campaign_id == campaign_id) & (_c.status == status)


class Ledger(LedgerDatabase):
    """The send ledger over SQLite or PostgreSQL; the module docstring draws the state machine.

    Safe to share between threads (each method checks a connection out of the pool). The run leases it
    acquires (`acquire_run_lease`) are its own: its `recover_interrupted` and `mark_submitting` renew them.

    Example:
        >>> with Ledger.open("sqlite:///.data/ledger.db") as ledger:  # doctest: +SKIP
        ...     ledger.register("spring-sale", ["85212345678"], ["HK"])
        ...     batch_no, batch = ledger.next_batch_no("spring-sale"), ledger.pending("spring-sale")[:1000]
        ...     ledger.mark_submitting("spring-sale", batch_no, batch)  # committed: now send
        ...     ledger.record_accepted("spring-sale", batch_no, {"85212345678": "1008"}, {}, "req-1")
    """

    def __init__(self, url: LedgerLocation, *, clock: Callable[[], datetime] = utc_now) -> None:
        """Connect, and bring the schema to head (`globe_sms.ledger.migration`).

        Args:
            url: SQLAlchemy URL: `sqlite:///.data/ledger.db` (parent directories are created),
                `sqlite://` (in memory, one shared connection) or `postgresql+psycopg://user@host/db`;
                or a `SecretRef` naming where the whole URL is kept (`globe_sms.ledger.url`).
            clock: returns the current aware datetime; tests inject a fixed one.
        """
        self._held: dict[str, HeldLease] = {}  # campaign id -> the run lease this ledger acquired for it
        super().__init__(url, clock=clock)

    # -- the run lease (globe_sms.ledger.lease) --------------------------------------------------

    def acquire_run_lease(self, campaign_id: str, owner: RunOwner, ttl_seconds: float) -> RunLease:
        """Take the campaign's run lease for `ttl_seconds`, before changing any of its rows.

        Succeeds when nobody holds it, its lease has expired, its holder is `owner` itself (a UI Retry of the
        same flow run) or a process on this machine that is gone. From then on this ledger's
        `recover_interrupted` and `mark_submitting` renew it for another `ttl_seconds` each time.

        Raises:
            CampaignBusy: another run holds it; nothing was changed.
            ValueError: `ttl_seconds` is not positive.
        """
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds!r}")
        now = self.now()
        token = uuid.uuid4().hex
        with self._write() as conn:
            taken = lease.acquire(
                conn, self._dialect, campaign_id, owner, token, now, now + timedelta(seconds=ttl_seconds)
            )
        self._held[campaign_id] = HeldLease(token, ttl_seconds)
        return taken

    def renew_run_lease(self, campaign_id: str) -> None:
        """Extend the lease this ledger acquired for the campaign by its `ttl_seconds`, from now.

        Raises:
            RunLeaseLost: it expired and another run took it over (or released it since); nothing changed.
            ValueError: this ledger did not acquire the campaign's lease.
        """
        held = self._held.get(campaign_id)
        if held is None:
            raise ValueError(f"this ledger holds no run lease for campaign {campaign_id!r}")
        with self._write() as conn:
            lease.renew(conn, campaign_id, held, self.now())

    def release_run_lease(self, campaign_id: str) -> bool:
        """Give the campaign's lease back if this ledger still holds it; True if it did (idempotent)."""
        held = self._held.pop(campaign_id, None)
        if held is None:
            return False
        with self._write() as conn:
            return lease.release(conn, campaign_id, held)

    def run_lease(self, campaign_id: str) -> RunLease | None:
        """Who holds the campaign's run lease (possibly expired); None when nobody does."""
        with self._engine.connect() as conn:
            return lease.current(conn, campaign_id)

    @contextmanager
    def run_lease_held(self, campaign_id: str, owner: RunOwner, ttl_seconds: float) -> Iterator[RunLease]:
        """`acquire_run_lease` for the block, released when it ends, also on an error.

        A process killed inside the block cannot release it: the lease then expires by itself.
        """
        taken = self.acquire_run_lease(campaign_id, owner, ttl_seconds)
        try:
            yield taken
        finally:
            self.release_run_lease(campaign_id)

    def _fence(self, conn: Connection, campaign_id: str, now: datetime) -> None:
        """Inside a write that must not race with another run: renew our lease, or check nobody holds one."""
        lease.fence(conn, campaign_id, self._held.get(campaign_id), now)

    # -- campaign-wide moves ---------------------------------------------------------------------

    def register(
        self,
        campaign_id: str,
        phones: Sequence[str],
        countries: Sequence[str | None] | None = None,
        message_type: str | None = None,
    ) -> int:
        """Add `pending` rows for the numbers the campaign does not have yet; existing rows are untouched.

        Args:
            campaign_id: the campaign.
            phones: E.164 numbers as digits without `+` (`"85212345678"`); a repeat keeps its first country.
            countries: ISO region of each number (same length as `phones`), or None.
            message_type: the campaign's NOTIFY / MKT, kept on the new rows for frequency caps.

        Returns:
            How many rows were inserted.

        Raises:
            ValueError: an empty campaign id, a malformed number, or `countries` of another length.
        """
        if not campaign_id:
            raise ValueError("campaign_id must not be empty")
        if countries is not None and len(countries) != len(phones):
            raise ValueError(f"{len(phones)} phones but {len(countries)} countries")
        wanted: dict[str, str | None] = {}
        bad: list[str] = []
        for i, phone in enumerate(phones):
            if not isinstance(phone, str) or not _E164_DIGITS.fullmatch(phone):
                bad.append(str(phone))
            elif phone not in wanted:
                wanted[phone] = None if countries is None else countries[i]
        if bad:
            examples = ", ".join(mask_number(p) for p in bad[:5])
            raise ValueError(f"{len(bad)} number(s) are not E.164 digits without '+' (e.g. {examples})")
        rows = list(wanted.items())
        now = literal(self.now(), UtcDateTime())
        insert = sqlite_insert if self._dialect == "sqlite" else pg_insert
        columns = ["campaign_id", "phone", "country", "status", "attempts", "created_at", "updated_at"]
        columns.append("message_type")
        inserted = 0
        with self._write() as conn:
            for start in range(0, len(rows), _REGISTER_CHUNK):
                src = values_table(self._dialect, ("phone", "country"), rows[start : start + _REGISTER_CHUNK])
                source = select(
                    literal(campaign_id, String()),
                    src.c.phone,
                    src.c.country,
                    literal(Status.PENDING.value, String()),
                    literal(0, Integer()),
                    now,
                    now,
                    literal(message_type, String()),
                )
                # `WHERE true` resolves SQLite's INSERT ... SELECT ... ON CONFLICT parsing ambiguity.
                source = source.where(true()).order_by(src.c.ord)
                statement = insert(send_ledger).from_select(columns, source)
                statement = statement.on_conflict_do_nothing(index_elements=["campaign_id", "phone"])
                # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.0.28+)
                inserted += conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount
        return inserted

    def recover_interrupted(self, campaign_id: str) -> int:
        """Turn what a crashed run left in `submitting` into `unknown` (error_code `INTERRUPTED`).

        A batch in flight is `submitting` too, so it must not run while another run sends this campaign: it
        renews the run lease this ledger holds, or checks that no other run holds one (`_fence`).

        Returns:
            How many rows moved (their batches move to `unknown` as well).

        Raises:
            CampaignBusy: this ledger holds no lease for the campaign and another run does; nothing moved.
            RunLeaseLost: this ledger's lease was taken over; nothing moved.
        """
        now = self.now()
        with self._write() as conn:
            self._fence(conn, campaign_id, now)
            moved = conn.execute(
                update(send_ledger)
                .where(_in_state(campaign_id, Status.SUBMITTING))
                .values(status=Status.UNKNOWN, error_code=INTERRUPTED, updated_at=now)
            ).rowcount
            # Outcomes are all-or-nothing, so a batch still submitting has all of its rows submitting.
            conn.execute(
                update(campaign_batches)
                .where(_b.campaign_id == campaign_id, _b.status == BatchStatus.SUBMITTING)
                .values(
                    status=BatchStatus.UNKNOWN, unknown=_b.recipients, error_code=INTERRUPTED, finished_at=now
                )
            )
        return moved

    def resend_unknown(self, campaign_id: str) -> int:
        """Put every `unknown` row back to `pending`, at the user's request: they may get the SMS twice.

        Returns:
            How many rows moved.
        """
        return self._reopen(campaign_id, Status.UNKNOWN, None)

    def reopen_retryable_failures(self, campaign_id: str, retryable_codes: Collection[str]) -> int:
        """Put `failed` rows whose error_code is one of `retryable_codes` back to `pending`.

        Returns:
            How many rows moved (0 when `retryable_codes` is empty).
        """
        codes = sorted(set(retryable_codes))
        return self._reopen(campaign_id, Status.FAILED, codes) if codes else 0

    def reopen_for_resend(
        self,
        campaign_id: str,
        statuses: Collection[str],
        phones: Sequence[str] | None = None,
        failed_codes: Collection[str] = (),
    ) -> list[str]:
        """Put `failed` and/or `unknown` rows back to `pending` at the user's request, and name them.

        Unknown rows may already have been delivered: reopening them may send a second message.

        Args:
            campaign_id: the campaign.
            statuses: `failed`, `unknown` or both; no other status can be reopened.
            phones: only these numbers (e.g. the ones the source still has a message for); None: all.
            failed_codes: only `failed` rows with one of these error codes; empty: every failed row.

        Returns:
            The reopened numbers in registration order (they are `pending` now, for the caller to send).

        Raises:
            ValueError: no status, or a status other than failed / unknown.
        """
        wanted = {Status(status) for status in statuses}
        if not wanted or not wanted <= {Status.FAILED, Status.UNKNOWN}:
            raise ValueError(f"only failed and unknown rows can be resent, not {sorted(map(str, statuses))}")
        conditions = []
        if Status.UNKNOWN in wanted:
            conditions.append(_c.status == Status.UNKNOWN)
        if Status.FAILED in wanted:
            failed = _c.status == Status.FAILED
            codes = sorted(set(failed_codes))
            conditions.append(failed & _c.error_code.in_(codes) if codes else failed)
        condition = (_c.campaign_id == campaign_id) & or_(*conditions)
        if phones is not None:
            if not phones:
                return []
            condition = condition & _c.phone.in_(phone_list(self._dialect, list(dict.fromkeys(phones))))
        statement = (
            update(send_ledger)
            .where(condition)
            .values(status=Status.PENDING, updated_at=self.now())
            .returning(_c.id, _c.phone)  # exactly the rows moved (SQLite 3.35+, PostgreSQL)
        )
        with self._write() as conn:
            moved = sorted(conn.execute(statement).all())
        return [phone for _, phone in moved]

    def reopen_undelivered(self, campaign_id: str, message_ids: Sequence[str]) -> list[str]:
        """Put `accepted` rows whose current MessageId is one of `message_ids` back to `pending`.

        For "retry failed only": the caller passes the messages whose delivery receipts say they definitely
        failed. Matching on the MessageId, not the number, makes a second call a no-op: a row reopened and
        sent again carries a new MessageId (the old one stays on a row still pending, which is not accepted).

        Returns:
            The reopened numbers in registration order (they are `pending` now, for the caller to send).
        """
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return []
        condition = _in_state(campaign_id, Status.ACCEPTED) & _c.message_id.in_(
            select(values_table(self._dialect, ("message_id",), [(i,) for i in ids]).c.message_id)
        )
        statement = (
            update(send_ledger)
            .where(condition)
            .values(status=Status.PENDING, updated_at=self.now())
            .returning(_c.id, _c.phone)
        )
        with self._write() as conn:
            moved = sorted(conn.execute(statement).all())
        return [phone for _, phone in moved]

    def _reopen(self, campaign_id: str, source: Status, codes: list[str] | None) -> int:
        """`source` -> `pending` across the campaign, optionally only for some error codes."""
        condition = _in_state(campaign_id, source)
        if codes is not None:
            condition = condition & _c.error_code.in_(codes)
        with self._write() as conn:
            statement = (
                update(send_ledger).where(condition).values(status=Status.PENDING, updated_at=self.now())
            )
            return conn.execute(statement).rowcount

    # -- batch moves -----------------------------------------------------------------------------

    def next_batch_no(self, campaign_id: str) -> int:
        """1 + the highest batch number the campaign has used (1 at first); it never goes back."""
        batches = select(func.max(_b.batch_no)).where(_b.campaign_id == campaign_id).scalar_subquery()
        rows = select(func.max(_c.batch_no)).where(_c.campaign_id == campaign_id).scalar_subquery()
        query = select(func.coalesce(batches, 0), func.coalesce(rows, 0))
        with self._engine.connect() as conn:
            in_batches, in_rows = conn.execute(query).one()
        return max(int(in_batches), int(in_rows)) + 1

    def mark_submitting(
        self, campaign_id: str, batch_no: int, phones: Sequence[str], lane: Lane = Lane.BATCH
    ) -> None:
        """Move a batch `pending` -> `submitting`, committed before returning: send the request after.

        Sets `batch_no`, `submitted_at` and `attempts + 1` on the rows and writes the batch row. In the same
        transaction it renews the campaign's run lease this ledger holds (see `_fence`), so a run that lost
        its lease never puts another batch in flight.

        Args:
            campaign_id: the campaign.
            batch_no: a fresh number from `next_batch_no`, or that of a `released` batch.
            phones: the batch's numbers, each once.
            lane: `batch` (one BatchSendMessageToGlobe call) or `single` (a chunk of SendMessageToGlobe calls,
                settled with `record_singles`); recorded on the rows and the batch.

        Raises:
            LedgerStateError: a number is not `pending`, or the batch number is taken; nothing changed.
            RunLeaseLost: this ledger's lease on the campaign was taken over; nothing changed.
            CampaignBusy: this ledger holds no lease for the campaign and another run does; nothing changed.
            ValueError: no numbers, or a number twice.
        """
        batch = _distinct(phones, "mark_submitting")
        now = self.now()
        key = (_b.campaign_id == campaign_id) & (_b.batch_no == batch_no)
        with self._write() as conn:
            self._fence(conn, campaign_id, now)
            taken = conn.execute(select(_b.status).where(key).with_for_update()).scalar()
            if taken is not None and taken != BatchStatus.RELEASED:
                raise LedgerStateError(
                    f"campaign {campaign_id!r}: batch {batch_no} is already {taken}; take next_batch_no()",
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                )
            stamps = {"batch_no": batch_no, "submitted_at": now, "updated_at": now, "lane": str(lane)}
            changed = mark_rows_submitting(conn, self._dialect, campaign_id, batch, stamps)
            if changed != len(batch):
                found = where_they_are(conn, self._dialect, campaign_id, batch)
                offenders = {
                    p: why for p, why in found.items() if why != f"{Status.SUBMITTING} in batch {batch_no}"
                }
                raise LedgerStateError(
                    f"campaign {campaign_id!r} batch {batch_no}: {len(batch) - changed} of {len(batch)} "
                    "numbers are not pending; nothing was marked submitting",
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                    offenders=offenders,
                )
            values = {
                "status": BatchStatus.SUBMITTING,
                "recipients": len(batch),
                "accepted": 0,
                "failed": 0,
                "unknown": 0,
                "request_id": None,
                "error_code": None,
                "started_at": now,
                "finished_at": None,
                "lane": lane,
            }
            if taken is not None:
                conn.execute(update(campaign_batches).where(key).values(**values))
                return
            try:
                conn.execute(
                    campaign_batches.insert().values(campaign_id=campaign_id, batch_no=batch_no, **values)
                )
            except IntegrityError as exc:  # another run took the same new number meanwhile
                raise LedgerStateError(
                    f"campaign {campaign_id!r}: another run took batch {batch_no}; take next_batch_no()",
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                ) from exc

    def record_accepted(
        self,
        campaign_id: str,
        batch_no: int,
        accepted: Mapping[str, str | None],
        failed: Mapping[str, str],
        request_id: str | None,
    ) -> None:
        """Record a response: numbers outside `FailedList` -> `accepted`, numbers in it -> `failed`.

        Args:
            campaign_id: the campaign.
            batch_no: the batch the response answers.
            accepted: number -> its MessageId (None when the response gave none).
            failed: number -> its error code from `FailedList`.
            request_id: the response's RequestId.

        Raises:
            LedgerStateError: `accepted` and `failed` together are not exactly the batch's rows in
                `submitting`; nothing changed, so the caller can still `mark_unknown` the batch.
            ValueError: a number in both, or both empty.
        """
        both = accepted.keys() & failed.keys()
        if both:
            raise ValueError(
                f"{len(both)} number(s) both accepted and failed (e.g. {mask_number(min(both))})"
            )
        outcome: dict[str, Outcome] = {
            p: (Status.ACCEPTED, message_id, None) for p, message_id in accepted.items()
        }
        outcome.update((p, (Status.FAILED, None, code)) for p, code in failed.items())
        counts = {"accepted": len(accepted), "failed": len(failed), "unknown": 0}
        self._settle(campaign_id, batch_no, outcome, request_id, (BatchStatus.ACCEPTED, None), counts)

    def record_failed(
        self, campaign_id: str, batch_no: int, phones: Sequence[str], error_code: str, request_id: str | None
    ) -> None:
        """The whole batch failed for good (a permanent business error): `submitting` -> `failed`.

        Raises:
            LedgerStateError: `phones` are not exactly the batch's rows in `submitting`; nothing changed.
        """
        outcome = {p: (Status.FAILED, None, error_code) for p in _distinct(phones, "record_failed")}
        counts = {"accepted": 0, "failed": len(outcome), "unknown": 0}
        self._settle(campaign_id, batch_no, outcome, request_id, (BatchStatus.FAILED, error_code), counts)

    def release(
        self,
        campaign_id: str,
        batch_no: int,
        phones: Sequence[str],
        error_code: str | None,
        request_id: str | None = None,
    ) -> None:
        """The batch was definitely not processed (refused, throttled, bad signature): back to `pending`.

        The rows keep `batch_no` (the last batch they were in) and get `error_code` (why they came back);
        `attempts` keeps counting the attempt.

        Raises:
            LedgerStateError: `phones` are not exactly the batch's rows in `submitting`; nothing changed.
        """
        outcome = {p: (Status.PENDING, None, error_code) for p in _distinct(phones, "release")}
        counts = {"accepted": 0, "failed": 0, "unknown": 0}
        self._settle(campaign_id, batch_no, outcome, request_id, (BatchStatus.RELEASED, error_code), counts)

    def mark_unknown(
        self, campaign_id: str, batch_no: int, phones: Sequence[str], error_code: str, request_id: str | None
    ) -> None:
        """The batch may have been processed (read timeout, dropped connection, HTTP 500): -> `unknown`.

        Raises:
            LedgerStateError: `phones` are not exactly the batch's rows in `submitting`; nothing changed.
        """
        outcome = {p: (Status.UNKNOWN, None, error_code) for p in _distinct(phones, "mark_unknown")}
        counts = {"accepted": 0, "failed": 0, "unknown": len(outcome)}
        self._settle(campaign_id, batch_no, outcome, request_id, (BatchStatus.UNKNOWN, error_code), counts)

    def record_singles(self, campaign_id: str, batch_no: int, outcomes: Mapping[str, SingleOutcome]) -> None:
        """Record a chunk of SendMessageToGlobe calls (the single lane), every row its own outcome, in one
        transaction: `submitting` -> `accepted` (MessageId, Segments, carrier), `failed` (its code), `pending`
        (definitely not processed: throttled, refused before sending) or `unknown` (maybe processed).

        The chunk's batch row becomes `released` when every row went back to pending, `unknown` when every
        row is unknown, `failed` when every row failed, else `accepted` with its counts.

        Raises:
            LedgerStateError: `outcomes` are not exactly the chunk's rows in `submitting`; nothing changed.
            ValueError: no outcomes, or a status a call cannot end in.
        """
        if not outcomes:
            raise ValueError(f"campaign {campaign_id!r} batch {batch_no}: no numbers given")
        allowed = {Status.ACCEPTED, Status.FAILED, Status.PENDING, Status.UNKNOWN}
        wrong = {str(o.status) for o in outcomes.values() if o.status not in allowed}
        if wrong:
            raise ValueError(f"a call cannot end in {sorted(wrong)}")
        counts = dict.fromkeys(("accepted", "failed", "unknown", "pending"), 0)
        for single in outcomes.values():
            counts[Status(single.status).value] += 1
        n = len(outcomes)
        if counts["pending"] == n:
            status = BatchStatus.RELEASED
        elif counts["unknown"] == n:
            status = BatchStatus.UNKNOWN
        elif counts["failed"] == n:
            status = BatchStatus.FAILED
        else:
            status = BatchStatus.ACCEPTED
        codes = {o.error_code for o in outcomes.values() if o.error_code}
        batch_error = codes.pop() if len(codes) == 1 else (None if not codes else "MIXED")
        rows = {phone: (o.status, o.message_id, o.error_code) for phone, o in outcomes.items()}
        extra = {phone: (o.request_id, o.segments, o.carrier) for phone, o in outcomes.items()}
        del counts["pending"]
        self._settle(campaign_id, batch_no, rows, None, (status, batch_error), counts, extra=extra)

    def _settle(
        self,
        campaign_id: str,
        batch_no: int,
        outcome: Mapping[str, Outcome],
        request_id: str | None,
        batch_outcome: tuple[BatchStatus, str | None],
        counts: Mapping[str, int],
        *,
        extra: Mapping[str, SingleExtra] | None = None,
    ) -> None:
        """Move exactly the batch's `submitting` rows to their (status, message_id, error_code); with `extra`
        (the single lane), each row also gets its own (request_id, segments, carrier)."""
        if not outcome:
            raise ValueError(f"campaign {campaign_id!r} batch {batch_no}: no numbers given")
        now = self.now()
        in_batch = _in_state(campaign_id, Status.SUBMITTING) & (_c.batch_no == batch_no)
        with self._write() as conn:
            in_flight = set(conn.execute(select(_c.phone).where(in_batch).with_for_update()).scalars().all())
            if in_flight != outcome.keys():
                strays = [p for p in outcome if p not in in_flight]
                offenders = where_they_are(conn, self._dialect, campaign_id, strays) if strays else {}
                offenders.update((p, "missing from the call") for p in sorted(in_flight - outcome.keys()))
                raise LedgerStateError(
                    f"campaign {campaign_id!r} batch {batch_no}: the numbers given are not the "
                    f"{len(in_flight)} submitting rows of the batch; nothing was recorded",
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                    offenders=offenders,
                )
            if extra is None:
                changed = apply_outcomes(conn, self._dialect, in_batch, outcome, request_id, now)
            else:
                changed = apply_single_outcomes(
                    conn,
                    self._dialect,
                    in_batch,
                    outcome,
                    extra,
                    now,
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                )
            batch_status, batch_error = batch_outcome
            finished = conn.execute(
                update(campaign_batches)
                .where(
                    _b.campaign_id == campaign_id,
                    _b.batch_no == batch_no,
                    _b.status == BatchStatus.SUBMITTING,
                )
                .values(
                    status=batch_status,
                    request_id=request_id,
                    error_code=batch_error,
                    finished_at=now,
                    **counts,
                )
            ).rowcount
            if changed != len(outcome) or finished != 1:  # the locked rows changed under us: roll back
                raise LedgerStateError(
                    f"campaign {campaign_id!r} batch {batch_no}: {changed} of {len(outcome)} rows and "
                    f"{finished} batch row(s) were submitting; nothing was recorded",
                    campaign_id=campaign_id,
                    batch_no=batch_no,
                )

    # -- reads -----------------------------------------------------------------------------------

    def pending(self, campaign_id: str, phones: Sequence[str] | None = None) -> list[str]:
        """The campaign's `pending` numbers in registration order.

        Args:
            campaign_id: the campaign.
            phones: if given, only these numbers are considered.
        """
        query = select(_c.phone).where(_in_state(campaign_id, Status.PENDING)).order_by(_c.id)
        if phones is not None:
            if not phones:
                return []
            query = query.where(_c.phone.in_(phone_list(self._dialect, list(dict.fromkeys(phones)))))
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def counts(self, campaign_id: str) -> dict[str, int]:
        """Rows per status, every status present (zeros included)."""
        query = select(_c.status, func.count()).where(_c.campaign_id == campaign_id).group_by(_c.status)
        with self._engine.connect() as conn:
            found = {status: int(n) for status, n in conn.execute(query)}
        return {status.value: found.get(status.value, 0) for status in Status}

    def rows(
        self,
        campaign_id: str,
        *,
        statuses: Collection[Status | str] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """The campaign's ledger in registration order, as a polars frame (timestamps in UTC).

        The filters run in the database, so a caller that needs a few rows of a campaign with millions (the
        `unknown` ones for a report, the numbers a dry run must skip) does not read them all.

        Args:
            campaign_id: the campaign.
            statuses: only rows in one of these statuses (default: every row).
            columns: only these columns of `ROW_SCHEMA`, in this order (default: all of them).
            limit: at most this many rows, the first registered.

        Raises:
            KeyError: a column that is not in `ROW_SCHEMA`.
        """
        names = list(columns) if columns is not None else list(ROW_SCHEMA)
        schema = {name: ROW_SCHEMA[name] for name in names}
        query = select(*(_c[name] for name in names)).where(_c.campaign_id == campaign_id)
        if statuses is not None:
            query = query.where(_c.status.in_([Status(status) for status in statuses]))
        query = query.order_by(_c.id).limit(limit)
        with self._engine.connect() as conn:
            data = [tuple(row) for row in conn.execute(query)]
        return pl.DataFrame(data, schema=schema, orient="row")

    def batches(self, campaign_id: str) -> pl.DataFrame:
        """The campaign's batches by number, as a polars frame with each batch's `task_id`."""
        query = select(*(_b[name] for name in BATCH_SCHEMA)).where(_b.campaign_id == campaign_id)
        with self._engine.connect() as conn:
            data = [tuple(row) for row in conn.execute(query.order_by(_b.batch_no))]
        frame = pl.DataFrame(data, schema=BATCH_SCHEMA, orient="row")
        pairs = zip(frame["campaign_id"], frame["batch_no"], strict=True)
        ids = [task_id(campaign, batch_no) for campaign, batch_no in pairs]
        return frame.with_columns(pl.Series("task_id", ids, dtype=pl.String))
