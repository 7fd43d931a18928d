"""Recipient sources: where a campaign's recipients come from (models; readers in `tasks/sources/`).

`Source` is a pydantic union discriminated on `kind`. A file source without `kind` takes it from the path's
extension (`.parquet`; `.ndjson` or `.jsonl`; `.csv`; a glob's too: `exports/*.parquet`); any other
extension is read as CSV, as before sources had kinds (`.txt` and `.tsv` exports are CSV with another
separator), except formats that are certainly not CSV (`.xlsx`, `.xls`, `.gz`, `.zip`, `.json`...), which
are refused at load with what to do instead. Without `kind` or `path`, a `query` is a postgres source and a
`url` an http one. An explicit `kind` always wins. In JSON schema (the UI's run form) the union is an
`anyOf` whose members say the same (`globe_sms.form_schema`).

| kind | reads | secrets |
|---|---|---|
| `csv`, `parquet`, `ndjson` | a local file, or the files a glob matches (`out/*.csv`), by name | none |
| `postgres` | one SQL query, through ADBC in Arrow record batches | the connection URL: `connection` |
| `http` | a JSON API through httpx, page after page | the auth header's value: `auth.token` |

Every reader yields all-text columns, so a phone number is never turned into an integer or a float.

No secret is ever written in a campaign: `SecretRef` names a Prefect Secret block or an environment variable
holding it, and refuses a literal value. The resolved value is unwrapped only where a connection or a request
is made, and masked in every error and log line (`tasks/sources/secrets.py`). An http source refuses a
query parameter named like a credential (`api_key`, `token`, `signature`...) in `url` or `params`: its value
goes in `secret_params` instead. It also refuses plain `http://` except to loopback (127.0.0.0/8, ::1,
`localhost`), as the gateway endpoint does (`alibaba_sms.endpoints`).

Size limits (each a field with a default, raised where a user needs more): a CSV header line
(`max_header_bytes`, 1 MiB), one http page's body (`max_page_bytes`, 64 MiB), the number of pages
(`max_pages`, 100,000).

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
    source:
      kind: http
      url: https://api.example.com/v2/contacts
      params: {list: welcome}
      secret_params: {api_key: {env: CONTACTS_API_KEY}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from globe_sms.form_schema import AnyOfUnion, extend_schema, ignore_case
from globe_sms.strict_model import StrictModel

FILE_KINDS = ("csv", "parquet", "ndjson")
# The kind a file source without `kind` gets from its path's extension; any other extension means csv.
KIND_BY_EXTENSION = {".csv": "csv", ".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# Extensions of files that are never text CSV: refused at load when no kind is given, with what to do.
NOT_CSV_EXTENSIONS = {
    ".xlsx": "an Excel workbook: export it as CSV (File > Save As > CSV UTF-8)",
    ".xlsm": "an Excel workbook: export it as CSV (File > Save As > CSV UTF-8)",
    ".xls": "an Excel workbook: export it as CSV (File > Save As > CSV UTF-8)",
    ".ods": "a spreadsheet: export it as CSV",
    ".numbers": "a spreadsheet: export it as CSV",
    ".gz": "compressed: decompress it first",
    ".zip": "a ZIP archive: extract the CSV from it",
    ".bz2": "compressed: decompress it first",
    ".xz": "compressed: decompress it first",
    ".zst": "compressed: decompress it first",
    ".json": "JSON: if it holds one object per line, set kind: ndjson (or name it .ndjson / .jsonl)",
}
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024
DEFAULT_MAX_PAGE_BYTES = 64 * 1024 * 1024
# Query parameter names that carry credentials, compared lowercase without `-` and `_` (`X-Api-Key` ->
# `xapikey`): exact names, and suffixes (`client_secret`, `access_token`, `x-api-key`). Cursor tokens
# (`page_token`, `next_token`) name a position, not a secret.
_SECRET_NAMES = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "signature",
        "sig",
        "auth",
        "authorization",
        "accesstoken",
        "credential",
        "credentials",
        "sessionid",
        "session",
        "jwt",
        "bearer",
        "privatekey",
    }
)
_SECRET_SUFFIXES = (
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "token",
    "secret",
    "password",
    "signature",
)
# An http source's URL as the schema says it (`HttpSource._http_url` says more): https:// with a host and no
# user info, or http:// to loopback only.
_HTTP_URL = (
    "^(?:" + ignore_case("https://") + "[^/?#@\\s]+"
    "|" + ignore_case("http://") + "(?:" + ignore_case("localhost") + "|127(?:\\.[0-9]{1,3}){3}|\\[::1\\])"
    "(?::[0-9]*)?)(?:[/?#]|$)"
)
_CURSOR_TOKENS = ("pagetoken", "nexttoken", "continuationtoken", "cursortoken", "synctoken")
_NAME = r"^[A-Za-z0-9_./:-]+$"
_NOT_BLANK = r"\S"  # JSON schema: at least one character that is not white space


def _kindless_path(pattern: str, *, matching: bool) -> dict[str, Any]:
    """Schema keywords of a file source for a value without `kind`: its path must (or must not) match
    `pattern`, as `_kind` picks the kind from the path's extension."""
    path = {"pattern": pattern} if matching else {"not": {"pattern": pattern}}
    return {"if": {"not": {"required": ["kind"]}}, "then": {"properties": {"path": path}}}


