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

import polars as pl

from schemas.dialing_codes import CallingCode, Desc, RegionRules, claim_plan, dialing_tables, mobile_plan

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


def _strip_national_prefix(frame: pl.DataFrame, main: RegionRules) -> pl.DataFrame:
    """phonenumbers `parse`: drop a trunk prefix after the country code when what is left is viable."""
    if not main.national_prefix_regex or main.general is None:
        return frame
    prefix = f"^(?:{main.national_prefix_regex})"
    general = _full(main.general.pattern)
    stripped = _NSN.str.replace(prefix, "")
    stripped_len = stripped.str.len_bytes()
    lengths, local = main.general_lengths, main.general_local_lengths
    # _test_number_length: keep the stripped form unless it is too short, local-only or of an impossible length.
    length_ok = (stripped_len > max(lengths)) | (
        stripped_len.is_in(list(lengths)) & ~stripped_len.is_in(list(local))
    )
    viable_kept = ~(_NSN.str.contains(general) & ~stripped.str.contains(general))
    strip = _NSN.str.contains(prefix) & viable_kept & length_ok & (stripped_len > 0)
    return frame.with_columns(pl.when(strip).then(stripped).otherwise(_NSN).alias("_nsn"))


def _claim(region: RegionRules) -> pl.Expr:
    """phonenumbers `_region_code_for_number_from_list`: leading digits, else "valid as any type"."""
    plan = claim_plan(region.region)
    if plan.leading_digits is not None:
        return _NSN.str.contains(f"^(?:{_ascii(plan.leading_digits)})")
    claim = _matches_any(plan.any_type)
    return claim & _matches(plan.general) if plan.general is not None else claim


def _assign_regions(frame: pl.DataFrame, code: CallingCode) -> pl.DataFrame:
    """`_region` for the rows of a shared calling code: the first region (metadata order) that claims them."""
    parts: list[pl.DataFrame] = []
    remaining = frame
    for region in code.regions:
        claimed = remaining.select(_claim(region)).to_series()
        parts.append(remaining.filter(claimed).with_columns(pl.lit(region.region).alias("_region")))
        remaining = remaining.filter(~claimed)
        if remaining.is_empty():
            break
    parts.append(remaining.with_columns(pl.lit(None, pl.String).alias("_region")))
    return pl.concat(parts, how="vertical")


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
    """`column` with the rows `updates["_i"]` replaced by `updates[name]`."""
    if updates.is_empty():
        return column
    return column.scatter(updates.get_column("_i"), updates.get_column(name))


def _strip_trunk_prefixes(frame: pl.DataFrame) -> pl.Series:
    """`_nsn` after dropping trunk prefixes, computed only on the rows that start with one."""
    tables = dialing_tables()
    prefixed = [
        f"{code}(?:{cc.main.national_prefix_regex})"
        for code, cc in tables.codes.items()
        if cc.main.national_prefix_regex and cc.main.general is not None
    ]
    pattern = "^(?:" + "|".join(prefixed) + ")"
    candidates = frame.filter(pl.col("_digits").str.contains(pattern).fill_null(False))
    nsn = frame.get_column("_nsn")
    if candidates.is_empty():
        return nsn
    parts = [
        _strip_national_prefix(part, tables.codes[str(cc)].main)
        for (cc,), part in candidates.partition_by("_cc", as_dict=True).items()
    ]
    return _scatter(nsn, pl.concat(parts), "_nsn")


def _shared_code_regions(frame: pl.DataFrame, region: pl.Series) -> pl.Series:
    """`_region` with the rows of shared calling codes (+1, +7, +44, ...) filled in by claim order."""
    tables = dialing_tables()
    shared = [code for code, cc in tables.codes.items() if len(cc.regions) > 1]
    rows = frame.filter(pl.col("_cc").is_in(shared).fill_null(False)).select("_i", "_cc", "_nsn")
    if rows.is_empty():
        return region
    parts = [
        _assign_regions(part, tables.codes[str(cc)])
        for (cc,), part in rows.partition_by("_cc", as_dict=True).items()
    ]
    return _scatter(region, pl.concat(parts), "_region")


