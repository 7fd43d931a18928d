"""Account volume: messages reserved per account and calendar day / month, reserved atomically.

Alibaba pauses an account that crosses its daily or monthly threshold. Every run of every campaign records
what it is about to send in `account_volume` (one row per account, period and period start, in the limits'
time zone) before its first batch, and gives back at its end what it did not send; so the counters hold, per
day and month, what every campaign of the account sent or is sending, whichever lane or worker.

`reserve` grants at most what is left under the limits, in one write transaction that locks the counter rows
(PostgreSQL: `SELECT ... FOR UPDATE`; SQLite: the `BEGIN IMMEDIATE` write lock): two runs reserving at once
are serialised, and together never get more than the limit. A run that crashes keeps its reservation (its
rows may have gone out): the counters err on the side of sending less, never more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from globe_sms.ledger.schema import account_volume
from globe_sms.ledger.store import Ledger

_v = account_volume.c


@dataclass(frozen=True)
class Period:
    """One counter: `day` or `month`, its start key (`2026-12-06` / `2026-12`), when it ends (UTC), limit."""

    period: str
    start: str
    ends_at: datetime
    limit: int | None

    @property
    def limit_name(self) -> str:
        return "daily_limit" if self.period == "day" else "monthly_limit"


def periods(now: datetime, zone: str, daily: int | None, monthly: int | None) -> list[Period]:
    """The day and the month `now` falls in, in `zone` (both, also without limits: every run counts)."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    day = local.date()
    next_day = datetime.combine(day + timedelta(days=1), time(), tz)
    first = day.replace(day=1)
    next_month = datetime.combine((first + timedelta(days=32)).replace(day=1), time(), tz)
    return [
        Period("day", day.isoformat(), next_day.astimezone(UTC), daily),
        Period("month", f"{first:%Y-%m}", next_month.astimezone(UTC), monthly),
    ]


@dataclass(frozen=True)
class Reservation:
    """What `reserve` (or `peek`) found and granted.

    Attributes:
        account: the account's counter key.
        wanted: how many messages were asked for.
        granted: how many may be sent now (reserved, unless it was a `peek`).
        used_before: per period (`day`, `month`), what the counter held before this reservation.
        periods: the periods reserved in, with their limits and ends.
        held_back_by: the limit that cut the grant short (`daily_limit` / `monthly_limit`), else None.
        until: when that limit's period ends (the held-back rows can go out then), else None.
    """

    account: str
    wanted: int
    granted: int
    used_before: dict[str, int] = field(default_factory=dict)
    periods: tuple[Period, ...] = ()
    held_back_by: str | None = None
    until: datetime | None = None

    @property
    def deferred(self) -> int:
        return self.wanted - self.granted

    def left(self, period: str) -> int | None:
        """What the limit of `period` left before this reservation (None: no limit)."""
        for p in self.periods:
            if p.period == period and p.limit is not None:
                return max(p.limit - self.used_before.get(period, 0), 0)
        return None


def _grant(wanted: int, found: list[Period], used: dict[str, int]) -> tuple[int, str | None, datetime | None]:
    granted, by, until = wanted, None, None
    for p in found:
        if p.limit is None:
            continue
        left = max(p.limit - used.get(p.period, 0), 0)
        if left < granted:
            granted, by, until = left, p.limit_name, p.ends_at
        elif left == granted and by is not None and granted < wanted and p.ends_at > (until or p.ends_at):
            by, until = p.limit_name, p.ends_at  # both bind: the later end is when sending resumes
    return granted, by, until


def _used(conn: Connection, account: str, found: list[Period], *, lock: bool) -> dict[str, int]:
    query = select(_v.period, _v.used).where(
        _v.account == account,
        ((_v.period == found[0].period) & (_v.period_start == found[0].start))
        | ((_v.period == found[1].period) & (_v.period_start == found[1].start)),
    )
    if lock:
        query = query.order_by(_v.period).with_for_update()  # one lock order: no deadlock between runs
    return {period: int(used) for period, used in conn.execute(query)}


def reserve(
    ledger: Ledger, account: str, wanted: int, zone: str, daily: int | None, monthly: int | None
) -> Reservation:
    """Reserve up to `wanted` messages for `account` now, within the limits, atomically (see the module)."""
    now = ledger.now()
    found = periods(now, zone, daily, monthly)
    insert = sqlite_insert if ledger._dialect == "sqlite" else pg_insert
    with ledger._write() as conn:
        for p in found:
            conn.execute(
                insert(account_volume)
                .values(account=account, period=p.period, period_start=p.start, used=0, updated_at=now)
                .on_conflict_do_nothing(index_elements=["account", "period", "period_start"])
            )
        used = _used(conn, account, found, lock=True)
        granted, by, until = _grant(max(wanted, 0), found, used)
        if granted:
            for p in found:
                conn.execute(
                    update(account_volume)
                    .where(_v.account == account, _v.period == p.period, _v.period_start == p.start)
                    .values(used=_v.used + granted, updated_at=now)
                )
    return Reservation(account, wanted, granted, used, tuple(found), by, until)


def peek(
    ledger: Ledger, account: str, wanted: int, zone: str, daily: int | None, monthly: int | None
) -> Reservation:
    """What `reserve` would grant now, reserving nothing (dry runs)."""
    found = periods(ledger.now(), zone, daily, monthly)
    with ledger._engine.connect() as conn:
        used = _used(conn, account, found, lock=False)
    granted, by, until = _grant(max(wanted, 0), found, used)
    return Reservation(account, wanted, granted, used, tuple(found), by, until)


def give_back(ledger: Ledger, reservation: Reservation, unused: int) -> int:
    """Return `unused` messages of a reservation to its counters (what the run did not send); how many."""
    unused = min(max(unused, 0), reservation.granted)
    if not unused:
        return 0
    now = ledger.now()
    with ledger._write() as conn:
        for p in reservation.periods:
            conn.execute(
                update(account_volume)
                .where(_v.account == reservation.account, _v.period == p.period, _v.period_start == p.start)
                .values(used=_v.used - unused, updated_at=now)
            )
    return unused


def used(ledger: Ledger, account: str, zone: str = "UTC") -> dict[str, int]:
    """What the account's counters hold now for this day and month, in `zone`."""
    found = periods(ledger.now(), zone, None, None)
    with ledger._engine.connect() as conn:
        counted = _used(conn, account, found, lock=False)
    return {p.period: counted.get(p.period, 0) for p in found}
