"""Quiet hours end to end: send_campaign on the session's Prefect server, the emulator, a real ledger.

"Now" is injected (`window_checked_at`), so the tests hold at any real time of day.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.resend import resend_campaign
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import EXIT_OK, app
from globe_sms.ledger import Ledger
from tests.emulator_fixtures import FLOW_RATE
from tests.integration.test_flow import batch_requests, e164_digits

pytestmark = pytest.mark.usefixtures("prefect_server")

HONG_KONG = ["+85291234567", "+85291234568", "+85366123456"]  # Macau, too: UTC+8 as well
NEW_YORK = ["+12125550123", "+12125550124"]
LOS_ANGELES = ["+13105550123"]
HK_MORNING = datetime(2026, 6, 15, 3, tzinfo=UTC)  # 11:00 in Hong Kong, 23:00 New York, 20:00 Los Angeles
US_AFTERNOON = datetime(2026, 6, 15, 17, tzinfo=UTC)  # 01:00 in Hong Kong, 13:00 New York, 10:00 LA


AUSTRALIAN_MOBILES = ["+61412345678", "+61412345679", "+61491570156", "+61438123456"]
NEW_ZEALAND_MOBILES = ["+64211234567"]  # Auckland 11:30 and Chatham 12:15 at SYDNEY_0930
SYDNEY_0930 = datetime(2026, 6, 14, 23, 30, tzinfo=UTC)  # Sydney 09:30, Perth 07:30, Cocos 06:00 (June 15)
AUSTRALIA_OPEN = datetime(2026, 6, 15, 2, 30, tzinfo=UTC)  # 09:00 on Cocos, the last +61 zone to open


def a_campaign(tmp_path: Path, gateway: EmulatorServer, numbers: list[str], campaign_id: str) -> Campaign:
    """A campaign of `numbers` with a 09:00-20:00 send window, sending to the emulator."""
    source = tmp_path / "recipients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(numbers))
    data: dict[str, Any] = {
        "campaign_id": campaign_id,
        "source": {"path": str(source)},
        "template": "Hi {first_name}!",
        "sender_id": "GlobeSMS",
        "batch_size": 2,
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        "send_window": {"start": "09:00", "end": "20:00"},
        "gateway": {
            "endpoint": gateway.url,
            "calls_per_second": FLOW_RATE,
            "rate_limit_name": "test-quiet-hours",
        },
    }
    return Campaign.parse(data)


@pytest.fixture
def campaign(tmp_path: Path, gateway: EmulatorServer) -> Campaign:
    """Recipients in Hong Kong, Macau, New York and Los Angeles; a 09:00-20:00 send window."""
    return a_campaign(tmp_path, gateway, HONG_KONG + NEW_YORK + LOS_ANGELES, "quiet-hours")


def digits(numbers: list[str]) -> set[str]:
    return {e164_digits(number) for number in numbers}


def test_recipients_outside_their_window_stay_pending_until_a_later_run(
    campaign: Campaign, gateway: EmulatorServer
) -> None:
    """Hong Kong morning: Asia is sent, the US is deferred; US afternoon: only the deferred ones go out."""
    first = send_campaign(campaign, window_checked_at=HK_MORNING)
    assert first.valid == 6 and first.planned == 3 and first.accepted == 3
    assert first.deferred == 3 and first.pending == 3
    assert first.next_window_opening == datetime(2026, 6, 15, 13, tzinfo=UTC)  # 09:00 in New York
    assert first.deferral_text == "deferred 3 until 2026-06-15 13:00 UTC"
    assert set(gateway.state.accepted_numbers()) == digits(HONG_KONG)
    with Ledger(campaign.ledger) as ledger:
        pending = set(ledger.pending(campaign.campaign_id))
    assert pending == digits(NEW_YORK + LOS_ANGELES)

    second = send_campaign(campaign, window_checked_at=US_AFTERNOON)
    assert second.planned == 3 and second.accepted == 3 and second.deferred == 0 and second.pending == 0
    everyone = digits(HONG_KONG + NEW_YORK + LOS_ANGELES)
    assert dict(gateway.state.accepted_numbers()) == dict.fromkeys(everyone, 1)
    assert sum(request.numbers for request in batch_requests(gateway)) == 6

    third = send_campaign(campaign, window_checked_at=US_AFTERNOON)
    assert third.planned == 0 and third.deferred == 0 and len(batch_requests(gateway)) == 4


def test_a_dry_run_reports_the_deferral_and_writes_nothing(
    campaign: Campaign, gateway: EmulatorServer
) -> None:
    summary = send_campaign(campaign.model_copy(update={"dry_run": True}), window_checked_at=HK_MORNING)
    assert summary.planned == 3 and summary.deferred == 3
    assert summary.next_window_opening == datetime(2026, 6, 15, 13, tzinfo=UTC)
    assert "deferred 3 until 2026-06-15 13:00 UTC" in summary.to_markdown()
    assert gateway.state.requests() == []
    with Ledger(campaign.ledger) as ledger:
        assert sum(ledger.counts(campaign.campaign_id).values()) == 0


def test_the_cli_exits_0_and_says_until_when_when_everyone_is_deferred(
    campaign: Campaign, gateway: EmulatorServer, tmp_path: Path
) -> None:
    """Nothing failed: exit status 0, and the summary says when the window opens. The CLI uses the real
    clock, so the window is a minute that starts two hours from now in Hong Kong (closed in every zone)."""
    opens = (datetime.now(UTC) + timedelta(hours=10)).replace(second=0, microsecond=0)  # HK is UTC+8
    window = {"start": opens.strftime("%H:%M"), "end": (opens + timedelta(minutes=1)).strftime("%H:%M")}
    file = tmp_path / "campaign.yaml"
    data = campaign.model_dump(mode="json", exclude_none=True) | {"send_window": window}
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "testid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret"}
    result = CliRunner().invoke(app, ["send", str(file)], env=env)
    assert result.exit_code == EXIT_OK, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "deferred 6 until" in output
    assert gateway.state.requests() == []


def test_a_timezone_column_from_the_source_decides_over_the_number(
    campaign: Campaign, gateway: EmulatorServer, tmp_path: Path
) -> None:
    """A Hong Kong number whose row says America/New_York (a customer living there) waits for New York."""
    source = tmp_path / "with-zones.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name", "tz"])
        writer.writerows([[HONG_KONG[0], "Ann", "America/New_York"], [HONG_KONG[1], "Bo", ""]])
    with_zones = campaign.model_copy(
        update={
            "source": campaign.source.model_copy(update={"path": str(source)}),
            "send_window": campaign.send_window.model_copy(update={"timezone_column": "tz"}),
        }
    )
    summary = send_campaign(with_zones, window_checked_at=HK_MORNING)
    assert summary.accepted == 1 and summary.deferred == 1
    assert set(gateway.state.accepted_numbers()) == digits(HONG_KONG[1:2])  # the empty zone: from the number


def test_a_resend_reopens_the_chosen_rows_but_sends_only_those_inside_their_window(
    campaign: Campaign, gateway: EmulatorServer
) -> None:
    """Every answer of a windowless first run is lost (unknown). A resend in Hong Kong's morning reopens all
    six, sends Asia and leaves the US pending; the campaign's next run in the US afternoon sends those."""
    gateway.state.faults.script(["drop_after_accept"] * 3)
    first = send_campaign(campaign.model_copy(update={"send_window": None}))
    assert first.unknown == 6
    resent = resend_campaign(campaign, statuses=["unknown"], window_checked_at=HK_MORNING)
    assert resent.planned == 3 and resent.deferred == 3  # all six reopened: three sent, three pending
    assert resent.next_window_opening == datetime(2026, 6, 15, 13, tzinfo=UTC)
    with Ledger(campaign.ledger) as ledger:
        assert set(ledger.pending(campaign.campaign_id)) == digits(NEW_YORK + LOS_ANGELES)
    later = send_campaign(campaign, window_checked_at=US_AFTERNOON)
    assert later.planned == 3 and later.accepted == 3 and later.pending == 0


