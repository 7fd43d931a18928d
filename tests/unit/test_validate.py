"""Tests for `validate_recipients`: tricky-number table, reasons, dedupe, suppression, reject share, schemas.

Normalisation details are unit-tested in tests/unit/test_normalise.py; agreement with phonenumbers on random
numbers is in tests/unit/test_validate_properties.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandera.polars as pa
import phonenumbers
import polars as pl
import pydantic
import pytest

from globe_sms.validation_rules import RecipientSchemaError, TooManyRejects, ValidationRules
from schemas.dialing_codes import METADATA_VERSION, code_for_region, dialing_tables, mobile_plan
from schemas.recipients import RejectedRecipients, ValidRecipients, raw_recipients_schema
from tasks.reasons import REASON_CODES
from tasks.spool import Spool, write_spool
from tasks.suppression import (
    SuppressionFileMissing,
    UnreadableOptOuts,
    load_suppression_file,
    normalise_numbers,
)
from tasks.validate import validate_recipients
from tasks.validation_result import ValidationResult


@dataclass(frozen=True)
class Valid:
    """Expected outcome: accepted, with this region and E.164 digits."""

    country: str
    phone: str


def spool_checked(frame: pl.DataFrame, folder: Path, **rules: object) -> Spool:
    """Spool `frame` (one chunk, column `mobile`) as a run does; the reject share is checked on its totals."""
    return write_spool(
        iter([frame]), folder, phone_column="mobile", template="Hi", rules=ValidationRules(**rules)  # type: ignore[arg-type]
    )


def validate_one(raw: object, **rules: object) -> Valid | list[str]:
    """Validate a single value; return `Valid(...)` or its reason codes."""
    result = validate_recipients(pl.DataFrame({"mobile": [raw]}), "mobile", ValidationRules(**rules))  # type: ignore[arg-type]
    if result.valid.height:
        row = result.valid.row(0, named=True)
        return Valid(row["country"], row["phone"])
    return result.rejects.row(0, named=True)["reasons"]


TRICKY = [
    # NANP: one code, 25 regions, told apart by area code; mobile and fixed lines look alike.
    ("nanp_us", "+1 201 555 0123", {}, Valid("US", "12015550123")),
    ("nanp_ca", "+1 (506) 234-5678", {}, Valid("CA", "15062345678")),
    ("nanp_jm", "+1 876 210 1234", {}, Valid("JM", "18762101234")),
    ("nanp_trunk_1", "+1 1 201 555 0123", {}, Valid("US", "12015550123")),
    ("nanp_no_area_code", "+1 380 013 8000", {}, ["invalid_mobile_pattern"]),
    ("nanp_hole_lenient", "+1 380 013 8000", {"strict_mobile": False}, Valid("US", "13800138000")),
    ("nanp_too_short", "+1 201 555 012", {}, ["too_short"]),
    # +7 is shared by Russia and Kazakhstan.
    ("ru_mobile", "+7 912 345 6789", {}, Valid("RU", "79123456789")),
    ("kz_mobile", "+7 771 000 9998", {}, Valid("KZ", "77710009998")),
    ("ru_landline", "+7 301 123 4567", {}, ["invalid_mobile_pattern"]),
    ("ru_trunk_8", "+7 8 912 345 6789", {}, Valid("RU", "79123456789")),
    ("ru_exit_code", "810 852 5123 4567", {"default_region": "RU"}, Valid("HK", "85251234567")),
    # Mainland China is refused; Hong Kong, Macao and Taiwan are not.
    ("cn_mobile", "+86 131 2345 6789", {}, ["mainland_china"]),
    ("cn_00", "0086 131 2345 6789", {}, ["mainland_china"]),
    ("cn_landline_all_reasons", "+86 10 1234 567", {}, ["mainland_china", "too_short"]),
    ("cn_national_default", "131 2345 6789", {"default_region": "CN"}, ["mainland_china"]),
    ("cn_national_no_default", "13123456789", {}, ["no_country_code"]),
    ("hk", "+852 5123 4567", {}, Valid("HK", "85251234567")),
    ("mo", "+853 6612 3456", {}, Valid("MO", "85366123456")),
    ("tw", "+886 912 345 678", {}, Valid("TW", "886912345678")),
    ("tw_trunk_0", "+886 0912 345 678", {}, Valid("TW", "886912345678")),
    ("hk_fixed_line", "+852 2123 4567", {}, ["invalid_mobile_pattern"]),
    # International prefixes.
    ("prefix_00", "0044 7400 123456", {}, Valid("GB", "447400123456")),
    ("prefix_011_nanp_default", "011 44 7400 123456", {"default_region": "US"}, Valid("GB", "447400123456")),
    ("prefix_011_no_default", "011 44 7400 123456", {}, ["no_country_code"]),
    ("prefix_0011_au_default", "0011 852 5123 4567", {"default_region": "AU"}, Valid("HK", "85251234567")),
    # (0) and trunk prefixes after the country code; Italy keeps its leading 0.
    ("uk_bracket_0", "+44 (0)7400 123456", {}, Valid("GB", "447400123456")),
    ("de_bracket_0", "+49 (0) 151 2345 6789", {}, Valid("DE", "4915123456789")),
    ("uk_trunk_0", "+44 07400 123456", {}, Valid("GB", "447400123456")),
    ("uk_national_default", "07400 123456", {"default_region": "GB"}, Valid("GB", "447400123456")),
    ("it_mobile", "+39 312 345 6789", {}, Valid("IT", "393123456789")),
    ("it_landline_keeps_0", "+39 06 1234 5678", {}, ["invalid_mobile_pattern"]),
    ("it_national_default", "312 345 6789", {"default_region": "IT"}, Valid("IT", "393123456789")),
    # Spreadsheet damage: the digits or the + are gone.
    ("excel_scientific", "4.47911E+11", {}, ["spreadsheet_damage"]),
    ("excel_trailing_0", "447400123456.0", {}, ["spreadsheet_damage"]),
    ("excel_trailing_0_default", "7400123456.0", {"default_region": "GB"}, ["spreadsheet_damage"]),
    ("excel_apostrophe_is_fine", "'+44 7400 123456", {}, Valid("GB", "447400123456")),
    # Lengths.
    ("too_long", "+44 7400 1234567", {}, ["too_long"]),
    ("too_short", "+852 5123 456", {}, ["too_short"]),
    ("between_lengths", "+31 61234 56789", {}, ["invalid_length"]),
    ("way_too_long", "+852 5123 4567 8901 2345", {}, ["too_long"]),
    # Unreadable.
    ("letters", "+44 7400 CALLME", {}, ["letters"]),
    ("extension", "+44 7400 123456 ext 12", {}, ["letters"]),
    ("bad_characters", "+44 7400#123456", {}, ["invalid_characters"]),
    ("empty_string", "", {}, ["empty"]),
    ("blank", "   ", {}, ["empty"]),
    ("null", None, {}, ["empty"]),
    ("unknown_code", "+999 1234 5678", {}, ["unknown_dialing_code"]),
    ("plus_zero", "+0 1234 5678", {}, ["unknown_dialing_code"]),
    ("non_geographic", "+882 1234 5678", {}, ["non_geographic_code"]),
    # Campaign allow / deny lists.
    ("allowed", "+852 5123 4567", {"allow_countries": ["HK", "MO"]}, Valid("HK", "85251234567")),
    ("not_allowed", "+886 912 345 678", {"allow_countries": ["HK", "MO"]}, ["country_not_allowed"]),
    ("denied", "+886 912 345 678", {"deny_countries": ["tw"]}, ["country_denied"]),
    (
        "denied_and_not_allowed",
        "+886 912 345 678",
        {"allow_countries": ["HK"], "deny_countries": ["TW"]},
        ["country_not_allowed", "country_denied"],
    ),  # fmt: skip
]


class TestTrickyNumbers:
    @pytest.mark.parametrize(
        ("raw", "rules", "expected"), [t[1:] for t in TRICKY], ids=[t[0] for t in TRICKY]
    )
    def test_tricky_number_outcome(self, raw: object, rules: dict[str, object], expected: object) -> None:
        """Each tricky number is accepted with its country and E.164 form, or refused for its reasons."""
        assert validate_one(raw, **rules) == expected

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (t[1], t[3])
            for t in TRICKY
            if not t[2] and isinstance(t[1], str) and t[1].startswith(("+", "00")) and t[3] != ["letters"]
        ],
    )
    def test_table_agrees_with_phonenumbers(self, raw: str, expected: object) -> None:
        """The table's verdicts for international input are phonenumbers' own (letters aside: phonenumbers
        reads vanity letters and extensions, this project refuses them)."""
        international = "+" + raw[2:] if raw.startswith("00") else raw  # parse(.., None) needs the +
        try:
            number = phonenumbers.parse(international.replace("(0)", ""), None)
            mobile_types = {
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
            }
            ok = phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in mobile_types
            region = phonenumbers.region_code_for_number(number) if ok and number.country_code != 86 else None
        except phonenumbers.NumberParseException:
            region = None
        assert (expected.country if isinstance(expected, Valid) else None) == region

    def test_numeric_phone_column_is_spreadsheet_damage(self) -> None:
        """An Int64 phone column (CSV inference) lost its `+`/`00`: every row is refused as damage."""
        frame = pl.DataFrame({"mobile": [447400123456, 85251234567, None]})
        result = validate_recipients(frame, "mobile")
        assert result.valid.is_empty()
        assert result.rejects["reasons"].to_list() == [
            ["spreadsheet_damage"],
            ["spreadsheet_damage"],
            ["empty"],
        ]
        assert result.rejects["mobile"].to_list() == [447400123456, 85251234567, None]  # original values kept

    def test_float_phone_column_is_spreadsheet_damage(self) -> None:
        """A Float64 phone column (Excel `4.47911E+11`) is damage too."""
        result = validate_recipients(pl.DataFrame({"mobile": [447911000000.0]}), "mobile")
        assert result.rejects["reasons"].to_list() == [["spreadsheet_damage"]]


def mixed_source() -> pl.DataFrame:
    """A campaign source mixing valid numbers with every kind of invalid one, plus repeats and an opt-out."""
    rows = [
        ("Ann", "+852 5123 4567"),  # 1 valid
        ("Bo", "+86 131 2345 6789"),  # 2 mainland
        ("Cy", "0085251234567"),  # 3 duplicate of 1
        ("Di", "4.47911E+11"),  # 4 damage
        ("Ed", "+44 7400 123456"),  # 5 valid
        ("Fay", None),  # 6 empty
        ("Gus", "+886 912 345 678"),  # 7 suppressed
        ("Hal", "+1 380 013 8000"),  # 8 pattern
        ("Ivy", "13123456789"),  # 9 no code
        ("Jo", "+853 6612 3456"),  # 10 valid
        ("Kim", "+44 (0)7400 123456"),  # 11 duplicate of 5
        ("Lu", "+86 131 2345 6789"),  # 12 mainland and duplicate of 2
        ("Max", "+882 1234 5678"),  # 13 non-geographic
        ("Ned", "call me"),  # 14 letters
    ]
    return pl.DataFrame(rows, schema={"name": pl.String, "mobile": pl.String}, orient="row")


class TestValidateRecipients:
    def test_mixed_source_keeps_exactly_the_sendable_rows(self) -> None:
        """Acceptance: only valid, first, unsuppressed numbers remain; every other row is explained."""
        result = validate_recipients(mixed_source(), "mobile", suppression=pl.Series(["+886912345678"]))
        assert result.valid.select("name", "phone", "country", "dialing_code", "source_row").rows() == [
            ("Ann", "85251234567", "HK", "852", 1),
            ("Ed", "447400123456", "GB", "44", 5),
            ("Jo", "85366123456", "MO", "853", 10),
        ]
        reasons = dict(
            zip(result.rejects["source_row"].to_list(), result.rejects["reasons"].to_list(), strict=True)
        )
        assert reasons == {
            2: ["mainland_china"],
            3: ["duplicate"],
            4: ["spreadsheet_damage"],
            6: ["empty"],
            7: ["suppressed"],
            8: ["invalid_mobile_pattern"],
            9: ["no_country_code"],
            11: ["duplicate"],
            12: ["mainland_china", "duplicate"],
            13: ["non_geographic_code"],
            14: ["letters"],
        }
        assert result.duplicates == 3 and result.suppressed == 1
        assert result.reasons == {
            "empty": 1,
            "letters": 1,
            "spreadsheet_damage": 1,
            "no_country_code": 1,
            "non_geographic_code": 1,
            "mainland_china": 2,
            "invalid_mobile_pattern": 1,
            "duplicate": 3,
            "suppressed": 1,
        }

    def test_rejects_keep_original_values_row_numbers_and_reason_text(self) -> None:
        """Rejected rows carry every original column untouched, their 1-based row and readable reasons."""
        source = mixed_source()
        result = validate_recipients(source, "mobile")
        for row in result.rejects.iter_rows(named=True):
            original = source.row(row["source_row"] - 1, named=True)
            assert {k: row[k] for k in source.columns} == original
        text = dict(
            zip(result.rejects["source_row"].to_list(), result.rejects["reason_text"].to_list(), strict=True)
        )
        assert text[3] == "duplicate of row 1"
        assert text[11] == "duplicate of row 5"
        assert text[12].startswith("+86 is mainland China") and text[12].endswith("duplicate of row 2")
        assert "no country code" in text[9]
        assert f"phonenumbers {METADATA_VERSION}" in text[8]

    def test_valid_and_rejects_partition_the_source_in_order(self) -> None:
        """Every row is in exactly one output, each in source order."""
        result = validate_recipients(mixed_source(), "mobile")
        rows = result.valid["source_row"].to_list() + result.rejects["source_row"].to_list()
        assert sorted(rows) == list(range(1, 15))
        assert result.valid["source_row"].is_sorted() and result.rejects["source_row"].is_sorted()
        assert result.total == 14

    def test_outputs_satisfy_their_pandera_models(self) -> None:
        """The contracts hold: pandera validates the materialised outputs."""
        result = validate_recipients(mixed_source(), "mobile")
        ValidRecipients.validate(result.valid, lazy=True)
        RejectedRecipients.validate(result.rejects, lazy=True)

    def test_phone_column_named_phone_is_replaced_by_the_normalised_number(self) -> None:
        """With a `phone` source column, valid rows hold the normalised form; rejects keep the raw value."""
        frame = pl.DataFrame({"phone": ["+852 5123 4567", "junk"]})
        result = validate_recipients(frame, "phone")
        assert result.valid.columns == ["phone", "country", "dialing_code", "source_row"]
        assert result.valid["phone"].to_list() == ["85251234567"]
        assert result.rejects["phone"].to_list() == ["junk"]

    def test_given_source_rows_are_kept(self) -> None:
        """A pre-numbered batch keeps its row numbers (e.g. the second chunk of a file)."""
        frame = pl.DataFrame({"mobile": ["+852 5123 4567", "junk"], "source_row": [1001, 1002]})
        result = validate_recipients(frame, "mobile")
        assert result.valid["source_row"].to_list() == [1001]
        assert result.rejects["source_row"].to_list() == [1002]

    def test_empty_frame(self) -> None:
        """An empty list validates to two empty frames."""
        result = validate_recipients(pl.DataFrame({"mobile": []}, schema={"mobile": pl.String}), "mobile")
        assert result.valid.is_empty() and result.rejects.is_empty() and result.reasons == {}
        assert result.invalid_share == 0.0

    def test_metadata_version_is_recorded(self) -> None:
        """The result names the phonenumbers release that decided validity."""
        assert validate_recipients(mixed_source(), "mobile").metadata_version == phonenumbers.__version__


class TestDeduplication:
    def test_first_occurrence_wins_across_formats(self) -> None:
        """Different spellings of one number are one recipient; the first row is kept."""
        frame = pl.DataFrame({"mobile": ["0044 7400 123456", "+44 (0)7400-123456", "+447400123456"]})
        result = validate_recipients(frame, "mobile")
        assert result.valid["source_row"].to_list() == [1]
        assert result.rejects["reason_text"].to_list() == ["duplicate of row 1"] * 2
        assert result.duplicates == 2

    def test_national_and_international_forms_are_the_same_number(self) -> None:
        """With a default region, `07400 123456` and `+44 7400 123456` dedupe."""
        frame = pl.DataFrame({"mobile": ["07400 123456", "+44 7400 123456"]})
        result = validate_recipients(frame, "mobile", ValidationRules(default_region="GB"))
        assert result.valid["source_row"].to_list() == [1] and result.duplicates == 1

    def test_duplicates_do_not_count_as_invalid(self, tmp_path: Path) -> None:
        """A list repeated twice is not a broken source."""
        frame = pl.DataFrame({"mobile": ["+852 5123 4567"] * 4})
        result = validate_recipients(frame, "mobile")
        assert result.duplicates == 3 and result.invalid == 0
        assert spool_checked(frame, tmp_path / "spool", max_reject_share=0.0).valid == 1


class TestSuppression:
    def test_suppression_series_in_any_format(self, tmp_path: Path) -> None:
        """Opt-outs are normalised like recipients before comparing."""
        frame = pl.DataFrame({"mobile": ["+852 5123 4567", "+853 6612 3456"]})
        result = validate_recipients(frame, "mobile", suppression=pl.Series(["00852-5123-4567"]))
        assert result.valid["phone"].to_list() == ["85366123456"]
        assert result.suppressed == 1 and result.rejects["reasons"].to_list() == [["suppressed"]]

    def test_unreadable_suppression_entry_fails_closed(self) -> None:
        """A Series entry that is not a number stops validation, unless the rules say to ignore it."""
        frame = pl.DataFrame({"mobile": ["+852 5123 4567", "+853 6612 3456"]})
        opt_outs = pl.Series(["00852-5123-4567", "junk"])
        with pytest.raises(UnreadableOptOuts, match="entry 2: 'junk': contains letters"):
            validate_recipients(frame, "mobile", suppression=opt_outs)
        rules = ValidationRules(suppression_unreadable="ignore")
        assert validate_recipients(frame, "mobile", rules, suppression=opt_outs).suppressed == 1

    def test_suppression_text_file_with_default_region(self, tmp_path: Path) -> None:
        """A text file, one number per line, read with the campaign's default region."""
        path = tmp_path / "optout.txt"
        path.write_text("# opt-outs\n07400 123456\n\n+852 5123 4567\n")
        frame = pl.DataFrame({"mobile": ["+44 7400 123456", "+852 5123 4567", "+853 6612 3456"]})
        rules = ValidationRules(default_region="GB", suppression_file=str(path))
        result = validate_recipients(frame, "mobile", rules)
        assert result.valid["phone"].to_list() == ["85366123456"] and result.suppressed == 2

    def test_suppression_csv_with_phone_column(self, tmp_path: Path) -> None:
        """A CSV with a `phone` column (other columns ignored), read as text."""
        path = tmp_path / "optout.csv"
        path.write_text("id,Phone,when\n1,0085251234567,2024-01-01\n")
        assert load_suppression_file(path).to_list() == ["0085251234567"]
        frame = pl.DataFrame({"mobile": ["+852 5123 4567"]})
        assert (
            validate_recipients(frame, "mobile", ValidationRules(suppression_file=str(path))).suppressed == 1
        )

    def test_suppression_csv_without_phone_column_is_an_error(self, tmp_path: Path) -> None:
        """A CSV must say which column holds the numbers."""
        path = tmp_path / "optout.csv"
        path.write_text("id,number\n1,+85251234567\n")
        with pytest.raises(ValueError, match="no 'phone' column"):
            load_suppression_file(path)

    def test_missing_suppression_file_is_an_error(self, tmp_path: Path) -> None:
        """A configured opt-out list that is not there stops validation."""
        rules = ValidationRules(suppression_file=str(tmp_path / "missing.txt"))
        with pytest.raises(SuppressionFileMissing, match=re.escape(str(tmp_path / "missing.txt"))):
            validate_recipients(mixed_source(), "mobile", rules)

    def test_normalise_numbers_is_the_hook(self) -> None:
        """The hook takes a Series or a frame with `phone`, and returns distinct E.164 digits."""
        numbers = pl.DataFrame({"phone": ["+44 7400 123456", "0044 (0)7400 123456", "junk", None]})
        assert normalise_numbers(numbers).to_list() == ["447400123456"]


