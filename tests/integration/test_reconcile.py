"""Reconciliation through QueryMessage, "retry failed only", and the example campaign's delivery report:
flows on the real Prefect test server, the emulator and the receipt receiver over loopback sockets.

Parsing, merging, the store and the receiver alone: tests/{unit,integration}/test_receipts.py.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.emulator import EmulatorServer
from alibaba_sms.emulator.receipts import ReceiptSettings
from alibaba_sms.errors import AuthenticationError
from flows.reconcile_receipts import reconcile_receipts
from flows.retry_failed_deliveries import retry_failed_deliveries
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign, GatewaySettings
from globe_sms.cli import app
from globe_sms.ledger import Ledger
from globe_sms.paths import default_ledger_url
from globe_sms.receipts import DeliveryStatus, Receipt, ReceiptStore
from globe_sms.receipts.receiver import ReceiverServer
from globe_sms.receipts.reconcile import QueryPacer, query_pacer, reconcile
from globe_sms.receipts.retry import reopen_failed_deliveries
from tests.emulator_fixtures import KEY, StartEmulator
from tests.integration.test_receipts import WEBHOOK_STATE, send_and_record

pytestmark = pytest.mark.usefixtures("prefect_server")
EXAMPLES = Path(__file__).parents[2] / "examples"
MIX = {"delivered_weight": 0.5, "failed_weight": 0.3, "expired_weight": 0.1, "stuck_weight": 0.1}


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment AccessKey a real endpoint needs (the emulator's test key)."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def queries(emulator: EmulatorServer) -> int:
    return len(emulator.state.requests("QueryMessage"))


def states(url: str, campaign: str) -> dict[str, str | None]:
    with ReceiptStore(url) as store:
        rows = store.delivery_rows(campaign)
    return dict(zip(rows["message_id"], rows["delivery_status"], strict=True))


def test_reconcile_settles_lost_receipts_through_query_message(
    start_emulator: StartEmulator, ledger_url: str, env_key: None
) -> None:
    """No receipt was pushed: QueryMessage settles each message as decided, never re-asks a settled one,
    leaves the stuck ones `sending`, and makes them final `unknown` once past the deadline."""
    emulator = start_emulator(
        batch_calls_per_second=None, seed=11, receipts=ReceiptSettings(simulate=True, delay_seconds=0, **MIX)
    )
    ids = send_and_record(emulator, ledger_url, "lost", [str(85291000000 + i) for i in range(40)])
    plans = emulator.state.receipts.plans()
    already = list(ids.values())[:5]  # these have their receipt: never queried
    with ReceiptStore(ledger_url) as store:
        store.record(
            [Receipt(mid, DeliveryStatus(WEBHOOK_STATE[plans[mid].outcome] or "sending")) for mid in already]
        )
    settled_before = sum(1 for mid in already if plans[mid].outcome != "stuck")
    gateway = GatewaySettings(endpoint=emulator.url, rate_limit_name="unused")

    first = reconcile_receipts("lost", ledger_url, gateway, older_than_minutes=0)
    expected = {mid: WEBHOOK_STATE[plans[mid].outcome] or "sending" for mid in ids.values()}
    assert states(ledger_url, "lost") == expected
    stuck = sum(1 for mid in ids.values() if plans[mid].outcome == "stuck")
    assert 0 < stuck < 40 and first.candidates == queries(emulator) == 40 - settled_before
    assert first.still_sending == stuck and first.timed_out == 0
    [report] = first.reports
    assert report.delivered == sum(1 for p in plans.values() if p.outcome == "delivered")
    assert report.pending == stuck and report.failed == sum(
        1 for p in plans.values() if p.outcome in ("failed", "expired")
    )

    second = reconcile_receipts("lost", ledger_url, gateway, older_than_minutes=0, unknown_after_hours=0)
    assert second.candidates == stuck and queries(emulator) == 40 - settled_before + stuck
    assert second.timed_out == stuck and second.reports[0].unknown == stuck and second.reports[0].pending == 0
    assert reconcile_receipts("lost", ledger_url, gateway, older_than_minutes=0).candidates == 0


def test_reconcile_queries_with_the_gateways_read_timeout(
    start_emulator: StartEmulator, ledger_url: str, env_key: None
) -> None:
    """QueryMessage answers after 3 s; with `read_timeout_seconds: 0.5` every query gives up at 0.5 s (the
    client comes from the gateway module, as for sending), the messages stay unsettled for the next run."""
    emulator = start_emulator(
        batch_calls_per_second=None, receipts=ReceiptSettings(simulate=True, delay_seconds=0)
    )
    ids = send_and_record(emulator, ledger_url, "slow", [str(85291000000 + i) for i in range(4)])
    emulator.state.faults.configure(latency_seconds=3.0)
    gateway = GatewaySettings(endpoint=emulator.url, rate_limit_name="unused", read_timeout_seconds=0.5)
    started = time.monotonic()
    result = reconcile_receipts("slow", ledger_url, gateway, older_than_minutes=0, workers=4)
    assert result.candidates == 4 and result.errors == {"ReadTimeout": 4}
    assert time.monotonic() - started < 2.5  # four 3-s answers not awaited
    assert states(ledger_url, "slow") == {mid: None for mid in ids.values()}


def test_reconcile_refuses_the_embedded_emulator(ledger_url: str) -> None:
    """The embedded emulator forgets its messages after its run: reconciling against it is refused."""
    with pytest.raises(ValueError, match="cannot be queried later"):
        reconcile_receipts("any", ledger_url, GatewaySettings(endpoint="emulator"))


def test_queries_are_paced_and_a_refused_key_stops_the_run(
    start_emulator: StartEmulator, ledger_url: str
) -> None:
    """At 20 queries/s, 30 queries take at least 1.45 s with no 1-s window over 21; a wrong secret stops at
    once and stores nothing."""
    emulator = start_emulator(
        batch_calls_per_second=None, receipts=ReceiptSettings(simulate=True, delay_seconds=0)
    )
    ids = send_and_record(emulator, ledger_url, "paced", [str(85291000000 + i) for i in range(30)])
    with ReceiptStore(ledger_url) as store, SmsClient(KEY, endpoint=emulator.url) as client:
        result = reconcile(
            store, client, campaign_id="paced", older_than=timedelta(0), pacer=query_pacer(20), workers=4
        )
    times = sorted(r.time for r in emulator.state.requests("QueryMessage"))
    assert result.queried == 30 and len(times) == 30 and times[-1] - times[0] >= 29 / 20 - 0.05
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 21
    assert set(states(ledger_url, "paced").values()) <= {"delivered", "undelivered", "expired"}

    other = send_and_record(emulator, ledger_url, "refused", ["85291000099"])
    wrong = AccessKey.of("testid", "not-the-secret")
    with ReceiptStore(ledger_url) as store, SmsClient(wrong, endpoint=emulator.url) as client:
        with pytest.raises(AuthenticationError):
            reconcile(store, client, campaign_id="refused", older_than=timedelta(0))
    assert states(ledger_url, "refused") == {other["85291000099"]: None} and ids


def test_query_pacer_spaces_calls_by_the_interval() -> None:
    """Five calls at 300/s: each starts one interval after the previous one, whoever calls."""
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = QueryPacer(300, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert slept == [round(1 / 300, 6)] * 4 and now[0] == pytest.approx(4 / 300)


# --- retry failed only --------------------------------------------------------------------------------------


@pytest.fixture
def receiver(ledger_url: str, no_proxy: None) -> Iterator[ReceiverServer]:
    with ReceiverServer(ledger_url) as server:
        yield server


def make_campaign(tmp_path: Path, emulator: EmulatorServer, ledger_url: str, phones: list[str]) -> Campaign:
    source = tmp_path / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([[f"+{phone}", f"N{i}"] for i, phone in enumerate(phones)])
    data: dict[str, Any] = {
        "campaign_id": "retry-failed",
        "source": {"path": str(source)},
        "template": "Hi {first_name}!",
        "sender_id": "GlobeSMS",
        "batch_size": 50,  # one batch (one rate-limit grant) per send run keeps the test short
        "ledger": ledger_url,
        "gateway": {"endpoint": emulator.url, "calls_per_second": 50, "rate_limit_name": "test-retry-failed"},
    }
    return Campaign.parse(data)


def retryable_failures(emulator: EmulatorServer, message_ids: set[str]) -> set[str]:
    """The numbers of the given messages whose decided fate is a retryable failure."""
    plans = emulator.state.receipts.plans()
    numbers = {m.message_id: m.to for m in emulator.state.accepted_messages()}
    return {
        numbers[mid]
        for mid in message_ids
        if plans[mid].outcome == "expired"
        or (plans[mid].outcome == "failed" and plans[mid].error_code == "ABSENT_SUBSCRIBER")
    }


def test_retry_failed_only_resends_exactly_the_retryable_failures(
    tmp_path: Path, start_emulator: StartEmulator, receiver: ReceiverServer, ledger_url: str, env_key: None
) -> None:
    """After the receipts came in, the gateway receives a second message for exactly the recipients whose
    receipts failed with a retryable code (or expired): not the delivered, not the permanently failed."""
    emulator = start_emulator(
        batch_calls_per_second=20,
        seed=21,
        receipt_callback_url=receiver.url,
        receipts=ReceiptSettings(
            delay_seconds=0,
            duplicate_rate=0.3,
            interim_rate=0.3,
            reorder=True,
            delivered_weight=0.5,
            failed_weight=0.4,
            expired_weight=0.1,
            failure_codes={"ABSENT_SUBSCRIBER": 1, "BLACKLISTED": 1},
        ),
    )
    phones = [f"8529123{i:04d}" for i in range(40)]
    campaign = make_campaign(tmp_path, emulator, ledger_url, phones)
    assert send_campaign(campaign).accepted == 40
    assert emulator.state.receipts.drain(10)
    first_ids = {m.message_id for m in emulator.state.accepted_messages()}
    expected = retryable_failures(emulator, first_ids)
    permanent = sum(
        1 for mid in first_ids if emulator.state.receipts.plans()[mid].error_code == "BLACKLISTED"
    )
    assert expected and permanent

    summary = retry_failed_deliveries(campaign)
    resent = emulator.state.accepted_messages()[40:]
    assert sorted(m.to for m in resent) == sorted(expected)  # each exactly once, nobody else
    assert summary.reopened == len(expected) and summary.not_retried == {"BLACKLISTED": permanent}
    assert summary.send is not None and summary.send.accepted == len(expected)

    # Receipts for the resent messages arrive; another retry would concern only those that failed again.
    assert emulator.state.receipts.drain(10)
    again = retryable_failures(emulator, {m.message_id for m in resent})
    with ReceiptStore(ledger_url) as store, Ledger(ledger_url) as ledger:
        would = reopen_failed_deliveries(store, ledger, campaign.campaign_id, dry_run=True)
        assert sorted(would.phones) == sorted(again) and ledger.counts(campaign.campaign_id)["pending"] == 0


# --- the example campaign -----------------------------------------------------------------------------------


def test_the_example_campaign_reports_delivery_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    """`globe-sms send examples/welcome.yaml` with the embedded emulator's receipts, then
    `globe-sms receipts report welcome-2026-11`: every accepted recipient has its final outcome."""
    for name in ("welcome.yaml", "welcome.csv", "prices.csv"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    example = tmp_path / "welcome.yaml"
    assert "emulator_receipts: true" in example.read_text()
    example.write_text(example.read_text().replace("calls_per_second: 1.0", "calls_per_second: 20"))
    runner = CliRunner()
    sent = runner.invoke(app, ["send", str(example)])
    assert sent.exit_code == 0, sent.output
    assert "delivery of welcome-2026-11" in sent.output and "by country" in sent.output
    result = runner.invoke(app, ["receipts", "report", "welcome-2026-11", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accepted"] == 2600 and report["pending"] == 0 and report["orphans"] == 0
    assert (
        report["delivered"] + report["failed"] == 2600 and report["delivered"] > 2000 and report["failed"] > 0
    )
    assert {row["country"] for row in report["by_country"]} >= {"HK", "MO", "TW", "SG"}
    assert report["duplicates"] > 0 and report["stale"] > 0
    # The example names no ledger, and `receipts report` no --ledger: both are the default ledger.
    assert not (tmp_path / ".data" / "ledger.db").exists()
    with Ledger(default_ledger_url()) as ledger:
        assert ledger.counts("welcome-2026-11")["accepted"] == 2600
