"""Retry from the Prefect UI: a served deployment's failed campaign run, set back to Scheduled/AwaitingRetry.

The UI's Retry button sends `POST /flow_runs/{id}/set_state` with `{type: SCHEDULED, name: AwaitingRetry}` and
`force: true` (shared/reference/prefect-notes.md §2); the serving process then runs the *same* flow run
again. Batch tasks are not cached, so every task re-executes: it is the ledger that keeps the batches already
sent from going out again. Crash-free reruns are in tests/integration/test_flow.py, crashes in
tests/{unit,integration}/test_chaos.py.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator

REPO = Path(__file__).resolve().parents[2]
RATE = 20.0
DEPLOYMENT = f"ui-retry-{os.getpid()}"


@pytest.fixture
def served(prefect_server: str, tmp_path: Path) -> Iterator[str]:
    """`send_campaign` served as a deployment by a child process (its own session, killed at the end)."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",  # the emulator's test key
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.serve_campaign", DEPLOYMENT],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield f"send-campaign/{DEPLOYMENT}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # serve ignores SIGTERM for a long while; its flow runs too
        process.wait()


def _wait_for_deployment(name: str, timeout: float = 90.0) -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name).id
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"deployment {name} was not registered in {timeout:g} s") from None
                time.sleep(0.5)


def _wait_for_final_state(flow_run_id: UUID, timeout: float = 120.0):  # noqa: ANN202 - a FlowRun
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run still {run.state} after {timeout:g} s")
            time.sleep(0.5)


def _campaign(tmp_path: Path, emulator: EmulatorServer) -> Campaign:
    source = tmp_path / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(valid_numbers(20, seed=42)))
    return Campaign.parse(
        {
            "campaign_id": "ui-retry",
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "batch_size": 5,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            # The balance ran out on batch 2; the operator topped up, then pressed Retry.
            "retry_failed_codes": ["AMOUNT_NOT_ENOUGH"],
            "gateway": {"endpoint": emulator.url, "calls_per_second": RATE, "rate_limit_name": DEPLOYMENT},
        }
    )


@pytest.mark.prefect
def test_ui_retry_of_a_failed_campaign_run_sends_no_accepted_number_again(
    served: str, prefect_server: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """Batch 2 fails for good, the run Fails; a UI-style retry completes it and batch 1 is never resent."""
    from prefect.deployments import run_deployment

    emulator = start_emulator(batch_calls_per_second=RATE)
    emulator.state.faults.script(["ok", "business:AMOUNT_NOT_ENOUGH"])
    campaign = _campaign(tmp_path, emulator)
    _wait_for_deployment(served)

    flow_run = run_deployment(served, parameters={"campaign": campaign.model_dump(mode="json")}, timeout=0)
    failed = _wait_for_final_state(flow_run.id)
    assert failed.state is not None and failed.state.is_failed(), failed.state
    first_batch = {m.to for m in emulator.state.accepted_messages()}
    calls_before_retry = len(emulator.state.requests("BatchSendMessageToGlobe"))
    assert len(first_batch) == 5
    with Ledger(campaign.ledger) as ledger:
        assert ledger.counts(campaign.campaign_id) == {
            "pending": 10, "submitting": 0, "accepted": 5, "failed": 5, "unknown": 0, "skipped": 0,
        }

    # Exactly what the UI's Retry button sends.
    response = httpx.post(
        f"{prefect_server}/flow_runs/{flow_run.id}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
              "force": True},
        timeout=30,
    )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT"

    retried = _wait_for_final_state(flow_run.id)
    assert retried.state is not None and retried.state.is_completed(), retried.state
    assert retried.id == flow_run.id and retried.run_count == 2
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        history = [state.name for state in client.read_flow_run_states(flow_run.id)]
    assert "AwaitingRetry" in history and history.index("Failed") < history.index("AwaitingRetry")
    sent = Counter(m.to for m in emulator.state.accepted_messages())
    assert len(sent) == 20 and set(sent.values()) == {1}  # every number once; batch 1 not again
    first_task = campaign.task_id(1)
    assert {m.task_id for m in emulator.state.accepted_messages() if m.to in first_batch} == {first_task}
    retry_calls = emulator.state.requests("BatchSendMessageToGlobe")[calls_before_retry:]
    assert retry_calls and first_task not in {r.task_id for r in retry_calls}
    with Ledger(campaign.ledger) as ledger:
        assert ledger.counts(campaign.campaign_id)["accepted"] == 20