class TestRejectShare:
    def test_too_many_rejects_names_share_and_threshold(self, tmp_path: Path) -> None:
        """The error says how much was invalid and what was allowed."""
        # 8 of 14 rows invalid (3 and 11 only repeat)
        with pytest.raises(TooManyRejects, match=r"57\.14% .*8 of 14.*max_reject_share 10\.00%"):
            spool_checked(mixed_source(), tmp_path / "spool", max_reject_share=0.1)

    def test_share_at_the_threshold_passes(self, tmp_path: Path) -> None:
        """Only a share above the threshold fails."""
        assert spool_checked(mixed_source(), tmp_path / "a", max_reject_share=8 / 14).invalid == 8
        assert spool_checked(mixed_source(), tmp_path / "b").invalid == 8  # default 1.0 never fails

    def test_too_many_rejects_is_a_value_error(self) -> None:
        """Callers catching ValueError see it."""
        assert issubclass(TooManyRejects, ValueError) and issubclass(RecipientSchemaError, ValueError)


class TestSchemaErrors:
    def test_missing_phone_column_names_it(self) -> None:
        """A missing column is named, with the columns that exist."""
        with pytest.raises(RecipientSchemaError, match=r"'mobile' is missing.*\['name'\]"):
            validate_recipients(pl.DataFrame({"name": ["Ann"]}), "mobile")

    def test_wrong_dtype_names_the_column(self) -> None:
        """A date or list column cannot hold phone numbers."""
        with pytest.raises(RecipientSchemaError, match="'mobile' has dtype Date"):
            validate_recipients(pl.DataFrame({"mobile": [date(2024, 1, 1)]}), "mobile")

    def test_lazy_frame_is_refused(self) -> None:
        """Validation needs materialised data (pandera checks a LazyFrame's schema only)."""
        with pytest.raises(RecipientSchemaError, match="collect"):
            validate_recipients(pl.LazyFrame({"mobile": ["+85251234567"]}), "mobile")  # type: ignore[arg-type]

    def test_clashing_output_column_names_it(self) -> None:
        """An input `country` column would be overwritten: refuse and name it."""
        with pytest.raises(RecipientSchemaError, match=r"\['country'\]"):
            validate_recipients(pl.DataFrame({"mobile": ["+85251234567"], "country": ["HK"]}), "mobile")

    def test_bad_source_row_column(self) -> None:
        """A given `source_row` must be distinct integers from 1."""
        with pytest.raises(RecipientSchemaError, match="source_row"):
            validate_recipients(pl.DataFrame({"mobile": ["a", "b"], "source_row": [1, 1]}), "mobile")

    def test_raw_schema_follows_the_phone_column_name(self) -> None:
        """The raw model is renamed to the campaign's column and refuses non-string phones."""
        schema = raw_recipients_schema("mobile")
        schema.validate(pl.DataFrame({"mobile": ["+852"], "other": [1]}), lazy=True)
        with pytest.raises(pa.errors.SchemaErrors):
            schema.validate(pl.DataFrame({"mobile": [1]}), lazy=True)


