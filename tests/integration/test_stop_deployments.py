"""Cancel and Suspend/Resume of a served deployment's run, done the way the Prefect UI does them, against the
session's Prefect server and the real emulator (tasks/stop.py).

The UI's Cancel sets `Cancelling` (`POST /flow_runs/{id}/set_state`); the serving process then SIGTERMs the
run's process. Its Suspend sets `Paused`/`Suspended` with `pause_reschedule` and a 5-minute timeout; Resume
reschedules the run, which runs the flow again from the start. `prefect.serve` runs each flow run in a child
process and cancels it through the same Runner machinery (`prefect flow-run execute`) a process worker uses.

Checked for each: nothing sent after the request beyond the batch in flight (the emulator's journal), the
ledger without `unknown` or `submitting`, the summary and batch table artifacts of the stopped run, its final
state (Cancelled, not Crashed), and for Resume that only the pending recipients go out.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.cli import app
from globe_sms.ledger import Ledger
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator
from tests.recipients_api import TOKEN, RecipientsApi, records, serve

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = f"stop-{os.getpid()}"

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def served(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`send_campaign` served as a deployment by a child process (its own session, killed at the end)."""
    env = {
        **{k: v for k, v in os.environ.items() if "PROXY" not in k.upper()},
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",  # the emulator's test key
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
        "RECIPIENTS_API_TOKEN": TOKEN,  # the recipients API's (tests/recipients_api.py)
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.serve_campaign", DEPLOYMENT],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        name = f"send-campaign/{DEPLOYMENT}"
        _wait_for_deployment(name)
        yield name
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # serve ignores SIGTERM for a long while; its flow runs too
        process.wait()


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _wait_for_deployment(name: str, timeout: float = 120.0) -> UUID:
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with _client() as client:
        while True:
            try:
                return client.read_deployment_by_name(name).id
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"deployment {name} was not registered in {timeout:g} s") from None
                time.sleep(0.5)


def _read_run(flow_run_id: UUID) -> Any:
    with _client() as client:
        return client.read_flow_run(flow_run_id)


def _wait_for_state(flow_run_id: UUID, done: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = _read_run(flow_run_id)
        if run.state is not None and done(run.state):
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run still {run.state} after {timeout:g} s")
        time.sleep(0.3)


def _campaign(folder: Path, emulator: EmulatorServer, campaign_id: str, *, recipients: int, batch_size: int,
              rate: float) -> Campaign:
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([n, f"Name{i}"] for i, n in enumerate(valid_numbers(recipients, seed=11)))
    return Campaign.parse(
        {
            "campaign_id": campaign_id,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "batch_size": batch_size,
            "ledger": f"sqlite:///{folder / 'ledger.db'}",
            "data_dir": str(folder / ".data"),
            "gateway": {"endpoint": emulator.url, "calls_per_second": rate, "rate_limit_name": campaign_id},
        }
    )


def _start(deployment: str, campaign: Campaign) -> UUID:
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={"campaign": campaign.model_dump(mode="json")}, timeout=0)
    return run.id


def _calls(emulator: EmulatorServer, campaign: Campaign) -> int:
    """The campaign's BatchSendMessageToGlobe calls the emulator accepted (by their TaskId). A call it
    throttled (a loaded machine: the emulator, in this process, stamped the previous call late) sent
    nothing, and the flow sends that batch again later."""
    ours = {campaign.task_id(n) for n in range(1, 1000)}
    return sum(
        1 for r in emulator.state.requests("BatchSendMessageToGlobe") if r.task_id in ours and r.code == "OK"
    )


def _wait_for_calls(emulator: EmulatorServer, campaign: Campaign, calls: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _calls(emulator, campaign) < calls:
        assert time.monotonic() < deadline, f"{campaign.campaign_id}: fewer than {calls} batches sent"
        time.sleep(0.05)


def _counts(campaign: Campaign) -> dict[str, int]:
    with Ledger(campaign.ledger) as ledger:
        return ledger.counts(campaign.campaign_id)


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key (the latest of each)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in sorted(found, key=lambda a: a.created) if artifact.key}


