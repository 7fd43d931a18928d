"""Each recipient's time zones, from a column of IANA names or from the number itself, over whole columns.

The number's zones are the ones phonenumbers' `time_zones_for_number` gives, or more, never fewer:

- a number whose type is geographical for its calling code (fixed line, fixed line or mobile, and mobile in
  the few countries whose mobile ranges are assigned by area; `tasks.number_geography`) gets the zones of its
  longest prefix in phonenumbers' time-zone metadata (`phonenumbers.tzdata`): `+1 212 ...` is
  `America/New_York` alone, `+61 8 ...` (a Perth landline) `Australia/Perth`;
- any other number gets every zone of its calling code (phonenumbers' country-level entry, which covers all
  the regions sharing the code): a `+61 4...` mobile may be anywhere in Australia, from Perth to Lord Howe
  Island, `+44 7...` anywhere in the UK, Guernsey, Jersey or the Isle of Man.

The type costs regexes, so it is only worked out for the rows whose prefix zones do not already contain every
zone of their calling code (`+1`, `+7`, `+61`, `+34`, ...); a number of a single-zone country (`+852`) is
settled by its prefix alone, whatever its type. The prefix table is turned into one mapping per prefix
length, once per process; a column is looked up with one vectorised `replace_strict` per length, so no
Python runs per row.

The zones of a row are one string, `TIME_ZONES` (`Area/City|Area/City`, sorted), so that rows with the same
zones group together; null when nothing is known (a non-geographic code such as `+800`, an unknown prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import polars as pl
from phonenumbers import tzdata

from globe_sms.send_window import zone_or_none
from schemas.dialing_codes import dialing_tables
from tasks.number_geography import geographical

TIME_ZONES = "time_zones"
"""The column `with_time_zones` adds: a row's zones, `|`-separated and sorted; null when unknown."""
ZONE_SEPARATOR = "|"
_UNKNOWN_ZONE = "Etc/Unknown"
_WIDTH = 15
"""E.164 numbers have at most 15 digits: padded with zeros to 15, every number is a UInt64."""


@dataclass(frozen=True)
class ZoneTable:
    """phonenumbers' prefix -> zones table, ready for whole-column lookups.

    A prefix of `n` digits covers the 15-digit numbers from `prefix * 10**(15 - n)` on, below
    `(prefix + 1) * 10**(15 - n)`. Those ranges nest, so their bounds (`bounds`, sorted) cut the 15-digit
    numbers into segments whose longest covering prefix is always the same: `segment_prefix[i]` is the row of
    `facts` for the numbers from `bounds[i]` on (null where no prefix covers them). One `search_sorted` then
    finds every number's longest prefix. `facts` holds per prefix: its `zones`, its `length`, its calling
    `code`, the `country_zones` of that code, and `ambiguous`: whether the prefix's zones miss some of the
    country's (then the number's type decides between the two). `by_length` maps each prefix to its row, per
    length, for the few numbers shorter than the prefix their padding lands in.
    """

    bounds: pl.Series
    segment_prefix: pl.Series
    facts: pl.DataFrame
    by_length: tuple[tuple[int, dict[str, int]], ...]


def _known(zones: tuple[str, ...]) -> list[str]:
    """The zones zoneinfo knows, sorted, without phonenumbers' `Etc/Unknown`."""
    return sorted({zone for zone in zones if zone != _UNKNOWN_ZONE and zone_or_none(zone) is not None})


def country_level_zones(code: str) -> list[str]:
    """phonenumbers `_country_level_time_zones_for_number` for calling code `code` (known zones only)."""
    for length in range(tzdata.TIMEZONE_LONGEST_PREFIX, 0, -1):
        prefix = code[: 1 + length]  # as phonenumbers slices it: never shorter than two digits
        if prefix in tzdata.TIMEZONE_DATA:
            return _known(tzdata.TIMEZONE_DATA[prefix])
    return []


def _longest_prefix(digits: str, rows: dict[str, int]) -> int | None:
    return next((rows[digits[:n]] for n in range(len(digits), 0, -1) if digits[:n] in rows), None)


