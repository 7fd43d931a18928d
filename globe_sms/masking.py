"""Masking of phone numbers for logs and artifacts, the way Alibaba's docs print them (`8521234****`)."""

from __future__ import annotations

import polars as pl

_VISIBLE_TAIL_MASK = "****"


def mask_number(number: str | None) -> str:
    """Replace the last four digits of a number with `****`; short or empty values become `****`."""
    if not number:
        return _VISIBLE_TAIL_MASK
    text = str(number)
    if len(text) <= 4:
        return _VISIBLE_TAIL_MASK
    return text[:-4] + _VISIBLE_TAIL_MASK


def mask_number_expr(column: str | pl.Expr) -> pl.Expr:
    """The vectorised twin of `mask_number`, for frames shown in artifacts."""
    expr = pl.col(column) if isinstance(column, str) else column
    text = expr.cast(pl.String)
    return (
        pl.when(text.str.len_chars() > 4)
        .then(text.str.slice(0, text.str.len_chars() - 4) + pl.lit(_VISIBLE_TAIL_MASK))
        .otherwise(pl.lit(_VISIBLE_TAIL_MASK))
    )
