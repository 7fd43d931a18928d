"""Property tests: validation against phonenumbers as the oracle, and invariants of the implementation.

The oracle for "sendable" is phonenumbers' own answer: the number parses, `is_valid_number`, its type is
MOBILE or FIXED_LINE_OR_MOBILE, it is not +86 and not a non-geographic code. The vectorised rules must agree
on at least 99.9% of random valid and invalid numbers, on the verdict and on the country.

The tricky-number table is in tests/unit/test_validate.py; normalisation unit tests in
tests/unit/test_normalise.py.
"""

from __future__ import annotations

import itertools
import random
import re

import phonenumbers
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from globe_sms.validation_rules import ValidationRules
from schemas.dialing_codes import dialing_tables, region_rules
from schemas.digit_languages import contains, overlaps
from tasks.normalise import normalise_phones
from tasks.validate import validate_recipients

MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
REGIONS = sorted(dialing_tables().region_to_code)
AGREEMENT = 0.999
SLOW = settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def oracle(raw: str, region: str | None = None) -> str | None:
    """phonenumbers' verdict: the ISO region of a sendable mobile number, else None."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    code = str(number.country_code)
    if code == "86" or code in dialing_tables().non_geographic:
        return None
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in MOBILE_TYPES:
        return None
    return phonenumbers.region_code_for_number(number)


def ours(raws: list[str], **rules: object) -> list[str | None]:
    """The vectorised verdict per input (duplicates count as their first occurrence's verdict)."""
    frame = pl.DataFrame({"p": raws}, schema={"p": pl.String})
    result = validate_recipients(frame, "p", ValidationRules(**rules))  # type: ignore[arg-type]
    verdict: list[str | None] = [None] * len(raws)
    for row, country in result.valid.select("source_row", "country").iter_rows():
        verdict[row - 1] = country
    first_row = result.rejects.filter(pl.col("reasons").list.contains("duplicate"))
    for row, text in first_row.select("source_row", "reason_text").iter_rows():
        first = int(re.search(r"duplicate of row (\d+)", text).group(1))  # type: ignore[union-attr]
        verdict[row - 1] = verdict[first - 1]
    return verdict


def _metadata(region: str) -> phonenumbers.PhoneMetadata:
    md = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert md is not None
    return md


def _example(region: str) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    assert example is not None
    return example


def _mobile_nsn(rnd: random.Random, region: str) -> str | None:
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    return phonenumbers.national_significant_number(example) if example else None


def random_number(rnd: random.Random) -> tuple[str, str]:
    """(E.164 digits, a formatted raw string): near-valid mobiles, random digits and off-by-one lengths."""
    region = rnd.choice(REGIONS)
    code = dialing_tables().region_to_code[region]
    nsn = _mobile_nsn(rnd, region)
    kind = rnd.random()
    if nsn is None or kind < 0.25:  # random digits after a real code: mostly invalid
        nsn = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(2, 13)))
    else:  # a mobile example with a random tail: mostly valid
        keep = max(1, len(nsn) - rnd.randint(1, 7))
        nsn = nsn[:keep] + "".join(rnd.choice("0123456789") for _ in range(len(nsn) - keep))
        if kind < 0.35:
            nsn += rnd.choice("0123456789")
        elif kind < 0.45:
            nsn = nsn[:-1]
        elif kind < 0.50:
            nsn = "0" + nsn  # a trunk prefix after the code
    digits = code + nsn
    style = rnd.random()
    if style < 0.6:
        raw = "+" + digits
    elif style < 0.8:
        raw = "00" + digits
    else:
        raw = f"+{code} " + " ".join(nsn[i : i + 3] for i in range(0, len(nsn), 3))
    return digits, raw


