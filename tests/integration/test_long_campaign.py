"""A long campaign, 200 batches, with the gateway stopped and started again on the same port midway.

While the gateway is down, calls fail to connect: nothing was sent, so the ledger puts the batch back to
pending and Prefect's task retries (backoff 2 s, 4 s, 8 s) send it once the gateway is back. The journal file
is shared by both gateway processes' lifetimes, so it holds everything that was accepted. Faults and kills are
in tests/{unit,integration}/test_chaos.py.

Timing: about 20 s on an idle 2-core machine. The Prefect test server runs on SQLite; on a loaded machine some
rate-limit acquisitions fail there with "database is locked" (HTTP 503), which Prefect's client retries after
a fixed ~2 s, so the same test can take a few minutes.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tests.chaos.check import check_campaign, journal_messages
from tests.chaos.scenario import valid_numbers

BATCHES, BATCH_SIZE, RATE = 200, 5, 50.0
RESTART_AFTER_CALLS = BATCHES // 2
OUTAGE_SECONDS = 1.5


class RestartingGateway:
    """An emulator on a fixed port that a watcher thread stops after N batch calls and starts again."""

    def __init__(self, journal: Path) -> None:
        self.config = EmulatorConfig(batch_calls_per_second=RATE, journal_path=journal)
        self.server = EmulatorServer(self.config).start()
        self.port = self.server.port
        self.calls_before_restart = 0
        self.restarted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gateway-restarter", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _watch(self) -> None:
        while not self._stop.is_set():
            calls = len(self.server.state.requests("BatchSendMessageToGlobe"))
            if calls >= RESTART_AFTER_CALLS:
                self.server.stop()
                self.calls_before_restart = calls
                time.sleep(OUTAGE_SECONDS)
                # A new process would have a new message-id sequence: unseeded, so ids do not repeat.
                self.server = EmulatorServer(self.config, port=self.port).start()
                self.restarted.set()
                return
            time.sleep(0.002)

    def __enter__(self) -> RestartingGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.server.stop()


@pytest.fixture
def gateway(
    tmp_path: Path, no_proxy: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RestartingGateway]:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    with RestartingGateway(tmp_path / "journal.jsonl") as gateway:
        yield gateway


@pytest.mark.prefect
def test_200_batches_survive_a_gateway_restart_with_no_duplicates(
    gateway: RestartingGateway, tmp_path: Path, prefect_server: str
) -> None:
    """The gateway goes away after batch 100 and comes back 1.5 s later: every number is sent exactly once."""
    numbers = valid_numbers(BATCHES * BATCH_SIZE, seed=200)
    source = tmp_path / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, "Ada"] for number in numbers)
    campaign = Campaign.parse(
        {
            "campaign_id": "long-restart",
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "batch_size": BATCH_SIZE,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "gateway": {"endpoint": gateway.url, "calls_per_second": RATE, "rate_limit_name": "long-restart"},
        }
    )
    summary = send_campaign(campaign)

    assert gateway.restarted.is_set() and 0 < gateway.calls_before_restart < BATCHES
    assert summary.batches == BATCHES and summary.pending == 0 and summary.error is None
    with Ledger(campaign.ledger) as ledger:
        rows = ledger.rows(campaign.campaign_id)
    expected = {number.lstrip("+") for number in numbers}
    messages = journal_messages(tmp_path / "journal.jsonl", campaign.campaign_id)
    verdict = check_campaign(rows, messages, expected, campaign.campaign_id)
    assert verdict.ok, verdict.problems()
    # At most the batch in flight when the gateway went down may be unknown; the rest were accepted once.
    unknown = verdict.unknown_delivered + verdict.unknown_not_delivered
    assert verdict.statuses.get("accepted", 0) + unknown == len(expected)
    assert verdict.statuses.get("unknown", 0) <= BATCH_SIZE
    # The outage was met: a batch was refused a connection (nothing sent) and went out on a retry.
    retried = rows.filter(pl.col("attempts") > 1)
    assert retried.height >= BATCH_SIZE and set(retried["status"]) <= {"accepted", "unknown"}
