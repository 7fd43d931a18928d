"""Unit tests for tasks.cost: the price table CSV, per-message and per-country cost, and the budget gate.

Messages come from tasks.render (tested in tests/unit/test_render.py).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tasks.cost import (
    BudgetExceeded,
    CostEstimate,
    PriceTable,
    PriceTableError,
    check_budget,
    estimate_cost,
    load_price_table,
    message_costs,
)
from tasks.render import render_messages

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prices.csv"
REQUIRED_REGIONS = "HK MO TW SG MY TH ID PH VN GB US DE FR AU IN JP KR AE".split()


def messages(*rows: tuple[str, int]) -> pl.DataFrame:
    """A rendered-messages frame reduced to what costing reads: country and segments."""
    return pl.DataFrame(
        {
            "source_row": list(range(len(rows))),
            "country": [r[0] for r in rows],
            "segments": [r[1] for r in rows],
        },
        schema={"source_row": pl.Int64, "country": pl.String, "segments": pl.Int64},
    )


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    return path


class TestPriceTable:
    def test_example_file_covers_the_required_regions(self) -> None:
        """examples/prices.csv loads, prices every required region and has a default row."""
        table = load_price_table(EXAMPLE)
        assert set(REQUIRED_REGIONS) <= set(table.prices)
        assert table.default is not None
        assert table.currency == "USD"
        assert all(price > 0 for price in table.prices.values())

    def test_csv_regions_are_case_insensitive_and_extra_columns_ignored(self, tmp_path: Path) -> None:
        """Lower-case regions are normalised; comments and unknown columns are ignored."""
        path = write_csv(tmp_path, "# comment\ncountry,price_per_segment,note\nhk,0.05,x\nDefault,0.1,y\n")
        table = load_price_table(path, currency="EUR")
        assert table.prices == {"HK": Decimal("0.05")}
        assert table.default == Decimal("0.1")
        assert table.currency == "EUR"
        assert table.price_for(" hk ") == Decimal("0.05")
        assert table.price_for("BR") == Decimal("0.1")

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("region,price\nHK,1\n", "missing column"),
            ("country,price_per_segment\nHKG,0.1\n", "not an ISO 3166-1"),
            ("country,price_per_segment\nHK,0.1\nhk,0.2\n", "listed twice"),
            ("country,price_per_segment\nHK,-0.1\n", ">= 0"),
            ("country,price_per_segment\nHK,abc\n", "not a number"),
            ("country,price_per_segment\nHK,0.1234567\n", "decimal places"),
            ("country,price_per_segment\n,0.1\n", "no country"),
            ("country,price_per_segment,currency\nHK,0.1,USD\nSG,0.1,EUR\n", "one currency"),
            ("country,price_per_segment\ndefault,0.1\nDEFAULT,0.2\n", "listed twice"),
        ],
    )
    def test_bad_csv_is_refused_with_a_reason(self, tmp_path: Path, text: str, fragment: str) -> None:
        """Malformed tables raise PriceTableError saying what is wrong."""
        with pytest.raises(PriceTableError, match=fragment):
            load_price_table(write_csv(tmp_path, text))

    def test_currency_column_sets_the_currency(self, tmp_path: Path) -> None:
        """A uniform `currency` column names the table's currency."""
        path = write_csv(tmp_path, "country,price_per_segment,currency\nHK,0.1,hkd\n")
        assert load_price_table(path).currency == "HKD"


