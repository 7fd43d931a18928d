"""Recipient sources: the models, and each reader against real inputs.

Files are written to tmp_path, PostgreSQL is the local server (127.0.0.1:5432, a table per test, dropped
after), and the HTTP API is a Starlette app under uvicorn on a loopback port (tests/recipients_api.py).
The streaming pipeline and the flow over these sources are tested in
tests/{unit,integration}/test_streaming.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_sources.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import polars as pl
import pytest
from pydantic import TypeAdapter

from globe_sms.sources import (
    HttpSource,
    PostgresSource,
    SecretRef,
    Source,
)
from tasks.sources import (
    MissingPhoneColumn,
    SourceError,
    SourceHttpError,
    SourceQueryError,
    SourceSecretError,
    iter_source_batches,
    load_source,
)
from tasks.sources.http import iter_http_batches
from tests.recipients_api import ApiServer, RecipientsApi, serve

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SOURCE = TypeAdapter(Source)


def all_text(frame: pl.DataFrame) -> bool:
    return all(dtype == pl.String for dtype in frame.schema.values())


# ------------------------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pg_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh table of 25 recipients (typed columns) in the local database; dropped afterwards."""
    import psycopg

    table = f"test_recipients_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TEST_RECIPIENTS_DB_URL", PG_URL)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int, phone text, first_name text, code int, joined date, vip boolean)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (i, f"+65912{i:05d}", f"Name{i}", 100000 + i, date(2026, 1, 1 + i % 28), i % 2 == 0)
                    for i in range(25)
                ],
            )
    try:
        yield table
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def pg_source(query: str, env: str = "TEST_RECIPIENTS_DB_URL") -> PostgresSource:
    return PostgresSource(query=query, connection=SecretRef(env=env))


