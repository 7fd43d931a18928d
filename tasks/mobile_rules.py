"""Per-country mobile rules: calling code, national prefix, region, length and strict mobile pattern.

Input is the `_digits` column from `tasks/normalise.py` (E.164 digits without `+`). Everything is vectorised
and the output stays aligned with the input rows, so no join is needed:

- calling code, lengths and the region of single-region codes: whole-column expressions;
- the few rows that start with a trunk prefix (`+44 0...`) and the rows of shared codes (+1, +7, +44, ...):
  handled per calling code on those rows only, then scattered back;
- strict mobile patterns: one literal regex per region over that region's rows (`partition_by`), all run in
  a single parallel `collect`. Passing patterns as a per-row column instead makes polars compile a regex per
  row (75 s per 1M rows in the notes).

Strict mode reproduces phonenumbers' "valid mobile" decision (`is_valid_number` and a MOBILE or
FIXED_LINE_OR_MOBILE type), see `schemas/dialing_codes.py`. Lenient mode checks only the mobile lengths of the
calling code, which lets `+1 380 0138000` (a Chinese mobile with a naive `+1`) through.
"""

from __future__ import annotations

import re
from functools import cache

import polars as pl

from schemas.dialing_codes import (
    CallingCode,
    Desc,
    RegionRules,
    claim_plan,
    dialing_tables,
    known_regions,
    mobile_plan,
)

MOBILE_COLUMNS = (
    "_cc",
    "_nsn",
    "_region",
    "_unknown_code",
    "_non_geographic",
    "_too_short",
    "_too_long",
    "_invalid_length",
    "_bad_pattern",
)
"""The columns `check_mobile_numbers` adds."""

REGION = pl.Enum(sorted(known_regions()))
"""`_region`'s dtype: an ISO region as a small integer, so scatters and partitions move no strings."""

CALLING_CODE = pl.Enum(dialing_tables().all_codes)
"""`_cc`'s dtype: every geographic and non-geographic calling code."""

_MIN_NSN_DIGITS = 2  # phonenumbers' _MIN_LENGTH_FOR_NSN
_NSN = pl.col("_nsn")
_LEN = pl.col("_nsn").str.len_bytes()


def _ascii(pattern: str) -> str:
    # Rust's \d is Unicode-aware and about twice as slow; inputs are ASCII digits by now.
    return pattern.replace("\\d", "[0-9]")


def _full(pattern: str) -> str:
    # str.contains is a search: anchor both ends for a full match, as phonenumbers' fullmatch does.
    return f"^(?:{_ascii(pattern)})$"


def _matches(desc: Desc | None) -> pl.Expr:
    """phonenumbers `_is_number_matching_desc`: a possible length and a full pattern match."""
    if desc is None:
        return pl.lit(False)
    return _LEN.is_in(list(desc.lengths)) & _NSN.str.contains(_full(desc.pattern))


def _matches_any(descs: tuple[Desc, ...]) -> pl.Expr:
    """One regex for several descriptions (lengths checked loosely: patterns already fix the lengths)."""
    if not descs:
        return pl.lit(False)
    lengths = sorted({n for d in descs for n in d.lengths})
    return _LEN.is_in(lengths) & _NSN.str.contains(_full("|".join(f"(?:{d.pattern})" for d in descs)))


