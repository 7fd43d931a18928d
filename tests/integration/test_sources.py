"""Recipient sources: the models, and each reader against real inputs.

Files are written to tmp_path, PostgreSQL is the local server (127.0.0.1:5432, a table per test, dropped
after), and the HTTP API is a Starlette app under uvicorn on a loopback port (tests/recipients_api.py).
The streaming pipeline and the flow over these sources are tested in tests/test_streaming.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from globe_sms.campaign import Campaign, CampaignFileError
from globe_sms.sources import (
    CsvSource,
    HttpSource,
    NdjsonSource,
    ParquetSource,
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
from tasks.sources.http import as_text_value, backoff, iter_http_batches, json_pointer, should_retry
from tasks.sources.secrets import mask_secrets
from tests.recipients_api import ApiServer, RecipientsApi, records, serve

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SOURCE = TypeAdapter(Source)


def all_text(frame: pl.DataFrame) -> bool:
    return all(dtype == pl.String for dtype in frame.schema.values())


# ------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------


class TestSourceModels:
    def test_a_source_without_kind_is_csv(self) -> None:
        """Campaign files written before sources had kinds still read a CSV."""
        assert isinstance(SOURCE.validate_python({"path": "x.csv"}), CsvSource)

    @pytest.mark.parametrize(
        ("data", "model"),
        [
            ({"kind": "parquet", "path": "a/*.parquet"}, ParquetSource),
            ({"kind": "ndjson", "path": "a.ndjson", "phone_column": "msisdn"}, NdjsonSource),
            ({"kind": "postgres", "query": "SELECT 1", "connection": {"env": "DB_URL"}}, PostgresSource),
            (
                {"kind": "http", "url": "https://crm.example.com/r", "auth": {"token": {"block": "crm"}}},
                HttpSource,
            ),
        ],
    )
    def test_each_kind_parses_to_its_model(self, data: dict[str, Any], model: type) -> None:
        """`kind` picks the model."""
        assert isinstance(SOURCE.validate_python(data), model)

    def test_a_literal_connection_url_is_refused_without_being_echoed(self) -> None:
        """A URL with a password given in place of a secret's name never shows in the error."""
        data = {"kind": "postgres", "query": "SELECT 1", "connection": "postgresql://u:hunter2@db/x"}
        with pytest.raises(ValidationError) as caught:
            SOURCE.validate_python(data)
        assert "never the secret itself" in str(caught.value) and "hunter2" not in str(caught.value)

    def test_a_literal_token_is_refused_without_being_echoed(self) -> None:
        """Same for the HTTP auth token."""
        with pytest.raises(ValidationError) as caught:
            SOURCE.validate_python({"kind": "http", "url": "https://h/r", "auth": {"token": "tok-hunter2"}})
        assert "hunter2" not in str(caught.value)

    def test_an_http_url_with_credentials_is_refused_masked(self) -> None:
        """`https://user:pass@host` is refused and the password is not echoed."""
        with pytest.raises(ValidationError, match="must not carry credentials") as caught:
            SOURCE.validate_python({"kind": "http", "url": "https://u:hunter2@h/r"})
        assert "hunter2" not in str(caught.value)

    def test_a_secret_ref_names_exactly_one_place(self) -> None:
        """Both or neither of `block` and `env` is an error."""
        with pytest.raises(ValidationError, match="exactly one"):
            SecretRef(block="a", env="B")
        with pytest.raises(ValidationError, match="exactly one"):
            SecretRef()

    def test_page_size_and_its_parameter_go_together(self) -> None:
        with pytest.raises(ValidationError, match="go together"):
            SOURCE.validate_python(
                {"kind": "http", "url": "https://h/r", "pagination": {"type": "page", "size": 5}}
            )

    def test_campaign_file_resolves_file_globs_and_leaves_queries_alone(self, tmp_path: Path) -> None:
        """Relative paths and globs resolve against the campaign file; a postgres source has no path."""
        file = tmp_path / "c.yaml"
        file.write_text("campaign_id: c\ntemplate: hi\nsource: {kind: parquet, path: 'exports/*.parquet'}\n")
        assert Campaign.from_yaml(file).source.path == str(tmp_path / "exports" / "*.parquet")  # type: ignore[union-attr]
        file.write_text(
            "campaign_id: c\ntemplate: hi\nsource: {kind: postgres, query: SELECT 1, connection: {env: X}}\n"
        )
        assert isinstance(Campaign.from_yaml(file).source, PostgresSource)

    def test_campaign_errors_name_the_source_field(self) -> None:
        with pytest.raises(CampaignFileError, match="source.postgres.connection"):
            Campaign.parse(
                {"campaign_id": "c", "template": "hi", "source": {"kind": "postgres", "query": "x"}}
            )


# ------------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------------


