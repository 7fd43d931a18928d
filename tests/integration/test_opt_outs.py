"""Opt-out lists as a user meets them: `globe-sms send` and the flow on real files, a real PostgreSQL table,
a real Prefect test server and the emulator on loopback.

An unreadable opt-out line stops the campaign with exit 2 and nothing sent; `suppression_unreadable: ignore`
sends and counts them; an extension still suppresses; a missing file is refused before any flow run.
Unit tests of the parser are in tests/unit/test_suppression.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import EXIT_BAD_INPUT, EXIT_OK, app
from tests.emulator_fixtures import FLOW_RATE

pytestmark = pytest.mark.usefixtures("prefect_server")

RECIPIENTS = [f"+4479111234{n:02d}" for n in range(10)]  # 447911123400 .. 447911123409
runner = CliRunner()

WriteCampaign = Callable[..., Path]


def digits(number: str) -> str:
    return number.lstrip("+")


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone (it folds a long path mid-word, so all spaces go)."""
    return "".join(output.split())


def shows(output: str, *texts: str) -> bool:
    """Whether the CLI output shows every text, whitespace and wrapping aside."""
    return all(flat(text) in flat(output) for text in texts)


def row(output: str, key: str, value: str) -> bool:
    """Whether the summary table has a row `key | value`."""
    return re.search(re.escape(flat(key)) + r"[^\w]*" + re.escape(value) + r"\b", flat(output)) is not None


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    """A campaign folder holding the recipients CSV."""
    folder = tmp_path / "campaign"
    folder.mkdir()
    lines = ["phone,first_name", *(f"{number},Name{i}" for i, number in enumerate(RECIPIENTS))]
    (folder / "recipients.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def write_campaign(campaign_dir: Path, gateway: EmulatorServer) -> WriteCampaign:
    """Write `campaign.yaml` sending the recipients to the test's emulator, with these validation rules."""

    def write(validation: dict[str, Any], **overrides: Any) -> Path:
        campaign_id = f"optouts-{uuid.uuid4().hex[:10]}"
        data: dict[str, Any] = {
            "campaign_id": campaign_id,
            "source": {"path": str(campaign_dir / "recipients.csv")},
            "template": "Hi {first_name}",
            "sender_id": "GlobeSMS",
            "batch_size": 4,
            "ledger": f"sqlite:///{campaign_dir / 'ledger.db'}",
            "validation": validation,
            "gateway": {
                "endpoint": gateway.url,
                "calls_per_second": FLOW_RATE,
                "rate_limit_name": f"test-{campaign_id}",
            },
            **overrides,
        }
        file = campaign_dir / "campaign.yaml"
        file.write_text(yaml.safe_dump(data), encoding="utf-8")
        return file

    return write


def opt_out_file(folder: Path, *lines: str) -> Path:
    path = folder / "optouts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sent(gateway: EmulatorServer) -> set[str]:
    return set(gateway.state.accepted_numbers())


def flow_runs_named(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


def summary_artifact(campaign_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{campaign_id}-summary"]))
        )
    assert artifacts, f"no summary artifact for {campaign_id}"
    return str(artifacts[0].data)


class TestUnreadableOptOutsStopTheCampaign:
    def test_national_line_without_default_region_exits_2_and_sends_nothing(
        self, write_campaign: WriteCampaign, campaign_dir: Path, gateway: EmulatorServer
    ) -> None:
        """`07911 123401` cannot be placed without a region: exit 2, the line named and masked, no send."""
        path = opt_out_file(campaign_dir, "# opt-outs", "+44 7911 123400", "07911 123401")
        result = runner.invoke(app, ["send", str(write_campaign({"suppression_file": str(path)}))])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert shows(result.output, str(path), "line 3: '07911 12****'")
        assert shows(result.output, "set validation.default_region", "international form")
        assert "123401" not in flat(result.output)  # the entry is masked
        assert gateway.state.requests("BatchSendMessageToGlobe") == [] and not sent(gateway)

    def test_spreadsheet_damage_exits_2_with_a_hint(
        self, write_campaign: WriteCampaign, campaign_dir: Path, gateway: EmulatorServer
    ) -> None:
        """`4.47911E+11` lost its digits in a spreadsheet: exit 2, every such line listed, no send."""
        path = opt_out_file(campaign_dir, "phone", "4.47911E+11", "+44 7911 123402", "4.4791E11")
        file = write_campaign({"suppression_file": str(path), "default_region": "GB"})
        result = runner.invoke(app, ["send", str(file)])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert shows(result.output, "2 opt-out entries cannot be read", "line 2: '4.479**E+**'")
        assert shows(result.output, "line 4: '4.47**E**'", "spreadsheet", "suppression_unreadable: ignore")
        assert gateway.state.requests("BatchSendMessageToGlobe") == []

    def test_ignore_sends_and_counts_them_in_every_summary(
        self, write_campaign: WriteCampaign, campaign_dir: Path, gateway: EmulatorServer
    ) -> None:
        """`suppression_unreadable: ignore`: the run sends, readable opt-outs hold, the rest are counted."""
        path = opt_out_file(campaign_dir, "07911 123401", "8.52983E+10", "+44 7911 123403")
        file = write_campaign({"suppression_file": str(path), "suppression_unreadable": "ignore"})
        result = runner.invoke(app, ["send", str(file)])
        assert result.exit_code == EXIT_OK, result.output
        assert row(result.output, "opt-out entries unreadable, ignored", "2")
        assert sent(gateway) == {digits(n) for n in RECIPIENTS} - {"447911123403"}
        campaign_id = yaml.safe_load(file.read_text())["campaign_id"]
        assert "| opt-out entries unreadable, ignored | 2 |" in summary_artifact(campaign_id)

    def test_extension_lines_suppress_their_number(
        self, write_campaign: WriteCampaign, campaign_dir: Path, gateway: EmulatorServer
    ) -> None:
        """`ext. 12`, `x7`, `;ext=3`: the extension is dropped and the number is not messaged."""
        path = opt_out_file(
            campaign_dir, "+44 7911 123404 ext. 12", "+44 7911 123405 x7", "tel:+447911123406;ext=3"
        )
        result = runner.invoke(app, ["send", str(write_campaign({"suppression_file": str(path)}))])
        assert result.exit_code == EXIT_OK, result.output
        assert row(result.output, "rejected: suppressed", "3")
        suppressed = {"447911123404", "447911123405", "447911123406"}
        assert sent(gateway) == {digits(n) for n in RECIPIENTS} - suppressed


class TestMissingSuppressionFile:
    def test_exit_2_with_the_absolute_path_before_any_flow_run(
        self,
        write_campaign: WriteCampaign,
        campaign_dir: Path,
        gateway: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A relative `suppression_file` that is not there: its absolute path, exit 2, no flow run at all."""
        monkeypatch.chdir(campaign_dir)  # relative paths mean the same here, before and after they resolve
        file = write_campaign({"suppression_file": "lists/optouts.txt"})
        result = runner.invoke(app, ["send", str(file)])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert shows(result.output, str(campaign_dir / "lists" / "optouts.txt"))
        assert "Traceback" not in result.output
        assert flow_runs_named(yaml.safe_load(file.read_text())["campaign_id"]) == []
        assert gateway.state.requests() == []

    def test_the_flow_checks_it_too(self, write_campaign: WriteCampaign, campaign_dir: Path) -> None:
        """A campaign from the UI or a deployment (no CLI) stops at the flow's start, its ledger untouched."""
        from tasks.suppression import SuppressionFileMissing

        file = write_campaign({"suppression_file": str(campaign_dir / "gone.txt")})
        with pytest.raises(SuppressionFileMissing, match=re.escape(str(campaign_dir / "gone.txt"))):
            send_campaign(Campaign.from_yaml(file))
        assert not (campaign_dir / "ledger.db").exists()


@pytest.fixture
def opt_out_table(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A factory: a throwaway `opt_outs` table in the test schema, its URL in OPTOUTS_DB_URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    monkeypatch.setenv("OPTOUTS_DB_URL", pg_url)

    def create(*numbers: str) -> str:
        table = f"opt_outs_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, phone text)")
            for number in numbers:
                connection.execute(f"INSERT INTO {table} (phone) VALUES (%s)", (number,))
        return table

    yield create


@pytest.mark.postgres
class TestOptOutsFromPostgres:
    def test_query_opt_outs_suppress_in_a_flow_run(
        self, write_campaign: WriteCampaign, opt_out_table: Callable[..., str], gateway: EmulatorServer
    ) -> None:
        """`validation.suppression: {kind: postgres, ...}`: those numbers are not messaged, the rest are."""
        table = opt_out_table("+44 7911 123407", "0044 7911 123408", "447911123409 x1")
        suppression = {
            "kind": "postgres",
            "query": f"SELECT phone FROM {table} ORDER BY id",
            "connection": {"env": "OPTOUTS_DB_URL"},
        }
        summary = send_campaign(Campaign.from_yaml(write_campaign({"suppression": suppression})))
        assert summary.rejected_by_reason == {"suppressed": 3} and summary.accepted == 7
        assert sent(gateway) == {digits(n) for n in RECIPIENTS[:7]}

    def test_unreadable_row_in_the_table_exits_2(
        self, write_campaign: WriteCampaign, opt_out_table: Callable[..., str], gateway: EmulatorServer
    ) -> None:
        """An unreadable value in the table: exit 2 naming its row, masked, and nothing sent."""
        table = opt_out_table("+44 7911 123407", "8.52983E+10")
        suppression = {
            "kind": "postgres",
            "query": f"SELECT phone FROM {table} ORDER BY id",
            "connection": {"env": "OPTOUTS_DB_URL"},
        }
        result = runner.invoke(app, ["send", str(write_campaign({"suppression": suppression}))])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert shows(result.output, "validation.suppression (postgres query", "row 2: '8.529**E+**'")
        assert gateway.state.requests("BatchSendMessageToGlobe") == []

    def test_failed_query_names_the_suppression_field(
        self, write_campaign: WriteCampaign, opt_out_table: Callable[..., str], gateway: EmulatorServer
    ) -> None:
        """A query error says `validation.suppression.query`, and the URL's secret stays hidden."""
        opt_out_table()
        suppression = {
            "kind": "postgres",
            "query": "SELECT phone FROM no_such_table",
            "connection": {"env": "OPTOUTS_DB_URL"},
        }
        result = runner.invoke(app, ["send", str(write_campaign({"suppression": suppression}))])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert shows(result.output, "validation.suppression.query: the query failed")
        assert gateway.state.requests("BatchSendMessageToGlobe") == []
