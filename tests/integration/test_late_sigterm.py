"""A SIGTERM that arrives after a flow run's sending block has ended (tasks/stop.py, `SigtermAfterSending`).

A Cancel in the Prefect UI reaches a deployment's run twice: as its `Cancelling` state, which the run reads
before every batch, and as the worker's SIGTERM. When the run has already stopped on the state and is setting
its own Cancelled state, a SIGTERM that lands then must not make Prefect's engine force the run to Crashed
(seen once in CI, in tests/integration/test_ui_stop.py). Each flow runs in its own process
(tests/chaos/late_sigterm.py), since Prefect's own handler ends the process on such a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.emulator_fixtures import StartEmulator
from tests.integration.test_stop_deployments import (
    _calls,
    _campaign,
    _cancel_as_the_ui_does,
    _client,
    _counts,
    _logs,
    _wait_for_calls,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]


def _env(api_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if "PROXY" not in k.upper()},
        "PREFECT_API_URL": api_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",  # the emulator's test key
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _late_sigterm(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.chaos.late_sigterm", *args],
        cwd=REPO, env=_env(api_url), capture_output=True, text=True, timeout=180,
    )


def test_a_sigterm_after_the_sending_block_lets_the_flow_run_end_as_it_was_going_to(
    prefect_server: str,
) -> None:
    done = _late_sigterm(prefect_server, "alone")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "COMPLETED ended as it was going to", done.stdout
    assert lines[-1] == "SIGTERM handler after the run: SIG_DFL", done.stdout  # not ours any more
    assert "Crash detected" not in done.stderr + done.stdout


def test_a_sigterm_to_a_parent_flow_after_its_subflows_sending_block_still_stops_the_parent(
    prefect_server: str,
) -> None:
    done = _late_sigterm(prefect_server, "parent")
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "the parent was not stopped" not in done.stdout


def test_a_cancel_whose_sigterm_comes_while_the_run_ends_itself_ends_cancelled_not_crashed(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """The CI failure, made certain: the run stops on its `Cancelling` state, and the worker's SIGTERM
    arrives as it sets its own Cancelled state (after its sending block)."""
    from flows.send_campaign import send_campaign

    emulator = start_emulator(batch_calls_per_second=4.0)
    campaign = _campaign(tmp_path, emulator, f"late-{uuid.uuid4().hex[:6]}", recipients=80, batch_size=4,
                         rate=4.0)
    deployment_id = send_campaign.to_deployment(name=f"late-sigterm-{os.getpid()}").apply()
    with _client() as client:
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"campaign": campaign.model_dump(mode="json")}
        )
    env = _env(prefect_server)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.late_sigterm", "campaign", str(run.id)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for_calls(emulator, campaign, 3)
        _cancel_as_the_ui_does(run.id)
        calls = _calls(emulator, campaign)
        output, _ = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 0, output[-4000:]
    assert "aborted by orchestrator" in output, output[-4000:]
    with _client() as client:
        state: Any = client.read_flow_run(run.id).state
    sent = _calls(emulator, campaign)
    assert sent <= calls + 1
    assert state.is_cancelled(), (state, output[-4000:])
    assert state.message == f"stopped after batch {sent} (cancelled in Prefect); {80 - 4 * sent} pending"
    counts = _counts(campaign)
    assert counts["unknown"] == counts["submitting"] == 0 and counts["pending"] == 80 - 4 * sent, counts
    assert "Crash detected" not in _logs(run.id)
