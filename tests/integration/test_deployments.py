"""The deployment surface against the session's Prefect test server: setup, prefect.yaml, the UI form,
event triggers, scheduled campaign ids, per-batch events and artifacts, and the resend flow.

`globe-sms setup` and `prefect deploy` run as the user runs them, in subprocesses pointed at the test server.
Flow runs of deployments are executed with `prefect flow-run execute` (what a process worker runs), so no
worker is needed here; two workers sharing one account are in tests/{unit,integration}/test_workers.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tests.emulator_fixtures import StartEmulator

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = {"send-campaign/send-campaign", "send-campaign/weekly-news", "send-campaign/on-request",
               "resend-campaign/resend", "purge-ledger/purge-ledger"}
NUMBERS = [f"+65912345{i:02d}" for i in range(12)]


def child_env(api_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `globe-sms` / `prefect` subprocess talking to the test server."""
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and not k.startswith("ALIBABA_")}
    env.update(PREFECT_API_URL=api_url, GLOBE_SMS_HOME=str(ROOT), NO_PROXY="127.0.0.1,localhost", **extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def deployed(prefect_server: str) -> dict[str, Any]:
    """`globe-sms setup`, then `prefect --no-prompt deploy --all`, as a user would; deployments by name."""
    from prefect.client.orchestration import get_client

    env = child_env(prefect_server)
    run([sys.executable, "-m", "globe_sms.cli", "setup"], env)
    run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], env)
    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}


def write_recipients(path: Path, numbers: list[str] = NUMBERS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(numbers))
    return path


def campaign_data(
    campaign_id: str, tmp_path: Path, endpoint: str = "emulator", **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "campaign_id": campaign_id,
        "source": {"kind": "csv", "path": str(write_recipients(tmp_path / "recipients.csv"))},
        "template": {"text": "Hi {first_name}, welcome!"},
        "sender_id": "GlobeSMS",
        "batch_size": 3,
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        "gateway": {"endpoint": endpoint, "calls_per_second": 20.0},
    }
    return {**data, **extra}


def wait_for(predicate: Any, timeout: float = 20.0, every: float = 0.2) -> Any:
    """Poll `predicate` until it returns something truthy; that value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"nothing after {timeout} s")


class TestSetup:
    def test_setup_creates_pool_block_and_limit_and_is_idempotent(self, prefect_server: str) -> None:
        """Work pool (process), Secret block and the account's limit; a second run only finds them."""
        from prefect.client.orchestration import get_client

        from globe_sms.campaign import GatewaySettings
        from globe_sms.setup import SetupTargets, run_setup

        suffix = uuid.uuid4().hex[:8]
        targets = SetupTargets(
            work_pools=[f"pool-{suffix}"],
            secret_blocks=[f"block-{suffix}"],
            gateways=[
                GatewaySettings(endpoint="https://example.invalid", credentials_block=f"block-{suffix}")
            ],
        )
        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": f"LTAI{suffix}", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cret-value"
        }
        first = run_setup(targets, env)
        assert [(s.kind, s.outcome) for s in first] == [
            ("work pool", "created"), ("secret block", "created"), ("rate limit", "created"),
        ]
        assert first[2].name == f"globe-sms-ltai{suffix}"  # named by the AccessKeyId, as the flow names it
        again = run_setup(targets, env)
        assert [s.outcome for s in again] == ["exists", "exists", "exists"]
        with get_client(sync_client=True) as client:
            assert client.read_work_pool(f"pool-{suffix}").type == "process"
            limit = client.read_global_concurrency_limit_by_name(f"globe-sms-ltai{suffix}")
            assert (limit.limit, limit.slot_decay_per_second) == (1, 1.0)
            client.read_global_concurrency_limit_by_name(f"globe-sms-ltai{suffix}-waiting")
        assert "s3cret-value" not in repr(first + again)

    def test_an_existing_secret_block_is_never_overwritten(self) -> None:
        """Setup keeps the block someone filled in; without a key it leaves a placeholder, and no limit."""
        from prefect.blocks.system import Secret

        from globe_sms.campaign import GatewaySettings
        from globe_sms.setup import PLACEHOLDER, SetupTargets, run_setup

        name = f"kept-{uuid.uuid4().hex[:8]}"
        Secret(value={"access_key_id": "LTAIkept", "access_key_secret": "original"}).save(name)
        gateway = GatewaySettings(endpoint="https://example.invalid", credentials_block=name)
        steps = run_setup(SetupTargets(secret_blocks=[name], gateways=[gateway]), {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAInew", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "replacement",
        })
        assert steps[0].outcome == "exists"
        assert Secret.load(name).get() == {"access_key_id": "LTAIkept", "access_key_secret": "original"}
        assert steps[1].name == "globe-sms-ltaikept"  # the account of the block, not of the environment
        placeholder = f"placeholder-{uuid.uuid4().hex[:8]}"
        gateway = GatewaySettings(endpoint="https://example.invalid", credentials_block=placeholder)
        steps = run_setup(SetupTargets(secret_blocks=[placeholder], gateways=[gateway]), {})
        assert [s.outcome for s in steps] == ["created", "skipped"]
        assert Secret.load(placeholder).get()["access_key_id"] == PLACEHOLDER

    def test_setup_command_reads_prefect_yaml_and_prints_no_secret(self, prefect_server: str) -> None:
        """`globe-sms setup` names the pool and block of prefect.yaml; the secret from the environment
        goes into the block and nowhere in the output."""
        secret = f"do-not-print-{uuid.uuid4().hex}"
        done = run(
            [sys.executable, "-m", "globe_sms.cli", "setup"],
            child_env(
                prefect_server, ALIBABA_CLOUD_ACCESS_KEY_ID="LTAIcli", ALIBABA_CLOUD_ACCESS_KEY_SECRET=secret
            ),
        )
        assert "globe-sms" in done.stdout and "globe-sms-access-key" in done.stdout
        assert secret not in done.stdout + done.stderr


