"""Masking of phone numbers (globe_sms/masking.py): the last four digits of every number in a value hidden,
the scalar and the vectorised paths agreeing. The rejects artifact of a real run is checked in
tests/{unit,integration}/test_spreadsheet_safety.py."""

from __future__ import annotations

import re

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globe_sms.masking import mask_number, mask_number_expr
from tasks.preview import build_preview
from tasks.report import masked_rejects

EXAMPLES = [
    ("85212345678", "8521234****"),
    ("+85212345678", "+8521234****"),
    ("+852 1234 5678", "+852 1234 ****"),
    ("+852-1234-5678", "+852-1234-****"),
    ("+852 12 34 56 78", "+852 12 34 ** **"),
    ("+1 (415) 555-2671", "+1 (415) 555-****"),
    ("+852\u00a01234\u00a05678", "+852\u00a01234\u00a0****"),
    ("07911 123456", "07911 12****"),
    ("447911123456", "44791112****"),
    ("85212345678/85287654321", "8521234****/8528765****"),
    ("+852 1234 5678, +852 8765 4321", "+852 1234 ****, +852 8765 ****"),
    ("85212345678; 85287654321", "8521234****; 8528765****"),
    ("85212345678 85287654321", "8521234**** 8528765****"),
    ("85212345678 - 85287654321", "8521234**** - 8528765****"),
    ("+85212345678+85287654321", "+8521234****+8528765****"),
    ("85212345678\n85287654321", "8521234****\n8528765****"),
    ("1234567 7654321 1111111", "123**** 765**** 111****"),
    ("call 85212345678 ext 12", "call 8521234**** ext 12"),
    ("8521234****", "8521234****"),
    ("12345", "1****"),
    ("1234", "****"),
    ("123", "****"),
    ("", "****"),
    ("n/a", "****"),
    ("=HYPERLINK(\"http://x\",\"y\")", "****"),
]


class TestMaskNumber:
    @pytest.mark.parametrize(("raw", "masked"), EXAMPLES)
    def test_hides_the_last_four_digits_of_every_number(self, raw: str, masked: str) -> None:
        """The documented examples, scalar and vectorised alike."""
        assert mask_number(raw) == masked
        assert pl.select(mask_number_expr(pl.lit(raw))).item() == masked

    def test_none_and_non_text_values(self) -> None:
        """None is `****`; an int is masked as its digits; a null in a frame is `****`."""
        assert mask_number(None) == "****"
        assert mask_number(85212345678) == "8521234****"
        frame = pl.DataFrame({"p": [None, 85212345678]}, schema={"p": pl.Int64})
        assert frame.select(mask_number_expr("p")).to_series().to_list() == ["****", "8521234****"]

    def test_masking_twice_changes_nothing(self) -> None:
        """A masked value (say in an error built from masked numbers) is not masked further."""
        for raw, _ in EXAMPLES:
            assert mask_number(mask_number(raw)) == mask_number(raw)


_ALPHABET = "0123456789" + "0123456789" + " -.()+/,;*\n\u00a0ab٣"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=40), min_size=1, max_size=20))
def test_scalar_and_vectorised_masking_agree(values: list[str]) -> None:
    """`mask_number` (Python re) and `mask_number_expr` (polars) give the same answer for any value."""
    vectorised = pl.select(mask_number_expr(pl.lit(pl.Series(values, dtype=pl.String)))).to_series()
    assert vectorised.to_list() == [mask_number(value) for value in values]


_NUMBER = st.text(alphabet="0123456789", min_size=8, max_size=15)
_SEPARATOR = st.sampled_from(["/", ", ", " ", " / ", ";", "\n", " - ", " or ", "+", " +"])


@settings(max_examples=300, deadline=None)
@given(first=_NUMBER, second=_NUMBER, separator=_SEPARATOR, plus=st.booleans())
def test_a_cell_holding_two_numbers_shows_neither_whole(
    first: str, second: str, separator: str, plus: bool
) -> None:
    """Whatever joins them, neither number of a two-number cell survives masking."""
    prefix = "+" if plus else ""
    masked = mask_number(f"{prefix}{first}{separator}{prefix}{second}")
    visible = re.sub(r"[^0-9*]", "", masked)
    assert first not in visible and second not in visible, masked


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.text(alphabet="0123456789", min_size=1, max_size=6), min_size=1, max_size=5),
    joiner=st.sampled_from([" ", "-", ".", " - "]),
)
def test_a_formatted_number_keeps_all_but_its_last_four_digits(groups: list[str], joiner: str) -> None:
    """Spaces and dashes inside one number do not shift what is hidden: exactly its last four digits."""
    raw = "+" + joiner.join(groups)
    digits = "".join(groups)
    masked = mask_number(raw)
    if len(digits) <= 4:
        assert re.sub(r"[^0-9]", "", masked) == ""
    else:
        assert re.sub(r"[^0-9*]", "", masked) == digits[:-4] + "****"
        assert len(masked) == len(raw)


def test_rejects_artifact_masks_a_raw_cell_with_two_numbers() -> None:
    """The rejects table an artifact shows hides both numbers of a raw cell."""
    rejects = pl.DataFrame(
        {
            "mobile": ["+852 1234 5678, +852 8765 4321", "85212345678/85287654321"],
            "source_row": [1, 2],
            "reasons": [["invalid_characters"], ["too_long"]],
        }
    )
    shown = masked_rejects(rejects, "mobile")["phone"].to_list()
    assert shown == ["+852 1234 ****, +852 8765 ****", "8521234****/8528765****"]


def test_preview_samples_mask_the_number_inside_the_message() -> None:
    """A template that prints `{phone}` does not put the whole number in the preview's samples."""
    messages = pl.DataFrame(
        {
            "phone": ["85261234567"],
            "country": ["HK"],
            "message": ["Your number +85261234567 is registered"],
            "encoding": ["GSM7"],
            "segments": [1],
        }
    )
    preview = build_preview(messages, {}, None, batches=1, calls_per_second=1.0)
    assert preview.samples == [
        {
            "to": "8526123****",
            "country": "HK",
            "encoding": "GSM7",
            "segments": 1,
            "message": "Your number +8526123**** is registered",
        }
    ]