def national_prefix_stripped(nsn: pl.Expr, main: RegionRules) -> pl.Expr:
    """phonenumbers `_maybe_strip_national_prefix_carrier_code` followed by `parse`'s length test.

    Drops a trunk prefix (and carrier code) after the country code, or applies the region's transform rule
    (Argentina's `0 11 15` -> `9 11`, Brazil's carrier codes), when the result is still a viable, possible
    number; otherwise the number is kept as it is. `+44 07911 123456` becomes `7911123456`; Italy has no
    national prefix, so `+39 06...` keeps its 0.
    """
    npp, rule, general = main.national_prefix_for_parsing, main.national_prefix_transform_rule, main.general
    if not npp or general is None:
        return nsn
    prefix = f"^(?:{_ascii(npp)})"
    groups = re.compile(npp).groups
    stripped = nsn.str.replace(prefix, "")
    if rule and groups:
        # Python's `\1` is `${1}` in Rust regex replacements.
        rewritten = nsn.str.replace(prefix, re.sub(r"\\(\d)", r"${\1}", rule))
        last_group = nsn.str.extract(prefix, groups)
        candidate = pl.when(last_group.is_not_null()).then(rewritten).otherwise(stripped)
    else:
        candidate = stripped
    viable = _full(general.pattern)
    keep_original = nsn.str.contains(viable) & ~candidate.str.contains(viable)
    size = candidate.str.len_bytes()
    lengths, local = list(main.general_lengths), list(main.general_local_lengths)
    # _test_number_length: TOO_LONG and IS_POSSIBLE keep the candidate; too short, local-only and
    # impossible lengths keep the original.
    possible = (size > max(lengths)) | (size.is_in(lengths) & ~size.is_in(local))
    use = nsn.str.contains(prefix) & ~keep_original & possible & (size >= _MIN_NSN_DIGITS)
    return pl.when(use).then(candidate).otherwise(nsn)


def _strip_national_prefix(frame: pl.DataFrame, main: RegionRules) -> pl.LazyFrame:
    """`national_prefix_stripped` on the rows of one calling code."""
    return frame.lazy().with_columns(national_prefix_stripped(_NSN, main).alias("_nsn"))


def _claim(region: RegionRules) -> pl.Expr:
    """phonenumbers `_region_code_for_number_from_list`: leading digits, else "valid as any type"."""
    plan = claim_plan(region.region)
    if plan.leading_digits is not None:
        return _NSN.str.contains(f"^(?:{_ascii(plan.leading_digits)})")
    claim = _matches_any(plan.any_type)
    return claim & _matches(plan.general) if plan.general is not None else claim


def _assign_regions(frame: pl.DataFrame, code: CallingCode) -> pl.LazyFrame:
    """`_region` for the rows of a shared calling code: the first region (metadata order) that claims them."""
    claims = [pl.when(_claim(region)).then(pl.lit(region.region, REGION)) for region in code.regions]
    return frame.lazy().with_columns(pl.coalesce(claims).alias("_region"))


def _strict_mobile(region: str) -> pl.Expr:
    """phonenumbers `_number_type_helper` in (MOBILE, FIXED_LINE_OR_MOBILE) for one region.

    That is mobile and general and none of the excluding types; `mobile_plan` drops the parts that provably
    never change the answer (usually all but the mobile description).
    """
    plan = mobile_plan(region)
    if plan.mobile is None:
        return pl.lit(False)
    check = _matches(plan.mobile)
    if plan.general is not None:
        check = check & _matches(plan.general)
    if plan.excluding:
        check = check & ~_matches_any(plan.excluding)
    return check


def _scatter(column: pl.Series, updates: pl.DataFrame, name: str) -> pl.Series:
    """`column` with the rows at positions `updates["_row"]` replaced by `updates[name]`."""
    if updates.is_empty():
        return column
    return column.scatter(updates.get_column("_row"), updates.get_column(name))


@cache
def _trunk_pattern() -> str:
    """One anchored regex for "calling code, then that code's trunk prefix" (`440...`, `7 8...`)."""
    trunk = [
        f"{code}(?:{_ascii(cc.main.national_prefix_for_parsing)})"
        for code, cc in dialing_tables().codes.items()
        if cc.main.national_prefix_for_parsing and cc.main.general is not None
    ]
    return "^(?:" + "|".join(trunk) + ")"


