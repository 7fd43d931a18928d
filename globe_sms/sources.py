"""Recipient sources: where a campaign's recipients come from (models; readers in `tasks/sources/`).

`Source` is a pydantic union discriminated on `kind`; a campaign without `kind` reads a CSV file, as before
sources had kinds:

| kind | reads | secrets |
|---|---|---|
| `csv`, `parquet`, `ndjson` | a local file, or the files a glob matches (`out/*.csv`), by name | none |
| `postgres` | one SQL query, through ADBC in Arrow record batches | the connection URL: `connection` |
| `http` | a JSON API through httpx, page after page | the auth header's value: `auth.token` |

Every reader yields all-text columns, so a phone number is never turned into an integer or a float.

No secret is ever written in a campaign: `SecretRef` names a Prefect Secret block or an environment variable
holding it, and refuses a literal value. The resolved value is unwrapped only where a connection or a request
is made, and masked in every error (`tasks/sources/secrets.py`).

Example (YAML)::

    source: {kind: parquet, path: exports/recipients-*.parquet, phone_column: msisdn}
    source:
      kind: postgres
      query: SELECT phone, first_name, code, lang FROM recipients WHERE opted_in
      connection: {env: RECIPIENTS_DB_URL}
    source:
      kind: http
      url: https://crm.example.com/api/recipients
      records_path: /data
      pagination: {type: next_link, next_pointer: /links/next}
      auth: {header: Authorization, scheme: Bearer, token: {block: crm-api-token}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from globe_sms.strict_model import StrictModel

FILE_KINDS = ("csv", "parquet", "ndjson")
_NAME = r"^[A-Za-z0-9_./:-]+$"
# What a literal secret is replaced with before validation, so that pydantic's errors (which quote the input,
# and reach logs) never show a URL with a password or a token.
_HIDDEN = {"literal_secret": "hidden"}


def _hide_literals(data: Any, *fields: str) -> Any:
    """`data` with the string values of `fields` replaced by `_HIDDEN` (a mapping is copied, not changed)."""
    if isinstance(data, dict) and any(isinstance(data.get(name), str) for name in fields):
        return {**data, **{name: _HIDDEN for name in fields if isinstance(data.get(name), str)}}
    return data


class SecretRef(BaseModel):
    """Where a secret is: Prefect Secret block or an environment variable (exactly one), never its value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=_NAME,
        description="Name of a Prefect Secret block.",
    )
    env: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, str) or data == _HIDDEN:
            raise ValueError(
                "give {block: NAME} or {env: NAME}, naming where the secret is kept, never the secret itself"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.block is None) == (self.env is None):
            raise ValueError("set exactly one of block and env")
        return self

    def describe(self) -> str:
        """Where the secret is looked up, for messages: `Secret block 'x'` or `environment variable X`."""
        return f"Secret block {self.block!r}" if self.block else f"environment variable {self.env}"


class _Recipients(StrictModel):
    model_config = ConfigDict(extra="forbid")

    phone_column: str = Field(default="phone", min_length=1, description="The column holding phone numbers.")


class _FileSource(_Recipients):
    path: str = Field(
        min_length=1,
        description="A file, or a glob such as `exports/*.csv` (files read in name order); relative paths "
        "resolve against the campaign file.",
    )


class CsvSource(_FileSource):
    """Recipients from CSV files; every column is read as text, so phone numbers never turn into floats."""

    kind: Literal["csv"] = "csv"
    separator: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    encoding: Literal["utf8", "utf8-lossy"] = Field(default="utf8", description="Text encoding of the file.")


class ParquetSource(_FileSource):
    """Recipients from Parquet files; typed columns are cast to text (a numeric phone has lost its '+')."""

    kind: Literal["parquet"] = "parquet"


class NdjsonSource(_FileSource):
    """Recipients from newline-delimited JSON files (one object per line); every value is read as text."""

    kind: Literal["ndjson"] = "ndjson"