class TestAgreementWithPhonenumbers:
    @SLOW
    @given(seed=st.integers(0, 2**32 - 1))
    def test_strict_mode_agrees_on_random_international_numbers(self, seed: int) -> None:
        """On 5,000 random numbers per example, verdict and country match phonenumbers >= 99.9% of times."""
        rnd = random.Random(seed)  # hypothesis picks the seed; drawing 5,000 numbers through it is too slow
        numbers = [random_number(rnd) for _ in range(5_000)]
        expected = [oracle("+" + digits) for digits, _ in numbers]
        got = ours([raw for _, raw in numbers])
        agree = sum(e == g for e, g in zip(expected, got, strict=True))
        disagreements = [(n, e, g) for n, e, g in zip(numbers, expected, got, strict=True) if e != g][:10]
        assert agree / len(numbers) >= AGREEMENT, disagreements
        assert 0.2 < sum(e is not None for e in expected) / len(expected) < 0.8  # both kinds are exercised

    @SLOW
    @given(seed=st.integers(0, 2**32 - 1), region=st.sampled_from(["GB", "US", "DE", "IT", "RU", "AU", "HK"]))
    def test_default_region_agrees_on_national_numbers(self, seed: int, region: str) -> None:
        """National-format input with a default region matches `phonenumbers.parse(raw, region)`."""
        rnd = random.Random(seed)
        prefix = _metadata(region).national_prefix or ""
        raws = []
        for _ in range(2_000):
            digits, _ = random_number(rnd)
            nsn = digits[len(dialing_tables().region_to_code[region]) :] if rnd.random() < 0.3 else None
            example = _mobile_nsn(rnd, region) or "1"
            tail = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 6)))
            national = nsn or (example[: max(1, len(example) - len(tail))] + tail)
            raws.append((prefix if rnd.random() < 0.7 else "") + national)
        expected = [oracle(raw, region) for raw in raws]
        got = ours(raws, default_region=region)
        agree = sum(e == g for e, g in zip(expected, got, strict=True))
        disagreements = [(r, e, g) for r, e, g in zip(raws, expected, got, strict=True) if e != g][:10]
        assert agree / len(raws) >= AGREEMENT, disagreements

    def test_lenient_mode_disagrees_where_strict_mode_does_not(self) -> None:
        """The strict patterns matter: lengths alone accept numbers phonenumbers rejects (the +1 hole)."""
        rnd = random.Random(4)
        numbers = [random_number(rnd) for _ in range(3_000)]
        expected = [oracle("+" + d) for d, _ in numbers]
        lenient = ours([raw for _, raw in numbers], strict_mobile=False)
        false_accepts = sum(e is None and g is not None for e, g in zip(expected, lenient, strict=True))
        assert false_accepts > 0.05 * len(numbers)


@st.composite
def formatted(draw: st.DrawFn) -> tuple[str, str]:
    """A valid mobile number (per phonenumbers) and one of its many spellings."""
    region = draw(st.sampled_from(["GB", "HK", "US", "DE", "FR", "SG", "TW", "MO", "KZ", "BR", "AU", "IT"]))
    example = _example(region)
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
    code = str(example.country_code)
    nsn = e164[len(code) :]
    cuts = sorted(draw(st.lists(st.integers(1, len(nsn) - 1), max_size=3, unique=True)))
    parts = [nsn[a:b] for a, b in itertools.pairwise([0, *cuts, len(nsn)])]
    separator = draw(st.sampled_from([" ", "-", ".", "/", "\u00a0", " - "]))
    body = separator.join(parts)
    if draw(st.booleans()):
        body = f"({parts[0]}) " + separator.join(parts[1:]) if len(parts) > 1 else body
    prefix = draw(st.sampled_from(["+", "00", "+ ", "00 "]))
    trunk = draw(st.sampled_from(["", " (0)"])) if _metadata(region).national_prefix == "0" else ""
    padding = draw(st.sampled_from(["", " ", "\t", "  "]))
    return e164, f"{padding}{prefix}{code}{trunk} {body}{padding}"


