"""Streaming: chunked validation and rendering into the Parquet spool, planning from it, and the flow over
every source kind.

The spool must give the same result whatever the chunk size: the same messages and the same rejects with the
same reasons as validating and rendering the whole list in one frame (the reference below). The flow tests run
on the real Prefect test server, the emulator, PostgreSQL and the local recipients API; the readers alone are
tested in tests/{unit,integration}/test_sources.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_streaming.py.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from globe_sms.template import MessageTemplate
from globe_sms.validation_rules import ValidationRules
from tasks.render import render_messages
from tasks.spool import Spool, write_spool
from tasks.validate import validate_recipients

TEMPLATE = MessageTemplate(text="Hi {first_name}, code {code} – welcome")
HK, SG, GB = "+85291234567", "+6591234567", "+447911123456"
# Row numbers are 1-based. Repeats across any chunking: row 7 repeats row 1 (valid), row 9 repeats row 3
# (whose name is missing: rendering rejects row 3, and row 9 is still a duplicate of it), row 10 is in
# another format of row 2, row 12 repeats the suppressed row 11, row 8 repeats an invalid number.
ROWS = [
    (HK, "Ann", "1"),
    (SG, "Bo", "2"),
    ("+85261234567", "", "3"),
    ("+8613800138000", "Cy", "4"),
    ("hello", "Di", "5"),
    (GB, "Ed", "6"),
    (HK, "Fay", "7"),
    ("+8613800138000", "Gus", "8"),
    ("+852 6123 4567", "Hal", "9"),
    ("0065 9123 4567", "Ida", "10"),
    ("+61412345678", "Jo", "11"),
    ("+61 412 345 678", "Kay", "12"),
    ("+60123456789", "Lu", "13"),
]


def recipients() -> pl.DataFrame:
    return pl.DataFrame(
        ROWS, schema={"phone": pl.String, "first_name": pl.String, "code": pl.String}, orient="row"
    )


@pytest.fixture
def rules(tmp_path: Path) -> ValidationRules:
    opt_out = tmp_path / "opt-out.txt"
    opt_out.write_text("+61412345678\n")
    return ValidationRules(suppression_file=str(opt_out))


def chunks(frame: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    yield from frame.iter_slices(rows)


def spool(tmp_path: Path, rules: ValidationRules, rows: int, frame: pl.DataFrame | None = None) -> Spool:
    frame = recipients() if frame is None else frame
    return write_spool(
        chunks(frame, rows), tmp_path / f"spool-{rows}", phone_column="phone", template=TEMPLATE, rules=rules
    )


def reference(rules: ValidationRules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole list validated and rendered in one frame: messages, and rejects by row."""
    validation = validate_recipients(recipients(), "phone", rules)
    rendered = render_messages(validation.valid, TEMPLATE)
    rejects = pl.concat([validation.rejects, rendered.rejects], how="diagonal_relaxed").sort("source_row")
    return rendered.messages, rejects


# ------------------------------------------------------------------------------------------------------------
# Planning from the spool
# ------------------------------------------------------------------------------------------------------------


def campaign(tmp_path: Path, **overrides: Any) -> Campaign:
    data = {
        "campaign_id": "plan-test",
        "source": {"path": "x.csv"},
        "template": "Hi",
        "batch_size": 4,
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        **overrides,
    }
    return Campaign.parse(data)


def messages(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "phone": [f"659123{i:04d}" for i in range(n)],
            "country": "SG",
            "message": [f"m{i}" for i in range(n)],
        }
    )


# ------------------------------------------------------------------------------------------------------------
# The flow over every source kind
# ------------------------------------------------------------------------------------------------------------

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer  # noqa: E402
from flows.send_campaign import send_campaign  # noqa: E402
from tests.recipients_api import ApiServer  # noqa: E402

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
RATE = 50.0
FLOW_ROWS = [(phone, name, code) for phone, name, code in ROWS if name]  # rendering needs every name
VALID_SENT = {"85291234567", "6591234567", "447911123456", "85261234567", "61412345678", "60123456789"}