@cache
def zone_table() -> ZoneTable:
    """Build (once) the lookup tables from the installed phonenumbers metadata."""
    codes = dialing_tables().all_codes
    rows: dict[str, int] = {}
    facts: list[tuple[str, int, str | None, str | None, bool]] = []
    for prefix, zones in sorted(tzdata.TIMEZONE_DATA.items()):
        known = _known(zones)
        if not known:  # skipped: the lookup falls back to a shorter prefix
            continue
        code = next((c for c in codes if prefix.startswith(c)), None)
        country = country_level_zones(code) if code else []
        rows[prefix] = len(facts)
        joined = ZONE_SEPARATOR.join(known)
        facts.append(
            (joined, len(prefix), code, ZONE_SEPARATOR.join(country) or None, not set(known) >= set(country))
        )
    starts = {int(prefix) * 10 ** (_WIDTH - len(prefix)) for prefix in rows}
    ends = {(int(prefix) + 1) * 10 ** (_WIDTH - len(prefix)) for prefix in rows}
    bounds = sorted(starts | ends | {0})
    by_length: dict[int, dict[str, int]] = {}
    for prefix, row in rows.items():
        by_length.setdefault(len(prefix), {})[prefix] = row
    return ZoneTable(
        bounds=pl.Series(bounds, dtype=pl.UInt64),
        segment_prefix=pl.Series([_longest_prefix(f"{b:0{_WIDTH}d}", rows) for b in bounds], dtype=pl.UInt32),
        facts=pl.DataFrame(
            facts,
            schema={
                "zones": pl.String,
                "length": pl.UInt32,
                "code": pl.String,
                "country_zones": pl.String,
                "ambiguous": pl.Boolean,
            },
            orient="row",
        ),
        by_length=tuple(sorted(by_length.items(), reverse=True)),
    )


def _longest_prefixes(phone: pl.Series) -> pl.Series:
    """The `facts` row of each number's longest known prefix (null when none): one search over the bounds."""
    table = zone_table()
    size = phone.str.len_bytes()
    padding = pl.Series([10**n for n in range(_WIDTH + 1)], dtype=pl.UInt64)
    fits = size.is_between(1, _WIDTH)
    value = pl.select(
        pl.when(fits)
        .then(
            pl.lit(phone).cast(pl.UInt64, strict=False)
            * pl.lit(padding).gather(_WIDTH - size.clip(0, _WIDTH))
        )
        .alias("v")
    ).to_series()
    segment = table.bounds.search_sorted(value, side="right").cast(pl.Int64) - 1
    found = pl.select(
        pl.when(value.is_not_null()).then(pl.lit(table.segment_prefix).gather(segment.clip(0))).alias("p")
    ).to_series()
    # A number shorter than the prefix its zero padding lands in (`134` padded is in `1340`'s range) is
    # looked up by its own digits; valid numbers are rarely that short, so only those rows pay for it.
    too_long = found.is_not_null() & (table.facts.get_column("length").gather(found) > size)
    if not too_long.any():
        return found
    positions = too_long.arg_true()
    short = phone.gather(positions)
    lookups = [
        pl.col("p").str.slice(0, n).replace_strict(rows, default=None, return_dtype=pl.UInt32)
        for n, rows in table.by_length
    ]
    exact = pl.DataFrame({"p": short}).select(pl.coalesce(lookups)).to_series()
    return found.scatter(positions, exact)


def zones_of_numbers(phone: pl.Series) -> pl.Series:
    """The zones of E.164 numbers (digits, no `+`), as `TIME_ZONES` values; null when none is known."""
    facts = zone_table().facts
    prefix = _longest_prefixes(phone)
    zones = facts.get_column("zones").gather(prefix).alias(TIME_ZONES)
    ambiguous = facts.get_column("ambiguous").gather(prefix).fill_null(False)
    if not ambiguous.any():
        return zones
    positions = ambiguous.arg_true()
    rows = prefix.gather(positions)
    codes = facts.get_column("code").gather(rows)
    country_wide = ~geographical(phone.gather(positions), codes)
    return zones.scatter(
        positions.filter(country_wide), facts.get_column("country_zones").gather(rows.filter(country_wide))
    )


def with_time_zones(
    frame: pl.DataFrame, phone_column: str = "phone", timezone_column: str | None = None
) -> pl.DataFrame:
    """`frame` with `TIME_ZONES`: the zone named in `timezone_column` when it is a real IANA zone, else the
    zones of the number.

    Only the distinct names of `timezone_column` are checked in Python, never every row.
    """
    inferred = zones_of_numbers(frame.get_column(phone_column).cast(pl.String))
    if timezone_column is None:
        return frame.with_columns(inferred.alias(TIME_ZONES))
    named = pl.col(timezone_column).cast(pl.String).str.strip_chars()
    names = frame.select(named.unique().drop_nulls()).to_series().to_list()
    real = [name for name in names if name and zone_or_none(name) is not None]
    return frame.with_columns(
        pl.when(named.is_in(real)).then(named).otherwise(pl.lit(inferred)).alias(TIME_ZONES)
    )


def zone_names(zones: str) -> list[str]:
    """The zones of one `TIME_ZONES` value."""
    return zones.split(ZONE_SEPARATOR)