def _pattern_failures(frame: pl.DataFrame) -> pl.Series:
    """Row keys (`_i`) of rows of a right length whose number is not a mobile number of their region."""
    rows = frame.filter(pl.col("_region").is_not_null() & pl.col("_length_ok")).select("_i", "_nsn", "_region")
    queries = [
        part.lazy().filter(~_strict_mobile(str(region))).select("_i")
        for (region,), part in rows.partition_by("_region", as_dict=True).items()
    ]
    if not queries:
        return pl.Series("_i", [], dtype=pl.UInt32)
    return pl.concat(queries).collect().get_column("_i")


def check_mobile_numbers(frame: pl.DataFrame, *, strict: bool = True) -> pl.DataFrame:
    """Run every per-country rule on E.164 digit strings.

    Args:
        frame: a DataFrame with a row key `_i` (UInt32, equal to the row position) and `_digits` (E.164
            digits without `+`, or null for values that were not readable).
        strict: use phonenumbers' mobile patterns per region, not only the mobile lengths of the code.

    Returns:
        The frame with the columns in `MOBILE_COLUMNS` added, rows in the same order. `_nsn` is the national
        significant number after any trunk prefix was dropped; `_region` is the ISO region (null when the
        code is unknown or non-geographic or, in strict mode, no region of a shared code claims the number).
        Flags are False for rows without digits.
    """
    tables = dialing_tables()
    single = {code: cc.main.region for code, cc in tables.codes.items() if len(cc.regions) == 1}
    lengths = {code: cc.mobile_lengths or (0,) for code, cc in tables.codes.items()}
    cc = pl.col("_cc")
    out = frame.lazy().with_columns(pl.col("_digits").str.extract(tables.code_pattern, 1).alias("_cc"))
    out = out.with_columns(
        pl.col("_digits").str.slice(cc.str.len_bytes().fill_null(0)).alias("_nsn"),
        (pl.col("_digits").is_not_null() & cc.is_null()).alias("_unknown_code"),
        cc.is_in(list(tables.non_geographic)).fill_null(False).alias("_non_geographic"),
    ).collect()
    out = out.with_columns(_strip_trunk_prefixes(out).alias("_nsn"))
    region = out.select(cc.replace_strict(single, default=None, return_dtype=pl.String)).to_series()
    out = out.with_columns(_shared_code_regions(out, region).alias("_region"))

    shortest = cc.replace_strict({c: min(v) for c, v in lengths.items()}, default=None, return_dtype=pl.Int64)
    longest = cc.replace_strict({c: max(v) for c, v in lengths.items()}, default=None, return_dtype=pl.Int64)
    keys = [int(c) * 100 + n for c, v in lengths.items() for n in v]
    key = cc.cast(pl.Int64, strict=False) * 100 + _LEN.cast(pl.Int64)
    out = out.with_columns(
        (_LEN < shortest).fill_null(False).alias("_too_short"),
        (_LEN > longest).fill_null(False).alias("_too_long"),
        key.is_in(keys).fill_null(False).alias("_length_ok"),
    ).with_columns(
        (shortest.is_not_null() & ~pl.col("_too_short") & ~pl.col("_too_long") & ~pl.col("_length_ok"))
        .fill_null(False)
        .alias("_invalid_length"),
    )
    if strict:
        failures = _pattern_failures(out)
        in_code = cc.is_in(list(tables.codes)).fill_null(False)
        bad = pl.col("_length_ok") & in_code & (pl.col("_region").is_null() | pl.col("_i").is_in(failures.implode()))
    else:
        main = {code: c.main.region for code, c in tables.codes.items()}
        out = out.with_columns(pl.col("_region").fill_null(cc.replace_strict(main, default=None)))
        bad = pl.lit(False)
    return out.with_columns(bad.alias("_bad_pattern")).drop("_length_ok")