@pytest.mark.postgres
class TestPostgresSource:
    def test_a_query_is_read_in_bounded_batches_as_text(self, pg_table: str) -> None:
        """Every row in order, at most `batch_rows` a frame, ints, dates and booleans as text."""
        source = pg_source(f"SELECT id, phone, first_name, code, joined, vip FROM {pg_table} ORDER BY id")
        chunks = list(iter_source_batches(source, batch_rows=10))
        assert [chunk.height for chunk in chunks] == [10, 10, 5] and all(all_text(c) for c in chunks)
        frame = pl.concat(chunks)
        assert frame.row(0) == ("0", "+6591200000", "Name0", "100000", "2026-01-01", "true")
        assert frame["phone"].to_list() == [f"+65912{i:05d}" for i in range(25)]

    def test_the_url_can_come_from_a_secret_block(self, pg_table: str, prefect_server: str) -> None:
        """`connection: {block: name}` reads the URL from a Prefect Secret block."""
        from prefect.blocks.system import Secret

        name = f"test-db-url-{uuid.uuid4().hex[:8]}"
        Secret(value=PG_URL).save(name, overwrite=True)
        source = PostgresSource(query=f"SELECT phone FROM {pg_table}", connection=SecretRef(block=name))
        assert load_source(source).height == 25

    def test_a_missing_secret_block_is_named(self, prefect_server: str) -> None:
        source = PostgresSource(query="SELECT 1", connection=SecretRef(block="no-such-block-here"))
        with pytest.raises(SourceSecretError, match="cannot load Secret block 'no-such-block-here'"):
            load_source(source)

    def test_a_failing_query_is_a_clear_error_with_the_url_masked(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The database's message is kept (which relation), the URL and its password are not."""
        monkeypatch.setenv("TEST_RECIPIENTS_DB_URL", "postgresql://postgres:pw-hunter2@127.0.0.1:5432/test")
        with pytest.raises(
            SourceQueryError, match=r"source.query: the query failed: .*no_such_table"
        ) as caught:
            load_source(pg_source("SELECT phone FROM no_such_table"))
        assert "hunter2" not in str(caught.value) and "127.0.0.1" not in str(caught.value)

    def test_a_refused_connection_is_a_clear_error_with_the_password_masked(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "TEST_RECIPIENTS_DB_URL", "postgresql+psycopg://postgres:pw-hunter2@127.0.0.1:1/test"
        )
        with pytest.raises(SourceQueryError, match="cannot connect to PostgreSQL") as caught:
            load_source(pg_source("SELECT 1 AS phone"))
        assert "hunter2" not in str(caught.value)

    def test_a_query_without_the_phone_column_is_named(self, pg_table: str) -> None:
        with pytest.raises(MissingPhoneColumn, match="column 'mobile' not in the result of source.query"):
            load_source(
                PostgresSource(
                    query=f"SELECT id, phone FROM {pg_table}",
                    connection=SecretRef(env="TEST_RECIPIENTS_DB_URL"),
                    phone_column="mobile",
                )
            )

    def test_a_list_column_has_no_text_form(self, pg_table: str) -> None:
        with pytest.raises(SourceError, match="column 'tags' is List"):
            load_source(pg_source(f"SELECT phone, ARRAY['a', 'b'] AS tags FROM {pg_table}"))


# ------------------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------------------


def http_source(server: ApiServer, route: str, **extra: Any) -> HttpSource:
    data: dict[str, Any] = {
        "kind": "http",
        "url": f"{server.url}{route}",
        "auth": {"token": {"env": "RECIPIENTS_API_TOKEN"}},
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.02,
        **extra,
    }
    source = SOURCE.validate_python(data)
    assert isinstance(source, HttpSource)
    return source


NEXT_IN_BODY = {"records_path": "/data", "pagination": {"type": "next_link", "next_pointer": "/links/next"}}


class TestHttpSource:
    def test_next_links_in_the_body_are_followed_with_the_auth_header(
        self, recipients_api: ApiServer
    ) -> None:
        """Four pages (3+3+3+1) through relative next links; every request carried the token."""
        frame = load_source(http_source(recipients_api, "/cursor", **NEXT_IN_BODY))
        assert frame["phone"].to_list() == [r["phone"] for r in recipients_api.api.records]
        assert all_text(frame) and frame["code"].to_list()[0] == "100000"
        seen = recipients_api.api.requests
        assert [r.page for r in seen] == [0, 1, 2, 3] and all(r.authorized for r in seen)

    def test_link_header_pagination(self, recipients_api: ApiServer) -> None:
        """With no next_pointer, the Link header's rel=next is followed (and rel=first ignored)."""
        frame = load_source(http_source(recipients_api, "/linked", pagination={"type": "next_link"}))
        assert frame.height == 10 and [r.page for r in recipients_api.api.requests] == [0, 1, 2, 3]

    def test_page_parameter_pagination_stops_at_a_short_page(self, recipients_api: ApiServer) -> None:
        """page=1,2,3 with per_page=4: the third page has 2 records, so no fourth request."""
        source = http_source(
            recipients_api,
            "/paged",
            records_path="/items",
            pagination={"type": "page", "param": "page", "start": 1, "size_param": "per_page", "size": 4},
            params={"list": "welcome"},
        )
        assert load_source(source).height == 10
        seen = recipients_api.api.requests
        assert [r.query for r in seen] == [
            {"list": "welcome", "page": str(n), "per_page": "4"} for n in (1, 2, 3)
        ]

    def test_page_parameter_pagination_without_a_size_stops_at_an_empty_page(
        self, recipients_api: ApiServer
    ) -> None:
        source = http_source(recipients_api, "/paged", records_path="/items", pagination={"type": "page"})
        assert load_source(source).height == 10 and [r.page for r in recipients_api.api.requests] == [
            1,
            2,
            3,
            4,
            5,
        ]

    def test_a_transient_503_is_retried_with_backoff_then_succeeds(self, recipients_api: ApiServer) -> None:
        """Page 2 answers 503 twice, then 200: all records arrive, after two waits that grow."""
        recipients_api.api.faults[("cursor", 2)] = [503, 503]
        waits: list[float] = []
        source = http_source(recipients_api, "/cursor", **NEXT_IN_BODY)
        frame = pl.concat(list(iter_http_batches(source, 100, sleep=waits.append)))
        assert frame.height == 10 and waits == [0.01, 0.02]
        assert [r.page for r in recipients_api.api.requests] == [0, 1, 2, 2, 2, 3]

    def test_retry_after_is_honoured_within_the_cap(self, recipients_api: ApiServer) -> None:
        recipients_api.api.faults[("cursor", 0)] = [429]
        waits: list[float] = []
        list(
            iter_http_batches(http_source(recipients_api, "/cursor", **NEXT_IN_BODY), 100, sleep=waits.append)
        )
        assert waits == [0.0]  # the API says Retry-After: 0

    def test_an_error_mid_pagination_names_the_page_status_and_progress(
        self, recipients_api: ApiServer
    ) -> None:
        """Page 3 keeps failing: after max_retries + 1 attempts, a SourceHttpError says where and why."""
        recipients_api.api.faults[("cursor", 2)] = [500] * 10
        source = http_source(recipients_api, "/cursor", max_retries=2, **NEXT_IN_BODY)
        with pytest.raises(SourceHttpError) as caught:
            list(iter_http_batches(source, 100, sleep=lambda s: None))
        message = str(caught.value)
        assert "HTTP 500" in message and "page 3" in message and "6 records read before it" in message
        assert "after 3 attempt(s)" in message and "cursor=2" in message

    def test_a_wrong_token_is_not_retried_and_is_masked(
        self, recipients_api: ApiServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """401 fails at once; the API echoes the header, the error shows *** instead of the token."""
        monkeypatch.setenv("RECIPIENTS_API_TOKEN", "wrong-token-hunter2")
        with pytest.raises(SourceHttpError, match="HTTP 401") as caught:
            load_source(http_source(recipients_api, "/cursor", **NEXT_IN_BODY))
        assert "hunter2" not in str(caught.value) and "Bearer ***" in str(caught.value)
        assert len(recipients_api.api.requests) == 1

    def test_a_next_link_to_another_origin_is_refused(self) -> None:
        """The auth header must not follow a link off the API's origin."""
        import httpx

        def app(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, json={"data": [{"phone": "+6591234567"}], "next": "https://evil.example/x"}
            )

        source = HttpSource(
            url="https://api.example/r",
            records_path="/data",
            pagination={"type": "next_link", "next_pointer": "/next"},
        )  # type: ignore[arg-type]
        with pytest.raises(SourceHttpError, match="refusing to send the auth header to another origin"):
            list(iter_http_batches(source, 10, transport=httpx.MockTransport(app)))

    def test_an_answer_that_is_not_json_is_a_clear_error(self, recipients_api: ApiServer) -> None:
        with pytest.raises(SourceHttpError, match="is not JSON"):
            load_source(http_source(recipients_api, "/html"))

    def test_a_records_path_that_is_not_there_is_named(self, recipients_api: ApiServer) -> None:
        with pytest.raises(SourceHttpError, match="source.records_path: no '/results'"):
            load_source(http_source(recipients_api, "/cursor", records_path="/results"))

    def test_records_without_the_phone_column_are_named(self, recipients_api: ApiServer) -> None:
        source = http_source(recipients_api, "/cursor", phone_column="msisdn", **NEXT_IN_BODY)
        with pytest.raises(
            MissingPhoneColumn,
            match="column 'msisdn' not in the records of .*; columns are phone, first_name, code",
        ):
            load_source(source)

    def test_records_are_cut_into_bounded_frames(self, recipients_api: ApiServer) -> None:
        """Pages of 3 become frames of at most 4 rows, in order."""
        chunks = list(
            iter_source_batches(http_source(recipients_api, "/cursor", **NEXT_IN_BODY), batch_rows=4)
        )
        assert [c.height for c in chunks] == [4, 4, 2]
        assert pl.concat(chunks)["phone"].to_list() == [r["phone"] for r in recipients_api.api.records]

    def test_a_looping_next_link_hits_max_pages(self) -> None:
        import httpx

        def app(request: httpx.Request) -> httpx.Response:
            n = int(request.url.params.get("n", "0"))
            return httpx.Response(
                200, json={"data": [{"phone": f"+6591234{n:03d}"}], "next": f"/r?n={n + 1}"}
            )

        source = HttpSource(
            url="https://api.example/r",
            records_path="/data",
            max_pages=5,
            pagination={"type": "next_link", "next_pointer": "/next"},
        )  # type: ignore[arg-type]
        with pytest.raises(SourceHttpError, match="more than 5 pages"):
            list(iter_http_batches(source, 100, transport=httpx.MockTransport(app)))


def test_an_api_with_no_records_gives_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """One empty page, no next link: an empty all-text frame with the phone column, not an error."""
    with serve(RecipientsApi([]), monkeypatch) as server:
        frame = load_source(http_source(server, "/cursor", **NEXT_IN_BODY))
    assert frame.height == 0 and frame.columns == ["phone"] and all_text(frame)
