"""A ledger URL's password reaches no Prefect record, log line, artifact or output (issue 13, point 5).

The campaign names where the whole URL is kept (`ledger: {env: NAME}` or `{block: NAME}`); the URL, password
included, is read only where the engine is created. These tests run the CLI and the flow against the real
Prefect test server, the emulator and the real PostgreSQL (trust auth: any password is accepted, so a URL with
one works), then read back everything the run left. Load-time refusals are in
tests/{unit,integration}/test_load_checks.py.
"""

from __future__ import annotations

import csv
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.cli import EXIT_BAD_INPUT, app
from globe_sms.ledger import Ledger, LedgerUnreachable
from globe_sms.sources import SecretRef
from tests.emulator_fixtures import FLOW_RATE

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("prefect_server")]

runner = CliRunner()
PASSWORD = f"S3cret/Pw@{uuid.uuid4().hex[:8]}"  # a `/` and an `@`: it must be percent-encoded in the URL
NUMBERS = ["+85291234567", "+85291234568", "+6591234567", "+447911123456", "+61412345678"]
ENV = "GLOBE_SMS_TEST_LEDGER_URL"


def leaks(text: str) -> bool:
    """Whether `text` shows the password, raw or percent-encoded."""
    return PASSWORD in text or quote(PASSWORD, safe="") in text or PASSWORD.split("/")[0] in text


@pytest.fixture
def secret_url(pg_url: str) -> str:
    """The test schema's URL with a password in it (PostgreSQL's trust auth ignores it)."""
    return make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def run_logs_to_server() -> Iterator[None]:
    """Every flow- and task-run log line goes to the server, not only warnings (the tests read them back)."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def campaign_file(folder: Path, campaign_id: str, ledger: str, endpoint: str) -> Path:
    """A campaign file sending NUMBERS through `endpoint`, with the ledger line given."""
    with (folder / "recipients.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name"])
        writer.writerows([number, f"N{i}"] for i, number in enumerate(NUMBERS))
    file = folder / f"{campaign_id}.yaml"
    file.write_text(
        f"campaign_id: {campaign_id}\nsource: {{path: recipients.csv}}\ntemplate: 'Hi {{name}}'\n"
        f"sender_id: GlobeSMS\nbatch_size: 2\nledger: {ledger}\n"
        f"gateway: {{endpoint: '{endpoint}', calls_per_second: {FLOW_RATE}}}\n"
    )
    return file


def prefect_records(campaign_id: str) -> tuple[Any, list[str]]:
    """The campaign's flow run, and every text Prefect keeps of it: parameters, state, logs, artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[campaign_id]))
        )
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    texts = [str(run.parameters), str(run.state.message if run.state else ""), str(run.name)]
    texts += [log.message for log in logs]
    texts += [f"{a.key} {a.description} {a.data}" for a in artifacts]
    return run, texts


