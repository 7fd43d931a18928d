"""Stop means stop, safely (tasks/stop.py): Ctrl-C and SIGTERM to `globe-sms send`, Cancel and Suspend of a
served deployment's run the way the UI does them, with the real emulator and a real Prefect server.

What every clean stop must leave: at most the batch in flight sent after the request, nothing `unknown` or
`submitting` in the ledger, the summary and batch table published, and a rerun (or Resume) that sends the
rest and nobody twice. The pure parts (handlers, state reading, texts) are in tests/unit/test_stop.py.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alibaba_sms.emulator import EmulatorServer
from globe_sms.ledger import Ledger
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator

ROOT = Path(__file__).resolve().parents[2]
GLOBE_SMS = Path(sys.executable).with_name("globe-sms")  # the console script `uv run globe-sms` runs
BATCHES, BATCH_SIZE = 15, 4
RATE = 2.0  # calls per second: a batch every half second, so "after 5 batches" is easy to hit

pytestmark = pytest.mark.timeout(240)


def write_campaign(folder: Path, emulator: EmulatorServer, campaign_id: str, *, rate: float = RATE,
                   batches: int = BATCHES, batch_size: int = BATCH_SIZE) -> Path:
    """A campaign file of `batches` batches to the emulator, its ledger in `folder`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "recipients.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        numbers = valid_numbers(batches * batch_size, seed=7)
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(numbers))
    path = folder / "campaign.yaml"
    path.write_text(
        f"campaign_id: {campaign_id}\n"
        "source:\n  path: recipients.csv\n  phone_column: phone\n"
        'template: "Hi {first_name}, welcome!"\n'
        "sender_id: GlobeSMS\n"
        f"batch_size: {batch_size}\n"
        f"ledger: sqlite:///{folder / 'ledger.db'}\n"
        "data_dir: .data\n"
        f"gateway:\n  endpoint: {emulator.url}\n  calls_per_second: {rate}\n"
        f"  rate_limit_name: {campaign_id}\n"
    )
    return path


def batch_calls(emulator: EmulatorServer) -> int:
    return len(emulator.state.requests("BatchSendMessageToGlobe"))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def ledger_counts(folder: Path, campaign_id: str) -> dict[str, int]:
    with Ledger(f"sqlite:///{folder / 'ledger.db'}") as ledger:
        return ledger.counts(campaign_id)


