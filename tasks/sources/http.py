"""An HTTP JSON API read page by page through httpx, with bounded retries on 429, 5xx and network errors.

Each page is one GET. Its records are found by a JSON pointer (`records_path`, RFC 6901) and must be JSON
objects; their values are turned into text (`85212345678` stays digits, `4.47911e11` becomes
`447911000000.0` and is then caught as spreadsheet damage, `true` -> `true`, objects and lists -> JSON).
The next page comes from:

* `next_link`: a URL at a JSON pointer in the body (relative URLs resolve against the page's), or the
  `Link: <...>; rel="next"` header. A next link to another origin (scheme, host or port) is refused, before
  any request to it: the auth header and the `secret_params` would follow it. That covers a downgrade to
  `http://` on the same host and another name for the same machine (`localhost` for `127.0.0.1`). An API
  whose pages live on another host cannot be read with a token; the first URL's rules (https, or http to
  loopback) therefore hold for every page.
* `page`: a page-number query parameter, from `start` until a page is empty (or shorter than `size`).

Bounds: a page's body is read as a stream and refused as soon as it passes `max_page_bytes` (a declared
`Content-Length` above it is refused before reading); past `max_pages` pages the read stops with an error;
JSON nested deeper than Python's parser goes is an error naming the page, not a `RecursionError`.

Secrets: the auth token and the `secret_params` values are read when the reading starts, sent only to the
first URL's origin, and masked (`***`) in every error and in httpx's request log line, which otherwise
carries each URL's query.

Retries (`should_retry`, `backoff`): 429 and 5xx answers and transport errors are retried up to
`max_retries` times, waiting `backoff_seconds * 2**n` capped at `max_backoff_seconds` (a `Retry-After` header
is honoured up to the same cap). Anything else, or the last failure, is a `SourceHttpError` naming the page,
the status and how many records were read before it; the auth secret is masked in every message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import polars as pl
from pydantic import SecretStr

from globe_sms.sources import HttpSource, NextLinkPagination, PagePagination
from tasks.sources.errors import SourceHttpError, missing_phone_column
from tasks.sources.secrets import mask_secrets, masked_in_httpx_log, query_value_forms, resolve_secret

Sleep = Callable[[float], None]
_BODY_EXCERPT = 200
_EXCERPT_BYTES = 4096


def should_retry(status: int) -> bool:
    """Whether an HTTP status is worth another try: throttled (429) or a server error (5xx)."""
    return status == 429 or 500 <= status <= 599


def backoff(retry: int, base: float, cap: float) -> float:
    """Seconds before retry number `retry` (0-based): exponential from `base`, capped at `cap`."""
    return min(cap, base * 2**retry)


def retry_after(response: httpx.Response, cap: float) -> float | None:
    """The `Retry-After` delay in seconds (delta-seconds form), capped at `cap`; None if absent or a date."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(cap, max(0.0, seconds))


