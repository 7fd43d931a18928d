"""Property tests: the zones quiet hours use for a number contain every zone phonenumbers gives it.

The oracle is `phonenumbers.timezone.time_zones_for_number`: a number whose type is geographical for its
country gets the zones of its prefix, any other type every zone of its calling code. The vectorised zones
(`tasks/time_zones.py`, `tasks/number_geography.py`) may hold more (over-cautious: the message waits for a
window open in a zone the number cannot be in), never fewer (the bug: texting someone at night). Checked on
every region's example number of every type, and on random valid numbers around them.

Zone unit tests are in tests/unit/test_send_window.py; the flow end to end in
tests/integration/test_quiet_hours.py.
"""

from __future__ import annotations

import random
from functools import cache

import phonenumbers
import polars as pl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber, PhoneNumberType, timezone

from tasks.number_geography import geographic_plan, mobiles_are_geographical
from tasks.time_zones import zone_names, zones_of_numbers

SLOW = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
TYPES = [
    kind
    for kind in vars(PhoneNumberType).values()
    if isinstance(kind, int) and kind != PhoneNumberType.UNKNOWN
]


def e164(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


@cache
def examples() -> tuple[PhoneNumber, ...]:
    """Every region's example number of every type, and the non-geographic codes' (`+800`, ...)."""
    found = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in TYPES
    ]
    found += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    return tuple(number for number in found if number is not None)


def oracle(digits: str) -> set[str]:
    """phonenumbers' zones for a number, without its `Etc/Unknown` (which asks for nothing)."""
    zones = timezone.time_zones_for_number(phonenumbers.parse("+" + digits))
    return set(zones) - {timezone.UNKNOWN_TIMEZONE}


def ours(numbers: list[str]) -> list[set[str]]:
    zones = zones_of_numbers(pl.Series(numbers, dtype=pl.String))
    return [set(zone_names(value)) if value else set() for value in zones]


def compare(numbers: list[str]) -> tuple[list[tuple[str, set[str]]], int]:
    """(the numbers given fewer zones than phonenumbers, with the zones missing; how many get more)."""
    expected = [oracle(number) for number in numbers]
    got = ours(numbers)
    fewer = [(n, e - g) for n, e, g in zip(numbers, expected, got, strict=True) if not e <= g]
    more = sum(e < g for e, g in zip(expected, got, strict=True))
    return fewer, more


def perturbed(rnd: random.Random, number: PhoneNumber, tries: int) -> list[str]:
    """Valid numbers made from `number` by replacing up to its last six digits at random."""
    nsn = phonenumbers.national_significant_number(number)
    code = str(number.country_code)
    found = []
    for _ in range(tries):
        keep = max(1, len(nsn) - rnd.randint(1, 6))
        candidate = nsn[:keep] + "".join(rnd.choice("0123456789") for _ in range(len(nsn) - keep))
        parsed = phonenumbers.parse(f"+{code}{candidate}")
        if phonenumbers.is_valid_number(parsed):
            found.append(e164(parsed))
    return found


class TestSupersetOfPhonenumbers:
    def test_every_example_number_of_every_type_and_region(self) -> None:
        """Mobile, fixed line, toll free, VoIP, ... of every region: never a zone fewer than phonenumbers."""
        numbers = [e164(number) for number in examples()]
        assert len(numbers) > 1_300
        fewer, _ = compare(numbers)
        assert fewer == []

    @SLOW
    @given(seed=st.integers(0, 2**32 - 1))
    def test_random_valid_numbers_around_every_example(self, seed: int) -> None:
        """Thousands of valid numbers of every region and type: never a zone fewer than phonenumbers."""
        rnd = random.Random(seed)  # hypothesis picks the seed; drawing the numbers through it is too slow
        numbers = [n for example in examples() for n in perturbed(rnd, example, tries=6)]
        assert len(numbers) > 5_000
        fewer, _ = compare(numbers)
        assert fewer == [], fewer[:10]

    @settings(max_examples=300, deadline=None)
    @given(
        example=st.sampled_from(examples()),
        tail=st.lists(st.sampled_from("0123456789"), min_size=1, max_size=6),
    )
    def test_one_valid_number_at_a_time(self, example: PhoneNumber, tail: list[str]) -> None:
        """Any example with its last digits replaced, when still valid, gets at least phonenumbers' zones."""
        nsn = phonenumbers.national_significant_number(example)
        replaced = min(len(tail), len(nsn) - 1)
        digits = f"{example.country_code}{nsn[: len(nsn) - replaced]}{''.join(tail[:replaced])}"
        assume(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
        [got] = ours([digits])
        assert oracle(digits) <= got

    def test_over_caution_is_rare(self) -> None:
        """Most numbers get exactly phonenumbers' zones: more only where the type check is loose."""
        rnd = random.Random(13)
        numbers = [n for example in examples() for n in perturbed(rnd, example, tries=6)]
        fewer, more = compare(numbers)
        assert fewer == []
        assert more <= 0.01 * len(numbers), more


class TestTheIssuesCases:
    def test_an_australian_mobile_may_be_anywhere_in_australia(self) -> None:
        """The bug: every `+61 4...` mobile counted as Sydney. Now Perth, Eucla and Lord Howe count too."""
        [zones] = ours(["61412345678"])
        assert {"Australia/Sydney", "Australia/Perth", "Australia/Eucla", "Australia/Lord_Howe"} <= zones

    def test_a_landline_keeps_the_zones_of_its_area(self) -> None:
        """A Perth landline (`+61 8 9...`) is not made to wait for Sydney."""
        [zones] = ours(["61892345678"])
        assert zones == oracle("61892345678")
        assert "Australia/Sydney" not in zones

    def test_a_new_york_number_keeps_new_york(self) -> None:
        """NANP numbers are fixed line or mobile, a geographical type: the area code decides."""
        assert ours(["12125550123", "13105550123"]) == [{"America/New_York"}, {"America/Los_Angeles"}]

    def test_mobiles_of_the_countries_in_the_issue_get_every_zone_of_their_code(self) -> None:
        """AU, ES, EC, GL, MN, NZ, RE, YT: the regions whose mobiles got fewer zones than phonenumbers."""
        numbers = [
            e164(phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE))  # type: ignore[arg-type]
            for region in ("AU", "ES", "EC", "GL", "MN", "NZ", "RE", "YT")
        ]
        fewer, _ = compare(numbers)
        assert fewer == []
        assert all(len(zones) > 1 for zones in ours(numbers))

    def test_where_mobiles_are_geographical_the_prefix_decides(self) -> None:
        """Brazil's mobiles follow area codes (phonenumbers' own list): a São Paulo mobile is not Manaus."""
        assert mobiles_are_geographical("55") and not mobiles_are_geographical("61")
        [zones] = ours(["5511961234567"])
        assert zones == oracle("5511961234567") == {"America/Sao_Paulo"}

    def test_the_type_check_is_reduced_without_losing_the_fixed_line_pattern(self) -> None:
        """The plan always keeps the description a geographical number must match."""
        assert geographic_plan("AU").positive and geographic_plan("BR").positive[1:]  # fixed, and mobile