def cli_env(tmp_path: Path, api_url: str | None) -> dict[str, str]:
    """A user's environment; `api_url` None: no Prefect server configured (Prefect's temporary server)."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and "PROXY" not in k.upper() and not k.startswith("ALIBABA_")
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GLOBE_SMS_DATA_DIR=str(tmp_path / "data"),
        ALIBABA_CLOUD_ACCESS_KEY_ID="testid",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET="testsecret",
        NO_PROXY="127.0.0.1,localhost",
        COLUMNS="120",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_send(campaign: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`globe-sms send` in its own process group, as a terminal runs it (Ctrl-C reaches the whole group)."""
    return subprocess.Popen(
        [str(GLOBE_SMS), "send", str(campaign)], cwd=campaign.parent, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def signal_pending(pid: int) -> bool:
    """Whether a signal sent to the process waits for delivery (`/proc/<pid>/status`: SigPnd, ShdPnd)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone: nothing pending
        return False
    masks = [line.split()[1] for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(int(mask, 16) for mask in masks)


def stop_after(process: subprocess.Popen[str], emulator: EmulatorServer, batches: int,
               signals: list[int]) -> tuple[int, int, float, str]:
    """Send `signals` to the process group once `batches` batches reached the emulator.

    Returns: calls when the first signal left, the exit status, seconds to exit, and the output."""
    wait_until(lambda: batch_calls(emulator) >= batches or process.poll() is not None, 120,
               f"{batches} batches sent")
    assert process.poll() is None, process.communicate()[0]
    calls = batch_calls(emulator)
    stopped = time.monotonic()
    for number in signals:  # a second Ctrl-C lands while the first is being honoured, once the first has
        wait_until(lambda: not signal_pending(process.pid), 5, "the signal delivered")  # been delivered:
        os.killpg(process.pid, number)  # two pending at once would be delivered as one (CI, under load)
        time.sleep(0.02)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return calls, process.returncode, time.monotonic() - stopped, output


def assert_sent_once_after_rerun(campaign: Path, env: dict[str, str], emulator: EmulatorServer,
                                 campaign_id: str) -> None:
    """A rerun exits 0 and sends the rest: every number accepted exactly once over both runs."""
    done = subprocess.run(
        [str(GLOBE_SMS), "send", str(campaign)], cwd=campaign.parent, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout
    sent = Counter(message.to for message in emulator.state.accepted_messages())
    assert len(sent) == BATCHES * BATCH_SIZE and set(sent.values()) == {1}, sent.most_common(3)
    assert ledger_counts(campaign.parent, campaign_id)["accepted"] == BATCHES * BATCH_SIZE


def test_ctrl_c_after_5_of_15_batches_stops_cleanly_and_a_rerun_sends_the_rest(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """Ctrl-C to the terminal's process group (Prefect's temporary server included): exit 130 within 15 s,
    at most one more batch, the summary and a `stopped:` line, no traceback; the ledger holds no doubt."""
    emulator = start_emulator(batch_calls_per_second=RATE)
    campaign_id = f"stop-int-{uuid.uuid4().hex[:6]}"
    campaign = write_campaign(tmp_path / "campaign", emulator, campaign_id)
    env = cli_env(tmp_path, api_url=None)  # as a user runs it: the temporary server is in the same group

    process = start_send(campaign, env)
    calls, status, seconds, output = stop_after(process, emulator, 5, [signal.SIGINT])

    assert status == 130, output
    assert seconds < 15, output
    assert "Traceback" not in output, output
    assert batch_calls(emulator) <= calls + 1, output  # at most the batch in flight
    stopped = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "Ctrl-C" in stopped[0] and "pending" in stopped[0], output
    counts = ledger_counts(campaign.parent, campaign_id)
    assert counts["unknown"] == 0 and counts["submitting"] == 0, counts
    sent = batch_calls(emulator)
    assert counts["accepted"] == sent * BATCH_SIZE and counts["pending"] == (BATCHES - sent) * BATCH_SIZE
    assert f"after batch {sent} " in stopped[0], stopped[0]

    # The rerun on the shared server (another temporary server would only add its ~20 s start-up).
    assert_sent_once_after_rerun(campaign, cli_env(tmp_path, api_url=prefect_server), emulator, campaign_id)


@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "twice"]
)
def test_sigterm_stops_like_ctrl_c_and_a_second_ctrl_c_is_the_hard_stop(
    signals: list[int], prefect_server: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """SIGTERM: a clean stop (143). Ctrl-C twice: stops at once (130), no traceback; a batch in flight may be
    `unknown` then, never `submitting`, and the rerun sends nobody twice."""
    emulator = start_emulator(batch_calls_per_second=RATE)
    campaign_id = f"stop-{'term' if len(signals) == 1 else 'hard'}-{uuid.uuid4().hex[:6]}"
    campaign = write_campaign(tmp_path / "campaign", emulator, campaign_id)
    env = cli_env(tmp_path, api_url=prefect_server)

    process = start_send(campaign, env)
    calls, status, seconds, output = stop_after(process, emulator, 5, signals)

    assert "Traceback" not in output, output
    assert seconds < 15, output
    assert batch_calls(emulator) <= calls + 1, output
    counts = ledger_counts(campaign.parent, campaign_id)
    assert counts["submitting"] == 0, counts
    if len(signals) == 1:
        assert status == 143, output
        assert counts["unknown"] == 0, counts
        assert any(line.startswith("stopped:") and "SIGTERM" in line for line in output.splitlines()), output
        sent = batch_calls(emulator)  # (the rerun is the Ctrl-C test's)
        assert counts["accepted"] == sent * BATCH_SIZE and counts["pending"] == (BATCHES - sent) * BATCH_SIZE
    else:
        assert status == 130, output
        assert "hard stop" in output, output
        done = subprocess.run(
            [str(GLOBE_SMS), "send", str(campaign)], cwd=campaign.parent, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=180,
        )
        assert done.returncode == 0, done.stdout
        sent = Counter(message.to for message in emulator.state.accepted_messages())
        assert set(sent.values()) == {1}, sent.most_common(3)  # an unknown batch is not resent
        final = ledger_counts(campaign.parent, campaign_id)
        assert final["pending"] == 0 and final["submitting"] == 0, final


@pytest.mark.parametrize(("number", "status", "name"), [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"),
                                                        (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stop_while_a_slow_api_is_read_ends_the_run_at_once_with_nothing_sent_or_left(
    number: int, status: int, name: str, prefect_server: str, start_emulator: StartEmulator, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading sends nothing, so a stop does not wait for the rest of the list (40 pages of 0.4 s here): the
    run ends within seconds, says so, sends and registers nobody, and leaves no spool of phone numbers."""
    from tests.recipients_api import RecipientsApi, records, serve

    emulator = start_emulator(batch_calls_per_second=RATE)
    api = RecipientsApi(records(120), delay_seconds=0.4)  # 3 a page: 40 pages, 16 s
    campaign_id = f"stop-read-{uuid.uuid4().hex[:6]}"
    with serve(api, monkeypatch) as server:
        folder = tmp_path / "campaign"
        folder.mkdir()
        campaign = folder / "campaign.yaml"
        campaign.write_text(
            f"campaign_id: {campaign_id}\n"
            "source:\n  kind: http\n"
            f"  url: {server.url}/cursor\n"
            "  auth:\n    token:\n      env: RECIPIENTS_API_TOKEN\n"
            "  records_path: /data\n"
            "  pagination:\n    type: next_link\n    next_pointer: /links/next\n"
            'template: "Hi {first_name}, your code is {code}"\n'
            "sender_id: GlobeSMS\n"
            f"ledger: sqlite:///{folder / 'ledger.db'}\n"
            "data_dir: .data\n"
            f"gateway:\n  endpoint: {emulator.url}\n  calls_per_second: {RATE}\n"
            f"  rate_limit_name: {campaign_id}\n"
        )
        process = start_send(campaign, cli_env(tmp_path, api_url=prefect_server))
        wait_until(lambda: len(api.requests) >= 3 or process.poll() is not None, 120, "3 pages read")
        assert process.poll() is None, process.communicate()[0]
        stopped = time.monotonic()
        os.killpg(process.pid, number)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        seconds, pages = time.monotonic() - stopped, len(api.requests)

    assert process.returncode == status, output
    assert seconds < 15 and pages < 30, (seconds, pages, output)  # all 40 would take 16 s
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert len(lines) == 1, output
    assert f"stopped while reading its recipients ({name}); nothing was sent; running" in lines[0], output
    assert lines[0].endswith("` starts it over"), output
    assert "source rows" not in output, output  # no table of zeros: nothing was counted
    assert batch_calls(emulator) == 0
    assert sum(ledger_counts(folder, campaign_id).values()) == 0
    spools = folder / ".data" / "spool"
    assert not spools.exists() or not any(spools.iterdir()), list(spools.iterdir())


