"""Sources are bounded and honest (issue #13, points 5, 7 and 9): what a user gets wrong is refused clearly.

`globe-sms send` (typer's CliRunner, a real Prefect test server) on real files: a plain-http or credential-
carrying http source, a binary file read as CSV, an over-long, duplicate or header-only CSV all exit 2 with
a message, before any flow run exists. The http reader against the real recipients API of
tests/recipients_api.py: secret query parameters sent and masked in httpx's log, next links to another host
refused before a request, page bodies bounded, deeply nested JSON a `SourceHttpError`. The readers themselves
are tested in tests/{unit,integration}/test_sources.py; the receiver's limits in
tests/integration/test_receiver_limits.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_source_bounds.py.
"""

from __future__ import annotations

import gzip
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

from globe_sms.cli import EXIT_BAD_INPUT, app
from globe_sms.sources import CsvSource, HttpSource, Source, is_secret_parameter
from tasks.sources import SourceError, SourceHttpError, iter_source_batches, load_source
from tests.recipients_api import TOKEN, ApiServer, RecipientsApi, records, serve

SOURCE = TypeAdapter(Source)
runner = CliRunner()
PHONES = "phone,first_name\n+6591234567,Ann\n+6591234568,Bo\n"


def campaign_file(folder: Path, source: str) -> Path:
    """A campaign through the emulator whose `source:` line is `source` (YAML flow mapping)."""
    file = folder / "campaign.yaml"
    file.write_text(f"campaign_id: bounds\nsource: {source}\ntemplate: 'Hi {{first_name}}'\n")
    return file


def flow_run_count() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


def minimal_xlsx(path: Path) -> None:
    """A real (minimal) Excel workbook: the OOXML parts Excel itself needs, one sheet with one cell."""
    with zipfile.ZipFile(path, "w") as book:
        book.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            "</Types>",
        )
        book.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        book.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<sheets><sheet name="Sheet1" sheetId="1"/></sheets></workbook>',
        )
        book.writestr(
            "xl/worksheets/sheet1.xml",
            '<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>phone</t></is></c></row></sheetData>'
            "</worksheet>",
        )


# ------------------------------------------------------------------------------------------------------------
# `globe-sms send`: refused at load, exit 2, no flow run
# ------------------------------------------------------------------------------------------------------------


def _plain_http(folder: Path) -> str:
    return "{kind: http, url: 'http://crm.example.com/api/recipients'}"


def _key_in_url(folder: Path) -> str:
    return "{kind: http, url: 'https://crm.example.com/api/recipients?list=a&api_key=hunter2-KEY'}"


def _key_in_params(folder: Path) -> str:
    return "{kind: http, url: 'https://crm.example.com/r', params: {access_token: hunter2-KEY}}"


def _duplicate_columns(folder: Path) -> str:
    (folder / "list.csv").write_text("phone,first_name,phone\n+6591234567,Ann,+6591234999\n")
    return "{path: list.csv}"


def _header_only(folder: Path) -> str:
    (folder / "list.csv").write_text("phone,first_name\n")
    return "{path: list.csv}"


def _workbook_renamed(folder: Path) -> str:
    minimal_xlsx(folder / "list.csv")
    return "{path: list.csv}"


def _gzip_renamed(folder: Path) -> str:
    (folder / "list.csv").write_bytes(gzip.compress(PHONES.encode()))
    return "{path: list.csv}"


def _parquet_as_csv(folder: Path) -> str:
    pl.DataFrame({"phone": ["+6591234567"], "first_name": ["Ann"]}).write_parquet(folder / "list.parquet")
    return "{kind: csv, path: list.parquet}"


def _workbook_by_name(folder: Path) -> str:
    minimal_xlsx(folder / "list.xlsx")
    return "{path: list.xlsx}"


def _one_long_line(folder: Path) -> str:
    (folder / "list.csv").write_bytes(b"phone" + b",x" * 1_500_000)  # 3 MB, no line break
    return "{path: list.csv}"


