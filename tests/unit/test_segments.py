"""Unit tests for tasks.segments: GSM-7/UCS-2 detection and segment counts, scalar and vectorised.

smsutil (a test-only dependency) is the oracle on random strings. Where it departs from the documented rules
(an empty message, a raw ESC character) the documented rule is tested on its own; see `TestOracleCorners`.
Rendering is tested in tests/unit/test_render.py.
"""

from __future__ import annotations

import polars as pl
import pytest
import smsutil
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.segment_limits import SEGMENT_LIMITS
from tasks.segments import (
    GSM_ALPHABET,
    GSM_BASIC,
    GSM_EXTENSION,
    count_segments,
    describe_text,
    encoding_and_segments,
    non_gsm_chars,
)

NON_GSM_BMP = "çëáíóúõãâêîôûłŁśźżčšžřğışđươễОльгаПривет李伟你好こんにちは안녕’‘“”—–…«»`´\u00a0\u200b"
ASTRAL = "😀🎉👍🏽🇭🇰𝄞𠀋🤖"


def gsm_text(*, extension: bool = True) -> st.SearchStrategy[str]:
    alphabet = GSM_BASIC + (GSM_EXTENSION if extension else "")
    return st.text(alphabet=st.sampled_from(alphabet), max_size=480)


# A mix weighted toward the interesting characters, and lengths that straddle 70/134/153/160/306 boundaries.
mixed_char = st.one_of(
    st.sampled_from(GSM_BASIC),
    st.sampled_from(GSM_EXTENSION),
    st.sampled_from(NON_GSM_BMP),
    st.sampled_from(ASTRAL),
    st.characters(codec="utf-8", exclude_characters="\x1b"),
)
mostly_gsm = st.lists(
    st.one_of(st.sampled_from(GSM_BASIC), st.sampled_from(GSM_EXTENSION)), min_size=0, max_size=480
).map("".join)
mixed_text = st.one_of(
    mostly_gsm,
    st.text(alphabet=mixed_char, max_size=420),
    st.tuples(mostly_gsm, st.sampled_from(NON_GSM_BMP + ASTRAL), mostly_gsm).map("".join),
    st.tuples(st.integers(0, 340), st.sampled_from("a€😀ç"), st.integers(0, 80), st.sampled_from("€😀a")).map(
        lambda t: t[1] * t[0] + t[3] * t[2]
    ),
)


def oracle(text: str) -> tuple[str, int, int]:
    """(encoding, parts, units) according to smsutil."""
    result = smsutil.split(text)
    if result.encoding == "gsm0338":
        return "GSM7", len(result.parts), result.total_bytes
    return "UCS2", len(result.parts), result.total_bytes // 2


def vectorised(texts: list[str | None]) -> pl.DataFrame:
    return encoding_and_segments(pl.DataFrame({"message": texts}, schema={"message": pl.String}))


def codec_culprits(text: str) -> str:
    """Distinct characters the gsm0338 codec cannot encode (an oracle independent of our tables)."""
    bad: dict[str, None] = {}
    for char in text:
        try:
            encoded = char.encode("gsm03.38")
        except UnicodeEncodeError:
            bad[char] = None
            continue
        if encoded == b"\x1b":
            bad[char] = None
    return "".join(bad)


class TestAlphabet:
    def test_tables_come_from_the_codec(self) -> None:
        """Every basic char encodes to one byte and every extension char to ESC + byte."""
        assert len(GSM_BASIC) == 127
        for char in GSM_BASIC:
            assert len(char.encode("gsm03.38")) == 1, repr(char)
        for char in GSM_EXTENSION:
            assert char.encode("gsm03.38")[:1] == b"\x1b" and len(char.encode("gsm03.38")) == 2, repr(char)

    def test_extension_table_is_the_documented_one(self) -> None:
        """Form feed, ^ { } \\ [ ~ ] | and the euro sign are the extension characters."""
        assert set(GSM_EXTENSION) == set("\f^{}\\[~]|€")

    @pytest.mark.parametrize("char", ["§", "Ç", "¤", "Δ", "ñ", "@", "£", "\n", "\r"])
    def test_documented_gsm_characters_are_in(self, char: str) -> None:
        """`§` (not a backtick), capital `Ç`, `¤`, Greek capitals and newlines are GSM."""
        assert char in GSM_ALPHABET

    @pytest.mark.parametrize("char", ["`", "ç", "ë", "’", "\x1b", "\t"])
    def test_documented_non_gsm_characters_are_out(self, char: str) -> None:
        """Backtick, small `ç`, `ë`, the typographic apostrophe, a raw ESC and TAB are not GSM."""
        assert char not in GSM_ALPHABET