def test_a_stop_while_a_long_list_is_registered_ends_the_run_and_the_rerun_sends_everyone_once(
    prefect_server: str, start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal recorded while the recipients are registered (1M rows on a large ledger take about a minute,
    past a worker's 30-s kill) ends the registration at the next chunk: Cancelled, nothing sent, the chunks
    before it `pending`; the rerun registers the rest and sends everyone once."""
    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign
    from tasks.report import REGISTERING
    from tasks.stop import STOP_REQUESTS

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")  # the emulator's test key
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    monkeypatch.setattr("tasks.plan.PLAN_CHUNK_ROWS", 20)
    emulator = start_emulator(batch_calls_per_second=None)
    campaign_id = f"stop-reg-{uuid.uuid4().hex[:6]}"
    campaign = Campaign.from_yaml(write_campaign(tmp_path / "c", emulator, campaign_id, rate=10.0))
    register = Ledger.register

    def register_then_signal(self: Ledger, *args: Any, **kwargs: Any) -> int:
        registered = register(self, *args, **kwargs)
        STOP_REQUESTS.handle(signal.SIGTERM)  # what the handler does when the worker's SIGTERM lands here
        return registered

    monkeypatch.setattr(Ledger, "register", register_then_signal)
    state = send_campaign(campaign, return_state=True)
    assert state.is_cancelled(), state
    assert state.message == "stopped while registering its recipients (SIGTERM); nothing was sent"
    summary = state.result(raise_on_failure=False)
    assert summary.stopped_while == REGISTERING and summary.valid == BATCHES * BATCH_SIZE
    assert batch_calls(emulator) == 0
    counts = ledger_counts(tmp_path / "c", campaign_id)
    assert counts["pending"] == sum(counts.values()) == 20, counts

    monkeypatch.setattr(Ledger, "register", register)
    again = send_campaign(campaign, return_state=True)
    assert again.is_completed(), again
    sent = Counter(message.to for message in emulator.state.accepted_messages())
    assert len(sent) == BATCHES * BATCH_SIZE and set(sent.values()) == {1}
