"""Unit tests of opt-out lists: reading messy files, reading entries as numbers, the errors and masking.

Integration tests (the CLI and the flow on files, PostgreSQL and the emulator) are in
tests/integration/test_opt_outs.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from globe_sms.sources import CsvSource
from globe_sms.validation_rules import ValidationRules
from tasks.opt_out_numbers import mask_entry, read_opt_out_numbers
from tasks.suppression import (
    SHOWN_UNREADABLE,
    SuppressionError,
    SuppressionFileMissing,
    UnreadableOptOuts,
    check_suppression_files,
    load_opt_outs,
    read_suppression_file,
    read_suppression_source,
)

GB = "447911123456"


def entries(*values: str) -> pl.DataFrame:
    return pl.DataFrame({"entry": list(values), "line": list(range(1, len(values) + 1))})


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


class TestReadSuppressionFile:
    def test_messy_text_file_keeps_physical_line_numbers(self, tmp_path: Path) -> None:
        """BOM, CRLF, blank lines, comments, quotes and indentation: every number with its real line."""
        text = (
            "\ufeff# opt-outs exported 2026-05-01\r\n"
            "\r\n"
            '"+44 7911 123456"\r\n'
            "  0044 7911 123457  \r\n"
            "   # a comment, indented\r\n"
            "'447911123458'\r\n"
            "\r\n"
            "+447911123459;ext=12\r\n"
        )
        frame = read_suppression_file(write(tmp_path / "optout.txt", text))
        assert frame.rows() == [
            (3, "+44 7911 123456"),
            (4, "0044 7911 123457"),
            (6, "447911123458"),
            (8, "+447911123459;ext=12"),
        ]

    def test_messy_csv_with_semicolons_header_quotes_and_comments(self, tmp_path: Path) -> None:
        """A spreadsheet's CSV: BOM, `;`, quoted header, a quoted cell with a `;`, comments, empty rows."""
        text = (
            '\ufeff"id";"Phone";"note"\r\n'
            "# exported by the CRM\r\n"
            '1;"+44 7911 123456";"said stop; twice"\r\n'
            ";;\r\n"
            "\r\n"
            "2;0044 7911 123457;\r\n"
            "3;;no number\r\n"
        )
        frame = read_suppression_file(write(tmp_path / "optout.csv", text))
        assert frame.rows() == [(3, "+44 7911 123456"), (6, "0044 7911 123457"), (7, "")]

    def test_single_phone_header_is_a_one_column_csv(self, tmp_path: Path) -> None:
        """`phone` on the first line is a header, not an entry."""
        frame = read_suppression_file(write(tmp_path / "o.csv", "phone\n+44 7911 123456\n"))
        assert frame.rows() == [(2, "+44 7911 123456")]

    def test_first_line_with_a_semicolon_extension_is_an_entry(self, tmp_path: Path) -> None:
        """`+44...;ext=12` on the first line is a number, not a header with two columns."""
        frame = read_suppression_file(write(tmp_path / "o.txt", "+447911123456;ext=12\n+447911123457\n"))
        assert frame.get_column("entry").to_list() == ["+447911123456;ext=12", "+447911123457"]

    def test_header_without_phone_column_is_an_error(self, tmp_path: Path) -> None:
        """A CSV must name its column of numbers `phone`."""
        path = write(tmp_path / "o.csv", "id,number\n1,+85251234567\n")
        with pytest.raises(SuppressionError, match=r"line 1 is a header with columns \['id', 'number'\]"):
            read_suppression_file(path)

    def test_not_utf8_is_an_error(self, tmp_path: Path) -> None:
        """A UTF-16 export (Excel's 'Unicode text') is refused with a hint, not read as garbage."""
        path = write(tmp_path / "o.txt", "+447911123456\n", encoding="utf-16")
        with pytest.raises(SuppressionError, match="not UTF-8 text"):
            read_suppression_file(path)

    def test_empty_file_has_no_entries(self, tmp_path: Path) -> None:
        """Only comments: an empty list, not an error."""
        assert read_suppression_file(write(tmp_path / "o.txt", "# none yet\n\n")).height == 0