@pytest.mark.usefixtures("run_logs_to_server")
def test_a_ledger_url_from_the_environment_is_used_and_shown_nowhere(
    tmp_path: Path, gateway: EmulatorServer, secret_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger: {env: NAME}`: the run sends through PostgreSQL; no record, log or output has the password."""
    monkeypatch.setenv(ENV, secret_url)
    campaign_id = f"secret-env-{uuid.uuid4().hex[:8]}"
    file = campaign_file(tmp_path, campaign_id, f"{{env: {ENV}}}", gateway.url)

    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == 0, result.output
    assert len(gateway.state.accepted_numbers()) == len(NUMBERS)
    with Ledger(SecretRef(env=ENV)) as ledger:  # the rows are in the PostgreSQL schema the secret names
        assert ledger.counts(campaign_id)["accepted"] == len(NUMBERS)

    run, texts = prefect_records(campaign_id)
    assert run.parameters["campaign"]["ledger"] == {"block": None, "env": ENV}
    assert any("valid" in text for text in texts)  # the run's log lines were read back, not nothing
    assert any(f"{campaign_id}-summary" in text for text in texts)  # and its artifacts
    assert [text for text in texts if leaks(text)] == []
    assert not leaks(result.output)

    report = runner.invoke(app, ["receipts", "report", campaign_id, "--ledger", f"env:{ENV}"])
    assert report.exit_code == 0, report.output
    assert "accepted by the gateway" in report.output and not leaks(report.output)

    literal = runner.invoke(app, ["receipts", "report", campaign_id, "--ledger", secret_url])
    assert literal.exit_code == EXIT_BAD_INPUT
    assert "--ledger holds a password" in literal.output and not leaks(literal.output)


def test_a_ledger_url_from_a_secret_block(tmp_path: Path, gateway: EmulatorServer, secret_url: str) -> None:
    """`ledger: {block: NAME}` reads the URL from a Prefect Secret block, whose value the run never shows."""
    from prefect.blocks.system import Secret

    from flows.send_campaign import send_campaign

    block = f"ledger-url-{uuid.uuid4().hex[:8]}"
    Secret(value=secret_url).save(block)
    campaign_id = f"secret-block-{uuid.uuid4().hex[:8]}"
    campaign = Campaign.from_yaml(campaign_file(tmp_path, campaign_id, f"{{block: {block}}}", gateway.url))

    summary = send_campaign(campaign)
    assert summary.accepted == len(NUMBERS)
    run, texts = prefect_records(campaign_id)
    assert run.parameters["campaign"]["ledger"] == {"block": block, "env": None}
    assert [text for text in texts if leaks(text)] == []
    with Ledger(SecretRef(block=block)) as ledger:
        assert ledger.counts(campaign_id)["accepted"] == len(NUMBERS)


def unreachable_url() -> str:
    """A URL with the password to a port where no PostgreSQL listens."""
    return make_url("postgresql+psycopg://postgres@127.0.0.1:9/test").set(password=PASSWORD).render_as_string(
        hide_password=False
    )


def test_an_unreachable_ledger_is_refused_with_its_url_masked(
    tmp_path: Path, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's check names the ledger, shows the URL with `***` for the password, and exits 2."""
    monkeypatch.setenv(ENV, unreachable_url())
    campaign_id = f"secret-down-{uuid.uuid4().hex[:8]}"
    file = campaign_file(tmp_path, campaign_id, f"{{env: {ENV}}}", gateway.url)
    result = runner.invoke(app, ["send", str(file)])
    output = " ".join(result.output.split())
    assert result.exit_code == EXIT_BAD_INPUT, output
    assert "ledger: cannot open the ledger postgresql+psycopg://postgres:***@127.0.0.1:9/test" in output
    assert f"(the URL in environment variable {ENV})" in output
    assert not leaks(result.output) and not gateway.state.accepted_numbers()


@pytest.mark.usefixtures("run_logs_to_server")
def test_a_run_started_without_the_cli_fails_with_the_url_masked_in_prefect(
    tmp_path: Path, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As from the UI: the flow's own preflight fails the run; its state and logs show the URL masked."""
    from flows.send_campaign import send_campaign
    from tasks.preflight import PreflightError

    monkeypatch.setenv(ENV, unreachable_url())
    campaign_id = f"secret-ui-{uuid.uuid4().hex[:8]}"
    campaign = Campaign.from_yaml(campaign_file(tmp_path, campaign_id, f"{{env: {ENV}}}", gateway.url))
    with pytest.raises(PreflightError) as caught:
        send_campaign(campaign)
    assert "postgres:***@127.0.0.1:9" in str(caught.value) and not leaks(str(caught.value))
    run, texts = prefect_records(campaign_id)
    assert run.state is not None and run.state.is_failed()
    assert any("postgres:***@127.0.0.1:9" in text for text in texts)  # the error is in the records, masked
    assert [text for text in texts if leaks(text)] == []


def test_opening_the_ledger_masks_the_password_in_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Ledger(...)`: an unreachable database is `LedgerUnreachable`, the URL masked, no chained cause."""
    monkeypatch.setenv(ENV, unreachable_url())
    with pytest.raises(LedgerUnreachable) as caught:
        Ledger(SecretRef(env=ENV))
    assert "postgres:***@127.0.0.1:9/test" in str(caught.value) and not leaks(str(caught.value))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(LedgerUnreachable) as literal:
        Ledger(unreachable_url())  # a URL given in code, not from a campaign: masked all the same
    assert not leaks(str(literal.value))
