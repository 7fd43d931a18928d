"""The chaos suite, short form: faults, SIGKILLs and reruns, then the exactly-once invariants.

Each scenario runs the campaign flow in child processes against the emulator in this process (its journal
goes to a file, so it outlives the children), kills them at seeded points and reruns until the campaign is
done; `tests/chaos/check.py` then checks the journal against the ledger. The full form, with figures, is
`uv run python bench/chaos.py --runs 50`; crash-free behaviour of the flow is in
tests/integration/test_flow.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_chaos.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.ledger import INTERRUPTED, Ledger
from tests.chaos.check import journal_messages
from tests.chaos.driver import ExecLauncher, ForkLauncher, ScenarioDriver, run_scenario
from tests.chaos.scenario import ChaosSpec

SEEDS = (101, 202, 303)


@pytest.fixture(scope="module")
def fork_launcher() -> ForkLauncher:
    return ForkLauncher()


@pytest.mark.prefect
@pytest.mark.parametrize("seed", SEEDS)
def test_faults_and_kills_never_send_a_number_twice_nor_lose_one(
    seed: int, tmp_path: Path, prefect_server: str, fork_launcher: ForkLauncher
) -> None:
    """Random 500s, throttles, drops and latency, scripted business errors and 2 SIGKILLs: invariants hold."""
    spec = ChaosSpec(seed=seed, kills=2)
    result = run_scenario(spec, tmp_path, prefect_server, fork_launcher)
    assert result.done, f"not done after {len(result.runs)} runs: {result.runs}"
    assert result.kills == spec.kills, result.runs
    assert result.crashes == 0, result.crash_logs()
    assert result.verdict.ok, result.verdict.problems()
    figures = result.figures()
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["accepted"] + figures["failed"] + figures["unknown"] == len(result.expected)


LANE_SEEDS = (("single", 111), ("single", 222), ("both", 333))


@pytest.mark.prefect
@pytest.mark.parametrize(("send_via", "seed"), LANE_SEEDS)
def test_the_single_lane_under_faults_and_kills_never_sends_twice_nor_loses_one(
    send_via: str, seed: int, tmp_path: Path, prefect_server: str, fork_launcher: ForkLauncher
) -> None:
    """The same chaos on SendMessageToGlobe calls (alone, and beside the batch lane): random 500s, throttles,
    drops and latency on single calls, scripted business errors, 2 SIGKILLs mid-chunk: invariants hold."""
    spec = ChaosSpec(seed=seed, kills=2, send_via=send_via, recipients=60)
    result = run_scenario(spec, tmp_path, prefect_server, fork_launcher)
    assert result.done, f"not done after {len(result.runs)} runs: {result.runs}"
    assert result.kills == spec.kills, result.runs
    assert result.crashes == 0, result.crash_logs()
    assert result.verdict.ok, result.verdict.problems()
    figures = result.figures()
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["accepted"] + figures["failed"] + figures["unknown"] == len(result.expected)
    with Ledger(result.ledger_url) as ledger:
        rows = ledger.rows(spec.campaign_id)
    assert "single" in set(rows["lane"].drop_nulls())  # the faults hit the single lane's calls
    assert sum(result.faults.values()) > 0, result.faults


@pytest.mark.prefect
def test_kill_between_acceptance_and_ledger_write_leaves_unknown_rows_resent_only_on_request(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold child killed while the gateway holds an accepted batch: unknown, listed, resent if asked."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    spec = ChaosSpec(
        seed=7, recipients=20, kills=1, kill_kinds=("in_flight",), error_500_rate=0, throttle_rate=0,
        drop_rate=0, business_fault_rate=0, slow_accept_rate=0,
    )
    with ScenarioDriver(spec, tmp_path, prefect_server, ExecLauncher()) as driver:
        result = driver.run()
        assert result.done and result.kills == 1 and result.runs[0].kill_kind == "in_flight", result.runs
        assert result.crashes == 0, result.crash_logs()
        assert result.verdict.ok, result.verdict.problems()
        # The held batch was accepted by the gateway, but its answer never reached the ledger.
        assert result.verdict.statuses == {"accepted": 15, "unknown": 5}
        assert result.verdict.unknown_delivered == 5
        campaign = Campaign.model_validate_json(driver.campaign_file.read_text())
        with Ledger(campaign.ledger) as ledger:
            rows = ledger.rows(campaign.campaign_id)
        unknown = rows.filter(pl.col("status") == "unknown")
        assert set(unknown["error_code"]) == {INTERRUPTED}

        # A plain rerun sends nothing, and its summary lists the unknown recipients, masked.
        messages_before = journal_messages(result.journal_path, campaign.campaign_id)
        rerun = send_campaign(campaign)
        assert rerun.planned == 0
        assert journal_messages(result.journal_path, campaign.campaign_id) == messages_before
        assert len(rerun.unknown_recipients) == 5
        assert {r.reason for r in rerun.unknown_recipients} == {INTERRUPTED}
        masked = {r.phone for r in rerun.unknown_recipients}
        assert all(phone.endswith("****") for phone in masked)
        assert masked == {phone[:-4] + "****" for phone in unknown["phone"]}
        markdown = rerun.to_markdown()
        assert "Outcome unknown: 5 recipients" in markdown
        assert not any(phone in markdown for phone in rows["phone"])

        # Asked for, they go out again: each of them now has two messages, everyone else still one.
        resent = send_campaign(campaign.model_copy(update={"resend_unknown": True}))
        assert resent.planned == 5 and resent.accepted == 5 and resent.unknown_recipients == []
        messages = journal_messages(result.journal_path, campaign.campaign_id)
        per_number = Counter(m["to"] for m in messages)
        assert {n for n, c in per_number.items() if c == 2} == set(unknown["phone"])
        assert set(per_number.values()) == {1, 2}
        with Ledger(campaign.ledger) as ledger:
            after = ledger.rows(campaign.campaign_id)
        latest = {m["to"]: m["message_id"] for m in messages}
        assert all(row["status"] == "accepted" and row["message_id"] == latest[row["phone"]]
                   for row in after.iter_rows(named=True))