def test_an_australian_mobile_waits_until_the_window_is_open_in_perth_too(
    tmp_path: Path, gateway: EmulatorServer
) -> None:
    """A `+61 4...` mobile may be anywhere in Australia: at 09:30 in Sydney (07:30 in Perth) none is sent,
    they stay pending and the summary says until when; once the window is open in every Australian zone
    (Perth, Eucla, Lord Howe, Christmas and Cocos Islands), the next run sends them all."""
    campaign = a_campaign(tmp_path, gateway, AUSTRALIAN_MOBILES + NEW_ZEALAND_MOBILES, "quiet-australia")
    early = send_campaign(campaign, window_checked_at=SYDNEY_0930)
    assert early.valid == 5 and early.deferred == 4 and early.accepted == 1
    assert set(gateway.state.accepted_numbers()) == digits(NEW_ZEALAND_MOBILES)
    assert early.next_window_opening == AUSTRALIA_OPEN
    assert early.deferral_text == "deferred 4 until 2026-06-15 02:30 UTC"
    assert "deferred 4 until 2026-06-15 02:30 UTC" in early.to_markdown()
    with Ledger(campaign.ledger) as ledger:
        assert set(ledger.pending(campaign.campaign_id)) == digits(AUSTRALIAN_MOBILES)

    still_early = send_campaign(campaign, window_checked_at=AUSTRALIA_OPEN - timedelta(minutes=1))
    assert still_early.accepted == 0 and still_early.deferred == 4  # 08:59 on Cocos, 13:29 in Sydney

    opened = send_campaign(campaign, window_checked_at=AUSTRALIA_OPEN)
    assert opened.planned == 4 and opened.accepted == 4 and opened.deferred == 0 and opened.pending == 0
    everyone = digits(AUSTRALIAN_MOBILES + NEW_ZEALAND_MOBILES)
    assert dict(gateway.state.accepted_numbers()) == dict.fromkeys(everyone, 1)