class TestEstimateCost:
    table = PriceTable.from_mapping({"HK": "0.1", "SG": "0.2"})

    def test_segments_times_price_per_country(self) -> None:
        """Cost is segments x price, summed by region, exactly (no float drift)."""
        estimate = estimate_cost(messages(("HK", 1), ("HK", 2), ("SG", 3)), self.table)
        assert estimate.total == Decimal("0.9")
        assert (estimate.messages, estimate.segments, estimate.unpriced) == (3, 6, [])
        assert estimate.per_country.select("country", "messages", "segments").rows() == [
            ("SG", 1, 3),
            ("HK", 2, 3),
        ]
        assert estimate.per_country["cost"].to_list() == [Decimal("0.6"), Decimal("0.3")]

    def test_per_message_cost(self) -> None:
        """Each message gets its price per segment and cost; the input order is kept."""
        costed = message_costs(messages(("SG", 2), ("hk", 1)), self.table)
        assert costed["price_per_segment"].to_list() == [Decimal("0.2"), Decimal("0.1")]
        assert costed["cost"].to_list() == [Decimal("0.4"), Decimal("0.1")]
        assert costed.columns == ["source_row", "country", "segments", "price_per_segment", "cost"]

    def test_unlisted_regions_use_the_default_row(self) -> None:
        """With a `default` row, unlisted regions are priced at it."""
        table = PriceTable.from_mapping({"HK": "0.1", "default": "0.5"})
        estimate = estimate_cost(messages(("HK", 1), ("BR", 2)), table)
        assert estimate.total == Decimal("1.1")
        assert estimate.unpriced == []

    def test_unlisted_regions_without_default_are_unpriced(self) -> None:
        """Without a default, unlisted regions are reported and left out of the total."""
        estimate = estimate_cost(messages(("HK", 1), ("BR", 2), ("ZA", 1), ("BR", 1)), self.table)
        assert estimate.unpriced == ["BR", "ZA"]
        assert estimate.total == Decimal("0.1")
        unpriced = estimate.per_country.filter(pl.col("cost").is_null())
        assert sorted(unpriced["country"].to_list()) == ["BR", "ZA"]
        assert "no price for BR, ZA" in estimate.summary()

    def test_no_messages_cost_nothing(self) -> None:
        """An empty campaign costs zero."""
        estimate = estimate_cost(messages(), self.table)
        assert (estimate.total, estimate.messages, estimate.segments) == (Decimal(0), 0, 0)

    def test_from_rendered_messages_with_the_example_prices(self) -> None:
        """Rendering then costing with examples/prices.csv: a UCS-2 message costs its extra segments."""
        frame = pl.DataFrame(
            {
                "phone": ["85212345678", "6591234567"],
                "country": ["HK", "SG"],
                "source_row": [0, 1],
                "name": ["Ann", "李伟"],
            }
        )
        result = render_messages(frame, "Hello {name}, " + "x" * 61)
        estimate = estimate_cost(result.messages, load_price_table(EXAMPLE))
        assert result.messages["segments"].to_list() == [1, 2]
        assert estimate.total == Decimal("0.0475") + 2 * Decimal("0.0310")


class TestCheckBudget:
    def estimate(self, total: str, unpriced: list[str] | None = None) -> CostEstimate:
        return CostEstimate(
            total=Decimal(total),
            currency="USD",
            per_country=pl.DataFrame(),
            unpriced=unpriced or [],
            messages=10,
            segments=12,
        )

    def test_no_budget_always_passes(self) -> None:
        """A campaign without a cap is never stopped."""
        check_budget(self.estimate("1000000"), None)

    def test_budget_equal_to_total_passes(self) -> None:
        """Exactly at the cap is allowed (amounts are decimals, not floats)."""
        check_budget(self.estimate("0.3"), 0.3)
        check_budget(self.estimate("0.3"), "0.30")

    def test_over_budget_stops_with_details(self) -> None:
        """Over the cap raises BudgetExceeded carrying total, budget and currency."""
        with pytest.raises(BudgetExceeded, match="exceeds the budget") as excinfo:
            check_budget(self.estimate("100.000001"), 100)
        error = excinfo.value
        assert (error.total, error.budget, error.currency) == (Decimal("100.000001"), Decimal(100), "USD")

    def test_unpriced_regions_stop_a_budgeted_campaign(self) -> None:
        """A budget cannot be verified when some regions have no price: stop, naming them."""
        with pytest.raises(BudgetExceeded, match="no price for BR") as excinfo:
            check_budget(self.estimate("1", ["BR"]), 1000)
        assert excinfo.value.unpriced == ["BR"]

    @pytest.mark.parametrize("budget", [-1, "abc", float("nan")])
    def test_invalid_budget_is_an_argument_error(self, budget: object) -> None:
        """A negative or non-numeric budget is a ValueError, not a pass."""
        with pytest.raises(ValueError, match="budget"):
            check_budget(self.estimate("1"), budget)  # type: ignore[arg-type]

    def test_budget_stop_end_to_end(self) -> None:
        """Render, estimate with the example prices, and stop when the cap is one cent short."""
        frame = pl.DataFrame(
            {
                "phone": ["85212345678"] * 100,
                "country": ["HK"] * 100,
                "source_row": list(range(100)),
                "n": ["Ann"] * 100,
            }
        )
        estimate = estimate_cost(render_messages(frame, "It’s {n}").messages, load_price_table(EXAMPLE))
        assert estimate.total == Decimal("4.75")
        check_budget(estimate, 4.75)
        with pytest.raises(BudgetExceeded):
            check_budget(estimate, 4.74)