def _extensions(*suffixes: str) -> str:
    """A pattern matching a path or glob ending in one of `suffixes`, in any case."""
    return "(?:" + "|".join(ignore_case(suffix) for suffix in suffixes) + ")$"


def _kind_of(*kinds: str) -> str:
    return _extensions(*(extension for extension, kind in KIND_BY_EXTENSION.items() if kind in kinds))

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

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # Exactly one of the two, said without `oneOf`/`anyOf` (which the UIs would show as tabs).
        json_schema_extra=extend_schema(
            **{
                "if": {"required": ["block"], "properties": {"block": {"type": "string"}}},
                "then": {"properties": {"env": {"type": "null"}}},
                "else": {"required": ["env"], "properties": {"env": {"type": "string"}}},
            }
        ),
    )

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


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter's name says it carries a credential (`api_key`, `access_token`, `sig`...)."""
    folded = name.lower().replace("-", "").replace("_", "")
    if folded in _SECRET_NAMES:
        return True
    return folded.endswith(_SECRET_SUFFIXES) and not folded.endswith(_CURSOR_TOKENS)


def path_extension(path: str) -> str:
    """The lowercase extension of a path or glob (`exports/*.PARQUET` -> `.parquet`), `""` without one."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    return f".{extension.lower()}" if dot and stem and extension else ""


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

    # Without `kind`: any path but one whose extension names another kind or a format that is not CSV.
    model_config = ConfigDict(
        title="CSV file",
        json_schema_extra=extend_schema(
            **_kindless_path(
                _extensions(*(e for e, k in KIND_BY_EXTENSION.items() if k != "csv"), *NOT_CSV_EXTENSIONS),
                matching=False,
            )
        ),
    )
    kind: Literal["csv"] = "csv"
    separator: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    encoding: Literal["utf8", "utf8-lossy"] = Field(default="utf8", description="Text encoding of the file.")
    max_header_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_BYTES,
        ge=1024,
        le=256 * 1024 * 1024,
        description="The longest header line (the first line, column names) read, in bytes (default 1 MiB); "
        "a file whose first line is longer (e.g. no line breaks at all) is refused, not read into memory.",
    )

    @model_validator(mode="before")
    @classmethod
    def _not_a_known_binary_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data and isinstance(data.get("path"), str):
            what = NOT_CSV_EXTENSIONS.get(path_extension(data["path"]))
            if what is not None:
                raise ValueError(
                    f"{data['path']} is not a CSV file by its extension ({what}); "
                    "set `kind` if it really is CSV, Parquet or NDJSON"
                )
        return data


class ParquetSource(_FileSource):
    """Recipients from Parquet files; typed columns are cast to text (a numeric phone has lost its '+')."""

    model_config = ConfigDict(
        title="Parquet file",
        json_schema_extra=extend_schema(**_kindless_path(_kind_of("parquet"), matching=True)),
    )

    kind: Literal["parquet"] = "parquet"


class NdjsonSource(_FileSource):
    """Recipients from newline-delimited JSON files (one object per line); every value is read as text."""

    model_config = ConfigDict(
        title="NDJSON file",
        json_schema_extra=extend_schema(**_kindless_path(_kind_of("ndjson"), matching=True)),
    )

    kind: Literal["ndjson"] = "ndjson"


class PostgresSource(_Recipients):
    """Recipients from a PostgreSQL query, read through ADBC in Arrow record batches (flat memory)."""

    model_config = ConfigDict(title="PostgreSQL query")

    kind: Literal["postgres"] = "postgres"
    query: str = Field(
        min_length=1,
        json_schema_extra={"pattern": _NOT_BLANK},
        description="The SELECT that returns one row per recipient.",
    )
    connection: SecretRef = Field(
        title="Connection",
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
    token: SecretRef = Field(title="Token", description="Where the token is kept.")

    @model_validator(mode="before")
    @classmethod
    def _hide_literal_token(cls, data: Any) -> Any:
        return _hide_literals(data, "token")


class NextLinkPagination(BaseModel):
    """Follow a next-page URL: at a JSON pointer into the body, or in the `Link: <...>; rel="next"` header."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Next link")

    type: Literal["next_link"] = "next_link"
    next_pointer: str | None = Field(
        default=None,
        pattern=r"^(/[^/]*)*$",
        description="JSON pointer to the next page's URL (`/links/next`); null or absent ends. "
        "Unset: the Link header's rel=next.",
    )


