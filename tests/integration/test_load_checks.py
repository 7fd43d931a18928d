"""What `globe-sms send` refuses when the campaign file is loaded: exit 2, the field named, no flow run
created and nothing sent (the CLI in-process, against the real Prefect test server and the emulator). Unit
tests of the YAML loader, the strict numbers and the ledger URL rules follow.

The ledger's secret through a whole run is in tests/integration/test_ledger_secret.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_load_checks.py.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.campaign_yaml import YamlDocument
from globe_sms.cli import EXIT_BAD_INPUT, app
from globe_sms.ledger import LedgerUnreachable, LedgerUrlError
from globe_sms.ledger.url import check_plain_url, check_reachable, hide_password, location_from_text, masked
from globe_sms.sources import SecretRef
from tests.emulator_fixtures import FLOW_RATE

runner = CliRunner()
NUMBERS = [f"+8529123456{i}" for i in range(6)]


def flow_runs_named(name: str) -> list[Any]:
    """The flow runs of the Prefect test server whose name is `name` (a campaign id)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


@pytest.fixture
def write_campaign(tmp_path: Path, gateway: EmulatorServer):  # noqa: ANN201 - a factory
    """Write a recipients CSV and a campaign file sending it to the test's emulator; `body` replaces lines."""
    with (tmp_path / "recipients.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name"])
        writer.writerows([number, f"N{i}"] for i, number in enumerate(NUMBERS))

    def write(name: str, extra: str = "", **replace: str) -> Path:
        lines = {
            "campaign_id": f"campaign_id: {name}",
            "source": "source: {path: recipients.csv}",
            "template": "template: 'Hi {name}'",
            "sender_id": "sender_id: GlobeSMS",
            "batch_size": "batch_size: 5",
            "ledger": f"ledger: sqlite:///{tmp_path}/data/ledger.db",
            "gateway": f"gateway:\n  endpoint: {gateway.url}\n  calls_per_second: {FLOW_RATE}",
        }
        lines.update(replace)
        file = tmp_path / f"{name}.yaml"
        file.write_text("\n".join(lines.values()) + "\n" + extra, encoding="utf-8")
        return file

    return write