class PostgresSource(_Recipients):
    """Recipients from a PostgreSQL query, read through ADBC in Arrow record batches (flat memory)."""

    kind: Literal["postgres"] = "postgres"
    query: str = Field(min_length=1, description="The SELECT that returns one row per recipient.")
    connection: SecretRef = Field(
        description="Where the connection URL (`postgresql://user:password@host:5432/db`) is kept."
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_literal_url(cls, data: Any) -> Any:
        return _hide_literals(data, "connection")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is blank")
        return value


class HttpAuth(BaseModel):
    """An auth header whose value is kept in a secret: `<header>: <scheme> <token>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = Field(default="Authorization", pattern=r"^[A-Za-z0-9-]+$", description="Header name.")
    scheme: str | None = Field(
        default="Bearer",
        description="Written before the secret (`Bearer`, `Token`); null for the bare secret.",
    )
    token: SecretRef = Field(description="Where the token is kept.")

    @model_validator(mode="before")
    @classmethod
    def _hide_literal_token(cls, data: Any) -> Any:
        return _hide_literals(data, "token")


class NextLinkPagination(BaseModel):
    """Follow a next-page URL: at a JSON pointer into the body, or in the `Link: <...>; rel="next"` header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["next_link"] = "next_link"
    next_pointer: str | None = Field(
        default=None,
        pattern=r"^(/[^/]*)*$",
        description="JSON pointer to the next page's URL (`/links/next`); null or absent ends. "
        "Unset: the Link header's rel=next.",
    )


class PagePagination(StrictModel):
    """Ask for page 1, 2, 3... through a query parameter until a page comes back short or empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["page"] = "page"
    param: str = Field(default="page", min_length=1, description="The page number's query parameter.")
    start: int = Field(default=1, ge=0, description="The first page's number.")
    size_param: str | None = Field(default=None, min_length=1, description="The page size's query parameter.")
    size: int | None = Field(default=None, ge=1, le=100_000, description="Records asked for per page.")

    @model_validator(mode="after")
    def _size_pair(self) -> PagePagination:
        if (self.size_param is None) != (self.size is None):
            raise ValueError("size_param and size go together")
        return self


class HttpSource(_Recipients):
    """Recipients from an HTTP JSON API, read page by page with retries on 429 and 5xx."""

    kind: Literal["http"] = "http"
    url: str = Field(min_length=1, description="The first page's URL (http or https).")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters sent with every page.")
    records_path: str = Field(
        default="",
        pattern=r"^(/[^/]*)*$",
        description="JSON pointer to the list of records in a page (`/data`); empty: the body is the list.",
    )
    pagination: Annotated[NextLinkPagination | PagePagination, Field(discriminator="type")] | None = Field(
        default=None, description="How to get the next page; unset: one page only."
    )
    auth: HttpAuth | None = Field(default=None, description="An auth header whose value is kept in a secret.")
    timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="Timeout of one request.")
    max_retries: int = Field(
        default=4, ge=0, le=10, description="Retries of one page on 429, 5xx and network errors."
    )
    backoff_seconds: float = Field(
        default=0.5, ge=0, le=60, description="First retry delay; doubles each retry."
    )
    max_backoff_seconds: float = Field(
        default=10.0, ge=0, le=300, description="Longest retry delay (Retry-After too)."
    )
    max_pages: int = Field(
        default=100_000, ge=1, description="Stop with an error past this many pages (a loop guard)."
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_url_credentials(cls, data: Any) -> Any:
        url = data.get("url") if isinstance(data, dict) else None
        if isinstance(url, str) and "@" in urlsplit(url).netloc:
            parts = urlsplit(url)
            return {**data, "url": parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()}
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if "@" in parts.netloc:
            raise ValueError("must not carry credentials; name a secret in `auth` instead")
        return value


def _kind(value: Any) -> str:
    """The `kind` of a source given as a mapping or a model; `csv` when a mapping has none."""
    if isinstance(value, dict):
        return str(value.get("kind", "csv"))
    return str(getattr(value, "kind", "csv"))


Source = Annotated[
    Annotated[CsvSource, Tag("csv")]
    | Annotated[ParquetSource, Tag("parquet")]
    | Annotated[NdjsonSource, Tag("ndjson")]
    | Annotated[PostgresSource, Tag("postgres")]
    | Annotated[HttpSource, Tag("http")],
    Discriminator(_kind),
]
"""Any recipient source, discriminated on `kind` (default `csv`)."""

FileSource = CsvSource | ParquetSource | NdjsonSource

__all__ = [
    "FILE_KINDS",
    "CsvSource",
    "FileSource",
    "HttpAuth",
    "HttpSource",
    "NextLinkPagination",
    "NdjsonSource",
    "PagePagination",
    "ParquetSource",
    "PostgresSource",
    "SecretRef",
    "Source",
]