@cache
def _code_facts() -> pl.DataFrame:
    """One row per calling code (geographic, then non-geographic): what a whole-column pass needs to know.

    Row `i` is what `_code_index` points at, so every fact is a `gather`, never a hash lookup.
    """
    tables = dialing_tables()
    codes = [*tables.codes, *sorted(tables.non_geographic)]
    geographic = [tables.codes.get(code) for code in codes]
    lengths = [cc.mobile_lengths if cc else () for cc in geographic]
    return pl.DataFrame(
        {
            "code": codes,
            "code_length": [len(code) for code in codes],
            "single_region": [cc.main.region if cc and len(cc.regions) == 1 else None for cc in geographic],
            "main_region": [cc.main.region if cc else None for cc in geographic],
            "shared": [cc is not None and len(cc.regions) > 1 for cc in geographic],
            "non_geographic": [cc is None for cc in geographic],
            "shortest": [min(ns, default=0) for ns in lengths],
            "longest": [max(ns, default=0) for ns in lengths],
        },
        schema_overrides={
            "code": CALLING_CODE,
            "code_length": pl.Int64,
            "single_region": REGION,
            "main_region": REGION,
            "shortest": pl.Int32,
            "longest": pl.Int32,
        },
    )


_LENGTH_SLOTS = 16  # national lengths 0..15 (E.164 allows at most 14 after a code); longer counts as 15


@cache
def _mobile_lengths() -> pl.Series:
    """Entry `_LENGTH_SLOTS * code index + length`: True when that many national digits is a mobile length."""
    tables = dialing_tables()
    codes = _code_facts().get_column("code").to_list()
    return pl.Series(
        [
            code in tables.codes and n in tables.codes[code].mobile_lengths
            for code in codes
            for n in range(_LENGTH_SLOTS)
        ],
        dtype=pl.Boolean,
    )


@cache
def _prefix_to_code() -> pl.Series:
    """`_code_index` by a number's first three digits: entry `1000 * len + int(digits)` for 1 to 3 digits.

    Calling codes are prefix-free, so the first three digits (or fewer, for a shorter string) decide the code.
    """
    codes = _code_facts().get_column("code").to_list()
    index: list[int | None] = [None] * 4000
    for size in (1, 2, 3):
        for value in range(10**size):
            head = f"{value:0{size}d}"
            index[1000 * size + value] = next(
                (i for i, code in enumerate(codes) if head.startswith(code)), None
            )
    return pl.Series("_code_index", index, dtype=pl.UInt16)


def _code_index(digits: pl.Expr) -> pl.Expr:
    """Row of `_code_facts` for the calling code that starts `digits` (null when none does)."""
    head = digits.str.head(3)
    return pl.lit(_prefix_to_code()).gather(head.str.len_bytes() * 1000 + head.cast(pl.UInt32, strict=False))


def _fact(name: str) -> pl.Expr:
    """A `_code_facts` column for each row's calling code."""
    return pl.lit(_code_facts().get_column(name)).gather(pl.col("_code_index"))


