"""Whether a number's type ties it to a place (phonenumbers' `is_number_type_geographical`), over columns.

phonenumbers' `time_zones_for_number` gives a number the zones of its longest known prefix only when its type
is geographical for its calling code: fixed line, fixed line or mobile, and mobile where mobile ranges are
assigned by area (`is_number_type_geographical(MOBILE, code)`: Mexico, Argentina, Brazil, Indonesia, China).
Every other type (a `+61 4...` mobile, a toll-free number) gets all the zones of its calling code.

Knowing the type means mirroring `number_type`:

- the region of a calling code shared by several regions (+1, +7, +44, +262, ...) is the first, in metadata
  order, that claims the number (`schemas.dialing_codes.claim_plan`: leading digits, else valid as any type);
- in that region (`_number_type_helper`) a number matching the general description is of the first of
  premium rate, toll free, shared cost, VoIP, personal, pager, UAN and voicemail it matches; else fixed line
  (or fixed line or mobile) when it matches the fixed-line description; else mobile.

So a number is geographical when it matches the general description, none of those eight types, and the
fixed-line description (or the mobile one, where mobiles are geographical). `geographic_plan` drops the
descriptions that provably never change that answer (`schemas.digit_languages`), as `mobile_plan` does for
validation. A number no region claims is not geographical (phonenumbers' type is UNKNOWN, its zones unknown):
giving it the whole country errs on the side of quiet. For speed, claims and excluding types are matched
loosely (one regex for several descriptions, any of their lengths); that can only call a number not
geographical, so give it more zones, never fewer. The positive descriptions are matched exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneNumberType

from schemas.dialing_codes import Desc, claim_plan, dialing_tables, region_rules
from schemas.digit_languages import contains, overlaps

_NSN = "_nsn"
_EARLIER_TYPES = (  # `_number_type_helper` tests these before fixed line and mobile, in this order
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)


@dataclass(frozen=True)
class GeographicPlan:
    """The regexes that decide "geographical type" for one region, reduced without changing any verdict.

    Geographical: one of `positive` matches, `general` (when kept) matches, and none of `excluding` does.
    """

    positive: tuple[Desc, ...]
    general: Desc | None
    excluding: tuple[Desc, ...]


def mobiles_are_geographical(code: str) -> bool:
    """phonenumbers' own answer: are mobile numbers of calling code `code` tied to an area?"""
    return phonenumbers.is_number_type_geographical(PhoneNumberType.MOBILE, int(code))


def _pair(desc: Desc) -> tuple[str, tuple[int, ...]]:
    return (desc.pattern, desc.lengths)