LOAD_REFUSALS = {
    "plain http to a remote host": (_plain_http, "refusing plain http:// to crm.example.com"),
    "an API key in the URL": (_key_in_url, "secret_params: {api_key: {env: VARIABLE}}"),
    "a token in params": (_key_in_params, "'access_token' in `params` look like a credential"),
    "duplicate CSV columns": (_duplicate_columns, "names a column more than once: 'phone' (columns 1, 3)"),
    "a header-only CSV": (_header_only, "has column names but no rows: nothing to send"),
    "an Excel workbook renamed .csv": (_workbook_renamed, "(it looks like an Excel workbook"),
    "a gzip file renamed .csv": (_gzip_renamed, "(it looks like gzip-compressed data); decompress it"),
    "Parquet read as CSV": (_parquet_as_csv, "(it looks like a Parquet file); set kind: parquet"),
    "an .xlsx path without kind": (
        _workbook_by_name,
        "is not a CSV file by its extension (an Excel workbook",
    ),
    "a first line of megabytes": (_one_long_line, "is longer than 1,048,576 bytes (no line break)"),
}


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("case", list(LOAD_REFUSALS))
def test_send_refuses_at_load_with_exit_2_and_no_flow_run(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each mistake: exit 2, a message saying what and how to fix it, no secret or raw byte, no flow run."""
    monkeypatch.chdir(tmp_path)  # where a run would put `.data/` (ledger, spool), wherever paths resolve
    write_source, expected = LOAD_REFUSALS[case]
    file = campaign_file(tmp_path, write_source(tmp_path))
    runs_before = flow_run_count()
    result = runner.invoke(app, ["send", str(file)], terminal_width=400)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert expected in output, result.output
    assert "hunter2" not in output and "Traceback" not in output
    assert "\x00" not in output and "[Content_Types]" not in output and "PK\x03" not in output
    assert flow_run_count() == runs_before
    assert not (tmp_path / ".data").exists()  # no ledger, spool or rejects file was made


@pytest.mark.usefixtures("prefect_server")
def test_a_header_only_csv_is_refused_by_the_flow_too(tmp_path: Path) -> None:
    """A run from the UI or a deployment does not pass through the CLI: the flow refuses it itself."""
    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign

    (tmp_path / "list.csv").write_text("phone,first_name\n")
    campaign = Campaign.parse(
        {
            "campaign_id": "bounds-flow",
            "source": {"path": str(tmp_path / "list.csv")},
            "template": "Hi",
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        }
    )
    with pytest.raises(SourceError, match="nothing to send"):
        send_campaign(campaign)


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("name", ["list.parquet", "list.jsonl"])
def test_a_file_kind_comes_from_its_extension_end_to_end(name: str, tmp_path: Path) -> None:
    """No `kind`: a .parquet or .jsonl file is read as what it is, and the dry run goes through."""
    frame = pl.DataFrame({"phone": ["+6591234567", "+6591234568"], "first_name": ["Ann", "Bo"]})
    if name.endswith(".parquet"):
        frame.write_parquet(tmp_path / name)
    else:
        frame.write_ndjson(tmp_path / name)
    file = campaign_file(tmp_path, f"{{path: {name}}}")
    result = runner.invoke(app, ["send", str(file), "--dry-run"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output


class TestHttpModel:
    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8080/r", "http://127.0.0.2/r", "http://localhost/r", "http://[::1]:8/r"]
    )
    def test_plain_http_to_loopback_is_allowed(self, url: str) -> None:
        assert SOURCE.validate_python({"kind": "http", "url": url}).url == url  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        "url", ["http://10.0.0.5/r", "http://crm.example.com/r", "http://[2001:db8::1]/r"]
    )
    def test_plain_http_elsewhere_is_refused(self, url: str) -> None:
        with pytest.raises(ValidationError, match="refusing plain http://"):
            SOURCE.validate_python({"kind": "http", "url": url})

    @pytest.mark.parametrize(
        "name",
        [
            "key",
            "api_key",
            "apikey",
            "X-Api-Key",
            "access_token",
            "token",
            "client_secret",
            "password",
            "signature",
            "sig",
            "auth",
        ],
    )
    def test_credential_names(self, name: str) -> None:
        assert is_secret_parameter(name)

    @pytest.mark.parametrize("name", ["page", "per_page", "list", "cursor", "page_token", "next_token", "q"])
    def test_ordinary_names(self, name: str) -> None:
        assert not is_secret_parameter(name)

    def test_a_refused_key_is_not_echoed_by_pydantic(self) -> None:
        """pydantic quotes the input in its errors: the value is masked before it can."""
        for data in (
            {"kind": "http", "url": "https://h/r?apikey=hunter2-KEY"},
            {"kind": "http", "url": "https://h/r", "params": {"token": "hunter2-KEY"}},
            {"kind": "http", "url": "https://h/r", "secret_params": {"api_key": "hunter2-KEY"}},
        ):
            with pytest.raises(ValidationError) as caught:
                SOURCE.validate_python(data)
            assert "hunter2" not in str(caught.value)

    def test_a_parameter_given_twice_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="both in secret_params and in url or params"):
            SOURCE.validate_python(
                {"kind": "http", "url": "https://h/r?apiKeyId=1", "secret_params": {"apiKeyId": {"env": "K"}}}
            )


# ------------------------------------------------------------------------------------------------------------
# The http reader against a real API
# ------------------------------------------------------------------------------------------------------------


NEXT_IN_BODY = {"records_path": "/data", "pagination": {"type": "next_link", "next_pointer": "/links/next"}}


def http_source(server: ApiServer, route: str, **extra: Any) -> HttpSource:
    data: dict[str, Any] = {
        "kind": "http",
        "url": f"{server.url}{route}",
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.02,
        **extra,
    }
    source = SOURCE.validate_python(data)
    assert isinstance(source, HttpSource)
    return source


BEARER = {"auth": {"token": {"env": "RECIPIENTS_API_TOKEN"}}}


@pytest.fixture
def key_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The recipients API checking the token in `?api_key=` (10 records, 3 a page)."""
    with serve(RecipientsApi(records(10), key_param="api_key"), monkeypatch) as server:
        yield server


@pytest.fixture
def bearer_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    with serve(RecipientsApi(records(10)), monkeypatch) as server:
        yield server


class TestSecretParams:
    def test_the_key_goes_with_every_page_and_never_into_the_log(
        self, key_api: ApiServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Four pages through relative next links, each with ?api_key=; httpx's request lines are masked."""
        caplog.set_level(logging.INFO, logger="httpx")
        source = http_source(
            key_api, "/cursor", secret_params={"api_key": {"env": "RECIPIENTS_API_TOKEN"}}, **NEXT_IN_BODY
        )
        frame = load_source(source)
        assert frame.height == 10 and all(seen.authorized for seen in key_api.api.requests)
        assert len(key_api.api.requests) == 4
        lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
        assert len(lines) == 4 and all("api_key=***" in line for line in lines), lines
        assert not any(TOKEN in line for line in lines)

    def test_page_pagination_keeps_the_key_with_the_plain_params(self, key_api: ApiServer) -> None:
        source = http_source(
            key_api,
            "/paged",
            records_path="/items",
            params={"list": "welcome"},
            secret_params={"api_key": {"env": "RECIPIENTS_API_TOKEN"}},
            pagination={"type": "page", "size_param": "per_page", "size": 4},
        )
        assert load_source(source).height == 10
        assert [seen.query for seen in key_api.api.requests] == [
            {"list": "welcome", "api_key": TOKEN, "page": str(n), "per_page": "4"} for n in (1, 2, 3)
        ]

    def test_the_urls_own_query_is_kept_with_params(self, bearer_api: ApiServer) -> None:
        """`url: ...?list=welcome` plus `params`: both are sent (httpx's `params=` alone drops the first)."""
        source = http_source(
            bearer_api, "/paged?list=welcome", records_path="/items", params={"tier": "vip"}, **BEARER
        )
        load_source(source)
        assert bearer_api.api.requests[0].query == {"list": "welcome", "tier": "vip"}

    def test_a_wrong_key_fails_with_the_url_masked(
        self, key_api: ApiServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="httpx")
        monkeypatch.setenv("CRM_KEY", "wrong key+hunter2/=")  # characters that are encoded in a query
        source = http_source(
            key_api, "/cursor", secret_params={"api_key": {"env": "CRM_KEY"}}, **NEXT_IN_BODY
        )
        with pytest.raises(SourceHttpError, match="HTTP 401") as caught:
            load_source(source)
        message = str(caught.value) + caplog.text
        assert "api_key=***" in str(caught.value) and "hunter2" not in message, message

    def test_an_unset_key_variable_is_named(self, key_api: ApiServer) -> None:
        source = http_source(key_api, "/cursor", secret_params={"api_key": {"env": "NO_SUCH_VARIABLE_X"}})
        with pytest.raises(SourceError, match="source.secret_params.api_key: environment variable"):
            load_source(source)
        assert key_api.api.requests == []


class TestPaginationOrigin:
    @pytest.mark.parametrize(
        "base", ["http://localhost:{port}", "https://127.0.0.1:{port}", "http://127.0.0.1:9"]
    )
    def test_a_next_link_to_another_origin_gets_no_request(
        self, base: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another host name, another scheme, another port: refused before the token or key can follow."""
        api = RecipientsApi(records(10))
        with serve(api, monkeypatch) as server:
            api.next_base = base.format(port=server.url.rsplit(":", 1)[1])
            source = http_source(server, "/cursor", **BEARER, **NEXT_IN_BODY)
            with pytest.raises(SourceHttpError, match="refusing to send the auth header to another origin"):
                load_source(source)
        assert [seen.page for seen in api.requests] == [0]

    def test_an_absolute_next_link_on_the_same_origin_is_followed(self, bearer_api: ApiServer) -> None:
        bearer_api.api.next_base = bearer_api.url
        frame = load_source(http_source(bearer_api, "/cursor", **BEARER, **NEXT_IN_BODY))
        assert frame.height == 10 and [seen.page for seen in bearer_api.api.requests] == [0, 1, 2, 3]


class TestPageLimits:
    @pytest.mark.parametrize("chunked", [False, True])
    def test_a_page_over_max_page_bytes_is_refused(self, bearer_api: ApiServer, chunked: bool) -> None:
        """Declared (Content-Length) or streamed: a 3 MB page with a 1 MiB limit is a clear error."""
        route = "/big?bytes=3000000" + ("&chunked=1" if chunked else "")
        source = http_source(bearer_api, route, max_page_bytes=1024 * 1024, **BEARER)
        with pytest.raises(SourceHttpError, match="larger than 1,048,576 bytes") as caught:
            load_source(source)
        expected = "more than 1,048,576 bytes arrived" if chunked else "it declares 3,000,000 bytes"
        assert expected in str(caught.value) and "raise max_page_bytes" in str(caught.value)

    def test_a_page_under_the_limit_is_read(self, bearer_api: ApiServer) -> None:
        source = http_source(bearer_api, "/big?bytes=900000&chunked=1", max_page_bytes=1024 * 1024, **BEARER)
        assert load_source(source)["phone"].to_list() == ["+6591200000"]

    def test_the_default_limit_is_documented_and_overridable(self) -> None:
        field = HttpSource.model_fields["max_page_bytes"]
        assert field.default == 64 * 1024 * 1024 and "64 MiB" in (field.description or "")
        assert "1 MiB" in (CsvSource.model_fields["max_header_bytes"].description or "")

    def test_deeply_nested_json_is_a_source_error(self, bearer_api: ApiServer) -> None:
        """100,000 nested arrays: a SourceHttpError naming the page, not a RecursionError."""
        source = http_source(bearer_api, "/nested?depth=100000", **BEARER)
        with pytest.raises(SourceHttpError, match="nested too deeply"):
            list(iter_source_batches(source))
