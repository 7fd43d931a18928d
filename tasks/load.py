"""Load recipients from their source as an all-text polars frame.

Every column is read as a string: CSV type inference would turn `85212345678` into an integer and
`4.47911E+11` into a float, and the validation step must see the text as it was written. The readers live in
`tasks/sources/` (files, PostgreSQL, HTTP); large campaigns stream them chunk by chunk (`tasks/spool.py`).
"""

from __future__ import annotations

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from globe_sms.sources import Source
from tasks.sources import SourceError, load_source

__all__ = ["SourceError", "load_recipients"]


@task(name="load-recipients", cache_policy=NO_CACHE)
def load_recipients(source: Source) -> pl.DataFrame:
    """Read the campaign's recipients in one frame (every column as text)."""
    return load_source(source)