class TestDeployments:
    def test_every_deployment_applies_with_an_enforced_schema_on_the_process_pool(
        self, deployed: dict[str, Any]
    ) -> None:
        """`prefect deploy --all` created the five deployments, all enforcing their parameter schema."""
        from prefect.client.orchestration import get_client

        assert set(deployed) == DEPLOYMENTS
        for deployment in deployed.values():
            assert deployment.enforce_parameter_schema
            assert deployment.work_pool_name == "globe-sms"
            assert deployment.pull_steps == [{"globe_sms.checkout.enter_checkout": {"directory": str(ROOT)}}]
        with get_client(sync_client=True) as client:
            assert client.read_work_pool("globe-sms").type == "process"

    def test_the_retention_purge_runs_nightly(self, deployed: dict[str, Any]) -> None:
        """The purge deployment: a nightly schedule, 90 days, and a parameter schema without a key field."""
        purge = deployed["purge-ledger/purge-ledger"]
        assert [s.schedule.cron for s in purge.schedules] == ["30 3 * * *"]
        assert purge.parameters == {"older_than": "90d"}
        assert set(purge.parameter_openapi_schema["properties"]) == {"ledger", "older_than", "dry_run"}

    def test_the_weekly_campaign_is_scheduled_in_its_time_zone_with_a_dated_id(
        self, deployed: dict[str, Any]
    ) -> None:
        """Cron with a time zone; the campaign id carries the occurrence's date placeholder."""
        weekly = deployed["send-campaign/weekly-news"]
        [schedule] = weekly.schedules
        assert schedule.active
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 10 * * 1", "Asia/Singapore")
        assert weekly.parameters["campaign"]["campaign_id"] == "weekly-news-{date:Asia/Singapore}"
        Campaign.parse(weekly.parameters["campaign"])  # the scheduled parameters are a valid campaign

    def test_the_form_is_the_campaign_model_with_descriptions_and_bounds(
        self, deployed: dict[str, Any]
    ) -> None:
        """parameter_openapi_schema: the Campaign model, every field described, bounds and patterns kept."""
        schema = deployed["send-campaign/send-campaign"].parameter_openapi_schema
        assert schema["properties"]["campaign"]["$ref"] == "#/definitions/Campaign"
        campaign = schema["definitions"]["Campaign"]
        assert campaign["description"].startswith("One SMS campaign")
        assert all(field.get("description") for field in campaign["properties"].values())
        batch_size = campaign["properties"]["batch_size"]
        assert (batch_size["minimum"], batch_size["maximum"]) == (1, 1000)
        assert campaign["properties"]["campaign_id"]["pattern"].startswith("^")
        # OTP only with `send_via: single` (a rule the schema states too: if OTP then single).
        assert campaign["properties"]["message_type"]["enum"] == ["NOTIFY", "MKT", "OTP"]
        gateway = schema["definitions"]["GatewaySettings"]["properties"]
        assert gateway["calls_per_second"]["maximum"] == 50 and gateway["max_attempts"]["minimum"] == 1
        resend = deployed["resend-campaign/resend"].parameter_openapi_schema["properties"]
        assert resend["statuses"]["items"]["enum"] == ["failed", "unknown"]

    def test_the_server_refuses_a_campaign_outside_the_schema(self, deployed: dict[str, Any]) -> None:
        """enforce_parameter_schema: a bad campaign id never becomes a flow run."""
        from prefect.client.orchestration import get_client

        bad = dict(deployed["send-campaign/send-campaign"].parameters["campaign"], campaign_id="BAD ID")
        with get_client(sync_client=True) as client, pytest.raises(Exception, match="campaign_id"):
            client.create_flow_run_from_deployment(
                deployed["send-campaign/send-campaign"].id, parameters={"campaign": bad}
            )

    def test_a_requested_event_creates_a_run_with_the_campaign_of_its_payload(
        self, deployed: dict[str, Any], tmp_path: Path
    ) -> None:
        """`globe-sms.campaign.requested` with the campaign as payload: a run of on-request, that campaign."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.events import emit_event

        campaign = campaign_data(f"requested-{uuid.uuid4().hex[:8]}", tmp_path, batch_size=250)
        emit_event(
            "globe-sms.campaign.requested",
            resource={"prefect.resource.id": f"globe-sms.campaign.{campaign['campaign_id']}"},
            payload={"campaign": campaign},
        )
        on_request = deployed["send-campaign/on-request"]

        def run_of_this_campaign() -> Any:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[on_request.id]))
                )
            wanted = campaign["campaign_id"]
            return next((r for r in runs if r.parameters["campaign"]["campaign_id"] == wanted), None)

        flow_run = wait_for(run_of_this_campaign, timeout=30)
        assert flow_run.parameters == {"campaign": campaign}  # numbers stay numbers: batch_size 250
        assert flow_run.state.is_scheduled()
        Campaign.parse(flow_run.parameters["campaign"])


def execute(flow_run_id: Any, api_url: str) -> None:
    """Run a deployment's flow run the way a process worker does."""
    run([sys.executable, "-m", "prefect", "flow-run", "execute", str(flow_run_id)], child_env(api_url))