class TestCountSegments:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a" * 160, ("GSM7", 1)),
            ("a" * 161, ("GSM7", 2)),
            ("a" * 306, ("GSM7", 2)),
            ("a" * 307, ("GSM7", 3)),
            ("€" * 80, ("GSM7", 1)),  # 160 septets: extension chars count 2
            ("€" * 81, ("GSM7", 2)),
            ("Ç" * 160, ("GSM7", 1)),
            ("ç" * 70, ("UCS2", 1)),
            ("ç" * 71, ("UCS2", 2)),
            ("ç" * 134, ("UCS2", 2)),
            ("ç" * 135, ("UCS2", 3)),
            ("😀" * 35, ("UCS2", 1)),  # 70 UTF-16 units: a surrogate pair counts 2
            ("😀" * 36, ("UCS2", 2)),
            ("a" * 152 + "€" * 77, ("GSM7", 3)),  # 306 septets, but no part may split an ESC pair
            ("a" * 66 + "😀" * 34, ("UCS2", 3)),  # 134 units, but no part may split a surrogate pair
            ("", ("GSM7", 1)),
        ],
    )
    def test_limits_and_boundaries(self, text: str, expected: tuple[str, int]) -> None:
        """160/153 septets, 70/67 units; extension chars and surrogate pairs count 2 and are never split."""
        assert count_segments(text) == expected

    def test_describe_lists_culprits_in_order_once(self) -> None:
        """The characters forcing UCS-2 are listed once each, in order of appearance."""
        info = describe_text("It’s Zoë’s café ’")
        assert info.encoding == "UCS2"
        assert info.ucs2_chars == "’ë"
        assert info.chars == len("It’s Zoë’s café ’")

    def test_gsm_message_has_no_culprits(self) -> None:
        """A GSM-7 message reports no UCS-2 characters and counts septets."""
        info = describe_text("Total: 5€ [ok]")
        assert (info.encoding, info.chars, info.ucs2_chars) == ("GSM7", 17, "")

    @settings(max_examples=400, deadline=None)
    @given(mixed_text)
    def test_matches_smsutil(self, text: str) -> None:
        """Encoding, part count and size agree with smsutil on random strings (empty: see corners)."""
        if not text:
            return
        info = describe_text(text)
        assert (info.encoding, info.segments, info.chars) == oracle(text)

    @settings(max_examples=200, deadline=None)
    @given(mixed_text)
    def test_culprits_match_the_codec(self, text: str) -> None:
        """`ucs2_chars` is exactly the set of characters the gsm0338 codec cannot encode."""
        assert non_gsm_chars(text) == codec_culprits(text)


class TestOracleCorners:
    """Where smsutil departs from the documented rules, the documented rule wins."""

    def test_smsutil_calls_empty_text_unicode_but_it_is_gsm(self) -> None:
        """smsutil's GSM regex needs one character; an empty text has nothing forcing UCS-2."""
        assert smsutil.split("").encoding == "utf_16_be"
        assert count_segments("") == ("GSM7", 1)

    def test_smsutil_accepts_a_raw_escape_but_it_forces_ucs2(self) -> None:
        """smsutil lists ESC (0x1B) as a basic character; sent alone it would swallow the next character."""
        assert smsutil.split("a\x1bb").encoding == "gsm0338"
        assert describe_text("a\x1bb").encoding == "UCS2"
        assert describe_text("a\x1bb").ucs2_chars == "\x1b"


class TestVectorised:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(mixed_text, min_size=1, max_size=40))
    def test_matches_the_scalar_rules(self, texts: list[str]) -> None:
        """The vectorised columns equal `describe_text` row by row, ambiguous boundary rows included."""
        out = vectorised(list(texts))
        expected = [describe_text(t) for t in texts]
        assert out["encoding"].to_list() == [e.encoding for e in expected]
        assert out["segments"].to_list() == [e.segments for e in expected]
        assert out["chars"].to_list() == [e.chars for e in expected]
        assert out["ucs2_chars"].to_list() == [e.ucs2_chars for e in expected]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(mixed_text.filter(bool), min_size=1, max_size=40))
    def test_matches_smsutil(self, texts: list[str]) -> None:
        """The vectorised counts agree with smsutil, the independent oracle."""
        out = vectorised(list(texts))
        got = list(zip(out["encoding"], out["segments"], out["chars"], strict=True))
        assert got == [oracle(t) for t in texts]

    def test_ceil_formula_alone_would_be_wrong_here(self) -> None:
        """A row where a pair sits on a part boundary gets the exact count, not ceil(units / 153)."""
        text = "a" * 152 + "€" * 77
        out = vectorised([text, "a" * 306])
        assert out["chars"].to_list() == [306, 306]
        assert out["segments"].to_list() == [3, 2]

    def test_null_message_gives_nulls(self) -> None:
        """A null message has no encoding, segments, size or culprits."""
        out = vectorised([None, "hi"])
        assert out.row(0) == (None, None, None, None, None)
        assert out.row(1) == ("hi", "GSM7", 1, 2, "")

    def test_output_columns_and_types(self) -> None:
        """Adds exactly the four documented columns, with integer counts, and keeps the others."""
        frame = pl.DataFrame({"id": [1, 2], "message": ["Hi", "你好"]})
        out = encoding_and_segments(frame)
        assert out.columns == ["id", "message", "encoding", "segments", "chars", "ucs2_chars"]
        assert out.schema["segments"] == pl.Int64 and out.schema["chars"] == pl.Int64
        assert out["ucs2_chars"].to_list() == ["", "你好"]

    def test_lazy_frame_stays_lazy_and_expression_input_works(self) -> None:
        """A LazyFrame comes back lazy; the message may be an expression."""
        lazy = pl.LazyFrame({"a": ["x" * 100], "b": ["y" * 100]})
        out = encoding_and_segments(lazy, pl.concat_str("a", "b"))
        assert isinstance(out, pl.LazyFrame)
        assert out.collect()["segments"].to_list() == [2]

    def test_limits_table(self) -> None:
        """The limits are Alibaba's: 160/153 for GSM-7 and 70/67 for UCS-2."""
        assert SEGMENT_LIMITS == {"GSM7": (160, 153), "UCS2": (70, 67)}
