"""All-text frames: every reader yields String columns only, so phone numbers keep their `+` and `00`."""

from __future__ import annotations

import polars as pl

from tasks.sources.errors import SourceError


def as_text(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """`frame` with every column cast to String; structs become JSON text.

    Raises:
        SourceError: a column has a type with no text form (lists, binary); cast it to text at the source.
    """
    if all(dtype == pl.String for dtype in frame.schema.values()):
        return frame
    return frame.select(text_exprs(frame.schema, where))


def text_exprs(schema: pl.Schema, where: str) -> list[pl.Expr]:
    """Expressions casting every column of `schema` to String (for LazyFrames); see `as_text`."""
    exprs = []
    for name, dtype in schema.items():
        if dtype == pl.String:
            exprs.append(pl.col(name))
        elif isinstance(dtype, pl.Struct):
            exprs.append(pl.col(name).struct.json_encode().alias(name))
        elif isinstance(dtype, (pl.List, pl.Array, pl.Binary, pl.Object)):
            raise SourceError(
                f"{where}: column {name!r} is {dtype}, which has no text form; cast it to text first"
            )
        else:
            exprs.append(pl.col(name).cast(pl.String))
    return exprs