def _logs(flow_run_id: UUID) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with _client() as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def _cancel_as_the_ui_does(flow_run_id: UUID, *, force: bool = True) -> None:
    """The UI's Cancel: `set_state` to `{type: CANCELLING, name: Cancelling}`, forced by the default UI (V2),
    not by the V1 UI."""
    from prefect.states import Cancelling

    with _client() as client:
        result = client.set_flow_run_state(flow_run_id, Cancelling(), force=force)
    assert result.status.value == "ACCEPT", result


def _suspend_as_the_ui_does(flow_run_id: UUID, timeout_seconds: int = 300, *, force: bool = True) -> None:
    """The UI's Suspend dialog: Paused/`Suspended`, `pause_reschedule`, its timeout field (5 minutes);
    forced by the default UI (V2), not by the V1 UI."""
    from prefect.states import Suspended

    with _client() as client:
        suspended = Suspended(timeout_seconds=timeout_seconds)
        result = client.set_flow_run_state(flow_run_id, suspended, force=force)
    assert result.status.value == "ACCEPT", result


def test_cancel_from_the_ui_stops_after_the_batch_in_flight_and_ends_cancelled_with_its_report(
    served: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = start_emulator(batch_calls_per_second=2.0)
    campaign = _campaign(tmp_path, emulator, f"cancel-{uuid.uuid4().hex[:6]}", recipients=60, batch_size=4,
                         rate=2.0)
    run_id = _start(served, campaign)
    _wait_for_calls(emulator, campaign, 5)
    _cancel_as_the_ui_does(run_id)
    calls = _calls(emulator, campaign)  # once the cancel is in: at most the batch in flight may follow

    run = _wait_for_state(run_id, lambda state: state.is_final())
    assert run.state.is_cancelled(), run.state
    sent = _calls(emulator, campaign)
    assert sent <= calls + 1
    assert run.state.message == f"stopped after batch {sent} (cancelled in Prefect); {60 - 4 * sent} pending"
    counts = _counts(campaign)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
    assert counts["accepted"] == 4 * sent and counts["pending"] == 60 - 4 * sent, counts

    artifacts = _artifacts(run_id)
    summary = artifacts[f"{campaign.campaign_id}-summary"]
    assert "Stopped on request" in summary.data and "cancelled in Prefect" in summary.data
    batches = artifacts[f"{campaign.campaign_id}-batches"]
    assert batches.description.startswith(f"Stopped after batch {sent} (cancelled in Prefect)")
    logs = _logs(run_id)
    assert "Crash detected" not in logs and "Traceback" not in logs, logs


def test_a_cancel_while_a_slow_api_is_read_ends_the_run_cancelled_at_once_with_nothing_sent(
    served: str, start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's SIGTERM for a UI Cancel ends the reading of the list (60 pages of 0.5 s) at once, well
    within the 30 s after which Prefect would kill the process: Cancelled, nothing sent or registered."""
    emulator = start_emulator(batch_calls_per_second=2.0)
    api = RecipientsApi(records(180), delay_seconds=0.5)
    with serve(api, monkeypatch) as server:
        data = _campaign(tmp_path, emulator, f"cancel-read-{uuid.uuid4().hex[:6]}", recipients=4,
                         batch_size=4, rate=2.0).model_dump(mode="json", exclude_none=True)
        data["source"] = {
            "kind": "http", "url": f"{server.url}/cursor", "auth": {"token": {"env": "RECIPIENTS_API_TOKEN"}},
            "records_path": "/data", "pagination": {"type": "next_link", "next_pointer": "/links/next"},
        }
        campaign = Campaign.parse(data)
        run_id = _start(served, campaign)
        deadline = time.monotonic() + 120
        while len(api.requests) < 3:
            assert time.monotonic() < deadline, "the run did not start reading"
            time.sleep(0.05)
        _cancel_as_the_ui_does(run_id)
        cancelled = time.monotonic()
        run = _wait_for_state(run_id, lambda state: state.is_final())
        seconds, pages = time.monotonic() - cancelled, len(api.requests)

    assert run.state.is_cancelled(), run.state
    why = "cancelled in Prefect"
    assert run.state.message == f"stopped while reading its recipients ({why}); nothing was sent"
    assert seconds < 20 and pages < 45, (seconds, pages)  # the worker's SIGTERM may lag; all 60: 30 s
    assert _calls(emulator, campaign) == 0
    assert sum(_counts(campaign).values()) == 0
    assert "Crash detected" not in _logs(run_id)


def test_twenty_cancels_in_a_row_none_lost(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast variant of the UI's Cancel, 20 times: each run in this process (no child process to start),
    a thread setting `Cancelling` as the UI does after 2 to 4 batches at 10 batches a second. Every run ends
    Cancelled through its own look at its state, and no batch leaves after the cancel but the one in flight.
    (The served deployment's SIGTERM path is the test above.)"""
    import threading

    from flows.send_campaign import send_campaign
    from globe_sms.cli_operate import campaign_runs

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")  # the emulator's test key
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    emulator = start_emulator(batch_calls_per_second=None)
    lost: list[str] = []
    for i in range(20):
        campaign = _campaign(tmp_path / f"c{i}", emulator, f"loop-{i}-{uuid.uuid4().hex[:4]}", recipients=40,
                             batch_size=2, rate=10.0)
        seen: dict[str, Any] = {}

        def cancel(
            campaign: Campaign = campaign, after: int = 2 + i % 3, seen: dict[str, Any] = seen,
            force: bool = i % 2 == 0,
        ) -> None:
            deadline = time.monotonic() + 60
            with _client() as client:
                while not (runs := campaign_runs(client, campaign.campaign_id, "RUNNING")):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            _wait_for_calls(emulator, campaign, after)
            _cancel_as_the_ui_does(runs[0].id, force=force)  # the default UI (V2) and V1, in turn
            seen["calls"], seen["run"] = _calls(emulator, campaign), runs[0].id  # once the cancel is in

        canceller = threading.Thread(target=cancel, daemon=True)
        canceller.start()
        state = send_campaign(campaign, return_state=True)
        canceller.join(timeout=60)
        sent, counts = _calls(emulator, campaign), _counts(campaign)
        if not state.is_cancelled() or sent > seen.get("calls", -10) + 1 or counts["pending"] == 0:
            lost.append(f"{campaign.campaign_id}: {state.name}, {sent} sent, {seen.get('calls')} at the "
                        f"cancel, {counts}")
        assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
        assert state.result(raise_on_failure=False).stopped == "cancelled in Prefect"
    assert not lost, lost


def test_suspend_then_resume_sends_only_what_is_pending_and_waits_days_not_minutes(
    served: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = start_emulator(batch_calls_per_second=2.0)
    campaign = _campaign(tmp_path, emulator, f"suspend-{uuid.uuid4().hex[:6]}", recipients=60, batch_size=4,
                         rate=2.0)
    run_id = _start(served, campaign)
    _wait_for_calls(emulator, campaign, 5)
    _suspend_as_the_ui_does(run_id)  # with the dialog's 5 minutes
    calls = _calls(emulator, campaign)  # once the suspend is in

    # The run stops after the batch in flight, publishes its summary so far, and suspends itself again with
    # the campaign timeout; its process ends.
    deadline = time.monotonic() + 60
    while f"{campaign.campaign_id}-summary" not in _artifacts(run_id):
        assert time.monotonic() < deadline, "no summary published by the suspended run"
        time.sleep(0.3)
    time.sleep(1.0)
    run = _read_run(run_id)
    assert run.state.is_paused() and run.state.name == "Suspended", run.state
    assert run.state.state_details.pause_reschedule
    assert run.state.state_details.pause_timeout > datetime.now(UTC) + timedelta(days=6)
    sent = _calls(emulator, campaign)
    assert sent <= calls + 1
    counts = _counts(campaign)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
    assert counts["accepted"] == 4 * sent and counts["pending"] == 60 - 4 * sent, counts
    summary = _artifacts(run_id)[f"{campaign.campaign_id}-summary"]
    assert "suspended in Prefect" in summary.data and f"{60 - 4 * sent} pending" in summary.data
    time.sleep(2.0)
    assert _calls(emulator, campaign) == sent  # nothing leaves while suspended

    result = CliRunner().invoke(app, ["resume", campaign.campaign_id])
    assert result.exit_code == 0, result.output
    assert "resumed flow run" in result.output
    run = _wait_for_state(run_id, lambda state: state.is_final(), timeout=180)
    assert run.state.is_completed(), run.state
    accepted = Counter(m.to for m in emulator.state.accepted_messages())
    assert len(accepted) == 60 and set(accepted.values()) == {1}  # the rest, and nobody twice
    assert _counts(campaign)["accepted"] == 60


def test_globe_sms_pause_suspends_a_deployment_run_for_seven_days(
    served: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = start_emulator(batch_calls_per_second=2.0)
    campaign = _campaign(tmp_path, emulator, f"pause-{uuid.uuid4().hex[:6]}", recipients=40, batch_size=4,
                         rate=2.0)
    run_id = _start(served, campaign)
    _wait_for_calls(emulator, campaign, 2)
    result = CliRunner().invoke(app, ["pause", campaign.campaign_id])
    assert result.exit_code == 0, result.output
    assert "suspending flow run" in result.output
    run = _wait_for_state(run_id, lambda state: state.is_paused())
    assert run.state.state_details.pause_timeout > datetime.now(UTC) + timedelta(days=6)
    deadline = time.monotonic() + 60
    while f"{campaign.campaign_id}-summary" not in _artifacts(run_id):
        assert time.monotonic() < deadline, "no summary published by the suspended run"
        time.sleep(0.3)
    counts = _counts(campaign)
    assert counts["unknown"] == 0 and counts["submitting"] == 0 and counts["pending"] > 0, counts
    with _client() as client:  # leave nothing suspended behind: cancel it (Prefect: straight to Cancelled)
        from prefect.states import Cancelling

        client.set_flow_run_state(run_id, Cancelling())


def test_a_suspend_of_a_run_outside_a_deployment_ends_it_cancelled_with_its_summary(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default UI forces its Suspend, even on a `globe-sms send` run (no deployment), which Prefect could
    never resume: the run stops after the batch in flight and ends Cancelled, saying why, summary included."""
    import threading

    from flows.send_campaign import send_campaign
    from globe_sms.cli_operate import campaign_runs

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    emulator = start_emulator(batch_calls_per_second=None)
    campaign = _campaign(tmp_path, emulator, f"cli-suspend-{uuid.uuid4().hex[:4]}", recipients=60,
                         batch_size=4, rate=4.0)
    seen: dict[str, int] = {}

    def suspend() -> None:
        with _client() as client:
            while not (runs := campaign_runs(client, campaign.campaign_id, "RUNNING")):
                time.sleep(0.02)
        _wait_for_calls(emulator, campaign, 3)
        _suspend_as_the_ui_does(runs[0].id)
        seen["calls"] = _calls(emulator, campaign)

    suspender = threading.Thread(target=suspend, daemon=True)
    suspender.start()
    state = send_campaign(campaign, return_state=True)
    suspender.join(timeout=60)
    assert state.is_cancelled(), state
    assert "cannot resume" in (state.message or "")
    sent = _calls(emulator, campaign)
    assert sent <= seen["calls"] + 1
    summary = state.result(raise_on_failure=False)
    assert summary.stopped == "suspended in Prefect" and summary.pending == 60 - 4 * sent
    counts = _counts(campaign)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