def _vectorised_part(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Everything that is one expression over the whole column: code, NSN, single-region region."""
    digits = pl.col("_digits")
    indexed = frame.with_columns(_code_index(digits).alias("_code_index"))
    return indexed.with_columns(_fact("code").alias("_cc")).with_columns(
        digits.str.slice(_fact("code_length").fill_null(0)).alias("_nsn"),
        (digits.is_not_null() & pl.col("_code_index").is_null()).alias("_unknown_code"),
        _fact("non_geographic").fill_null(False).alias("_non_geographic"),
        _fact("single_region").alias("_region"),
        digits.str.contains(_trunk_pattern()).fill_null(False).alias("_trunk"),
        _fact("shared").fill_null(False).alias("_shared"),
    )


def _strip_trunk_prefixes(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop trunk prefixes (`_nsn` and `_digits`), computing only on the rows that start with one."""
    codes = dialing_tables().codes
    candidates = frame.select("_row", "_cc", "_nsn", "_trunk").filter(pl.col("_trunk"))
    if candidates.is_empty():
        return frame
    parts = [
        _strip_national_prefix(part, codes[str(cc)].main)
        for (cc,), part in candidates.partition_by("_cc", as_dict=True).items()
    ]
    updates = pl.concat(parts).with_columns((pl.col("_cc").cast(pl.String) + _NSN).alias("_digits")).collect()
    return frame.with_columns(_scatter(frame.get_column(c), updates, c) for c in ("_nsn", "_digits"))


def _shared_code_regions(frame: pl.DataFrame) -> pl.Series:
    """`_region` with the rows of shared calling codes (+1, +7, +44, ...) filled in by claim order."""
    codes = dialing_tables().codes
    region = frame.get_column("_region")
    rows = frame.select("_row", "_cc", "_nsn", "_shared").filter(pl.col("_shared"))
    if rows.is_empty():
        return region
    parts = [
        _assign_regions(part, codes[str(cc)])
        for (cc,), part in rows.partition_by("_cc", as_dict=True).items()
    ]
    return _scatter(region, pl.concat(parts).collect(), "_region")


def _length_flags(frame: pl.DataFrame) -> pl.DataFrame:
    """`_length_ok` for every row; too short / too long / in-between only computed on the rows that fail."""
    length = _LEN.cast(pl.Int32)
    slot = pl.col("_code_index").cast(pl.Int32) * _LENGTH_SLOTS + length.clip(0, _LENGTH_SLOTS - 1)
    frame = frame.with_columns(pl.lit(_mobile_lengths()).gather(slot).fill_null(False).alias("_length_ok"))
    wrong = frame.filter(~pl.col("_length_ok") & ~_fact("non_geographic").fill_null(True))
    wrong = wrong.select(
        "_row",
        (length < _fact("shortest")).alias("_too_short"),
        (length > _fact("longest")).alias("_too_long"),
    ).with_columns((~pl.col("_too_short") & ~pl.col("_too_long")).alias("_invalid_length"))
    none = pl.Series(values=[False], dtype=pl.Boolean).extend_constant(False, frame.height - 1)
    return frame.with_columns(
        _scatter(none, wrong, name).alias(name) for name in ("_too_short", "_too_long", "_invalid_length")
    )


def _pattern_failures(frame: pl.DataFrame) -> pl.Series:
    """Positions of the rows of a right length whose number is not a mobile number of their region."""
    rows = frame.select("_row", "_nsn", "_region", "_length_ok").filter(
        pl.col("_region").is_not_null() & pl.col("_length_ok")
    )
    queries = [
        part.lazy().filter(~_strict_mobile(str(region))).select("_row")
        for (region,), part in rows.partition_by("_region", as_dict=True).items()
    ]
    if not queries:
        return pl.Series("_row", [], dtype=pl.UInt32)
    return pl.concat(queries).collect().get_column("_row")


def check_mobile_numbers(frame: pl.DataFrame | pl.LazyFrame, *, strict: bool = True) -> pl.DataFrame:
    """Run every per-country rule on E.164 digit strings.

    Args:
        frame: `_digits` (E.164 digits without `+`, or null for values that were not readable) and any other
            columns (carried along), lazy or not.
        strict: use phonenumbers' mobile patterns per region, not only the mobile lengths of the code.

    Returns:
        The frame, collected, with the columns in `MOBILE_COLUMNS` added, rows in the same order. `_nsn` is
        the national significant number after any trunk prefix was dropped, and `_digits` is updated to match
        (calling code + `_nsn`); `_region` is the ISO region (null
        when the code is unknown or non-geographic or, in strict mode, no region of a shared code claims the
        number). Flags are False for rows without digits.
    """
    out = _vectorised_part(frame.lazy().with_row_index("_row")).collect(engine="streaming")
    if out.height == 0:
        return out.with_columns(
            pl.lit(False).alias(c) for c in ("_too_short", "_too_long", "_invalid_length", "_bad_pattern")
        ).drop("_trunk", "_shared", "_row", "_code_index")
    out = _strip_trunk_prefixes(out)
    out = out.with_columns(_shared_code_regions(out).alias("_region"))
    out = _length_flags(out)
    if strict:
        failures = _pattern_failures(out)
        geographic = ~_fact("non_geographic").fill_null(True)
        unclaimed = out.select(pl.col("_length_ok") & geographic & pl.col("_region").is_null()).to_series()
        bad = pl.lit(unclaimed.scatter(failures, True))
    else:
        out = out.with_columns(pl.col("_region").fill_null(_fact("main_region")))
        bad = pl.lit(False)
    return out.with_columns(bad.alias("_bad_pattern")).drop(
        "_length_ok", "_trunk", "_shared", "_row", "_code_index"
    )
