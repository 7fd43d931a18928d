"""The single lane (issue #16) end to end: a real Prefect server, the emulator on loopback, a SQLite ledger.

`send_via: single` sends every recipient with SendMessageToGlobe, `both` splits one queue between the two
lanes; in both cases every valid recipient gets exactly one message, the ledger records each row's lane,
segments and carrier, and each chunk is a task run named `<campaign>-single-<n>`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign, CampaignFileError
from globe_sms.ledger import Ledger
from tests.emulator_fixtures import FLOW_RATE

pytestmark = [pytest.mark.alone, pytest.mark.usefixtures("prefect_server")]

MakeCampaign = Callable[..., Campaign]


def phones(n: int, start: int = 0) -> list[str]:
    """`n` distinct Hong Kong mobile numbers (the emulator names their carrier CMI)."""
    return [f"85291{i + start:06d}" for i in range(n)]


@pytest.fixture
def make_campaign(tmp_path: Path, gateway: EmulatorServer, request: pytest.FixtureRequest) -> MakeCampaign:
    name = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:60].strip("-")

    def make(numbers: list[str], **overrides: Any) -> Campaign:
        source = tmp_path / f"{len(numbers)}.csv"
        with source.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["phone", "first_name"])
            writer.writerows([f"+{number}", f"N{i}"] for i, number in enumerate(numbers))
        data: dict[str, Any] = {
            "campaign_id": name,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, your code is ready",
            "sender_id": "GlobeSMS",
            "batch_size": 10,
            "single_chunk_size": 25,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "gateway": {
                "endpoint": gateway.url,
                "calls_per_second": FLOW_RATE,
                "single_calls_per_second": 400,
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


def task_run_names(flow_run_name_prefix: str) -> list[str]:
    """Names of the task runs whose name starts with `flow_run_name_prefix` (read from the server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=flow_run_name_prefix)), limit=200
        )
    return sorted(run.name for run in runs)