class TestValidRecipientsModel:
    GOOD = {"phone": ["85251234567"], "country": ["HK"], "dialing_code": ["852"], "source_row": [1]}

    def test_accepts_a_valid_frame(self) -> None:
        """A well-formed frame passes."""
        ValidRecipients.validate(pl.DataFrame(self.GOOD), lazy=True)

    @pytest.mark.parametrize(
        ("change", "check"),
        [
            ({"phone": ["8613123456789"], "dialing_code": ["86"]}, "not_mainland_china"),
            ({"phone": ["+85251234567"]}, "str_matches"),
            ({"dialing_code": ["853"]}, "phone_starts_with_dialing_code"),
            ({"dialing_code": ["999"], "phone": ["99951234567"]}, "known_dialing_code"),
            ({"country": ["XX"]}, "known_region"),
            ({"source_row": [0]}, "greater_than_or_equal_to"),
        ],
    )
    def test_rejects_a_broken_frame(self, change: dict[str, list[object]], check: str) -> None:
        """Each contract check can fail."""
        with pytest.raises(pa.errors.SchemaErrors) as info:
            ValidRecipients.validate(pl.DataFrame({**self.GOOD, **change}), lazy=True)
        assert any(check in str(c) for c in info.value.failure_cases["check"].to_list())

    def test_duplicate_numbers_fail_the_contract(self) -> None:
        """Two rows with the same number break `one_row_per_number`."""
        frame = pl.concat([pl.DataFrame(self.GOOD)] * 2).with_columns(source_row=pl.Series([1, 2]))
        with pytest.raises(pa.errors.SchemaErrors, match="one_row_per_number"):
            ValidRecipients.validate(frame, lazy=True)

    def test_duplicate_numbers_are_the_failure_cases(self) -> None:
        """Only the repeats are reported, not the first occurrence of each number."""
        phones = ["85251234567", "85251234568", "85251234567", "85251234567"]
        frame = pl.DataFrame(
            {"phone": phones, "country": ["HK"] * 4, "dialing_code": ["852"] * 4, "source_row": [1, 2, 3, 4]}
        )
        with pytest.raises(pa.errors.SchemaErrors) as info:
            ValidRecipients.validate(frame, lazy=True)
        cases = info.value.failure_cases.filter(pl.col("check") == "one_row_per_number")
        assert cases["failure_case"].to_list() == ["85251234567", "85251234567"]

    def test_source_rows_out_of_order_pass_when_distinct(self) -> None:
        """Row numbers from a pre-split source need not increase; only repeats break the contract."""
        frame = pl.DataFrame(
            {
                "phone": ["85251234567", "85251234568", "85251234569"],
                "country": ["HK"] * 3,
                "dialing_code": ["852"] * 3,
                "source_row": [7, 3, 5],
            }
        )
        ValidRecipients.validate(frame, lazy=True)
        with pytest.raises(pa.errors.SchemaErrors, match="one_row_per_source_row"):
            ValidRecipients.validate(frame.with_columns(source_row=pl.Series([7, 3, 7])), lazy=True)

    def test_lazy_frame_passes_schema_only(self) -> None:
        """Why outputs are validated collected: a LazyFrame with a +86 row slips through pandera."""
        bad = pl.DataFrame({**self.GOOD, "phone": ["8613123456789"], "dialing_code": ["86"]})
        ValidRecipients.validate(bad.lazy(), lazy=True).collect()
        with pytest.raises(pa.errors.SchemaErrors):
            ValidRecipients.validate(bad, lazy=True)