class TestScheduledOccurrences:
    def test_each_occurrence_is_its_own_campaign_and_a_retry_keeps_its_id(
        self, deployed: dict[str, Any], tmp_path: Path, prefect_server: str
    ) -> None:
        """A run scheduled for Sunday 20:00 UTC is Monday's in Singapore; its UI-style retry sends nothing."""
        from prefect.client.orchestration import get_client
        from prefect.states import Scheduled

        weekly = deployed["send-campaign/weekly-news"]
        campaign = campaign_data("news-{date:Asia/Singapore}", tmp_path)
        sunday_evening = datetime(2026, 5, 3, 20, 0, tzinfo=UTC)
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(
                weekly.id, parameters={"campaign": campaign}, state=Scheduled(scheduled_time=sunday_evening)
            )
        execute(flow_run.id, prefect_server)
        with get_client(sync_client=True) as client:
            done = client.read_flow_run(flow_run.id)
            assert done.name == "news-2026-05-04" and done.state.is_completed()
            # The UI's Retry: the same flow run back to Scheduled, run again.
            client.set_flow_run_state(flow_run.id, Scheduled(name="AwaitingRetry"), force=True)
        execute(flow_run.id, prefect_server)
        with get_client(sync_client=True) as client:
            again = client.read_flow_run(flow_run.id)
        assert again.name == "news-2026-05-04" and again.state.is_completed() and again.run_count == 2
        with Ledger(campaign["ledger"]) as ledger:
            assert ledger.counts("news-2026-05-04")["accepted"] == len(NUMBERS)
            assert ledger.batches("news-2026-05-04").height == 4  # the retry planned no new batch


