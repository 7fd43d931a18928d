"""Unit tests for phone normalisation (`tasks/normalise.py`) and per-country rules (`tasks/mobile_rules.py`).

The end-to-end outcome of each tricky number (valid or which reasons) is in tests/unit/test_validate.py;
agreement
with phonenumbers on random numbers is in tests/unit/test_validate_properties.py.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from schemas.dialing_codes import dialing_tables
from tasks.mobile_rules import check_mobile_numbers
from tasks.normalise import NORMALISED_COLUMNS, normalise_phones, read_csv_as_strings, scan_csv_as_strings

FLAGS = ("_empty", "_letters", "_invalid_characters", "_damage", "_no_country_code")


def normalise(values: list[object], **kwargs: object) -> list[dict[str, object]]:
    """Normalise a list of raw values and return one dict of outputs per value."""
    frame = pl.DataFrame({"p": values}, schema={"p": pl.String})
    return normalise_phones(frame, "p", **kwargs).select(NORMALISED_COLUMNS).to_dicts()  # type: ignore[arg-type]


def outcome(row: dict[str, object]) -> str:
    """The digits, or the name of the one flag that is set."""
    set_flags = [name for name in FLAGS if row[name]]
    assert len(set_flags) <= 1, row
    if set_flags:
        assert row["_digits"] is None
        return set_flags[0]
    assert row["_digits"] is not None
    return str(row["_digits"])


class TestNormalisePhones:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("+852 6123 4567", "85261234567"),
            ("+85261234567", "85261234567"),
            ("  +852 6123 4567  ", "85261234567"),
            ("+1 (201) 555-0123", "12015550123"),
            ("+44 (0)7400 123456", "447400123456"),
            ("+44 (0) 7400-123-456", "447400123456"),
            ("0044 7400 123456", "447400123456"),
            ("00 44 (0)7400.123.456", "447400123456"),
            ("+49/151/23456789", "4915123456789"),
            ("+852\u00a06123\u00a04567", "85261234567"),  # no-break spaces from a spreadsheet
            ("+852\u200b6123\u20134567", "85261234567"),  # zero-width space and an en dash
            ("[+852] 6123 4567", "85261234567"),
            ("+39 06 1234 5678", "390612345678"),  # Italy's leading 0 is part of the number
            ("+44 07400 123456", "4407400123456"),  # the trunk 0 is dropped later, per country
            ("'+852 6123 4567", "85261234567"),  # Excel's text apostrophe
            ('="0085261234567"', "85261234567"),  # the ="..." trick that keeps leading zeros
        ],
    )
    def test_separators_and_international_prefixes_give_e164_digits(self, raw: str, expected: str) -> None:
        """Spaces, dashes, dots, brackets, slashes and `(0)` go; `+` and `00` both mean international."""
        assert outcome(normalise([raw])[0]) == expected

    @pytest.mark.parametrize(
        ("raw", "flag"),
        [
            (None, "_empty"),
            ("", "_empty"),
            ("   ", "_empty"),
            ("- ( ) .", "_empty"),
            ("4.47911E+11", "_damage"),
            ("4,47911E+11", "_damage"),
            ("4.47911e11", "_damage"),
            ("+4.47911E+11", "_damage"),
            ("447400123456.0", "_damage"),
            ("447400123456.00", "_damage"),
            ("call me", "_letters"),
            ("+44 7400 123456 ext. 12", "_letters"),
            ("tel:+447400123456", "_letters"),
            ("1-800-FLOWERS", "_letters"),
            ("+44 7400#123456", "_invalid_characters"),
            ("++447400123456", "_invalid_characters"),
            ("+44 7400 123456+", "_invalid_characters"),
            ("*123#", "_invalid_characters"),
            ("٠٥٠١٢٣٤٥٦٧", "_invalid_characters"),  # Arabic-Indic digits are not [0-9]
            ("13800138000", "_no_country_code"),
            ("07400 123456", "_no_country_code"),
            ("447400123456", "_no_country_code"),
            ("011 44 7400 123456", "_no_country_code"),  # 011 is an exit code only for a NANP default
        ],
    )
    def test_unreadable_values_get_exactly_one_flag(self, raw: str | None, flag: str) -> None:
        """Every unreadable value gets one flag and no digits."""
        assert outcome(normalise([raw])[0]) == flag

    def test_digits_only_input_never_gets_a_plus(self) -> None:
        """`13800138000` without a default region is not read as +1 380... (the 86-block bypass)."""
        assert outcome(normalise(["13800138000"])[0]) == "_no_country_code"

    def test_numeric_source_flags_every_value_as_damage(self) -> None:
        """A phone column that was int/float cannot have kept its `+` or `00`."""
        rows = normalise(["447400123456", None], numeric_source=True)
        assert [outcome(r) for r in rows] == ["_damage", "_empty"]

    @pytest.mark.parametrize(
        ("raw", "region", "expected"),
        [
            ("07400 123456", "GB", "4407400123456"),  # trunk 0 dropped later by the per-country rules
            ("7400 123456", "GB", "447400123456"),
            ("447400123456", "GB", "447400123456"),  # already carries GB's code: not doubled
            ("+852 6123 4567", "GB", "85261234567"),  # explicit international wins over the default
            ("011 44 7400 123456", "US", "447400123456"),  # NANP exit code
            ("011 0 123", "US", "10110123"),  # an IDD followed by 0 is not an IDD
            ("810 44 7400 123456", "RU", "447400123456"),  # RU/KZ exit code
            ("0011 44 7400 123456", "AU", "447400123456"),
            ("2015550123", "US", "12015550123"),
            ("13800138000", "CN", "8613800138000"),
            ("312 345 6789", "IT", "393123456789"),
        ],
    )
    def test_default_region_reads_national_numbers(self, raw: str, region: str, expected: str) -> None:
        """With a default region, national numbers get its code and its own exit code is understood."""
        assert outcome(normalise([raw], default_region=region)[0]) == expected

    def test_normalise_works_on_lazy_frames(self) -> None:
        """The same columns come out of a LazyFrame."""
        lazy = normalise_phones(pl.LazyFrame({"p": ["+852 6123 4567"]}), "p")
        assert isinstance(lazy, pl.LazyFrame)
        assert lazy.collect()["_digits"].to_list() == ["85261234567"]


class TestReadCsvAsStrings:
    CSV = "name,phone\nAnn,00447400123456\nBo,4.47911E+11\nCy,+852 6123 4567\n"

    def test_phone_column_keeps_its_text(self, tmp_path: Path) -> None:
        """Leading zeros, `+` and Excel notation survive as text."""
        path = tmp_path / "r.csv"
        path.write_text(self.CSV)
        frame = read_csv_as_strings(path)
        assert frame.schema["phone"] == pl.String
        assert frame["phone"].to_list() == ["00447400123456", "4.47911E+11", "+852 6123 4567"]
        assert scan_csv_as_strings(path).collect().equals(frame)

    def test_default_inference_destroys_numbers(self, tmp_path: Path) -> None:
        """The trap being avoided: inference turns a digits-only column into Int64 and drops the 00."""
        path = tmp_path / "r.csv"
        path.write_text("phone\n00447400123456\n0085261234567\n")
        assert pl.read_csv(path)["phone"].dtype.is_integer()
        assert read_csv_as_strings(path)["phone"].to_list() == ["00447400123456", "0085261234567"]


def mobile(values: list[str | None], strict: bool = True) -> list[dict[str, object]]:
    """Run the per-country rules on raw numbers."""
    frame = normalise_phones(pl.DataFrame({"p": values}, schema={"p": pl.String}).with_row_index("_i"), "p")
    return check_mobile_numbers(frame, strict=strict).to_dicts()


class TestMobileRules:
    @pytest.mark.parametrize(
        ("raw", "nsn"),
        [
            ("+44 07400 123456", "7400123456"),  # trunk prefix dropped, as phonenumbers does
            ("+39 06 1234 5678", "0612345678"),  # Italy has no trunk prefix: the 0 stays
            ("+1 1 201 555 0123", "2015550123"),  # NANP trunk 1
            ("+54 9 11 2345 6789", "91123456789"),
            ("+54 011 15 2345 6789", "91123456789"),  # Argentina's transform rule: 0 11 15 -> 9 11
            ("+241 06 03 12 36", "06031236"),  # viable as it is: kept
            ("+241 060 31 23 61", "60312361"),  # Gabon's transform rule drops the 0
        ],
    )
    def test_national_significant_number_follows_phonenumbers_parse(self, raw: str, nsn: str) -> None:
        """Trunk prefixes and transform rules are applied per country, only when the result is viable."""
        assert mobile([raw])[0]["_nsn"] == nsn

    @pytest.mark.parametrize(
        ("raw", "region"),
        [
            ("+1 201 555 0123", "US"),
            ("+1 506 234 5678", "CA"),
            ("+1 876 210 1234", "JM"),
            ("+7 912 345 6789", "RU"),
            ("+7 771 000 9998", "KZ"),
            ("+44 7400 123456", "GB"),
            ("+358 18 1234567", "AX"),
            ("+852 5123 4567", "HK"),
            ("+853 6612 3456", "MO"),
            ("+886 912 345 678", "TW"),
            ("+86 131 2345 6789", "CN"),
        ],
    )
    def test_shared_calling_codes_resolve_to_the_region(self, raw: str, region: str) -> None:
        """+1 and +7 are shared: the area code or leading digits decide the region."""
        assert mobile([raw])[0]["_region"] == region

    def test_strict_mode_rejects_a_chinese_mobile_behind_plus_one(self) -> None:
        """+1 380... has no NANP area code 380; lenient mode lets it through as US (the documented hole)."""
        strict, lenient = mobile(["+13800138000"])[0], mobile(["+13800138000"], strict=False)[0]
        assert strict["_bad_pattern"] and strict["_region"] is None
        assert not lenient["_bad_pattern"] and lenient["_region"] == "US"

    def test_length_flags_compare_with_mobile_lengths(self) -> None:
        """Too short, too long and in-between lengths are told apart."""
        rows = mobile(["+852 6123 456", "+852 6123 45678", "+31 61234 56789", "+31 6 1234 5678"])
        flags = [(r["_too_short"], r["_too_long"], r["_invalid_length"]) for r in rows]
        assert flags == [
            (True, False, False),
            (False, True, False),
            (False, False, True),
            (False, False, False),
        ]

    def test_unknown_and_non_geographic_codes_are_flagged(self) -> None:
        """+999 is unassigned; +882 is a non-geographic (satellite/IoT) code."""
        unknown, satellite, readable = mobile(["+999 1234 5678", "+882 1234 5678", "+852 5123 4567"])
        assert unknown["_unknown_code"] and unknown["_cc"] is None
        assert satellite["_non_geographic"] and satellite["_region"] is None
        assert not readable["_unknown_code"] and not readable["_non_geographic"]

    def test_rows_keep_their_order_and_nulls_pass_through(self) -> None:
        """The output is aligned with the input: no join, no reordering."""
        rows = mobile([None, "+1 201 555 0123", "+852 5123 4567", "bad", "+7 912 345 6789"])
        assert [r["_i"] for r in rows] == [0, 1, 2, 3, 4]
        assert [r["_region"] for r in rows] == [None, "US", "HK", None, "RU"]
        assert not any(r["_bad_pattern"] or r["_too_short"] for r in (rows[0], rows[3]))

    def test_an_empty_frame_is_fine(self) -> None:
        """No rows, no errors."""
        assert mobile([]) == []

    def test_calling_code_of_every_prefix_matches_a_longest_code_search(self) -> None:
        """The prefix index finds the code a regex over every known code finds, for 1- to 16-digit strings."""
        codes = dialing_tables().all_codes
        digits = [f"{n:0{size}d}" for size in (1, 2, 3) for n in range(10**size)]
        digits += [head + "5123456789012"[: 13 - len(head)] for head in digits[-1000:]]
        found = check_mobile_numbers(pl.DataFrame({"_digits": digits}))["_cc"].cast(pl.String).to_list()
        expected = [next((c for c in codes if d.startswith(c)), None) for d in digits]
        assert found == expected
        assert {"1", "7", "852", "853", "886", "86", "882"} <= set(found)

    def test_short_digit_strings_do_not_borrow_a_longer_code(self) -> None:
        """`8` is not +86 or +852, `85` is neither: only a whole code at the start counts."""
        rows = check_mobile_numbers(pl.DataFrame({"_digits": ["8", "85", "852", "1"]})).to_dicts()
        assert [r["_cc"] for r in rows] == [None, None, "852", "1"]
        assert [r["_unknown_code"] for r in rows] == [True, True, False, False]
