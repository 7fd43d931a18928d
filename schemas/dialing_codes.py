"""Dialing codes, mobile lengths and mobile patterns, built from the installed phonenumbers metadata.

Nothing here is hand-typed: every table comes from `phonenumbers.PhoneMetadata` at first use and is cached,
and `METADATA_VERSION` records which phonenumbers release it came from (metadata changes with every release).

The tables mirror the parts of phonenumbers that decide whether a number is a valid *mobile* number:

- `_number_type_helper`: a number is MOBILE or FIXED_LINE_OR_MOBILE when it matches the region's general
  description and its mobile description, and none of the types phonenumbers checks first (premium rate,
  toll free, shared cost, VoIP, personal, pager, UAN, voicemail). A description matches when the length is one
  of its possible lengths and its national-number pattern matches the whole number.
- `_region_code_for_number_from_list`: a calling code shared by several regions (+1, +7, +44, ...) belongs to
  the first region, in metadata order, whose `leading_digits` match the start of the number or, for regions
  without leading digits, for which the number is of any known type.
- `_maybe_strip_national_prefix_carrier_code`: `+44 07911...` drops the trunk `0` when that leaves a viable
  number.

Non-geographic codes (800, 808, 870, 878, 881, 882, 883, 888, 979) are kept apart: they have no ISO region.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    COUNTRY_CODES_FOR_NON_GEO_REGIONS,
    PhoneMetadata,
)

from schemas.digit_languages import contains, overlaps

METADATA_VERSION: str = phonenumbers.__version__
"""The phonenumbers release whose metadata built these tables."""

MAINLAND_CHINA_CODE = "86"
"""Refused by policy: BatchSendMessageToGlobe is for destinations outside mainland China."""

MAX_E164_DIGITS = 15

# The types phonenumbers tests before fixed line and mobile: matching any of them makes a number not mobile.
_EXCLUDING_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
_ALL_TYPES = (*_EXCLUDING_TYPES, "fixed_line", "mobile")


@dataclass(frozen=True)
class Desc:
    """One phonenumbers number description: full-match regex plus possible national lengths."""

    pattern: str
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class RegionRules:
    """What phonenumbers knows about one ISO region, reduced to what mobile validation needs."""

    region: str
    leading_digits: str | None
    general: Desc | None
    mobile: Desc | None
    excluding: tuple[Desc, ...]  # types that win over mobile in `_number_type_helper`
    any_type: tuple[Desc, ...]  # every type; "valid for region" = general and one of these
    national_prefix_for_parsing: str | None  # regex of the trunk prefix (and carrier code) `parse` drops
    national_prefix_transform_rule: str | None  # rewrite applied instead when its last group matched
    international_prefix: str | None  # the IDD, e.g. "011" for NANP, "810" for RU
    general_lengths: tuple[int, ...]
    general_local_lengths: tuple[int, ...]


@dataclass(frozen=True)
class CallingCode:
    """A country calling code and the regions sharing it, main region first (phonenumbers' order)."""

    code: str
    regions: tuple[RegionRules, ...]

    @property
    def main(self) -> RegionRules:
        """The region phonenumbers uses for national-prefix handling (`region_code_for_country_code`)."""
        return self.regions[0]

    @property
    def mobile_lengths(self) -> tuple[int, ...]:
        """Union of the regions' mobile national lengths."""
        lengths = {n for r in self.regions if r.mobile for n in r.mobile.lengths}
        return tuple(sorted(lengths))


@dataclass(frozen=True)
class DialingTables:
    """Every table validation needs, built once from the installed metadata."""

    version: str
    codes: dict[str, CallingCode]  # geographic calling codes only
    non_geographic: frozenset[str]
    region_to_code: dict[str, str]

    @property
    def all_codes(self) -> list[str]:
        """Geographic and non-geographic codes; prefix-free, so at most one is a prefix of any number."""
        return sorted({*self.codes, *self.non_geographic})


def _desc(desc: object) -> Desc | None:
    pattern = getattr(desc, "national_number_pattern", None)
    lengths = tuple(n for n in (getattr(desc, "possible_length", None) or ()) if n > 0)
    if not pattern or not lengths:
        return None
    return Desc(pattern=pattern, lengths=lengths)


def _region_rules(region: str, md: PhoneMetadata) -> RegionRules:
    general = md.general_desc
    return RegionRules(
        region=region,
        leading_digits=md.leading_digits,
        general=_desc(general),
        mobile=_desc(md.mobile),
        excluding=tuple(d for t in _EXCLUDING_TYPES if (d := _desc(getattr(md, t))) is not None),
        any_type=tuple(d for t in _ALL_TYPES if (d := _desc(getattr(md, t))) is not None),
        national_prefix_for_parsing=md.national_prefix_for_parsing or None,
        national_prefix_transform_rule=md.national_prefix_transform_rule or None,
        international_prefix=md.international_prefix,
        general_lengths=tuple(n for n in (general.possible_length if general else ()) if n > 0),
        general_local_lengths=tuple(
            n for n in ((general.possible_length_local_only if general else None) or ()) if n > 0
        ),
    )


@cache
def dialing_tables() -> DialingTables:
    """Build (once) the dialing-code tables from the installed phonenumbers metadata."""
    non_geo = frozenset(str(c) for c in COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    codes: dict[str, CallingCode] = {}
    region_to_code: dict[str, str] = {}
    for numeric, regions in sorted(COUNTRY_CODE_TO_REGION_CODE.items()):
        code = str(numeric)
        if code in non_geo:
            continue
        rules = []
        for region in regions:
            md = PhoneMetadata.metadata_for_region(region)
            if md is None:  # pragma: no cover - every listed region has metadata
                continue
            rules.append(_region_rules(region, md))
            region_to_code[region] = code
        codes[code] = CallingCode(code=code, regions=tuple(rules))
    return DialingTables(
        version=METADATA_VERSION, codes=codes, non_geographic=non_geo, region_to_code=region_to_code
    )


@dataclass(frozen=True)
class MobilePlan:
    """The regexes that decide "valid mobile" for one region, reduced without changing any verdict.

    `general` is None when the general description provably contains every mobile number, and `excluding`
    keeps only the types that share at least one number with the mobile ranges (`schemas/digit_languages`).
    On phonenumbers 9.0.43 every region reduces to its mobile description alone.
    """

    mobile: Desc | None
    general: Desc | None
    excluding: tuple[Desc, ...]


@dataclass(frozen=True)
class ClaimPlan:
    """How a region of a shared calling code claims a number: leading digits, else "valid as any type"."""

    leading_digits: str | None
    general: Desc | None  # None when it provably contains every type
    any_type: tuple[Desc, ...]


def _pair(desc: Desc) -> tuple[str, tuple[int, ...]]:
    return (desc.pattern, desc.lengths)


@cache
def mobile_plan(region: str) -> MobilePlan:
    """The reduced mobile check of one region (computed on first use, then cached)."""
    rules = region_rules(region)
    mobile, general = rules.mobile, rules.general
    if mobile is None:
        return MobilePlan(mobile=None, general=None, excluding=())
    keep_general = general is not None and not contains(_pair(general), _pair(mobile))
    return MobilePlan(
        mobile=mobile,
        general=general if keep_general else None,
        excluding=tuple(d for d in rules.excluding if overlaps(_pair(mobile), _pair(d))),
    )


@cache
def claim_plan(region: str) -> ClaimPlan:
    """The reduced region claim of one region (computed on first use, then cached)."""
    rules = region_rules(region)
    general = rules.general
    if rules.leading_digits is not None:
        return ClaimPlan(leading_digits=rules.leading_digits, general=None, any_type=())
    keep_general = general is not None and not all(contains(_pair(general), _pair(d)) for d in rules.any_type)
    return ClaimPlan(leading_digits=None, general=general if keep_general else None, any_type=rules.any_type)


def code_for_region(region: str) -> str:
    """The calling code of an ISO region (`"HK"` -> `"852"`).

    Raises:
        ValueError: the region is not in the phonenumbers metadata.
    """
    tables = dialing_tables()
    try:
        return tables.region_to_code[region.upper()]
    except KeyError:
        raise ValueError(f"unknown ISO region {region!r} (phonenumbers {tables.version})") from None


def region_rules(region: str) -> RegionRules:
    """The rules of one ISO region."""
    code = code_for_region(region)
    return next(r for r in dialing_tables().codes[code].regions if r.region == region.upper())


def known_regions() -> frozenset[str]:
    """Every ISO region the metadata knows."""
    return frozenset(dialing_tables().region_to_code)


__all__ = [
    "MAINLAND_CHINA_CODE",
    "MAX_E164_DIGITS",
    "METADATA_VERSION",
    "CallingCode",
    "ClaimPlan",
    "Desc",
    "DialingTables",
    "MobilePlan",
    "RegionRules",
    "claim_plan",
    "code_for_region",
    "dialing_tables",
    "known_regions",
    "mobile_plan",
    "region_rules",
]