def refused(file: Path, campaign_id: str, gateway: EmulatorServer) -> str:
    """Run `globe-sms send file`; assert exit 2, no flow run, nothing sent; return the output."""
    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert flow_runs_named(campaign_id) == []
    assert not gateway.state.accepted_numbers()
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.mark.usefixtures("prefect_server")
class TestRefusedAtLoad:
    """Each bad campaign: exit 2, a message naming the field, no flow run created, nothing sent."""

    def test_the_good_campaign_is_sent(self, write_campaign, gateway: EmulatorServer) -> None:
        """The control: the same file without the fault sends every number (so the refusals are real)."""
        file = write_campaign("load-control")
        result = runner.invoke(app, ["send", str(file)])
        assert result.exit_code == 0, result.output
        assert len(dict(gateway.state.accepted_numbers())) == len(NUMBERS)
        assert len(flow_runs_named("load-control")) == 1

    @pytest.mark.parametrize(
        ("endpoint", "expected"),
        [
            ("ftp://sms.example.com", "scheme must be https"),
            ("http://sms.example.com", "refusing plain http:// to sms.example.com"),
            ("http://10.0.0.5:8080", "refusing plain http:// to 10.0.0.5"),
        ],
    )
    def test_a_bad_gateway_endpoint(self, write_campaign, gateway, endpoint: str, expected: str) -> None:
        file = write_campaign("load-endpoint", gateway=f"gateway:\n  endpoint: {endpoint}")
        output = refused(file, "load-endpoint", gateway)
        assert "gateway.endpoint:" in output and expected in output

    def test_a_date_id_that_resolves_past_100_characters(self, write_campaign, gateway) -> None:
        campaign_id = "a" * 91 + "-{date}"  # 98 characters as written, 102 once the date is in
        file = write_campaign("load-long-id", campaign_id=f"campaign_id: '{campaign_id}'")
        output = refused(file, "a" * 91, gateway)
        assert "campaign_id:" in output and "resolves to 102 characters" in output

    @pytest.mark.parametrize("host", ["127.0.0.1:9", "10.255.255.1:5432"])  # refused; no answer at all
    def test_an_unreachable_ledger(self, write_campaign, gateway, host: str) -> None:
        """A PostgreSQL nobody answers for: refused within the connect timeout, the URL shown."""
        url = f"postgresql+psycopg://globe@{host}/ledger"
        file = write_campaign("load-no-db", ledger=f"ledger: {url}")
        started = time.monotonic()
        output = refused(file, "load-no-db", gateway)
        assert time.monotonic() - started < 30
        assert f"ledger: cannot open the ledger {url}" in output

    def test_a_malformed_ledger_url(self, write_campaign, gateway) -> None:
        file = write_campaign("load-bad-url", ledger="ledger: ledger.db")
        output = refused(file, "load-bad-url", gateway)
        assert "ledger: Value error, the URL is not a SQLAlchemy URL" in output

    def test_another_database_than_sqlite_or_postgres(self, write_campaign, gateway) -> None:
        file = write_campaign("load-mysql", ledger="ledger: mysql://globe@db/ledger")
        assert "SQLite or PostgreSQL" in refused(file, "load-mysql", gateway)

    def test_a_ledger_secret_that_is_not_set(self, write_campaign, gateway, monkeypatch) -> None:
        monkeypatch.delenv("GLOBE_SMS_NO_SUCH_LEDGER", raising=False)
        file = write_campaign("load-no-secret", ledger="ledger: {env: GLOBE_SMS_NO_SUCH_LEDGER}")
        output = refused(file, "load-no-secret", gateway)
        assert "ledger: environment variable GLOBE_SMS_NO_SUCH_LEDGER is not set" in output

    def test_a_ledger_url_with_a_literal_password(self, write_campaign, gateway) -> None:
        """Refused, naming `ledger` and how to name the secret, without echoing the password."""
        url = "postgresql+psycopg://globe:Pa55-w0rd%21@127.0.0.1:5432/test"
        file = write_campaign("load-password", ledger=f"ledger: {url}")
        output = refused(file, "load-password", gateway)
        assert "ledger:" in output and "holds a password" in output
        assert "{env: LEDGER_URL}" in output and "{block: ledger-url}" in output
        assert "Pa55" not in output

    def test_a_password_in_the_ledger_query_string(self, write_campaign, gateway) -> None:
        url = "postgresql+psycopg://globe@127.0.0.1:5432/test?password=Pa55w0rd"
        output = refused(write_campaign("load-qpass", ledger=f"ledger: '{url}'"), "load-qpass", gateway)
        assert "holds a password" in output and "Pa55" not in output

    def test_a_duplicate_key(self, write_campaign, gateway) -> None:
        """PyYAML would keep the last `batch_size`: refused, naming the key and both lines."""
        file = write_campaign("load-dup", extra="batch_size: 1\n")
        output = refused(file, "load-dup", gateway)
        assert "line 10: duplicate key 'batch_size' (first on line 5)" in output

    def test_a_duplicate_key_in_a_nested_mapping(self, write_campaign, gateway) -> None:
        gateway_lines = f"gateway:\n  endpoint: {gateway.url}\n  calls_per_second: 20\n  calls_per_second: 50"
        output = refused(write_campaign("load-dup2", gateway=gateway_lines), "load-dup2", gateway)
        assert "duplicate key 'calls_per_second'" in output

    @pytest.mark.parametrize(
        ("replace", "extra", "field"),
        [
            ({"batch_size": "batch_size: true"}, "", "batch_size"),
            ({}, "validity_period: yes\n", "validity_period"),
            ({}, "budget: on\nprice_table: p.csv\n", "budget"),
            ({"gateway": "gateway: {calls_per_second: true}"}, "", "gateway.calls_per_second"),
            ({}, "validation: {max_reject_share: true}\n", "validation.max_reject_share"),
            ({"template": "template: {text: hi, max_segments: yes}"}, "", "template.max_segments"),
        ],
    )
    def test_a_boolean_where_a_number_is_wanted(self, write_campaign, gateway, replace, extra, field) -> None:
        output = refused(write_campaign("load-bool", extra, **replace), "load-bool", gateway)
        assert f"{field}:" in output and "is a boolean, not a number" in output

    def test_a_boolean_for_a_number_in_an_http_source(self, write_campaign, gateway) -> None:
        source = "source: {kind: http, url: 'https://crm.example.com/r', max_retries: true}"
        output = refused(write_campaign("load-bool-http", source=source), "load-bool-http", gateway)
        assert "source.http.max_retries:" in output and "is a boolean" in output

    @pytest.mark.parametrize(
        ("replace", "extra", "expected"),
        [
            ({"sender_id": "sender_id: 12345"}, "", "sender_id: Input should be a valid string; YAML reads "
             "the unquoted 12345 as a number: quote it, sender_id: '12345' (line 4)"),
            ({}, "validation: {deny_countries: [GB, NO]}\n", "validation.deny_countries.1: Input should be a "
             "valid string; YAML reads the unquoted NO as the boolean false: quote it, 'NO' (line 10)"),
            ({"sender_id": "sender_id: 0123"}, "", "YAML reads the unquoted 0123 as a number: quote it, "
             "sender_id: '0123' (line 4)"),  # YAML 1.1 reads it as the octal 83
            ({"template": "template: 12345"}, "", "template.text.str: Input should be a valid string; YAML "
             "reads the unquoted 12345 as a number: quote it, template: '12345' (line 3)"),
        ],
    )
    def test_text_that_yaml_reads_as_something_else(self, write_campaign, gateway, replace, extra, expected):
        output = refused(write_campaign("load-quote", extra, **replace), "load-quote", gateway)
        assert expected in output
        assert "valid dictionary" not in output  # a union's other members would only repeat the error

    def test_a_campaign_id_that_yaml_reads_as_a_date(self, write_campaign, gateway) -> None:
        file = write_campaign("x", campaign_id="campaign_id: 2026-11-05")
        output = refused(file, "2026-11-05", gateway)
        assert "campaign_id: Input should be a valid string; YAML reads the unquoted 2026-11-05 as a date: " \
               "quote it, campaign_id: '2026-11-05' (line 1)" in output

    def test_a_missing_source_file(self, write_campaign, gateway, tmp_path: Path) -> None:
        file = write_campaign("load-no-source", source="source: {path: nowhere.csv}")
        output = refused(file, "load-no-source", gateway)
        assert f"source.path: no such file: {tmp_path / 'nowhere.csv'}" in output

    def test_every_problem_found_by_preflight_is_listed(self, write_campaign, gateway) -> None:
        file = write_campaign(
            "load-two", source="source: {path: nowhere.csv}", ledger="ledger: postgresql://g@127.0.0.1:9/x"
        )
        output = refused(file, "load-two", gateway)
        assert "campaign load-two cannot start" in output and "ledger:" in output and "source.path:" in output


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_checks_again_when_started_without_the_cli(tmp_path: Path) -> None:
    """A run from the UI or a deployment meets the same preflight: an unreachable ledger fails it at once."""
    from flows.send_campaign import send_campaign
    from tasks.preflight import PreflightError

    (tmp_path / "r.csv").write_text("phone\n+85291234567\n")
    campaign = Campaign.parse(
        {
            "campaign_id": "load-flow-preflight",
            "source": {"path": str(tmp_path / "r.csv")},
            "template": "hi",
            "ledger": "postgresql+psycopg://globe@127.0.0.1:9/ledger",
        }
    )
    with pytest.raises(PreflightError, match="ledger: cannot open the ledger"):
        send_campaign(campaign)