def json_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer (`""` is the whole document); KeyError when a step is missing."""
    if pointer == "":
        return document
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise KeyError(pointer)
    return value


def as_text_value(value: Any) -> str | None:
    """One JSON value as text: strings as they are, numbers as written by Python, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def records_frame(records: list[dict[str, Any]], columns: list[str]) -> pl.DataFrame:
    """Records as a frame of String columns `columns` (a key a record lacks is null)."""
    data = []
    for name in columns:
        values = [record.get(name) for record in records]
        try:  # the common case, all strings and nulls, without a Python call per value
            data.append(pl.Series(name, values, dtype=pl.String, strict=True))
        except (TypeError, pl.exceptions.PolarsError):
            data.append(pl.Series(name, [as_text_value(value) for value in values], dtype=pl.String))
    return pl.DataFrame(data)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _Pages:
    """Fetches the pages of one `HttpSource` with retries; iterating yields each page's records."""

    def __init__(
        self,
        source: HttpSource,
        client: httpx.Client,
        sleep: Sleep,
        secrets: list[SecretStr],
        secret_query: dict[str, str],
    ) -> None:
        self.source = source
        self.client = client
        self.sleep = sleep
        self.secrets = secrets
        self.secret_query = secret_query
        self.records_read = 0
        self.pages_read = 0

    def _fail(self, message: str) -> SourceHttpError:
        return SourceHttpError(mask_secrets(message, self.secrets))

    def _where(self, url: str) -> str:
        return f"GET {url} (page {self.pages_read + 1}; {self.records_read:,} records read before it)"

    def get(self, url: str) -> tuple[httpx.Response, bytes]:
        """One page and its body, retried on 429/5xx/transport errors; `SourceHttpError` on anything else."""
        source = self.source
        for retry in range(source.max_retries + 1):
            last = retry == source.max_retries
            try:
                with self.client.stream("GET", url) as response:
                    if response.is_success:
                        return response, self._body(response)
                    excerpt = _excerpt(response)
            except httpx.TransportError as exc:
                if last:
                    raise self._fail(
                        f"source.url: {type(exc).__name__} on {self._where(url)} after "
                        f"{retry + 1} attempt(s): {exc}"
                    ) from None
                self.sleep(backoff(retry, source.backoff_seconds, source.max_backoff_seconds))
                continue
            if should_retry(response.status_code) and not last:
                delay = retry_after(response, source.max_backoff_seconds)
                self.sleep(
                    delay
                    if delay is not None
                    else backoff(retry, source.backoff_seconds, source.max_backoff_seconds)
                )
                continue
            raise self._fail(
                f"source.url: HTTP {response.status_code} {response.reason_phrase} "
                f"on {self._where(str(response.url))} "
                f"after {retry + 1} attempt(s)" + (f": {excerpt}" if excerpt else "")
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, response: httpx.Response) -> bytes:
        """The body, read in chunks and refused as soon as it passes `max_page_bytes`."""
        limit = self.source.max_page_bytes
        declared = response.headers.get("content-length", "")
        if "content-encoding" not in response.headers and declared.isdigit() and int(declared) > limit:
            raise self._too_big(response, f"it declares {int(declared):,} bytes")
        body = bytearray()
        for chunk in response.iter_bytes():  # decompressed: the limit bounds memory, not the wire
            body += chunk
            if len(body) > limit:
                raise self._too_big(response, f"more than {limit:,} bytes arrived")
        return bytes(body)

    def _too_big(self, response: httpx.Response, what: str) -> SourceHttpError:
        return self._fail(
            f"source.max_page_bytes: the answer to {self._where(str(response.url))} is larger than "
            f"{self.source.max_page_bytes:,} bytes ({what}); ask the API for smaller pages, or raise "
            "max_page_bytes"
        )

    def records(self, response: httpx.Response, content: bytes) -> tuple[Any, list[dict[str, Any]]]:
        """The page's JSON body and its records; raises `SourceHttpError` when either is not as configured."""
        where = self._where(str(response.url))
        try:
            body = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._fail(f"source.url: the answer to {where} is not JSON") from None
        except RecursionError:
            raise self._fail(f"source.url: the answer to {where} is JSON nested too deeply to read") from None
        try:
            records = json_pointer(body, self.source.records_path)
        except KeyError:
            raise self._fail(
                f"source.records_path: no {self.source.records_path!r} in the answer to {where}"
            ) from None
        if not isinstance(records, list):
            raise self._fail(
                f"source.records_path: {self.source.records_path or 'the body'!s} is a "
                f"{type(records).__name__}, not a list of records, in the answer to {where}"
            )
        bad = next((i for i, record in enumerate(records) if not isinstance(record, dict)), None)
        if bad is not None:
            raise self._fail(
                f"source.records_path: record {bad} is a {type(records[bad]).__name__}, not a JSON object, "
                f"in the answer to {where}"
            )
        return body, records

    def frame(self, records: list[dict[str, Any]], columns: list[str]) -> pl.DataFrame:
        """`records_frame`; a value nested too deeply to write as JSON text is a `SourceHttpError`."""
        try:
            return records_frame(records, columns)
        except RecursionError:
            raise self._fail(
                f"source.url: a record read by page {self.pages_read} holds a value nested too deeply to "
                "turn into text"
            ) from None

    def next_url(self, response: httpx.Response, body: Any, pagination: NextLinkPagination) -> str | None:
        """The next page's absolute URL, or None at the end; refuses a link to another origin."""
        if pagination.next_pointer is None:
            link = response.links.get("next", {}).get("url")
        else:
            try:
                link = json_pointer(body, pagination.next_pointer)
            except KeyError:
                link = None
        if link in (None, ""):
            return None
        if not isinstance(link, str):
            raise self._fail(
                f"source.pagination.next_pointer: the next link is a {type(link).__name__}, not a URL"
            )
        absolute = urljoin(str(response.url), link)
        if _origin(absolute) != _origin(str(response.url)):
            raise self._fail(
                f"source.pagination: the next link {absolute} leaves "
                f"{response.url.scheme}://{response.url.netloc.decode()}; "
                "refusing to send the auth header to another origin"
            )
        # The link carries its own query; the secret parameters are added (same origin only, as checked).
        absolute = with_params(absolute, self.secret_query)
        if absolute == str(response.url):
            raise self._fail(f"source.pagination: page {self.pages_read} links to itself ({absolute})")
        return absolute

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        source, pagination = self.source, self.source.pagination
        # Parameters are merged into the URL's own query (httpx's `params=` would replace it).
        url: str | None = with_params(source.url, {**source.params, **self.secret_query})
        page_no = pagination.start if isinstance(pagination, PagePagination) else 0
        while url is not None:
            if self.pages_read >= source.max_pages:
                raise self._fail(
                    f"source.max_pages: more than {source.max_pages:,} pages; is the pagination looping?"
                )
            if isinstance(pagination, PagePagination):
                page = {pagination.param: str(page_no)}
                if pagination.size_param is not None:
                    page[pagination.size_param] = str(pagination.size)
                url = with_params(source.url, {**source.params, **self.secret_query, **page})
            response, content = self.get(url)
            body, records = self.records(response, content)
            self.pages_read += 1
            self.records_read += len(records)
            if records:
                yield records
            if isinstance(pagination, NextLinkPagination):
                url = self.next_url(response, body, pagination)
            elif isinstance(pagination, PagePagination):
                short = pagination.size is not None and len(records) < pagination.size
                page_no += 1
                url = None if not records or short else url
            else:
                url = None