class TestReadOptOutNumbers:
    @pytest.mark.parametrize(
        "entry",
        [
            "+44 7911 123456",
            "0044 7911 123456",
            "447911123456",
            "+44 (0)7911-123456",
            "+44 7911 123456 ext. 12",
            "+44 7911 123456 x12",
            "+447911123456;ext=12",
            "+44 7911 123456 extension 3",
            "tel:+44-7911-123456;ext=9",
            "'+447911123456",
            '="+447911123456"',
        ],
    )
    def test_readable_forms_without_default_region(self, entry: str) -> None:
        """International forms, bare digits with the country code, extensions and spreadsheet markers."""
        read = read_opt_out_numbers(entries(entry))
        assert read.numbers.to_list() == [GB] and read.unreadable.height == 0

    def test_national_form_with_default_region(self) -> None:
        """`07911 123456` with default_region GB is the GB mobile."""
        read = read_opt_out_numbers(entries("07911 123456", "07911 123456 x 4"), default_region="GB")
        assert read.numbers.to_list() == [GB] and read.unreadable.height == 0

    def test_bare_digits_read_both_ways_under_a_default_region(self) -> None:
        """`447911123456` with default_region HK still opts out the GB number."""
        read = read_opt_out_numbers(entries("447911123456"), default_region="HK")
        assert GB in read.numbers.to_list()

    def test_no_length_or_mobile_rule(self) -> None:
        """A landline or an odd length is still an opt-out: only a known calling code is required."""
        read = read_opt_out_numbers(entries("+44 20 7946 0958", "+852 1234 56789", "+800 1234 5678"))
        assert read.numbers.to_list() == ["442079460958", "852123456789", "80012345678"]

    @pytest.mark.parametrize(
        ("entry", "reason"),
        [
            ("07911 123456", "no_country_code"),
            ("8.52983E+10", "damage"),
            ("8.5298E10", "damage"),
            ("447911123456.0", "damage"),
            ("call me", "letters"),
            ("+44 7911 12345#", "invalid_characters"),
            ("+999 123 4567", "unknown_code"),
            ("+44", "too_short"),
            ("+44 7911 123456 7890 1234", "too_long"),
            ("", "empty"),
        ],
    )
    def test_unreadable_forms_and_their_reason(self, entry: str, reason: str) -> None:
        """Entries that cannot be read are listed, never dropped."""
        read = read_opt_out_numbers(entries("+85251234567", entry))
        assert read.numbers.to_list() == ["85251234567"]
        assert read.unreadable.rows() == [(2, entry, reason)]


class TestMasking:
    @pytest.mark.parametrize(
        ("entry", "masked"),
        [
            ("07911 123456", "07911 12****"),
            ("8.52983E+10", "8.529**E+**"),
            ("+44 7911 123456 ext. 12", "+44 7911 12**** ext. **"),
            ("+447911123456;ext=12", "+44791112****;ext=**"),
            ("12", "**"),
        ],
    )
    def test_last_four_digits_of_the_number_hidden(self, entry: str, masked: str) -> None:
        """The number's last four digits and an extension's digits are hidden, whatever follows them."""
        assert mask_entry(entry) == masked