class TestLedgerUrlRules:
    """`globe_sms.ledger.url`: what a ledger may be, how it is shown."""

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:///data/ledger.db",
            "sqlite://",
            "postgresql://globe@db/ledger",
            "postgresql+psycopg://globe@db:5432/ledger?options=-csearch_path%3Dx",
        ],
    )
    def test_urls_without_a_password_are_accepted(self, url: str) -> None:
        assert check_plain_url(url) == url

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://globe:S3cr3t@db/ledger",
            "postgresql://globe:S3c@r3t@db/ledger",  # an unencoded @ in the password
            "postgresql://globe@db/ledger?sslmode=require&PASSWORD=S3cr3t",
        ],
    )
    def test_a_password_is_refused_and_never_shown(self, url: str) -> None:
        with pytest.raises(LedgerUrlError) as caught:
            check_plain_url(url)
        assert "S3c" not in str(caught.value) and "{env: LEDGER_URL}" in str(caught.value)
        assert "S3c" not in hide_password(url) and "***" in hide_password(url)

    def test_hide_password_leaves_urls_without_one_alone(self) -> None:
        for url in ("postgresql://globe@db:5432/ledger", "postgresql://db:5432/ledger", "sqlite:///a:b@c.db"):
            assert hide_password(url) == url

    def test_the_command_line_names_a_secret_with_a_prefix(self) -> None:
        assert location_from_text("env:LEDGER_URL") == SecretRef(env="LEDGER_URL")
        assert location_from_text("block:ledger-url") == SecretRef(block="ledger-url")
        with pytest.raises(LedgerUrlError, match="env:NAME or block:NAME") as caught:
            location_from_text("postgresql://u:S3cr3t@h/db")
        assert "S3cr3t" not in str(caught.value)

    def test_masked_shows_where_a_secret_url_is_kept(self) -> None:
        assert masked(SecretRef(env="LEDGER_URL")) == "(the URL in environment variable LEDGER_URL)"
        assert masked("postgresql://u:S3cr3t@h/db") == "postgresql://u:***@h/db"

    def test_a_secret_that_is_not_a_url_is_refused_without_showing_it(self, monkeypatch) -> None:
        monkeypatch.setenv("GLOBE_SMS_TEST_LEDGER", "S3cr3t-not-a-url")
        with pytest.raises(LedgerUrlError) as caught:
            check_reachable(SecretRef(env="GLOBE_SMS_TEST_LEDGER"))
        assert "environment variable GLOBE_SMS_TEST_LEDGER is not a SQLAlchemy URL" in str(caught.value)
        assert "S3cr3t" not in str(caught.value)

    def test_an_unwritable_sqlite_folder_is_unreachable(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(LedgerUnreachable, match="cannot open the ledger"):
            check_reachable(f"sqlite:///{blocker}/sub/ledger.db")

    def test_checking_a_new_sqlite_ledger_creates_nothing(self, tmp_path: Path) -> None:
        """A refused campaign leaves no trace: the check only looks at the folder the run would create."""
        check_reachable(f"sqlite:///{tmp_path}/a/b/ledger.db")
        assert not (tmp_path / "a").exists()

    def test_a_file_that_is_not_a_database_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "ledger.db").write_text("phone,name\n" * 200)
        with pytest.raises(LedgerUnreachable, match="cannot open the ledger"):
            check_reachable(f"sqlite:///{tmp_path}/ledger.db")

    def test_the_yaml_loader_is_safe(self) -> None:
        with pytest.raises(yaml.YAMLError):
            YamlDocument.load("!!python/object/apply:os.system ['true']")

    def test_pydantic_never_quotes_the_password_in_its_error(self) -> None:
        """`Campaign.model_validate` (as Prefect calls it for a UI run): the echoed input is masked."""
        from pydantic import ValidationError

        data = {"campaign_id": "c", "source": {"path": "x"}, "template": "hi", "batch_size": True,
                "ledger": "postgresql://u:S3cr3t@h/db"}
        with pytest.raises(ValidationError) as caught:
            Campaign.model_validate(data)
        assert "postgresql://u:***@h/db" in str(caught.value) and "S3cr3t" not in str(caught.value)
        assert {error["loc"] for error in caught.value.errors()} == {("batch_size",), ("ledger",)}