def read_events(api_url: str, resource_id: str) -> list[dict[str, Any]]:
    body = {"filter": {"resource": {"id": [resource_id]}, "order": "ASC"}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return list(response.json()["events"])


class TestBatchEventsAndArtifacts:
    def test_every_batch_emits_an_event_and_a_row_of_the_batch_table(
        self,
        tmp_path: Path,
        start_emulator: StartEmulator,
        prefect_server: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """accepted / unknown / failed events about `globe-sms.campaign.<id>`, counts only; a masked table."""
        from prefect.artifacts import Artifact

        from flows.send_campaign import send_campaign
        from tasks.send_batches import CampaignFailed

        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        gateway = start_emulator(batch_calls_per_second=None)
        gateway.state.faults.script(["ok", "drop_after_accept", "business:AMOUNT_NOT_ENOUGH"])
        cid = f"events-{uuid.uuid4().hex[:8]}"
        campaign = Campaign.parse(campaign_data(cid, tmp_path, endpoint=gateway.url, gateway={
            "endpoint": gateway.url, "calls_per_second": 20.0, "rate_limit_name": f"test-{cid}"
        }))
        with pytest.raises(CampaignFailed):
            send_campaign(campaign)
        events = wait_for(lambda: len(found := read_events(prefect_server, f"globe-sms.campaign.{cid}")) >= 3
                          and found, timeout=30)
        assert [e["event"] for e in events] == [
            "globe-sms.batch.accepted", "globe-sms.batch.unknown", "globe-sms.batch.failed"
        ]
        keys = ("batch_no", "accepted", "unknown", "failed")
        counts = [tuple(e["payload"][k] for k in keys) for e in events]
        assert counts == [(1, 3, 0, 0), (2, 0, 3, 0), (3, 0, 0, 3)]
        assert events[2]["payload"]["error_code"] == "AMOUNT_NOT_ENOUGH"
        assert any(r.get("prefect.resource.role") == "flow-run" for r in events[0]["related"])  # find the run
        digits = [n.lstrip("+") for n in NUMBERS]
        assert not any(d in json.dumps(events) for d in digits), "no number in an event"
        table = json.loads(Artifact.get(f"{cid}-batches").data)
        assert [(row["batch_no"], row["status"], row["recipients"]) for row in table] == [
            (1, "accepted", 3), (2, "unknown", 3), (3, "failed", 3)
        ]
        assert table[0]["request_id"] and table[2]["error_code"] == "AMOUNT_NOT_ENOUGH"
        assert not any(d in json.dumps(table) for d in digits), "numbers masked in the table"


class TestResend:
    @pytest.fixture
    def sent_with_trouble(
        self, tmp_path: Path, start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> tuple[Campaign, EmulatorServer, dict[str, list[str]]]:
        """A campaign whose first run left 3 accepted, 3 unknown, 3 failed and 3 pending recipients."""
        from flows.send_campaign import send_campaign
        from tasks.send_batches import CampaignFailed

        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        gateway = start_emulator(batch_calls_per_second=None)
        gateway.state.faults.script(["drop_after_accept", "ok", "business:AMOUNT_NOT_ENOUGH"])
        cid = f"resend-{uuid.uuid4().hex[:8]}"
        campaign = Campaign.parse(campaign_data(cid, tmp_path, gateway={
            "endpoint": gateway.url, "calls_per_second": 20.0, "rate_limit_name": f"test-{cid}"
        }))
        with pytest.raises(CampaignFailed):
            send_campaign(campaign)
        with Ledger(campaign.ledger) as ledger:
            rows = ledger.rows(cid)
        by_status = {s: rows.filter(rows["status"] == s)["phone"].to_list() for s in ("accepted", "unknown",
                                                                                       "failed", "pending")}
        assert {s: len(p) for s, p in by_status.items()} == dict.fromkeys(by_status, 3)
        return campaign, gateway, by_status

    def test_resend_sends_the_failed_and_unknown_recipients_and_nobody_else(
        self, sent_with_trouble: tuple[Campaign, EmulatorServer, dict[str, list[str]]]
    ) -> None:
        """Failed and unknown go out again; accepted and still-pending recipients are left alone."""
        from flows.resend import resend_campaign

        campaign, gateway, before = sent_with_trouble
        messages_before = len(gateway.state.accepted_messages())
        summary = resend_campaign(campaign, statuses=["failed", "unknown"])
        resent = [m.to for m in gateway.state.accepted_messages()[messages_before:]]
        assert sorted(resent) == sorted(before["failed"] + before["unknown"])
        assert summary.planned == 6 and summary.accepted == 6
        with Ledger(campaign.ledger) as ledger:
            counts = ledger.counts(campaign.campaign_id)
            assert ledger.pending(campaign.campaign_id) == before["pending"]
        assert counts["accepted"] == 9 and counts["pending"] == 3
        assert counts["failed"] == counts["unknown"] == 0

    def test_resend_of_failed_only_leaves_the_unknown_alone(
        self, sent_with_trouble: tuple[Campaign, EmulatorServer, dict[str, list[str]]]
    ) -> None:
        """statuses=[failed]: only the failed recipients; a dry run before it moves and sends nothing."""
        from flows.resend import resend_campaign

        campaign, gateway, before = sent_with_trouble
        messages_before = len(gateway.state.accepted_messages())
        preview = resend_campaign(campaign.model_copy(update={"dry_run": True}), statuses=["failed"])
        assert preview.planned == 3 and len(gateway.state.accepted_messages()) == messages_before
        resend_campaign(campaign, statuses=["failed"], failed_codes=["AMOUNT_NOT_ENOUGH"])
        resent = [m.to for m in gateway.state.accepted_messages()[messages_before:]]
        assert sorted(resent) == sorted(before["failed"])
        with Ledger(campaign.ledger) as ledger:
            assert ledger.counts(campaign.campaign_id)["unknown"] == 3

    def test_resend_refuses_a_campaign_id_template(self, tmp_path: Path) -> None:
        """A resend names one campaign: `{date}` placeholders are refused before anything is read."""
        from flows.resend import resend_campaign

        with pytest.raises(ValueError, match="campaign's own id"):
            resend_campaign(Campaign.parse(campaign_data("news-{date}", tmp_path)), statuses=["failed"])