class TestLoadOptOuts:
    def test_error_lists_every_unreadable_line_masked(self, tmp_path: Path) -> None:
        """The error names the file, each line and its reason, with the entry masked, and how to go on."""
        path = write(tmp_path / "o.txt", "+447911123456\n07911 123457\n\n8.52983E+10\nhello\n")
        with pytest.raises(UnreadableOptOuts) as caught:
            load_opt_outs(ValidationRules(suppression_file=str(path)))
        message = str(caught.value)
        assert str(path) in message and "3 opt-out entries" in message
        assert "line 2: '07911 12****': a national number" in message and "default_region" in message
        assert "line 4: '8.529**E+**': digits lost to a spreadsheet" in message
        assert "line 5: 'hello': contains letters" in message
        assert "123457" not in message and "suppression_unreadable: ignore" in message

    def test_error_shows_the_first_lines_and_counts_the_rest(self, tmp_path: Path) -> None:
        """A badly damaged export: the first SHOWN_UNREADABLE lines, then `... and N more`."""
        path = write(tmp_path / "o.txt", "8.52983E+10\n" * (SHOWN_UNREADABLE + 5))
        with pytest.raises(UnreadableOptOuts, match=r"and 5 more") as caught:
            load_opt_outs(ValidationRules(suppression_file=str(path)))
        assert f"line {SHOWN_UNREADABLE}:" in str(caught.value)
        assert f"line {SHOWN_UNREADABLE + 1}:" not in str(caught.value)

    def test_ignore_skips_and_counts(self, tmp_path: Path) -> None:
        """With `suppression_unreadable: ignore`, readable entries still suppress; the rest are counted."""
        path = write(tmp_path / "o.txt", "+447911123456\n07911 123457\n8.52983E+10\n")
        opt_outs = load_opt_outs(ValidationRules(suppression_file=str(path), suppression_unreadable="ignore"))
        assert opt_outs is not None
        assert opt_outs.numbers.to_list() == [GB] and opt_outs.ignored == 2

    def test_file_and_source_together(self, tmp_path: Path) -> None:
        """`suppression_file` and `suppression` both given: both lists count."""
        text = write(tmp_path / "o.txt", "+447911123456\n")
        table = write(tmp_path / "crm.csv", "id,mobile\n1,+85251234567\n")
        rules = ValidationRules(
            suppression_file=str(text), suppression={"path": str(table), "phone_column": "mobile"}
        )
        opt_outs = load_opt_outs(rules)
        assert opt_outs is not None and sorted(opt_outs.numbers.to_list()) == [GB, "85251234567"]

    def test_source_errors_name_the_suppression_field(self, tmp_path: Path) -> None:
        """A source without its phone column says `validation.suppression.phone_column`, not `source.`."""
        table = write(tmp_path / "crm.csv", "id,mobile\n1,+85251234567\n")
        with pytest.raises(SuppressionError, match=r"^validation\.suppression\.phone_column: column 'phone'"):
            read_suppression_source(CsvSource(path=str(table)))

    def test_source_rows_are_numbered_from_one(self, tmp_path: Path) -> None:
        """An unreadable source entry is named by its data row (header not counted)."""
        table = write(tmp_path / "crm.csv", "phone\n+85251234567\n07911 123456\n")
        rules = ValidationRules(suppression={"path": str(table)})
        where = r"validation\.suppression \(csv .*crm\.csv\).*\n  row 2: "
        with pytest.raises(UnreadableOptOuts, match=where):
            load_opt_outs(rules)


class TestCheckSuppressionFiles:
    def test_missing_file_names_its_absolute_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative path is shown resolved, so the user sees where it was looked for."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SuppressionFileMissing, match=re.escape(str(tmp_path / "lists" / "optout.txt"))):
            check_suppression_files(ValidationRules(suppression_file="lists/optout.txt"))

    def test_missing_source_file_names_its_absolute_path(self, tmp_path: Path) -> None:
        """A file-kind suppression source is checked too."""
        with pytest.raises(SuppressionFileMissing, match=r"validation\.suppression\.path: no such file"):
            check_suppression_files(ValidationRules(suppression={"path": str(tmp_path / "nope.csv")}))

    def test_present_files_pass(self, tmp_path: Path) -> None:
        """Nothing to say when the files are there (or when there is no list)."""
        path = write(tmp_path / "o.txt", "+447911123456\n")
        check_suppression_files(ValidationRules(suppression_file=str(path)))
        check_suppression_files(ValidationRules())