class TestFileSources:
    def test_a_csv_glob_reads_every_file_in_name_order_as_text(self, tmp_path: Path) -> None:
        """Phone text survives (`00`, spreadsheet floats), and files stack in name order."""
        (tmp_path / "b.csv").write_text("phone,code\n4.47911E+11,007\n")
        (tmp_path / "a.csv").write_text("phone,code\n0085291234567,001\n+6591234567,002\n")
        (tmp_path / "notes.txt").write_text("not matched")
        frame = load_source(CsvSource(path=str(tmp_path / "*.csv")))
        assert all_text(frame)
        assert frame.to_dict(as_series=False) == {
            "phone": ["0085291234567", "+6591234567", "4.47911E+11"],
            "code": ["001", "002", "007"],
        }

    def test_parquet_typed_columns_become_text(self, tmp_path: Path) -> None:
        """An integer, a float, a date and a struct column all come back as text."""
        pl.DataFrame(
            {
                "phone": [85291234567, 447911123456],
                "score": [4.47911e11, 1.5],
                "born": [date(1990, 1, 2), None],
                "meta": [{"tier": "gold"}, {"tier": None}],
            }
        ).write_parquet(tmp_path / "r.parquet")
        frame = load_source(ParquetSource(path=str(tmp_path / "r.parquet")))
        assert all_text(frame)
        assert frame.row(0) == ("85291234567", "447911000000.0", "1990-01-02", '{"tier":"gold"}')

    def test_ndjson_values_become_text_and_keys_union_across_files(self, tmp_path: Path) -> None:
        """A JSON number is its digits, an object its JSON text as written; a key only in file 2 is kept."""
        (tmp_path / "1.ndjson").write_text(
            json.dumps({"phone": 85291234567, "name": "A", "x": {"k": 1}})
            + "\n"
            + json.dumps({"phone": "+6591234567", "name": None})
            + "\n"
        )
        (tmp_path / "2.ndjson").write_text(json.dumps({"phone": "+447911123456", "lang": "en"}) + "\n")
        frame = load_source(NdjsonSource(path=str(tmp_path / "*.ndjson")))
        assert all_text(frame)
        assert frame["phone"].to_list() == ["85291234567", "+6591234567", "+447911123456"]
        assert frame["x"].to_list()[0] == '{"k": 1}' and frame["lang"].to_list() == [None, None, "en"]

    @pytest.mark.parametrize("kind", ["csv", "parquet", "ndjson"])
    def test_batches_are_bounded_and_cover_every_row_in_order(self, tmp_path: Path, kind: str) -> None:
        """`iter_source_batches` yields frames of at most `batch_rows` rows, all of them, in order."""
        frame = pl.DataFrame(
            {"phone": [f"+659123{i:04d}" for i in range(23)], "n": [str(i) for i in range(23)]}
        )
        for part, rows in enumerate((frame.head(10), frame.tail(13))):
            path = tmp_path / f"part{part}.{kind}"
            {"csv": rows.write_csv, "parquet": rows.write_parquet, "ndjson": rows.write_ndjson}[kind](path)
        source = SOURCE.validate_python({"kind": kind, "path": str(tmp_path / f"part*.{kind}")})
        chunks = list(iter_source_batches(source, batch_rows=4))
        assert max(chunk.height for chunk in chunks) <= 4 and all(all_text(chunk) for chunk in chunks)
        assert pl.concat(chunks).equals(frame)

    def test_a_missing_phone_column_is_named_with_the_columns_there_are(self, tmp_path: Path) -> None:
        (tmp_path / "r.csv").write_text("mobile,name\n+6591234567,A\n")
        with pytest.raises(
            MissingPhoneColumn, match=r"column 'phone' not in .*r\.csv; columns are mobile, name"
        ):
            list(iter_source_batches(CsvSource(path=str(tmp_path / "r.csv"))))

    def test_a_glob_matching_nothing_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(SourceError, match=r"no file matches .*\*\.parquet"):
            load_source(ParquetSource(path=str(tmp_path / "*.parquet")))

    def test_a_file_that_is_not_parquet_is_a_clear_error(self, tmp_path: Path) -> None:
        (tmp_path / "r.parquet").write_text("phone\n+6591234567\n")
        with pytest.raises(SourceError, match=r"cannot read .*r\.parquet as PARQUET"):
            load_source(ParquetSource(path=str(tmp_path / "r.parquet")))


# ------------------------------------------------------------------------------------------------------------
# Secrets
# ------------------------------------------------------------------------------------------------------------


class TestSecrets:
    def test_masking_hides_the_url_and_its_password_raw_and_decoded(self) -> None:
        url = SecretStr("postgresql://app:p%40ss-42@db:5432/x")
        text = "failed for postgresql://app:p%40ss-42@db:5432/x (password p@ss-42, raw p%40ss-42)"
        masked = mask_secrets(text, [url])
        assert "p@ss-42" not in masked and "p%40ss-42" not in masked and "***" in masked

    def test_an_unset_environment_variable_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("NO_SUCH_DB_URL", raising=False)
        source = PostgresSource(query="SELECT 1", connection=SecretRef(env="NO_SUCH_DB_URL"))
        with pytest.raises(
            SourceSecretError, match="source.connection: environment variable NO_SUCH_DB_URL is not set"
        ):
            list(iter_source_batches(source))


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


@pytest.fixture
def recipients_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The recipients API over 10 records, 3 a page."""
    with serve(RecipientsApi(records(10)), monkeypatch) as server:
        yield server


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


class TestRetryPolicy:
    def test_only_throttling_and_server_errors_are_retried(self) -> None:
        assert [s for s in (200, 400, 401, 404, 429, 500, 502, 503, 504) if should_retry(s)] == [
            429,
            500,
            502,
            503,
            504,
        ]

    def test_backoff_doubles_up_to_its_cap(self) -> None:
        assert [backoff(n, 0.5, 4.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]

    def test_json_pointer_follows_rfc_6901(self) -> None:
        doc = {"a/b": {"c~d": [10, 20]}}
        assert json_pointer(doc, "") is doc and json_pointer(doc, "/a~1b/c~0d/1") == 20
        with pytest.raises(KeyError):
            json_pointer(doc, "/missing")

    def test_json_values_become_text(self) -> None:
        values = [None, "x", True, 85291234567, 4.47911e11, {"k": [1]}]
        assert [as_text_value(v) for v in values] == [
            None,
            "x",
            "true",
            "85291234567",
            "447911000000.0",
            '{"k":[1]}',
        ]


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
