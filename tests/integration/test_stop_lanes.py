"""Stop requests for `send_via: single` and `both` (tasks/send_lanes.py, tasks/stop.py): Ctrl-C to a
`globe-sms send` of a single-lane campaign, and a Cancel (`Cancelling`, as the UI sets it) of an
in-process run of a `both` campaign, with the real emulator and a real Prefect server.

The single lane is paced slowly (`single_calls_per_second` small, small chunks) so that the stop lands
mid-campaign. What every clean stop must leave: at most the chunks (and the batch) in flight sent after the
request, nothing `unknown` or `submitting` in the ledger, the summary's "stopped after ...; M pending", and a
rerun that sends the rest and nobody twice (the emulator's journal).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tasks.send_lanes import CHUNKS_IN_FLIGHT
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator
from tests.integration.test_stop_requests import GLOBE_SMS, cli_env, start_send, wait_until

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(180)]

CHUNK = 4  # recipients per single-lane chunk
SINGLE_RATE = 12.0  # SendMessageToGlobe calls per second allowed: ~10/s after the lane's margin


def single_calls(emulator: EmulatorServer) -> int:
    return len(emulator.state.requests("SendMessageToGlobe"))


def accepted(emulator: EmulatorServer) -> int:
    return len(emulator.state.accepted_messages())


def write_recipients(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(valid_numbers(n, seed=seed)))
    return source


def ledger_counts(url: str, campaign_id: str) -> dict[str, int]:
    with Ledger(url) as ledger:
        return ledger.counts(campaign_id)


def test_ctrl_c_stops_a_single_lane_send_mid_campaign_and_a_rerun_sends_the_rest(
    start_emulator: StartEmulator, prefect_server: str, tmp_path: Path
) -> None:
    """Ctrl-C to the process group of `globe-sms send` (`send_via: single`): exit 130 within a few seconds,
    at most the chunks in flight sent after it, `stopped after ...; M pending`, no doubt in the ledger."""
    recipients = 80
    emulator = start_emulator(batch_calls_per_second=None)
    campaign_id = f"stop-single-{uuid.uuid4().hex[:6]}"
    folder = tmp_path / "campaign"
    write_recipients(folder, recipients, seed=21)
    campaign = folder / "campaign.yaml"
    ledger = f"sqlite:///{folder / 'ledger.db'}"
    campaign.write_text(
        f"campaign_id: {campaign_id}\n"
        "source:\n  path: recipients.csv\n  phone_column: phone\n"
        'template: "Hi {first_name}, welcome!"\n'
        "sender_id: GlobeSMS\n"
        "send_via: single\n"
        f"single_chunk_size: {CHUNK}\n"
        f"ledger: {ledger}\n"
        "data_dir: .data\n"
        f"gateway:\n  endpoint: {emulator.url}\n  single_calls_per_second: {SINGLE_RATE}\n"
        f"  rate_limit_name: {campaign_id}\n"
    )
    env = cli_env(tmp_path, api_url=prefect_server)

    process = start_send(campaign, env)
    wait_until(lambda: single_calls(emulator) >= 20 or process.poll() is not None, 120, "20 single calls")
    assert process.poll() is None, process.communicate()[0]
    calls = single_calls(emulator)
    stopped_at = time.monotonic()

    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    seconds = time.monotonic() - stopped_at

    assert process.returncode == 130, output
    assert seconds < 10, output
    assert "Traceback" not in output, output
    sent = single_calls(emulator)
    assert sent <= calls + CHUNKS_IN_FLIGHT * CHUNK, output  # at most the chunks in flight
    assert sent < recipients, output  # the stop landed mid-campaign
    stopped = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "Ctrl-C" in stopped[0] and "stopped after chunk " in stopped[0], output
    assert f"; {recipients - sent} pending" in stopped[0], stopped[0]
    counts = ledger_counts(ledger, campaign_id)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
    assert counts["accepted"] == sent and counts["pending"] == recipients - sent, counts

    done = subprocess.run(
        [str(GLOBE_SMS), "send", str(campaign)], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout
    numbers = Counter(message.to for message in emulator.state.accepted_messages())
    assert len(numbers) == recipients and set(numbers.values()) == {1}, numbers.most_common(3)
    assert ledger_counts(ledger, campaign_id)["accepted"] == recipients


def test_cancel_stops_a_both_lanes_run_mid_campaign_and_a_rerun_sends_the_rest(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel (`Cancelling`, forced, as the UI sets it) of an in-process `send_via: both` run: both lanes stop
    within a few seconds, the batch lane gives back what it had not sent, the run ends Cancelled with
    `stopped after ...; M pending`; the rerun sends exactly the rest."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    from flows.send_campaign import send_campaign
    from globe_sms.cli_operate import campaign_runs

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    recipients = 160
    emulator = start_emulator(batch_calls_per_second=None)
    campaign_id = f"stop-both-{uuid.uuid4().hex[:6]}"
    source = write_recipients(tmp_path, recipients, seed=23)
    campaign = Campaign.parse(
        {
            "campaign_id": campaign_id,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "send_via": "both",
            "batch_size": 4,
            "single_chunk_size": CHUNK,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "data_dir": str(tmp_path / ".data"),
            "gateway": {
                "endpoint": emulator.url,
                "calls_per_second": 2.0,
                "single_calls_per_second": SINGLE_RATE,
                "rate_limit_name": campaign_id,
            },
        }
    )
    seen: dict[str, Any] = {}

    def cancel() -> None:
        with get_client(sync_client=True) as client:
            while not (runs := campaign_runs(client, campaign_id, "RUNNING")):
                time.sleep(0.02)
            wait_until(lambda: single_calls(emulator) >= 20 and emulator.state.requests(
                "BatchSendMessageToGlobe"), 60, "both lanes sending")
            seen["accepted"] = accepted(emulator)
            seen["at"] = time.monotonic()
            result = client.set_flow_run_state(runs[0].id, Cancelling(), force=True)
            assert result.status.value == "ACCEPT", result

    canceller = threading.Thread(target=cancel, daemon=True)
    canceller.start()
    state = send_campaign(campaign, return_state=True)
    ended = time.monotonic()
    canceller.join(timeout=60)
    assert "at" in seen, "the run ended before it was cancelled"
    assert state.is_cancelled(), state
    assert ended - seen["at"] < 10
    sent = accepted(emulator)
    in_flight = CHUNKS_IN_FLIGHT * CHUNK + 4  # the single lane's chunks and one batch
    assert sent <= seen["accepted"] + in_flight
    assert sent < recipients  # the stop landed mid-campaign
    summary = state.result(raise_on_failure=False)
    assert summary.stopped is not None and summary.pending == recipients - sent, summary
    assert summary.stop_text().endswith(f"; {recipients - sent} pending"), summary.stop_text()
    assert summary.stop_text().startswith("stopped after chunk or batch "), summary.stop_text()
    counts = ledger_counts(campaign.ledger_location, campaign_id)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
    assert counts["accepted"] == sent and counts["pending"] == recipients - sent, counts

    again = send_campaign(campaign, return_state=True)
    assert again.is_completed(), again
    numbers = Counter(message.to for message in emulator.state.accepted_messages())
    assert len(numbers) == recipients and set(numbers.values()) == {1}, numbers.most_common(3)
    assert ledger_counts(campaign.ledger_location, campaign_id)["accepted"] == recipients
