"""Quiet hours: the `SendWindow` of a campaign, in each recipient's local time, and when it is open.

A window is a span of local clock time, `start` inclusive and `end` exclusive (`09:00`-`20:00`); when `end`
is earlier than `start` it wraps midnight (`21:00`-`08:00`). A recipient may have several time zones (a
number that only tells its country, a region spanning two zones): the window is open for them only while it
is open in **every** one of their zones, so nobody is texted at night wherever they turn out to be.

Everything here is pure and works in UTC. The moment "now" always comes from an injected clock
(`globe_sms.clock.Clock`, default `utc_now`), so no test depends on the real time of day. Offsets come
from `zoneinfo`, DST included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from globe_sms.clock import as_utc

HORIZON_DAYS = 8
"""How far ahead an opening is looked for; beyond it a window counts as never opening."""
Span = tuple[datetime, datetime]
"""An opening in UTC: from (inclusive) until (exclusive)."""
# A local clock time as the form and the server check it: HH:MM, optionally :SS and a fraction, no offset.
# (Pydantic's `format: time` is RFC 3339's, which requires seconds and an offset: the server refused every
# send window a deployment run was given.)
LocalTime = Annotated[
    time,
    WithJsonSchema(
        {"type": "string", "pattern": r"^(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?$"}
    ),
]


@cache
def zone_or_none(name: str) -> ZoneInfo | None:
    """The IANA time zone `name`, or None when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


class SendWindow(BaseModel):
    """When messages may go out, in each recipient's local time (quiet hours outside it)."""

    model_config = ConfigDict(extra="forbid")

    start: LocalTime = Field(
        description="Local time from which messages may be sent, e.g. 09:00 (inclusive).",
    )
    end: LocalTime = Field(
        description="Local time at which sending stops, e.g. 20:00 (exclusive). Earlier than `start` wraps "
        "midnight: 21:00-08:00 sends through the night.",
    )
    timezone_column: str | None = Field(
        default=None,
        min_length=1,
        description="A source column holding each recipient's IANA time zone (e.g. Asia/Hong_Kong); an "
        "empty or unknown value falls back to the zones of the number. Unset: from the number only.",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time_not_a_number(cls, value: object) -> object:
        if isinstance(value, int | float):  # YAML reads an unquoted 20:00 as the number 1200
            raise ValueError('give a local time as a quoted "HH:MM" string, e.g. "20:00"')
        return value

    @model_validator(mode="after")
    def _start_differs_from_end(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError("start and end must differ (end is exclusive, so the window would be empty)")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local clock times: give them without an offset")
        return self

    @property
    def wraps_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, local: time) -> bool:
        """Whether a local clock time is inside the window (end exclusive)."""
        if self.wraps_midnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end

    def is_open(self, zones: Iterable[str], moment: datetime) -> bool:
        """Whether the window is open at `moment` in every one of `zones`."""
        at = as_utc(moment)
        return all(self.contains(at.astimezone(_zone(name)).time()) for name in zones)

    def openings_in(self, zone: str, around: datetime, days: int = HORIZON_DAYS) -> list[Span]:
        """The window's openings in one zone, in UTC, from the local day before `around` for `days` days."""
        tz = _zone(zone)
        first: date = as_utc(around).astimezone(tz).date() - timedelta(days=1)
        spans = []
        for offset in range(days + 2):
            day = first + timedelta(days=offset)
            closing_day = day + timedelta(days=1) if self.wraps_midnight else day
            opens = datetime.combine(day, self.start, tzinfo=tz).astimezone(UTC)
            closes = datetime.combine(closing_day, self.end, tzinfo=tz).astimezone(UTC)
            if opens < closes:  # a DST jump can swallow a very short window
                spans.append((opens, closes))
        return spans

    def common_openings(self, zones: Iterable[str], now: datetime, days: int = HORIZON_DAYS) -> list[Span]:
        """The spans, in UTC, when the window is open in every zone at once, still open or to come after
        `now`, within `days`."""
        at = as_utc(now)
        common: list[Span] | None = None
        for zone in sorted(set(zones)):
            spans = self.openings_in(zone, at, days)
            common = spans if common is None else _intersect(common, spans)
        horizon = at + timedelta(days=days)
        return [(opens, closes) for opens, closes in common or [] if closes > at and opens < horizon]

    def schedule(self, zones: Iterable[str], now: datetime) -> WindowSchedule:
        """The current (or next) common opening and the one after, as seen at `now`."""
        openings = self.common_openings(zones, now)
        current = openings[0] if openings else (None, None)
        following = openings[1][0] if len(openings) > 1 else None
        return WindowSchedule(current[0], current[1], following)


@dataclass(frozen=True)
class WindowSchedule:
    """For one set of zones: the current or next common opening (UTC), and when the one after begins.

    All None when the window never opens in all the zones at once within `HORIZON_DAYS`.
    """

    opens_at: datetime | None
    closes_at: datetime | None
    reopens_at: datetime | None


def _zone(name: str) -> ZoneInfo:
    zone = zone_or_none(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return zone


def _intersect(first: list[Span], second: list[Span]) -> list[Span]:
    """The spans covered by both sorted lists of disjoint spans."""
    common: list[Span] = []
    i = j = 0
    while i < len(first) and j < len(second):
        opens = max(first[i][0], second[j][0])
        closes = min(first[i][1], second[j][1])
        if opens < closes:
            common.append((opens, closes))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return common