class PagePagination(StrictModel):
    """Ask for page 1, 2, 3... through a query parameter until a page comes back short or empty."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="Page numbers",
        json_schema_extra=extend_schema(  # size_param and size go together
            **{
                "if": {"required": ["size_param"], "properties": {"size_param": {"type": "string"}}},
                "then": {"required": ["size"], "properties": {"size": {"type": "integer"}}},
                "else": {"properties": {"size": {"type": "null"}}},
            }
        ),
    )

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

    model_config = ConfigDict(title="HTTP JSON API")

    kind: Literal["http"] = "http"
    url: str = Field(
        min_length=1,
        json_schema_extra={"pattern": _HTTP_URL},
        description="The first page's URL: https://, or http:// to loopback only (127.0.0.0/8, ::1, "
        "localhost). No credentials in it: a query parameter such as api_key goes in `secret_params`.",
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters sent with every page (not with next links, which carry their own). "
        "None may carry a credential (api_key, token, signature...): use `secret_params`.",
    )
    secret_params: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="Query parameters whose values are secrets (`{api_key: {env: CRM_API_KEY}}`): read when "
        "the first request is made, sent with every page (next links too, same origin only), and masked "
        "in every log line and error.",
    )
    records_path: str = Field(
        default="",
        pattern=r"^(/[^/]*)*$",
        description="JSON pointer to the list of records in a page (`/data`); empty: the body is the list.",
    )
    pagination: (
        Annotated[NextLinkPagination | PagePagination, Field(discriminator="type"), AnyOfUnion()] | None
    ) = Field(
        default=None, description="How to get the next page; unset: one page only."
    )
    auth: HttpAuth | None = Field(
        default=None, title="Auth", description="An auth header whose value is kept in a secret."
    )
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
    max_page_bytes: int = Field(
        default=DEFAULT_MAX_PAGE_BYTES,
        ge=1024,
        le=2 * 1024 * 1024 * 1024,
        description="The largest page body read, in bytes after decompression (default 64 MiB); a larger "
        "page is an error, stopped as soon as the limit is passed. Raise it, or ask the API for smaller "
        "pages.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_url_credentials(cls, data: Any) -> Any:
        """Mask what is refused below before pydantic quotes the input in an error: userinfo, credential-like
        query values in `url` and `params`, literal `secret_params`."""
        if not isinstance(data, dict):
            return data
        url, params, secret_params = data.get("url"), data.get("params"), data.get("secret_params")
        if isinstance(url, str):
            parts = masked = urlsplit(url)
            if "@" in parts.netloc:
                masked = masked._replace(netloc="***@" + parts.netloc.rpartition("@")[2])
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            if any(is_secret_parameter(name) for name, _ in pairs):
                shown = [(name, "***" if is_secret_parameter(name) else value) for name, value in pairs]
                masked = masked._replace(query=urlencode(shown, safe="*"))
            if masked != parts:  # else leave the URL exactly as written
                data = {**data, "url": masked.geturl()}
        if isinstance(params, dict) and any(is_secret_parameter(str(name)) for name in params):
            shown_params = {k: "***" if is_secret_parameter(str(k)) else v for k, v in params.items()}
            data = {**data, "params": shown_params}
        if isinstance(secret_params, dict) and any(isinstance(v, str) for v in secret_params.values()):
            hidden = {name: _HIDDEN if isinstance(v, str) else v for name, v in secret_params.items()}
            data = {**data, "secret_params": hidden}
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if "@" in parts.netloc:
            raise ValueError("must not carry credentials; name a secret in `auth` instead")
        # Here, not at the top: the API package loads httpx, which reading a campaign file does not need.
        from alibaba_sms.endpoints import is_loopback

        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"refusing plain http:// to {parts.hostname}: the auth token and the recipients' numbers "
                "would cross the network in clear text; use https:// (http is allowed for loopback only: "
                "127.0.0.0/8, ::1, localhost)"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        secret = [name for name, _ in query if is_secret_parameter(name)]
        if secret:
            raise ValueError(_secret_parameter_hint(secret, "in the URL's query"))
        return value

    @field_validator("params")
    @classmethod
    def _no_secret_params(cls, value: dict[str, str]) -> dict[str, str]:
        secret = [name for name in value if is_secret_parameter(name)]
        if secret:
            raise ValueError(_secret_parameter_hint(secret, "in `params`"))
        return value

    @model_validator(mode="after")
    def _parameters_once(self) -> HttpSource:
        query = {name for name, _ in parse_qsl(urlsplit(self.url).query, keep_blank_values=True)}
        twice = sorted((query | set(self.params)) & set(self.secret_params))
        if twice:
            raise ValueError(
                f"query parameter(s) {', '.join(twice)} given both in secret_params and in url or params"
            )
        return self


def _secret_parameter_hint(names: list[str], where: str) -> str:
    """The refusal for credential-like query parameters, naming them (never their values) and the fix."""
    listed = ", ".join(repr(name) for name in names)
    example = names[0]
    return (
        f"query parameter(s) {listed} {where} look like a credential, which would be stored in the flow "
        f"run's parameters and logged with every request URL; keep the value in a secret instead: "
        f"`secret_params: {{{example}: {{env: VARIABLE}}}}` (or `{{block: NAME}}` for a Prefect Secret block)"
    )


def _kind(value: Any) -> str:
    """The `kind` of a source given as a mapping or a model; for a mapping without one, the path's extension
    says (`.parquet`, `.ndjson`/`.jsonl`, `.csv`, anything else `csv`), and without a path, a `query` means
    `postgres` and a `url` `http` (a form that leaves the kind unsaid is read as the member its fields fit).
    """
    if isinstance(value, dict):
        if "kind" in value:
            return str(value["kind"])
        path = value.get("path")
        if isinstance(path, str):
            return KIND_BY_EXTENSION.get(path_extension(path), "csv")
        if "path" not in value and "query" in value:
            return "postgres"
        if "path" not in value and "url" in value:
            return "http"
        return "csv"
    return str(getattr(value, "kind", "csv"))


Source = Annotated[
    Annotated[CsvSource, Tag("csv")]
    | Annotated[ParquetSource, Tag("parquet")]
    | Annotated[NdjsonSource, Tag("ndjson")]
    | Annotated[PostgresSource, Tag("postgres")]
    | Annotated[HttpSource, Tag("http")],
    Discriminator(_kind),
    AnyOfUnion(),
]
"""Any recipient source, discriminated on `kind` (default: from the extension, else `csv`)."""

FileSource = CsvSource | ParquetSource | NdjsonSource

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_PAGE_BYTES",
    "FILE_KINDS",
    "KIND_BY_EXTENSION",
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
    "is_secret_parameter",
    "path_extension",
]