def test_a_dry_run_at_sydney_breakfast_plans_no_australian_mobile(
    tmp_path: Path, gateway: EmulatorServer
) -> None:
    """What-if at 09:30 Sydney time: the dry run reports all four deferred and calls nobody."""
    campaign = a_campaign(tmp_path, gateway, AUSTRALIAN_MOBILES, "quiet-australia-dry")
    summary = send_campaign(campaign.model_copy(update={"dry_run": True}), window_checked_at=SYDNEY_0930)
    assert summary.planned == 0 and summary.deferred == 4
    assert summary.next_window_opening == AUSTRALIA_OPEN
    assert gateway.state.requests() == []


def test_a_caribbean_mobile_waits_for_all_of_plus_1_unless_its_zone_is_given(
    tmp_path: Path, gateway: EmulatorServer
) -> None:
    """phonenumbers places a Jamaican mobile anywhere under +1 (Guam to Newfoundland), where a 09:00-20:00
    window never opens everywhere at once: it stays deferred and the summary says so. A `timezone_column`
    naming America/Jamaica lets it go out in Jamaica's morning."""
    jamaica = "+18762101234"
    campaign = a_campaign(tmp_path, gateway, [jamaica], "quiet-jamaica")
    jamaica_morning = datetime(2026, 6, 15, 15, tzinfo=UTC)  # 10:00 in Kingston
    never = send_campaign(campaign, window_checked_at=jamaica_morning)
    assert never.deferred == 1 and never.accepted == 0 and never.next_window_opening is None
    assert never.deferral_text == "deferred 1: their send window does not open in all their zones this week"

    source = tmp_path / "with-zone.csv"
    source.write_text(f"phone,first_name,tz\n{jamaica},Ann,America/Jamaica\n", encoding="utf-8")
    zoned = campaign.model_copy(
        update={
            "source": campaign.source.model_copy(update={"path": str(source)}),
            "send_window": campaign.send_window.model_copy(update={"timezone_column": "tz"}),
        }
    )
    sent = send_campaign(zoned, window_checked_at=jamaica_morning)
    assert sent.accepted == 1 and sent.deferred == 0
    assert set(gateway.state.accepted_numbers()) == digits([jamaica])