class TestValidationRules:
    def test_every_field_is_described(self) -> None:
        """The Campaign form shows each field's description."""
        assert all(field.description for field in ValidationRules.model_fields.values())

    def test_regions_are_upper_cased_and_checked(self) -> None:
        """Lower-case codes are accepted; unknown ones are refused."""
        assert ValidationRules(default_region="gb", deny_countries=["tw"]).deny_countries == ["TW"]
        with pytest.raises(pydantic.ValidationError, match="unknown ISO region"):
            ValidationRules(allow_countries=["XX"])

    def test_mainland_china_cannot_be_allowed(self) -> None:
        """Allowing CN would be silently ignored, so it is an error."""
        with pytest.raises(pydantic.ValidationError, match="CN"):
            ValidationRules(allow_countries=["CN"])

    def test_reject_share_is_a_fraction(self) -> None:
        """max_reject_share is between 0 and 1."""
        with pytest.raises(pydantic.ValidationError):
            ValidationRules(max_reject_share=1.5)

    def test_round_trips_through_json(self) -> None:
        """Embedded in the Campaign model, the rules survive serialisation."""
        rules = ValidationRules(default_region="HK", allow_countries=["HK"], strict_mobile=False)
        assert ValidationRules.model_validate_json(rules.model_dump_json()) == rules


