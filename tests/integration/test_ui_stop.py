"""Cancel and Pause (Suspend) clicked in the Prefect UI, in a real browser, on a campaign run of the
send-campaign deployment executed by a process worker (tests/browser_fixtures.py).

The default UI (V2) offers both in the flow run page's menu ("Open menu" > "Cancel" / "Pause"); its Pause
dialog proposes 300 seconds and says the run "will automatically resume after the timeout", which is not what
Prefect does (it fails the run): a campaign run suspends itself again for 7 days (tasks/stop.py). Checked:
the run stops after the batch in flight, the ledger holds no doubt, Resume sends only what is pending, Cancel
ends Cancelled. The screenshots of docs/img/ (suspend.png, cancel.png) are refreshed with
`GLOBE_SMS_UPDATE_SCREENSHOTS=1 uv run pytest tests/integration/test_ui_stop.py`.
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tests.browser_fixtures import ROOT, PrefectUI, poll
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator

# One worker runs both browser modules, one after the other: two Prefect servers with their UI, workers and
# Chromium at once made a SQLite server answer 503 and a click's request fail.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(600), pytest.mark.xdist_group("browser")]

IMAGES = ROOT / "docs" / "img"
RECIPIENTS, BATCH_SIZE, RATE = 240, 4, 2.0  # 60 batches, 30 s: time to click under load


def _campaign(folder: Path, emulator: EmulatorServer, campaign_id: str) -> Campaign:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "recipients.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([n, f"Name{i}"] for i, n in enumerate(valid_numbers(RECIPIENTS, seed=5)))
    return Campaign.parse(
        {
            "campaign_id": campaign_id,
            "source": {"kind": "csv", "path": str(folder / "recipients.csv")},
            "template": "Hi {first_name}, welcome!",
            "sender_id": "GlobeSMS",
            "batch_size": BATCH_SIZE,
            "ledger": f"sqlite:///{folder / 'ledger.db'}",
            "gateway": {"endpoint": emulator.url, "calls_per_second": RATE, "rate_limit_name": campaign_id},
        }
    )


def _calls(emulator: EmulatorServer) -> int:
    """Batches the gateway accepted. A call it throttled (a loaded machine: the emulator, in this process
    beside the browser, stamped the previous call late) sent nothing, and the flow sends that batch again."""
    return sum(1 for r in emulator.state.requests("BatchSendMessageToGlobe") if r.code == "OK")


def _start(ui: PrefectUI, campaign: Campaign) -> str:
    deployment = ui.deployment("send-campaign", "send-campaign")
    answer = ui.api(
        "POST", f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"campaign": campaign.model_dump(mode="json", exclude_none=True)}},
    )
    assert answer.status_code < 300, answer.text
    return str(answer.json()["id"])


def _run(ui: PrefectUI, flow_run_id: str) -> dict[str, Any]:
    return dict(ui.api("GET", f"/flow_runs/{flow_run_id}").json())


def _open_menu_item(page: Page, ui: PrefectUI, flow_run_id: str, item: str) -> None:
    """The flow run's page in the default UI, its menu, and one of its items."""
    page.goto(f"{ui.url}/v2/runs/flow-run/{flow_run_id}")
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """The run's page, its newest log lines first (how it stopped); into docs/img/ when asked to update."""
    page.reload()
    page.wait_for_load_state("networkidle")
    try:  # cosmetic: the page is shown as it is if its log order cannot be changed
        page.get_by_role("combobox").filter(has_text="Oldest to newest").click(timeout=5_000)
        page.get_by_role("option", name="Newest to oldest").click(timeout=5_000)
    except PlaywrightError:
        pass
    time.sleep(2)
    folder = IMAGES if os.environ.get("GLOBE_SMS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(folder / name))


def test_pause_in_the_ui_suspends_for_days_and_resume_sends_only_the_pending(
    prefect_ui: PrefectUI, ui_page: Page, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = start_emulator(batch_calls_per_second=RATE)
    campaign = _campaign(tmp_path / "c", emulator, f"ui-pause-{uuid.uuid4().hex[:6]}")
    run_id = _start(prefect_ui, campaign)
    poll(lambda: _calls(emulator) >= 3, timeout=240)

    _open_menu_item(ui_page, prefect_ui, run_id, "Pause")
    ui_page.get_by_role("button", name="Pause Flow Run").click()
    calls = _calls(emulator)
    def suspended_for_days() -> dict[str, Any] | None:
        run = _run(prefect_ui, run_id)
        assert run["state_type"] in ("RUNNING", "PAUSED"), run["state"]
        until = run["state"]["state_details"].get("pause_timeout")
        long = until and datetime.fromisoformat(until) > datetime.now(UTC) + timedelta(days=6)
        return run if run["state_type"] == "PAUSED" and long else None

    run = poll(suspended_for_days, timeout=60)
    assert run["state_name"] == "Suspended"
    sent = _calls(emulator)
    assert sent <= calls + 1
    with Ledger(campaign.ledger) as ledger:
        counts = ledger.counts(campaign.campaign_id)
    assert counts["unknown"] == counts["submitting"] == 0, counts
    assert counts["pending"] == RECIPIENTS - sent * BATCH_SIZE, counts
    _screenshot(ui_page, "suspend.png", tmp_path)

    _open_menu_item(ui_page, prefect_ui, run_id, "Resume")
    resume = ui_page.get_by_role("button", name="Resume", exact=True)
    if resume.count():  # a confirmation dialog, when the UI shows one
        resume.last.click()
    done = prefect_ui.wait_for_final_state(run_id, timeout=240)
    assert done["state_type"] == "COMPLETED", prefect_ui.explain(run_id)
    accepted = Counter(m.to for m in emulator.state.accepted_messages())
    assert len(accepted) == RECIPIENTS and set(accepted.values()) == {1}


def test_cancel_in_the_ui_stops_after_the_batch_in_flight(
    prefect_ui: PrefectUI, ui_page: Page, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = start_emulator(batch_calls_per_second=RATE)
    campaign = _campaign(tmp_path / "c", emulator, f"ui-cancel-{uuid.uuid4().hex[:6]}")
    run_id = _start(prefect_ui, campaign)
    poll(lambda: _calls(emulator) >= 3, timeout=240)

    _open_menu_item(ui_page, prefect_ui, run_id, "Cancel")
    ui_page.get_by_role("button", name="Cancel Flow Run").click()
    calls = _calls(emulator)
    done = prefect_ui.wait_for_final_state(run_id, timeout=120)
    assert done["state_type"] == "CANCELLED", prefect_ui.explain(run_id)
    sent = _calls(emulator)
    assert sent <= calls + 1
    assert done["state"]["message"].startswith(f"stopped after batch {sent} (cancelled in Prefect)")
    with Ledger(campaign.ledger) as ledger:
        counts = ledger.counts(campaign.campaign_id)
    assert counts["unknown"] == counts["submitting"] == 0, counts
    assert counts["pending"] == RECIPIENTS - sent * BATCH_SIZE, counts
    _screenshot(ui_page, "cancel.png", tmp_path)
