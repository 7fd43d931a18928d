"""Cost preview: segments times a per-country price table, and the budget gate that stops a campaign.

The price table is a CSV the user supplies (see `examples/prices.csv`)::

    country,price_per_segment
    HK,0.0475
    default,0.0800

- `country` is an ISO 3166-1 alpha-2 region (case-insensitive), or `default`: the price of every region not
  listed. Without a `default` row, messages to unlisted regions are *unpriced*: the estimate lists them, and
  `check_budget` refuses to pass a budget it cannot verify.
- `price_per_segment` is a non-negative decimal with at most 6 decimal places (Alibaba bills per segment,
  `reference/alibaba-sms-api.md` §7).
- An optional `currency` column (one value for the whole file) names the currency; otherwise the caller's
  `currency` argument is used (default USD). Other columns (a country name, a note) are ignored, and lines
  starting with `#` are comments.

Amounts are `decimal.Decimal` (polars `Decimal(38, 6)` in frames), so a budget equal to the total passes.

Errors:

    ValueError
     ├── PriceTableError   the CSV is malformed: missing column, bad region, bad or duplicate price
     └── BudgetExceeded    the estimate is over the budget, or cannot be checked (unpriced regions)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

__all__ = [
    "PRICE_DTYPE",
    "BudgetExceeded",
    "CostEstimate",
    "PriceTable",
    "PriceTableError",
    "check_budget",
    "estimate_campaign_cost",
    "estimate_cost",
    "estimate_cost_of_parts",
    "load_price_table",
    "message_costs",
]

PRICE_SCALE = 6
PRICE_DTYPE = pl.Decimal(18, PRICE_SCALE)
COST_DTYPE = pl.Decimal(38, PRICE_SCALE)
DEFAULT_KEY = "default"
_REGION_RE = re.compile(r"^[A-Z]{2}$")


class PriceTableError(ValueError):
    """The price table cannot be used: a missing column, a bad region code, a bad or duplicate price."""


class BudgetExceeded(ValueError):
    """The campaign would cost more than its budget, or its cost cannot be fully known.

    Attributes:
        total: the estimated cost of the priced messages.
        budget: the cap.
        currency: the currency of both.
        unpriced: regions whose messages have no price (their cost is not in `total`).
    """

    def __init__(self, message: str, *, total: Decimal, budget: Decimal, currency: str, unpriced: list[str]):
        super().__init__(message)
        self.total = total
        self.budget = budget
        self.currency = currency
        self.unpriced = unpriced


def _parse_price(raw: object, where: str) -> Decimal:
    try:
        price = Decimal(str(raw).strip())
    except InvalidOperation:
        raise PriceTableError(f"{where}: price {raw!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise PriceTableError(f"{where}: price {raw!r} must be a finite number >= 0")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_SCALE:
        raise PriceTableError(f"{where}: price {raw!r} has more than {PRICE_SCALE} decimal places")
    return price


@dataclass(frozen=True)
class PriceTable:
    """Price per SMS segment by region, with an optional default for regions not listed.

    Example:
        >>> PriceTable.from_mapping({"HK": "0.0475", "default": "0.08"}).price_for("hk")
        Decimal('0.0475')
    """

    prices: dict[str, Decimal]
    default: Decimal | None = None
    currency: str = "USD"

    @classmethod
    def from_mapping(cls, prices: dict[str, str | float | Decimal], *, currency: str = "USD") -> PriceTable:
        """Build a table from `{region or "default": price}`, with the same checks as the CSV."""
        regions: dict[str, Decimal] = {}
        default: Decimal | None = None
        for key, raw in prices.items():
            where = f"price for {key!r}"
            name = str(key).strip()
            price = _parse_price(raw, where)
            if name.lower() == DEFAULT_KEY:
                if default is not None:
                    raise PriceTableError("more than one `default` row")
                default = price
                continue
            region = name.upper()
            if not _REGION_RE.match(region):
                raise PriceTableError(
                    f"{where}: {key!r} is not an ISO 3166-1 alpha-2 region code or `default`"
                )
            if region in regions:
                raise PriceTableError(f"{where}: region {region} is listed twice")
            regions[region] = price
        return cls(regions, default, currency)

    def price_for(self, region: str) -> Decimal | None:
        """The price of one segment to `region`, the default, or None when unpriced."""
        return self.prices.get(region.strip().upper(), self.default)

    def frame(self) -> pl.DataFrame:
        """The listed regions as a frame: `country` (String), `price_per_segment` (Decimal)."""
        return pl.DataFrame(
            {"country": list(self.prices), "price_per_segment": list(self.prices.values())},
            schema={"country": pl.String, "price_per_segment": PRICE_DTYPE},
        )


def load_price_table(path: str | Path, *, currency: str = "USD") -> PriceTable:
    """Read a per-region price CSV (format in the module docstring).

    Args:
        path: the CSV file.
        currency: used when the file has no `currency` column.

    Raises:
        PriceTableError: the file lacks `country` or `price_per_segment`, or a row is invalid (the message
            gives the line).
    """
    raw = pl.read_csv(path, infer_schema=False, comment_prefix="#")
    missing = [c for c in ("country", "price_per_segment") if c not in raw.columns]
    if missing:
        raise PriceTableError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(raw.columns)}"
        )
    if "currency" in raw.columns:
        currencies = sorted({c.strip().upper() for c in raw["currency"].drop_nulls().to_list() if c.strip()})
        if len(currencies) > 1:
            raise PriceTableError(f"{path}: one currency per table, found {', '.join(currencies)}")
        if currencies:
            currency = currencies[0]
    prices: dict[str, str | float | Decimal] = {}
    for number, (region, price) in enumerate(raw.select("country", "price_per_segment").iter_rows(), start=1):
        if region is None or not region.strip():
            raise PriceTableError(f"{path}: data row {number} has no country")
        key = region.strip()
        if key.upper() in {k.upper() for k in prices}:
            raise PriceTableError(f"{path}: data row {number}: {key!r} is listed twice")
        prices[key] = _parse_price(price, f"{path}: data row {number} ({key})")
    return PriceTable.from_mapping(prices, currency=currency)


def message_costs(messages: pl.DataFrame, prices: PriceTable) -> pl.DataFrame:
    """`messages` plus `price_per_segment` and `cost` (null for unpriced regions), vectorised by a join.

    Args:
        messages: rendered messages with `country` and `segments` (see `schemas.messages.RenderedMessages`).
        prices: the price table.
    """
    key = pl.col("country").cast(pl.String).str.strip_chars().str.to_uppercase()
    table = prices.frame().lazy().rename({"country": "__region", "price_per_segment": "__price"})
    price = pl.col("__price")
    if prices.default is not None:
        price = price.fill_null(pl.lit(prices.default, dtype=PRICE_DTYPE))
    return (
        messages.lazy()
        .with_columns(key.alias("__region"))
        .join(table, on="__region", how="left", maintain_order="left")
        .with_columns(price.alias("price_per_segment"))
        .with_columns((pl.col("segments") * pl.col("price_per_segment")).cast(COST_DTYPE).alias("cost"))
        .drop("__region", "__price")
        .collect()
    )


@dataclass(frozen=True)
class CostEstimate:
    """What a campaign will cost.

    Attributes:
        total: cost of the priced messages.
        currency: the price table's currency.
        per_country: `country`, `messages`, `segments`, `price_per_segment` (null if unpriced), `cost`
            (null if unpriced); most expensive first.
        unpriced: regions that have messages but no price (and no `default` row).
        messages: number of messages.
        segments: number of segments.
    """

    total: Decimal
    currency: str
    per_country: pl.DataFrame
    unpriced: list[str] = field(default_factory=list)
    messages: int = 0
    segments: int = 0

    def summary(self) -> str:
        """One line for logs: total, volumes and any unpriced regions."""
        line = f"{self.total} {self.currency} for {self.messages:,} messages ({self.segments:,} segments)"
        if self.unpriced:
            line += f"; no price for {', '.join(self.unpriced)}"
        return line


def estimate_cost(messages: pl.DataFrame, prices: PriceTable) -> CostEstimate:
    """Total and per-country cost of the rendered messages.

    Args:
        messages: rendered messages with `country` and `segments`.
        prices: the price table.

    Returns:
        The estimate; regions without a price are listed in `unpriced` and left out of `total`.

    Example:
        >>> estimate = estimate_cost(result.messages, load_price_table("examples/prices.csv"))
        >>> estimate.total, estimate.per_country
    """
    costed = message_costs(messages.select("country", "segments"), prices)
    per_country = (
        costed.group_by(pl.col("country").cast(pl.String).str.strip_chars().str.to_uppercase())
        .agg(
            pl.len().cast(pl.Int64).alias("messages"),
            pl.col("segments").sum().cast(pl.Int64).alias("segments"),
            pl.col("price_per_segment").first(),
            pl.col("cost").sum().cast(COST_DTYPE).alias("cost"),
        )
        .with_columns(pl.when(pl.col("price_per_segment").is_not_null()).then(pl.col("cost")).alias("cost"))
        .sort([pl.col("cost").is_null(), "cost", "country"], descending=[False, True, False])
    )
    unpriced = sorted(per_country.filter(pl.col("price_per_segment").is_null())["country"].to_list())
    total = per_country["cost"].sum()
    return CostEstimate(
        total=Decimal(total if total is not None else 0).quantize(Decimal(1).scaleb(-PRICE_SCALE)),
        currency=prices.currency,
        per_country=per_country,
        unpriced=unpriced,
        messages=costed.height,
        segments=int(costed["segments"].sum()),
    )


def estimate_cost_of_parts(parts: Sequence[Path], prices: PriceTable) -> CostEstimate:
    """`estimate_cost` of every message in Parquet files (`country`, `segments`), one file at a time, merged.

    The estimate is a sum over messages, so the merged one is exactly the one-frame estimate; over a whole
    10M-row list at once it would hold about 1 GB of per-message prices and costs.
    """
    columns = ["country", "segments"]
    estimates = [estimate_cost(pl.read_parquet(part, columns=columns), prices) for part in parts]
    if not estimates:
        return estimate_cost(pl.DataFrame(schema={"country": pl.String, "segments": pl.Int64}), prices)
    return estimates[0] if len(estimates) == 1 else merge_estimates(estimates)


def merge_estimates(parts: Sequence[CostEstimate]) -> CostEstimate:
    """One estimate from estimates of disjoint sets of messages (as `estimate_cost` aggregates one frame)."""
    price = pl.col("price_per_segment")
    per_country = (
        pl.concat([part.per_country for part in parts])
        .group_by("country")
        .agg(
            pl.col("messages").sum().cast(pl.Int64),
            pl.col("segments").sum().cast(pl.Int64),
            price.drop_nulls().first(),
            pl.col("cost").sum().cast(COST_DTYPE),
        )
        .with_columns(pl.when(price.is_not_null()).then(pl.col("cost")).alias("cost"))
        .sort([pl.col("cost").is_null(), "cost", "country"], descending=[False, True, False])
    )
    total = per_country["cost"].sum()
    return CostEstimate(
        total=Decimal(total if total is not None else 0).quantize(Decimal(1).scaleb(-PRICE_SCALE)),
        currency=parts[0].currency,
        per_country=per_country,
        unpriced=sorted({region for part in parts for region in part.unpriced}),
        messages=sum(part.messages for part in parts),
        segments=sum(part.segments for part in parts),
    )


def check_budget(estimate: CostEstimate, budget: float | Decimal | str | None) -> None:
    """Stop the campaign before anything is sent when it would exceed `budget`.

    Args:
        estimate: from `estimate_cost`.
        budget: the cap, in the estimate's currency; None means no cap.

    Raises:
        BudgetExceeded: the total is over the budget, or some regions are unpriced so the total cannot be
            checked against it.
        ValueError: the budget is negative or not a number.
    """
    if budget is None:
        return
    try:
        cap = Decimal(str(budget))
    except InvalidOperation:
        raise ValueError(f"budget {budget!r} is not a number") from None
    if not cap.is_finite() or cap < 0:
        raise ValueError(f"budget {budget!r} must be a finite number >= 0")
    details = {
        "total": estimate.total,
        "budget": cap,
        "currency": estimate.currency,
        "unpriced": estimate.unpriced,
    }
    if estimate.unpriced:
        raise BudgetExceeded(
            f"cannot check the budget of {cap} {estimate.currency}: no price for "
            f"{', '.join(estimate.unpriced)} (add them, or a `default` row, to the price table); "
            f"priced messages alone cost {estimate.total} {estimate.currency}",
            **details,  # type: ignore[arg-type]
        )
    if estimate.total > cap:
        raise BudgetExceeded(
            f"estimated cost {estimate.total} {estimate.currency} exceeds the budget of "
            f"{cap} {estimate.currency} "
            f"({estimate.messages:,} messages, {estimate.segments:,} segments)",
            **details,  # type: ignore[arg-type]
        )


@task(name="estimate-campaign-cost", cache_policy=NO_CACHE)
def estimate_campaign_cost(
    message_parts: Sequence[Path], price_table: str | Path | None, budget: float | None
) -> CostEstimate | None:
    """Price every message from the campaign's price table; stop before sending if over the budget.

    Args:
        message_parts: the spool's message parts (`tasks.spool.Spool.message_parts`).
        price_table: the campaign's price table; None: no estimate (and no budget to check).
        budget: the campaign's budget, in the table's currency; None: no cap.

    Raises:
        PriceTableError: the price table cannot be used.
        BudgetExceeded: the estimate is over the budget, or cannot be checked against it.
    """
    if price_table is None:
        return None
    cost = estimate_cost_of_parts(message_parts, load_price_table(price_table))
    check_budget(cost, budget)
    return cost