MakeCampaign = Callable[..., Campaign]


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """An emulator at a fast rate, credentials in the environment, and chunks of 3 rows."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("GLOBE_SMS_CHUNK_ROWS", "3")  # several chunks, duplicates across them
    server = EmulatorServer(EmulatorConfig(batch_calls_per_second=RATE)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_campaign(tmp_path: Path, gateway: EmulatorServer, request: pytest.FixtureRequest) -> MakeCampaign:
    name = request.node.name.lower().replace("_", "-")[:50].strip("-") + "-" + uuid.uuid4().hex[:6]

    def make(source: dict[str, Any], **overrides: Any) -> Campaign:
        return Campaign.parse(
            {
                "campaign_id": name,
                "source": source,
                "template": "Hi {first_name}, code {code}",
                "sender_id": "GlobeSMS",
                "batch_size": 2,
                "ledger": f"sqlite:///{tmp_path / 'data' / 'ledger.db'}",
                "validation": {"max_reject_share": 0.5},
                "gateway": {
                    "endpoint": gateway.url,
                    "calls_per_second": RATE,
                    "rate_limit_name": f"test-{name}",
                },
                **overrides,
            }
        )

    return make


def sent_numbers(server: EmulatorServer) -> dict[str, int]:
    return dict(server.state.accepted_numbers())


def no_spool_left(campaign: Campaign) -> bool:
    return campaign.data_folder.is_dir() and not (campaign.data_folder / "spool").exists()


def write_flow_rows(path: Path, header: tuple[str, ...] = ("phone", "first_name", "code")) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(FLOW_ROWS)


@pytest.mark.usefixtures("prefect_server")
class TestFlowOverSources:
    def test_a_parquet_glob_in_chunks_sends_each_valid_number_once(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, tmp_path: Path
    ) -> None:
        """Two Parquet files, chunks of 3: every valid number gets one message, repeats are rejected."""
        frame = pl.DataFrame(FLOW_ROWS, schema=["phone", "first_name", "code"], orient="row")
        frame.head(5).write_parquet(tmp_path / "a.parquet")
        frame.tail(-5).write_parquet(tmp_path / "b.parquet")
        c = make_campaign({"kind": "parquet", "path": str(tmp_path / "*.parquet")})
        summary = send_campaign(c)
        assert sent_numbers(gateway) == dict.fromkeys(VALID_SENT, 1)
        assert summary.source_rows == len(FLOW_ROWS) and summary.accepted == len(VALID_SENT)
        assert summary.rejected_by_reason["duplicate"] == 3 and summary.rejects_file is not None
        assert pl.read_csv(summary.rejects_file).height == summary.rejected
        assert no_spool_left(c)

    def test_an_ndjson_source_dry_run_plans_and_sends_nothing(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, tmp_path: Path
    ) -> None:
        frame = pl.DataFrame(FLOW_ROWS, schema=["phone", "first_name", "code"], orient="row")
        frame.write_ndjson(tmp_path / "r.ndjson")
        summary = send_campaign(
            make_campaign({"kind": "ndjson", "path": str(tmp_path / "r.ndjson")}, dry_run=True)
        )
        assert summary.planned == len(VALID_SENT) and summary.batches == 3
        assert summary.preview is not None and summary.preview.messages == len(VALID_SENT)
        assert gateway.state.requests() == []

    @pytest.mark.postgres
    def test_a_postgres_source_sends_each_valid_number_once(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with pg_rows() as table:
            monkeypatch.setenv("TEST_FLOW_DB_URL", PG_URL)
            c = make_campaign(
                {
                    "kind": "postgres",
                    "query": f"SELECT * FROM {table} ORDER BY n",
                    "connection": {"env": "TEST_FLOW_DB_URL"},
                }
            )
            summary = send_campaign(c)
        assert sent_numbers(gateway) == dict.fromkeys(VALID_SENT, 1) and summary.accepted == len(VALID_SENT)
        assert no_spool_left(c)

    def test_an_http_source_sends_each_valid_number_once(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, recipients_api: ApiServer
    ) -> None:
        recipients_api.api.records = [{"phone": p, "first_name": n, "code": int(c)} for p, n, c in FLOW_ROWS]
        summary = send_campaign(make_campaign(http_campaign_source(recipients_api)))
        assert sent_numbers(gateway) == dict.fromkeys(VALID_SENT, 1) and summary.accepted == len(VALID_SENT)
        assert all(r.authorized for r in recipients_api.api.requests)


@pytest.mark.usefixtures("prefect_server")
class TestBadInputSendsNothing:
    def test_a_missing_phone_column(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, tmp_path: Path
    ) -> None:
        from tasks.sources import MissingPhoneColumn

        write_flow_rows(tmp_path / "r.csv", header=("mobile", "first_name", "code"))
        c = make_campaign({"path": str(tmp_path / "r.csv")})
        with pytest.raises(MissingPhoneColumn, match="column 'phone' not in .*r.csv; columns are mobile"):
            send_campaign(c)
        assert_nothing_sent(gateway, c)

    @pytest.mark.postgres
    def test_a_failing_query(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from tasks.sources import SourceQueryError

        monkeypatch.setenv("TEST_FLOW_DB_URL", PG_URL)
        c = make_campaign(
            {
                "kind": "postgres",
                "query": "SELECT phone FROM recipients_that_do_not_exist",
                "connection": {"env": "TEST_FLOW_DB_URL"},
            }
        )
        with pytest.raises(SourceQueryError, match="recipients_that_do_not_exist"):
            send_campaign(c)
        assert_nothing_sent(gateway, c)

    def test_an_http_error_mid_pagination(
        self, make_campaign: MakeCampaign, gateway: EmulatorServer, recipients_api: ApiServer
    ) -> None:
        """Pages 1-2 spooled (chunks of 3), page 3 keeps failing: nothing sent, no spool left."""
        from tasks.sources import SourceHttpError

        recipients_api.api.records = [{"phone": p, "first_name": n, "code": c} for p, n, c in FLOW_ROWS]
        recipients_api.api.faults[("cursor", 2)] = [502] * 10
        c = make_campaign(http_campaign_source(recipients_api, max_retries=1))
        with pytest.raises(SourceHttpError, match=r"HTTP 502 .*\(page 3; 6 records read before it\)"):
            send_campaign(c)
        assert_nothing_sent(gateway, c)


def assert_nothing_sent(gateway: EmulatorServer, c: Campaign) -> None:
    assert gateway.state.requests() == []
    with Ledger(c.ledger) as ledger:
        assert sum(ledger.counts(c.campaign_id).values()) == 0
    assert no_spool_left(c)


def http_campaign_source(server: ApiServer, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "http",
        "url": f"{server.url}/cursor",
        "records_path": "/data",
        "pagination": {"type": "next_link", "next_pointer": "/links/next"},
        "auth": {"token": {"env": "RECIPIENTS_API_TOKEN"}},
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.02,
        **extra,
    }


class pg_rows:  # noqa: N801 - used as a context manager, like a function
    """FLOW_ROWS in a fresh table with a row number `n`; dropped on exit."""

    def __enter__(self) -> str:
        import psycopg

        self.table = f"test_flow_recipients_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {self.table} (n int, phone text, first_name text, code int)")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s)",
                    [(i, p, name, int(code)) for i, (p, name, code) in enumerate(FLOW_ROWS)],
                )
        return self.table

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")