def test_single_sends_each_recipient_once_with_single_calls(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    numbers = phones(120)
    campaign = make_campaign(numbers, send_via="single")
    summary = send_campaign(campaign)
    assert summary.error is None
    assert (summary.valid, summary.planned) == (120, 120), summary
    assert (summary.accepted, summary.failed, summary.unknown, summary.pending) == (120, 0, 0, 0)
    assert gateway.state.accepted_numbers() == dict.fromkeys(numbers, 1)  # each number once, no duplicate
    actions = {record.action for record in gateway.state.accepted_messages()}
    assert actions == {"SendMessageToGlobe"}
    assert not gateway.state.requests("BatchSendMessageToGlobe")
    with Ledger(campaign.ledger_location) as ledger:
        rows = ledger.rows(campaign.campaign_id)
        batches = ledger.batches(campaign.campaign_id)
    assert set(rows["status"]) == {"accepted"} and set(rows["lane"]) == {"single"}
    assert set(rows["carrier"]) == {"CMI"} and set(rows["segments"]) == {1}
    assert rows["message_id"].null_count() == 0 and rows["request_id"].n_unique() == 120
    assert len(batches) == 120 // 25 + 1 and set(batches["lane"]) == {"single"}
    assert batches["recipients"].sum() == 120
    names = task_run_names(f"{campaign.campaign_id}-single-")
    assert names == sorted(f"{campaign.campaign_id}-single-{n}" for n in batches["batch_no"])
    [single] = [lane for lane in summary.lanes if lane.lane == "single"]
    assert single.recipients == 120 and single.calls == 120 and single.segments == 120
    assert "## Lanes (`send_via: single`)" in summary.to_markdown()


def test_both_splits_one_queue_between_the_lanes(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    numbers = phones(300)
    campaign = make_campaign(numbers, send_via="both")
    summary = send_campaign(campaign)
    assert summary.error is None
    assert gateway.state.accepted_numbers() == dict.fromkeys(numbers, 1)
    with Ledger(campaign.ledger_location) as ledger:
        rows = ledger.rows(campaign.campaign_id)
        batches = ledger.batches(campaign.campaign_id)
    assert set(rows["status"]) == {"accepted"}
    lanes = dict(rows.group_by("lane").len().iter_rows())
    assert lanes.get("batch", 0) > 0 and lanes.get("single", 0) > 0 and sum(lanes.values()) == 300
    assert batches["batch_no"].n_unique() == len(batches)  # one sequence of numbers: unique TaskIds
    by_lane = {lane.lane: lane for lane in summary.lanes}
    assert by_lane["batch"].recipients + by_lane["single"].recipients == 300
    assert task_run_names(f"{campaign.campaign_id}-batch-")
    assert task_run_names(f"{campaign.campaign_id}-single-")
    # batch rows carry no per-number segments; single rows do
    assert rows.filter(rows["lane"] == "batch")["segments"].null_count() == lanes["batch"]


def test_a_rerun_of_a_single_campaign_sends_nothing_again(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    numbers = phones(40)
    campaign = make_campaign(numbers, send_via="single")
    send_campaign(campaign)
    again = send_campaign(campaign)
    assert again.planned == 0 and again.already_sent == 40
    assert max(gateway.state.accepted_numbers().values()) == 1


def test_each_call_follows_the_state_machine(make_campaign: MakeCampaign, gateway: EmulatorServer) -> None:
    """Faults on single calls: throttled and 503 rows go again (sent once in the end), a 500 or a dropped
    answer leaves its row unknown (maybe sent: never resent), a business refusal of the number fails it; the
    gateway sees every number at most once."""
    numbers = phones(60)
    campaign = make_campaign(numbers, send_via="single", single_chunk_size=20)
    faults = ["throttle", "503", "500", "drop_after_accept", "business:MOBILE_NUMBER_ILLEGAL", "throttle"]
    gateway.state.faults.script(faults, single=True)
    summary = send_campaign(campaign)
    with Ledger(campaign.ledger_location) as ledger:
        rows = ledger.rows(campaign.campaign_id)
    counts = dict(rows.group_by("status").len().iter_rows())
    assert counts == {"accepted": 57, "unknown": 2, "failed": 1}
    unknown = rows.filter(rows["status"] == "unknown")
    codes = unknown["error_code"].to_list()
    assert "InternalError" in codes and len(codes) == 2  # the 500, and the answer dropped mid-body
    assert rows.filter(rows["status"] == "failed")["error_code"].to_list() == ["MOBILE_NUMBER_ILLEGAL"]
    sent = gateway.state.accepted_numbers()
    assert max(sent.values()) == 1  # 0 duplicates
    accepted = set(rows.filter(rows["status"] == "accepted")["phone"])
    assert accepted <= set(sent) and len(set(sent) - accepted) == 1  # the dropped answer went out
    # the throttled and refused-before-processing rows were sent again, and their attempts say so
    assert rows.filter(rows["attempts"] == 2).height == 3
    [single] = summary.lanes
    assert single.requeued == 3 and single.throttled == 2
    assert summary.unknown == 2 and summary.failed == 1 and summary.accepted == 57


def test_a_dry_run_previews_each_lane(make_campaign: MakeCampaign, gateway: EmulatorServer) -> None:
    numbers = phones(3000)
    campaign = make_campaign(numbers, send_via="both", dry_run=True, batch_size=1000)
    summary = send_campaign(campaign)
    preview = summary.preview
    assert preview is not None and preview.send_via == "both"
    lanes = {lane.lane: lane for lane in preview.lanes}
    assert lanes["batch"].recipients + lanes["single"].recipients == 3000
    # the batch lane at 1,000 x 20 calls/s, the single lane at 400/s less its margin: most goes to the batch
    assert lanes["batch"].recipients > lanes["single"].recipients > 0
    assert abs(lanes["batch"].eta_seconds - lanes["single"].eta_seconds) < 1.0
    assert "| single |" in preview.to_markdown()
    assert gateway.state.accepted_numbers() == {}


def test_otp_through_the_batch_lane_is_refused_before_anything_runs(make_campaign: MakeCampaign) -> None:
    with pytest.raises(CampaignFileError, match="OTP needs send_via: single"):
        make_campaign(phones(2), message_type="OTP", send_via="both")


def test_otp_goes_through_the_single_lane(make_campaign: MakeCampaign, gateway: EmulatorServer) -> None:
    numbers = phones(10)
    summary = send_campaign(make_campaign(numbers, send_via="single", message_type="OTP"))
    assert summary.accepted == 10
    assert {record.type for record in gateway.state.accepted_messages()} == {"OTP"}


def test_a_resend_goes_through_the_campaigns_lane(
    make_campaign: MakeCampaign, gateway: EmulatorServer
) -> None:
    """An OTP campaign's unknown recipient, resent on request, goes out with SendMessageToGlobe again (the
    batch operation takes no OTP)."""
    from flows.resend import resend_campaign

    numbers = phones(8)
    campaign = make_campaign(numbers, send_via="single", message_type="OTP")
    gateway.state.faults.script(["500"], single=True)  # the first call's answer is lost: unknown
    first = send_campaign(campaign)
    assert (first.accepted, first.unknown) == (7, 1)
    resent = resend_campaign(campaign, statuses=["unknown"])
    assert resent.accepted == 1
    assert not gateway.state.requests("BatchSendMessageToGlobe")
    assert {record.type for record in gateway.state.accepted_messages()} == {"OTP"}
    with Ledger(campaign.ledger_location) as ledger:
        rows = ledger.rows(campaign.campaign_id)
    assert set(rows["status"]) == {"accepted"} and set(rows["lane"]) == {"single"}


def test_the_single_limit_is_a_leaky_bucket_taken_many_slots_at_a_time() -> None:
    """`ensure_single_limit` makes `<limit>-single` decay at the lane's rate with room for two grants; slots
    are taken a grant at a time, strictly (a missing limit is an error, never an unthrottled send)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    from globe_sms.pacing import open_pacing_client
    from globe_sms.single_pacing import ensure_single_limit, grant_size, lane_rate, prefect_take_slots

    name = "test-single-lane-bucket"
    assert ensure_single_limit(name, 1.0) in {"created", "updated"}
    assert ensure_single_limit(name, 1.0) == "exists"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.limit == 2 * grant_size(lane_rate(1.0)) == 2
    assert limit.slot_decay_per_second == pytest.approx(0.97)
    with open_pacing_client() as client:
        take = prefect_take_slots(client, name)
        assert take(1) and take(1)
        assert not take(1)  # two grants' room, and a slot takes a second to decay
        with pytest.raises(ConcurrencySlotAcquisitionError):
            prefect_take_slots(client, "test-single-lane-missing")(1)
    assert ensure_single_limit(name, 2000.0) == "updated"  # another rate: the limit follows
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.slot_decay_per_second) == (2 * 97, pytest.approx(1940.0))