@cache
def geographic_plan(region: str) -> GeographicPlan:
    """The reduced "geographical type" check of one region (computed on first use, then cached).

    Raises:
        RuntimeError: the installed phonenumbers calls a type geographical that this module assumes is not
            (a new release changed `is_number_type_geographical`); the module needs updating.
    """
    rules = region_rules(region)
    code = dialing_tables().region_to_code[region]
    fixed_kinds = (PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
    for kind in _EARLIER_TYPES + fixed_kinds:  # the assumptions below, checked against the installed release
        if phonenumbers.is_number_type_geographical(kind, int(code)) != (kind in fixed_kinds):
            raise RuntimeError(f"phonenumbers changed whether type {kind} of +{code} is geographical")
    md = phonenumbers.PhoneMetadata.metadata_for_region(region)
    fixed = _desc_of(md.fixed_line if md else None)
    mobile = rules.mobile if mobiles_are_geographical(code) else None
    positive = tuple(d for d in (fixed, mobile) if d is not None)
    general = rules.general
    if general is not None and all(contains(_pair(general), _pair(d)) for d in positive):
        general = None
    excluding = tuple(d for d in rules.excluding if any(overlaps(_pair(p), _pair(d)) for p in positive))
    return GeographicPlan(positive=positive, general=general, excluding=excluding)


def _desc_of(desc: object) -> Desc | None:
    """A phonenumbers description as a `Desc` (None when it has no pattern or no possible length)."""
    pattern = getattr(desc, "national_number_pattern", None)
    lengths = tuple(n for n in (getattr(desc, "possible_length", None) or ()) if n > 0)
    return Desc(pattern=pattern, lengths=lengths) if pattern and lengths else None


def _full(pattern: str) -> str:
    # str.contains searches: anchor both ends for phonenumbers' fullmatch; ASCII \d is faster in Rust regex.
    return "^(?:" + pattern.replace("\\d", "[0-9]") + ")$"


def _matches(desc: Desc) -> pl.Expr:
    """phonenumbers `_is_number_matching_desc`: a possible length and a full pattern match."""
    nsn = pl.col(_NSN)
    return nsn.str.len_bytes().is_in(list(desc.lengths)) & nsn.str.contains(_full(desc.pattern))


def _matches_exactly_one_of(descs: tuple[Desc, ...]) -> pl.Expr:
    """Whether any of `descs` matches, each with its own lengths (exact: used where a wrong yes is unsafe)."""
    return pl.any_horizontal([_matches(d) for d in descs]) if descs else pl.lit(False)


def _matches_loosely(descs: tuple[Desc, ...]) -> pl.Expr:
    """One regex for several descriptions, any of their lengths: may say yes where phonenumbers says no.

    Used only where a wrong yes errs towards "not geographical", i.e. more zones: an excluding type, a claim.
    """
    if not descs:
        return pl.lit(False)
    lengths = sorted({n for d in descs for n in d.lengths})
    pattern = _full("|".join(f"(?:{d.pattern})" for d in descs))
    return pl.col(_NSN).str.len_bytes().is_in(lengths) & pl.col(_NSN).str.contains(pattern)


def _geographical_in(region: str) -> pl.Expr:
    """Whether `_nsn`, a number of `region`, is of a type geographical there (never a wrong yes)."""
    plan = geographic_plan(region)
    check = _matches_exactly_one_of(plan.positive)
    if plan.general is not None:
        check = check & _matches(plan.general)
    if plan.excluding:
        check = check & ~_matches_loosely(plan.excluding)
    return check


def _claimed_by(region: str) -> pl.Expr:
    """phonenumbers `_region_code_for_number_from_list` for one region: leading digits, else any type.

    A loose "any type" can only claim too much, which makes a number count as not geographical: safe.
    """
    plan = claim_plan(region)
    if plan.leading_digits is not None:
        return pl.col(_NSN).str.contains("^(?:" + plan.leading_digits.replace("\\d", "[0-9]") + ")")
    claim = _matches_loosely(plan.any_type)
    return claim & _matches(plan.general) if plan.general is not None else claim


def _geographical_rows_of_shared_code(code: str, rows: pl.DataFrame) -> pl.DataFrame:
    """The `_row`s of `rows` (numbers of a shared calling code) that are geographical in the region claiming
    them, deciding region by region in metadata order and narrowing the rows as regions claim them.

    A geographical number of a region without leading digits is valid there, so that region claims it: the
    cheap test comes first and the claim is only worked out for the others.
    """
    found = []
    for rules in dialing_tables().codes[code].regions:
        if rows.is_empty():
            break
        region = rules.region
        if claim_plan(region).leading_digits is not None:
            flagged = rows.with_columns(_claimed_by(region).alias("_claimed"))
            found.append(flagged.filter("_claimed").filter(_geographical_in(region)).select("_row"))
            rows = flagged.filter(~pl.col("_claimed")).drop("_claimed")
        else:
            flagged = rows.with_columns(_geographical_in(region).alias("_geo"))
            found.append(flagged.filter("_geo").select("_row"))
            rows = flagged.filter(~pl.col("_geo")).drop("_geo").filter(~_claimed_by(region))
    return pl.concat(found) if found else rows.select("_row")


def geographical(phone: pl.Series, code: pl.Series) -> pl.Series:
    """For each E.164 number (digits, no `+`) and its calling code: is its type geographical there?

    A null code or one that is not a geographic calling code (`800`, ...) gives False. The codes of a single
    region run as one parallel query (one pass of that region's regexes over its rows); the rows of a shared
    code are decided region by region.
    """
    known = dialing_tables().codes
    rows = (
        pl.DataFrame({"phone": phone, "code": code.cast(pl.String)})
        .with_row_index("_row")
        .filter(pl.col("code").is_in(list(known)))
        .with_columns(pl.col("phone").str.slice(pl.col("code").str.len_bytes()).alias(_NSN))
    )
    single, shared = [], []
    for (key,), part in rows.partition_by("code", as_dict=True).items():
        regions = known[str(key)].regions
        if len(regions) == 1:
            single.append(part.lazy().filter(_geographical_in(regions[0].region)).select("_row"))
        else:
            shared.append(_geographical_rows_of_shared_code(str(key), part.select("_row", _NSN)))
    found = [*(pl.collect_all(single) if single else []), *shared]
    answer = pl.repeat(False, phone.len(), dtype=pl.Boolean, eager=True).alias("geographical")
    positions = pl.concat(found).get_column("_row") if found else None
    return answer if positions is None or positions.is_empty() else answer.scatter(positions, True)


__all__ = ["GeographicPlan", "geographic_plan", "geographical", "mobiles_are_geographical"]
