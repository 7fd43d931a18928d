"""The send_campaign flow end to end: a real Prefect server, the emulator on loopback, a real SQLite ledger.

Stages are unit-tested in their own modules (test_validate, test_render, test_ledger, test_pacing); this
module proves they are wired so that every valid recipient gets exactly one message, also when two runs of
one campaign start at once (the run lease; at ledger level in test_run_lease).
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.resend import resend_campaign
from flows.retry_failed_deliveries import retry_failed_deliveries
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import EXIT_BAD_INPUT, app
from globe_sms.ledger import CampaignBusy, Ledger, RunOwner
from tasks.send_batches import CampaignFailed
from tests.emulator_fixtures import FLOW_RATE

pytestmark = pytest.mark.usefixtures("prefect_server")

VALID = [
    "+85291234567", "+85291234568", "+85366123456", "+886912345678", "+6591234567", "+6591234568",
    "+447911123456", "+4915123456789", "+61412345678", "+60123456789", "+66812345678", "+639171234567",
]
INVALID = ["+8613800138000", "008613912345678", "4.47911E+11", "hello", "", "+852 12"]

MakeCampaign = Callable[..., Campaign]


def e164_digits(number: str) -> str:
    return number.lstrip("+")


@pytest.fixture
def make_campaign(tmp_path: Path, gateway: EmulatorServer, request: pytest.FixtureRequest) -> MakeCampaign:
    """Write a recipients CSV and build a campaign that sends it to the test's emulator."""
    source = tmp_path / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        for i, number in enumerate(VALID + INVALID):
            writer.writerow([number, f"Name{i}"])
    name = request.node.name.lower().replace("_", "-")[:60].strip("-")

    def make(**overrides: Any) -> Campaign:
        data: dict[str, Any] = {
            "campaign_id": name,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "batch_size": 5,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "validation": {"max_reject_share": 0.5},
            "gateway": {
                "endpoint": gateway.url,
                "calls_per_second": FLOW_RATE,
                "rate_limit_name": f"test-{name}",
                "max_attempts": 3,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Campaign.parse(data)

    return make


def batch_requests(server: EmulatorServer) -> list[Any]:
    return server.state.requests("BatchSendMessageToGlobe")


def test_full_campaign_is_accepted_once_per_valid_number(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """Every valid number gets exactly one message; mainland and malformed numbers never reach the gateway."""
    summary = send_campaign(make_campaign())
    expected = {e164_digits(n) for n in VALID}
    assert summary.accepted == len(VALID) and summary.failed == 0 and summary.unknown == 0
    assert summary.rejected == len(INVALID) and summary.batches == 3
    assert dict(gateway.state.accepted_numbers()) == dict.fromkeys(expected, 1)
    assert sum(r.numbers for r in batch_requests(gateway)) == len(VALID)
    assert {m.task_id for m in gateway.state.accepted_messages()} == {
        f"{summary.campaign_id}-b{n:05d}" for n in (1, 2, 3)
    }
    assert summary.rejected_by_reason.get("mainland_china") == 2


def test_rerun_with_the_same_campaign_id_sends_nothing_new(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """The ledger remembers: a second run plans no batch and makes no call."""
    campaign = make_campaign()
    send_campaign(campaign)
    calls_after_first = len(batch_requests(gateway))
    again = send_campaign(campaign)
    assert again.planned == 0 and again.accepted == 0 and again.already_sent == len(VALID)
    assert len(batch_requests(gateway)) == calls_after_first
    assert max(gateway.state.accepted_numbers().values()) == 1


def test_permanent_error_fails_the_run_without_retries(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """AMOUNT_NOT_ENOUGH stops the run after one call; later batches stay pending for the next run."""
    gateway.state.faults.script(["business:AMOUNT_NOT_ENOUGH"])
    campaign = make_campaign()
    with pytest.raises(CampaignFailed, match="AMOUNT_NOT_ENOUGH"):
        send_campaign(campaign)
    assert len(batch_requests(gateway)) == 1
    with Ledger(campaign.ledger) as ledger:
        counts = ledger.counts(campaign.campaign_id)
    assert counts["failed"] == 5 and counts["pending"] == len(VALID) - 5 and counts["accepted"] == 0


def test_transient_error_is_retried_and_succeeds(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """A throttled batch goes back to pending, Prefect retries the task, and every number is sent once."""
    gateway.state.faults.script(["throttle"])
    summary = send_campaign(make_campaign())
    assert summary.accepted == len(VALID)
    calls = batch_requests(gateway)
    assert [r.code for r in calls].count("Throttling.User") == 1 and len(calls) == 4
    assert max(gateway.state.accepted_numbers().values()) == 1


def test_ambiguous_outcome_is_recorded_unknown_and_resent_only_on_request(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """A dropped connection after acceptance: unknown, not resent by a rerun, resent with resend_unknown."""
    gateway.state.faults.script(["drop_after_accept"])
    campaign = make_campaign()
    first = send_campaign(campaign)
    assert first.unknown == 5 and first.accepted == len(VALID) - 5
    rerun = send_campaign(campaign)
    assert rerun.planned == 0
    resent = send_campaign(campaign.model_copy(update={"resend_unknown": True}))
    assert resent.planned == 5 and resent.accepted == 5
    # The dropped batch had in fact been accepted: resending on request is the one way to a second message.
    assert sorted(gateway.state.accepted_numbers().values()).count(2) == 5


def test_crash_leftovers_become_unknown_and_are_not_resent(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """Rows a crashed run left `submitting` are marked unknown by the next run, which skips them."""
    campaign = make_campaign()
    with Ledger(campaign.ledger) as ledger:
        ledger.register(campaign.campaign_id, [e164_digits(VALID[0])])
        ledger.mark_submitting(campaign.campaign_id, 1, [e164_digits(VALID[0])])
    summary = send_campaign(campaign)
    assert summary.recovered_as_unknown == 1 and summary.accepted == len(VALID) - 1
    assert e164_digits(VALID[0]) not in gateway.state.accepted_numbers()


def test_dry_run_plans_but_sends_nothing(make_campaign: MakeCampaign, gateway: EmulatorServer) -> None:
    """A dry run validates, renders and plans; the gateway sees no request and the ledger stays empty."""
    campaign = make_campaign(dry_run=True)
    summary = send_campaign(campaign)
    assert summary.planned == len(VALID) and summary.batches == 3 and summary.accepted == 0
    assert gateway.state.requests() == []
    with Ledger(campaign.ledger) as ledger:
        assert sum(ledger.counts(campaign.campaign_id).values()) == 0


def test_too_many_rejects_stop_before_sending(make_campaign: MakeCampaign, gateway: EmulatorServer) -> None:
    """The whole campaign is validated first: over the reject threshold nothing is sent at all."""
    from globe_sms.validation_rules import TooManyRejects

    with pytest.raises(TooManyRejects):
        send_campaign(make_campaign(validation={"max_reject_share": 0.1}))
    assert gateway.state.requests() == []


def test_embedded_emulator_endpoint_needs_no_credentials(
    make_campaign: MakeCampaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the endpoint `emulator` the flow starts its own emulator and no environment key is needed."""
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    summary = send_campaign(make_campaign(gateway={"endpoint": "emulator"}))
    assert summary.accepted == len(VALID)


def test_budget_cap_stops_the_campaign_before_anything_is_sent(
    make_campaign: MakeCampaign, gateway: EmulatorServer, tmp_path: Path
) -> None:
    """The estimate exceeds the budget: BudgetExceeded, no request, and the ledger untouched."""
    from tasks.cost import BudgetExceeded

    prices = tmp_path / "prices.csv"
    prices.write_text("country,price_per_segment\ndefault,0.05\n")
    campaign = make_campaign(price_table=str(prices), budget=0.5)  # 12 messages cost 0.60
    with pytest.raises(BudgetExceeded):
        send_campaign(campaign)
    assert gateway.state.requests() == []
    with Ledger(campaign.ledger) as ledger:
        assert sum(ledger.counts(campaign.campaign_id).values()) == 0


def test_dry_run_summary_carries_the_preview(make_campaign: MakeCampaign, tmp_path: Path) -> None:
    """Encodings, segments, cost by country, masked samples and ETA are in the dry run's result."""
    prices = tmp_path / "prices.csv"
    prices.write_text("country,price_per_segment\nHK,0.04\ndefault,0.05\n")
    summary = send_campaign(make_campaign(dry_run=True, price_table=str(prices), batch_size=5,
                                          template="Hi {first_name} – here’s your welcome!"))
    preview = summary.preview
    assert preview is not None and preview.messages == len(VALID) and preview.batches == 3
    assert preview.encodings == {"UCS2": len(VALID)}  # the curly apostrophe and the en dash
    assert set(preview.ucs2_culprits) == {"’", "–"}
    assert preview.cost_total == pytest.approx(0.04 * 2 + 0.05 * 10)
    assert all(str(sample["to"]).endswith("****") for sample in preview.samples)
    assert preview.eta_seconds == pytest.approx(2 / FLOW_RATE)


def test_logs_and_artifacts_hold_no_secret_and_no_full_number(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """Everything the run left on the Prefect server is free of the secret and of unmasked numbers."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    from flows.send_campaign import send_campaign as flow

    gateway.state.faults.script(["throttle"])  # exercise the retry path's log lines too
    run_loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in run_loggers]
    for logger in run_loggers:
        logger.setLevel(logging.DEBUG)
    try:
        state = flow(make_campaign(), return_state=True)
    finally:
        for logger, level in zip(run_loggers, levels, strict=True):
            logger.setLevel(level)
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        run = client.read_flow_run(run_id)
    texts = [log.message for log in logs] + [str(a.data) for a in artifacts] + [str(run.parameters)]
    assert len(artifacts) >= 2 and any("accepted" in log.message for log in logs)
    assert not [t for t in texts if "testsecret" in t]
    full_numbers = {e164_digits(n) for n in VALID}
    assert not [t for t in texts for number in full_numbers if number in t]


# -- two runs of one campaign at once: the run lease (at ledger level: tests/integration/test_run_lease.py)
# -----------
# "Another run" is played by the test: it takes the lease through its own Ledger, as a flow run would, and
# may have a batch in flight (`submitting`).

OTHER = RunOwner.this_process("other-run-id", "flow run 'other-run' (other-run-id) of send-campaign")
PHONES = [e164_digits(number) for number in VALID]


def shifted_clock(seconds: float) -> Callable[[], datetime]:
    """A ledger clock `seconds` away from now: in the past, a lease taken with it has already expired."""
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
def other_run(make_campaign: MakeCampaign) -> Iterator[Ledger]:
    """Another run of the test's campaign, holding its lease with its first batch in flight."""
    campaign = make_campaign()
    with Ledger(campaign.ledger) as ledger:
        ledger.acquire_run_lease(campaign.campaign_id, OTHER, 600)
        ledger.register(campaign.campaign_id, PHONES)
        ledger.mark_submitting(campaign.campaign_id, 1, PHONES[:5])
        yield ledger


def test_a_second_run_stops_at_once_and_leaves_the_first_runs_batch_in_flight(
    make_campaign: MakeCampaign, gateway: EmulatorServer, other_run: Ledger
) -> None:
    """CampaignBusy naming the other run; nothing sent; its submitting rows are not recovered as unknown."""
    campaign = make_campaign()
    cid = campaign.campaign_id
    started = time.monotonic()
    with pytest.raises(CampaignBusy) as caught:
        send_campaign(campaign)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert cid in message and "flow run 'other-run'" in message and "expires by itself at" in message
    assert not [phone for phone in PHONES if phone in message]
    assert gateway.state.requests() == []
    assert other_run.counts(cid)["submitting"] == 5
    # So the other run's answer still lands, instead of a LedgerStateError and five unknown rows.
    other_run.record_accepted(cid, 1, dict.fromkeys(PHONES[:5], "m"), {}, "r")
    assert other_run.release_run_lease(cid)

    summary = send_campaign(campaign)  # released: the campaign sends the rest, and only the rest
    assert summary.accepted == len(VALID) - 5 and summary.recovered_as_unknown == 0
    assert set(gateway.state.accepted_numbers()) == set(PHONES[5:])
    assert other_run.run_lease(cid) is None


def test_after_a_crashed_runs_lease_expires_the_campaign_sends_and_recovers(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """An expired lease (its run crashed on another machine) no longer blocks; its leftovers go unknown."""
    campaign = make_campaign()
    with Ledger(campaign.ledger, clock=shifted_clock(-3600)) as crashed:
        crashed.acquire_run_lease(campaign.campaign_id, OTHER, 600)
        crashed.register(campaign.campaign_id, PHONES)
        crashed.mark_submitting(campaign.campaign_id, 1, PHONES[:5])
    summary = send_campaign(campaign)
    assert summary.recovered_as_unknown == 5 and summary.accepted == len(VALID) - 5
    assert set(gateway.state.accepted_numbers()) == set(PHONES[5:])
    with Ledger(campaign.ledger) as ledger:
        assert ledger.run_lease(campaign.campaign_id) is None


def test_a_dry_run_needs_no_lease(
    make_campaign: MakeCampaign, gateway: EmulatorServer, other_run: Ledger
) -> None:
    """A dry run writes nothing to the ledger, so it plans while another run holds the campaign."""
    summary = send_campaign(make_campaign(dry_run=True))
    assert summary.dry_run and summary.planned == len(VALID) - 5
    assert gateway.state.requests() == []
    assert other_run.run_lease(summary.campaign_id).owner == OTHER.id


def test_resend_and_retry_of_failed_deliveries_stop_at_once_too(
    make_campaign: MakeCampaign, gateway: EmulatorServer, other_run: Ledger
) -> None:
    """The other flows that change the campaign's rows stop the same way, having reopened nothing."""
    campaign = make_campaign()
    for run in (
        lambda: resend_campaign(campaign, statuses=["failed", "unknown"]),
        lambda: retry_failed_deliveries(campaign),
    ):
        with pytest.raises(CampaignBusy, match="other-run"):
            run()
    assert gateway.state.requests() == []
    assert other_run.counts(campaign.campaign_id)["submitting"] == 5


def test_a_run_whose_lease_was_taken_over_stops_before_its_next_batch(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """Taken over while a batch is in flight: that answer is recorded, no further batch leaves."""
    campaign = make_campaign()
    gateway.state.faults.script(["timeout_after_accept:1"])  # batch 1 is answered a second later

    def take_over_while_batch_1_is_in_flight() -> None:
        deadline = time.monotonic() + 30
        while not batch_requests(gateway) and time.monotonic() < deadline:
            time.sleep(0.002)
        # From a clock past the run's lease: to this ledger the lease has expired.
        with Ledger(campaign.ledger, clock=shifted_clock(86400)) as taker:
            taker.acquire_run_lease(campaign.campaign_id, OTHER, 600)

    thread = threading.Thread(target=take_over_while_batch_1_is_in_flight)
    thread.start()
    with pytest.raises(CampaignFailed, match="lease expired and was taken over"):
        send_campaign(campaign)
    thread.join()
    assert len(batch_requests(gateway)) == 1
    with Ledger(campaign.ledger) as ledger:
        counts = ledger.counts(campaign.campaign_id)
        assert counts["accepted"] == 5 and counts["pending"] == len(VALID) - 5 and counts["unknown"] == 0
        assert ledger.run_lease(campaign.campaign_id).owner == OTHER.id


@pytest.mark.parametrize("command", [["send"], ["receipts", "retry"]])
def test_cli_prints_the_busy_campaign_and_exits_2(
    make_campaign: MakeCampaign, tmp_path: Path, command: list[str]
) -> None:
    """`globe-sms send` / `receipts retry` while another run holds the campaign: the message, exit
    status 2."""
    campaign = make_campaign(campaign_id=f"busy-cli-{command[-1]}")
    file = tmp_path / "campaign.yaml"
    file.write_text(yaml.safe_dump(campaign.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "testid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret"}
    with Ledger(campaign.ledger) as other:
        other.acquire_run_lease(campaign.campaign_id, OTHER, 600)
        result = CliRunner().invoke(app, [*command, str(file)], env=env)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "is being sent by another run" in output and "flow run 'other-run'" in output
    assert "testsecret" not in output
