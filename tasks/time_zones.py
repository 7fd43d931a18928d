"""Each recipient's time zones, from a column of IANA names or from the number itself, over whole columns.

The number's zones come from phonenumbers' own time-zone metadata (what `phonenumbers.timezone` reads): a
table of E.164 digit prefixes, each with its zones, matched longest prefix first. `+1 212 ...` is
`America/New_York` alone; a number whose prefix says only its country (`+7 ...`, `+1` with an unlisted area
code) gets every zone of it. The table is turned into one mapping per prefix length, once per process; a
column is then looked up with one vectorised `replace_strict` per length, so no Python runs per row.

The zones of a row are one string, `TIME_ZONES` (`Area/City|Area/City`, sorted), so that rows with the same
zones group together; null when nothing is known.
"""

from __future__ import annotations

from functools import cache

import polars as pl
from phonenumbers import tzdata

from globe_sms.send_window import zone_or_none

TIME_ZONES = "time_zones"
"""The column `with_time_zones` adds: a row's zones, `|`-separated and sorted; null when unknown."""
ZONE_SEPARATOR = "|"
_UNKNOWN_ZONE = "Etc/Unknown"


@cache
def zones_by_prefix_length() -> tuple[tuple[int, dict[str, str]], ...]:
    """phonenumbers' prefix -> zones table, as one mapping per prefix length, longest first."""
    by_length: dict[int, dict[str, str]] = {}
    for prefix, zones in tzdata.TIMEZONE_DATA.items():
        known = sorted({zone for zone in zones if zone != _UNKNOWN_ZONE and zone_or_none(zone) is not None})
        if known:
            by_length.setdefault(len(prefix), {})[prefix] = ZONE_SEPARATOR.join(known)
    return tuple(sorted(by_length.items(), reverse=True))


def zones_of_numbers(phone: pl.Expr) -> pl.Expr:
    """The zones of E.164 numbers (digits, no `+`) by their longest known prefix; null when none is known."""
    lookups = [
        phone.str.slice(0, length).replace_strict(table, default=None, return_dtype=pl.String)
        for length, table in zones_by_prefix_length()
    ]
    return pl.coalesce(lookups)


def with_time_zones(
    frame: pl.DataFrame, phone_column: str = "phone", timezone_column: str | None = None
) -> pl.DataFrame:
    """`frame` with `TIME_ZONES`: the zone named in `timezone_column` when it is a real IANA zone, else the
    zones of the number.

    Only the distinct names of `timezone_column` are checked in Python, never every row.
    """
    inferred = zones_of_numbers(pl.col(phone_column))
    if timezone_column is None:
        return frame.with_columns(inferred.alias(TIME_ZONES))
    named = pl.col(timezone_column).cast(pl.String).str.strip_chars()
    names = frame.select(named.unique().drop_nulls()).to_series().to_list()
    real = [name for name in names if name and zone_or_none(name) is not None]
    return frame.with_columns(
        pl.when(named.is_in(real)).then(named).otherwise(inferred).alias(TIME_ZONES)
    )


def zone_names(zones: str) -> list[str]:
    """The zones of one `TIME_ZONES` value."""
    return zones.split(ZONE_SEPARATOR)