def with_params(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to its query (a parameter it already has takes the new value)."""
    return str(httpx.URL(url).copy_merge_params(params)) if params else url


def _excerpt(response: httpx.Response) -> str:
    """The start of an error answer's body as printable text (at most `_BODY_EXCERPT` characters)."""
    head = bytearray()
    for chunk in response.iter_bytes():
        head += chunk
        if len(head) >= _EXCERPT_BYTES:
            break
    text = bytes(head[:_EXCERPT_BYTES]).decode(response.encoding or "utf-8", errors="replace")
    return "".join(c if c.isprintable() else " " for c in text[:_BODY_EXCERPT]).strip()


def _headers(source: HttpSource, secrets: list[SecretStr]) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if source.auth is not None:
        token = resolve_secret(source.auth.token, "source.auth.token")
        secrets.append(token)
        value = token.get_secret_value()
        headers[source.auth.header] = f"{source.auth.scheme} {value}" if source.auth.scheme else value
    return headers


def _secret_query(source: HttpSource, secrets: list[SecretStr]) -> dict[str, str]:
    """The `secret_params`, resolved; each value's URL forms are added to `secrets` for masking."""
    query = {}
    for name, ref in source.secret_params.items():
        value = resolve_secret(ref, f"source.secret_params.{name}").get_secret_value()
        secrets.extend(query_value_forms(value))
        query[name] = value
    return query


def iter_http_batches(
    source: HttpSource,
    batch_rows: int,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep = time.sleep,
) -> Iterator[pl.DataFrame]:
    """The API's records as all-text frames of at most `batch_rows` rows, in page order.

    Args:
        source: the source.
        batch_rows: rows per frame.
        transport: an httpx transport (tests pass `MockTransport`); default: the network.
        sleep: how to wait between retries (tests pass a recorder).

    Raises:
        SourceSecretError: the auth secret or a `secret_params` secret is missing.
        SourceHttpError: a page failed (after retries), is too large, is not JSON (or nested too deeply),
            or has no records list; a next link leaves the first URL's origin; more than `max_pages`.
        MissingPhoneColumn: no record of the first page has `phone_column`.
    """
    secrets: list[SecretStr] = []
    headers = _headers(source, secrets)
    secret_query = _secret_query(source, secrets)
    columns: dict[str, None] = {}
    buffered: list[dict[str, Any]] = []
    with (
        masked_in_httpx_log(secrets),
        httpx.Client(
            transport=transport, headers=headers, timeout=source.timeout_seconds, follow_redirects=False
        ) as client,
    ):
        pages = _Pages(source, client, sleep, secrets, secret_query)
        for records in pages:
            first = not columns
            for record in records:
                columns.update(dict.fromkeys(record))
            if first and source.phone_column not in columns:
                raise missing_phone_column(source.phone_column, list(columns), f"the records of {source.url}")
            buffered.extend(records)
            while len(buffered) >= batch_rows:
                yield pages.frame(buffered[:batch_rows], list(columns))
                del buffered[:batch_rows]
        if buffered:
            yield pages.frame(buffered, list(columns))
