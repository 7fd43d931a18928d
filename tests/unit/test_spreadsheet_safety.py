"""Files meant for spreadsheets are inert (globe_sms/spreadsheets.py): unit tests of the neutraliser, a real
`globe-sms send` whose rejects file is checked cell by cell, and (where LibreOffice is installed) the rejects
file opened by a real spreadsheet with formula evaluation on. Masking is tested in
tests/unit/test_masking.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_spreadsheet_safety.py.
"""

from __future__ import annotations

import re

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from globe_sms.spreadsheets import (
    FORMULA_STARTS,
    neutralise_cell,
    neutralise_expr,
    neutralise_for_spreadsheets,
)

HYPERLINK = '=HYPERLINK("http://x","y")'
ATTACKS = [HYPERLINK, "@SUM(1+1)", "-cmd|' /C calc'!A0", "+1+1", "\t=1+1", "\r=1+1"]
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def is_inert(cell: str) -> bool:
    """A CSV cell no spreadsheet reads as a formula: no formula start, or a plain number."""
    return not cell.startswith(FORMULA_STARTS) or PLAIN_NUMBER.fullmatch(cell) is not None


class TestNeutraliseForSpreadsheets:
    def test_formula_cells_get_a_leading_quote_and_keep_their_text(self) -> None:
        """Every OWASP formula start is prefixed with `'`; the rest of the cell is untouched."""
        frame = pl.DataFrame({"note": [*ATTACKS, "Ann", "[/oops]", "'already", "", None]})
        out = neutralise_for_spreadsheets(frame)["note"].to_list()
        assert out == [*("'" + attack for attack in ATTACKS), "Ann", "[/oops]", "'already", "", None]

    def test_plain_numbers_and_phones_stay_readable(self) -> None:
        """`+85212345678`, `-5`, `+0.5` are numbers to a spreadsheet, never formulas: left as they are."""
        cells = ["+85212345678", "-5", "+0.5", "85212345678", "0085212345678"]
        assert neutralise_for_spreadsheets(pl.DataFrame({"phone": cells}))["phone"].to_list() == cells

    def test_a_phone_with_separators_is_neutralised(self) -> None:
        """`+852 1234 5678` is no number to Excel, which would read it as a formula: it gets its `'`."""
        out = neutralise_for_spreadsheets(pl.DataFrame({"phone": ["+852 1234 5678", "+1-415-555-2671"]}))
        assert out["phone"].to_list() == ["'+852 1234 5678", "'+1-415-555-2671"]

    def test_headers_are_cells_too(self) -> None:
        """A header `=cmd` is written `'=cmd`; ordinary headers keep their names and order."""
        frame = pl.DataFrame({"phone": ["1"], "=cmd": ["x"], "@SUM(1)": ["y"], "[/oops]": ["z"]})
        assert neutralise_for_spreadsheets(frame).columns == ["phone", "'=cmd", "'@SUM(1)", "[/oops]"]

    def test_only_text_columns_change_and_lazy_frames_work(self) -> None:
        """Numbers, dates and booleans stay typed; categoricals are text; a LazyFrame stays lazy."""
        frame = pl.DataFrame(
            {
                "n": [-1, 2],
                "f": [-1.5, 2.0],
                "ok": [True, False],
                "cat": pl.Series(["=1", "a"], dtype=pl.Categorical),
                "s": ["@x", "b"],
            }
        )
        lazy = neutralise_for_spreadsheets(frame.lazy())
        assert isinstance(lazy, pl.LazyFrame)
        out = lazy.collect()
        assert out.schema == pl.Schema(
            {"n": pl.Int64, "f": pl.Float64, "ok": pl.Boolean, "cat": pl.String, "s": pl.String}
        )
        assert out.to_dict(as_series=False) == {
            "n": [-1, 2], "f": [-1.5, 2.0], "ok": [True, False], "cat": ["'=1", "a"], "s": ["'@x", "b"]
        }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="=+-@\t\r\n0123456789.a '", max_size=12), min_size=1, max_size=20))
def test_the_scalar_and_vectorised_rules_agree_and_leave_nothing_live(cells: list[str]) -> None:
    """`neutralise_cell` (headers) and `neutralise_expr` (cells) agree, and every result is inert."""
    vectorised = pl.DataFrame({"c": cells}).select(neutralise_expr("c"))["c"].to_list()
    assert vectorised == [neutralise_cell(cell) for cell in cells]
    assert all(is_inert(cell) for cell in vectorised)
