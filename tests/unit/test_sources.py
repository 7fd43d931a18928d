"""Recipient sources: the models, and each reader against real inputs.

Files are written to tmp_path, PostgreSQL is the local server (127.0.0.1:5432, a table per test, dropped
after), and the HTTP API is a Starlette app under uvicorn on a loopback port (tests/recipients_api.py).
The streaming pipeline and the flow over these sources are tested in
tests/{unit,integration}/test_streaming.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_sources.py.
"""

from __future__ import annotations

import json
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
    SourceSecretError,
    iter_source_batches,
    load_source,
)
from tasks.sources.http import as_text_value, backoff, json_pointer, should_retry
from tasks.sources.secrets import mask_secrets
from tests.recipients_api import ApiServer, RecipientsApi, records, serve

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

    @pytest.mark.parametrize(
        ("data", "model"),
        [
            ({"query": "SELECT 1", "connection": {"env": "DB_URL"}}, PostgresSource),
            ({"url": "https://crm.example.com/r"}, HttpSource),
        ],
    )
    def test_without_kind_or_path_the_fields_say_the_kind(self, data: dict[str, Any], model: type) -> None:
        """A form that leaves `kind` unsaid (the schema's `anyOf` takes such a value) is read as the member
        its fields fit, as the schema reads it; a path still means a file."""
        assert isinstance(SOURCE.validate_python(data), model)
        with pytest.raises(ValidationError, match="query"):
            SOURCE.validate_python({"path": "r.csv", "query": "SELECT 1"})

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
# HTTP
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def recipients_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The recipients API over 10 records, 3 a page."""
    with serve(RecipientsApi(records(10)), monkeypatch) as server:
        yield server


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