class TestInvariants:
    @settings(max_examples=150, deadline=None)
    @given(number=formatted())
    def test_every_spelling_normalises_to_the_same_number(self, number: tuple[str, str]) -> None:
        """Separators, brackets, `00`, `(0)` and padding never change the number or the verdict."""
        e164, raw = number
        result = validate_recipients(pl.DataFrame({"p": [raw]}), "p")
        assert result.valid["phone"].to_list() == [e164], result.rejects.to_dicts()

    @settings(max_examples=100, deadline=None)
    @given(
        raws=st.lists(st.one_of(st.none(), st.text(alphabet="0123456789+ -()x.E", max_size=18)), max_size=40)
    )
    def test_outputs_partition_the_input(self, raws: list[str | None]) -> None:
        """Every row lands in exactly one output; rejects always say why; valid numbers are unique."""
        result = validate_recipients(pl.DataFrame({"p": raws}, schema={"p": pl.String}), "p")
        rows = sorted(result.valid["source_row"].to_list() + result.rejects["source_row"].to_list())
        assert rows == list(range(1, len(raws) + 1))
        assert all(len(r) > 0 for r in result.rejects["reasons"].to_list())
        assert result.valid["phone"].n_unique() == result.valid.height
        assert sum(result.reasons.values()) >= result.rejects.height


RAW_VALUES = st.one_of(
    st.none(),
    st.text(alphabet="0123456789+ -().E\u00a0x", max_size=16),
    st.from_regex(r"\A\+[0-9]{1,15}\Z"),
)


class TestNormaliseFastPath:
    @settings(max_examples=100, deadline=None)
    @given(raws=st.lists(RAW_VALUES, max_size=30), region=st.sampled_from([None, "GB", "US", "AU"]))
    def test_eager_fast_path_equals_the_full_rules(self, raws: list[str | None], region: str | None) -> None:
        """The DataFrame fast path for clean `+digits` rows gives exactly what every rule gives."""
        frame = pl.DataFrame({"p": raws}, schema={"p": pl.String})
        eager = normalise_phones(frame, "p", default_region=region)
        lazy = normalise_phones(frame.lazy(), "p", default_region=region).collect()
        assert eager.equals(lazy)


def _regex(draw: st.DrawFn, depth: int = 0) -> str:
    atoms = ["\\d", "[0-4]", "[5-9]", "1", "2", "[13579]", "0", "[0-25-7]"]
    kind = draw(st.integers(0, 3 if depth < 2 else 0))
    if kind == 0:
        return draw(st.sampled_from(atoms))
    if kind == 1:
        return "(?:" + "|".join(_regex(draw, depth + 1) for _ in range(draw(st.integers(2, 3)))) + ")"
    if kind == 2:
        return _regex(draw, depth + 1) + _regex(draw, depth + 1)
    low = draw(st.integers(0, 2))
    high = low + draw(st.integers(0, 2))
    return f"(?:{_regex(draw, depth + 1)}){{{low},{high}}}"


@st.composite
def digit_language(draw: st.DrawFn) -> tuple[str, tuple[int, ...]]:
    """A small metadata-like pattern with its possible lengths."""
    lengths = tuple(sorted(draw(st.sets(st.integers(1, 4), min_size=1))))
    return _regex(draw), lengths


ALL_STRINGS = ["".join(p) for n in range(1, 5) for p in itertools.product("0123456789", repeat=n)]


def _language(desc: tuple[str, tuple[int, ...]]) -> set[str]:
    pattern = re.compile(desc[0])
    return {s for s in ALL_STRINGS if len(s) in desc[1] and pattern.fullmatch(s)}


class TestDigitLanguages:
    @settings(max_examples=150, deadline=None)
    @given(left=digit_language(), right=digit_language())
    def test_overlap_and_containment_match_brute_force(
        self, left: tuple[str, tuple[int, ...]], right: tuple[str, tuple[int, ...]]
    ) -> None:
        """The automaton answers exactly what enumerating every string up to length 4 answers."""
        a, b = _language(left), _language(right)
        assert overlaps(left, right) == bool(a & b)
        assert contains(right, left) == (a <= b)

    @pytest.mark.parametrize("region", ["GB", "US", "HK", "DE", "BR", "IN", "CN"])
    def test_mobile_ranges_never_overlap_other_types_here(self, region: str) -> None:
        """Why strict mode runs one regex per row: no excluding type shares a mobile number here."""
        rules = region_rules(region)
        assert rules.mobile is not None and rules.general is not None
        mobile = (rules.mobile.pattern, rules.mobile.lengths)
        for desc in rules.excluding:
            assert not overlaps(mobile, (desc.pattern, desc.lengths))
        assert contains((rules.general.pattern, rules.general.lengths), mobile)