class TestDialingTables:
    def test_built_from_installed_metadata(self) -> None:
        """215 calling codes, 9 of them non-geographic; the version is the installed one."""
        tables = dialing_tables()
        assert tables.version == phonenumbers.__version__ == METADATA_VERSION
        assert len(tables.all_codes) == len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
        assert tables.non_geographic == {str(c) for c in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS}

    def test_codes_are_prefix_free(self) -> None:
        """No code is a prefix of another, so the first match is the only match."""
        codes = dialing_tables().all_codes
        assert not [(a, b) for a in codes for b in codes if a != b and b.startswith(a)]

    @pytest.mark.parametrize(
        ("code", "lengths"),
        [
            ("1", (10,)),
            ("7", (10,)),
            ("44", (10,)),
            ("49", (10, 11)),
            ("86", (11,)),
            ("852", (8,)),
            ("853", (8,)),
            ("886", (9,)),
        ],  # fmt: skip
    )
    def test_mobile_lengths(self, code: str, lengths: tuple[int, ...]) -> None:
        """Mobile lengths of the codes that matter here (validation-notes §3)."""
        assert dialing_tables().codes[code].mobile_lengths == lengths

    def test_regions_map_to_codes(self) -> None:
        """HK, MO, TW and CN have their own codes; unknown regions are an error."""
        assert [code_for_region(r) for r in ("HK", "mo", "TW", "CN", "KZ")] == [
            "852",
            "853",
            "886",
            "86",
            "7",
        ]
        with pytest.raises(ValueError, match="unknown ISO region"):
            code_for_region("XX")

    def test_mobile_plans_drop_only_provably_irrelevant_checks(self) -> None:
        """On this metadata no excluding type overlaps a mobile range (see test_validate_properties)."""
        plan = mobile_plan("HK")
        assert plan.mobile is not None and plan.general is None and plan.excluding == ()


def test_reason_codes_are_stable_snake_case() -> None:
    """Reports key on these codes; changing one is a breaking change."""
    assert REASON_CODES == (
        "empty", "letters", "invalid_characters", "spreadsheet_damage", "no_country_code",
        "unknown_dialing_code", "non_geographic_code", "mainland_china", "too_short", "too_long",
        "invalid_length", "invalid_mobile_pattern",
        "country_not_allowed", "country_denied", "duplicate", "suppressed",
    )  # fmt: skip


def test_result_is_frozen() -> None:
    """A ValidationResult cannot be altered after the fact."""
    result = validate_recipients(mixed_source(), "mobile")
    assert isinstance(result, ValidationResult)
    with pytest.raises(AttributeError):
        result.duplicates = 0  # type: ignore[misc]
