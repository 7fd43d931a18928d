"""A bounded wait for the account's rate-limit slot (`gateway.rate_limit_timeout_seconds`).

When another run holds the slot too long (or the limit is stuck), the batch must fail with an error that
names the limit, and its rows must stay pending: nothing was sent. The pacer's spacing is unit-tested
in tests/{unit,integration}/test_pacing.py.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from alibaba_sms import AccessKey, SmsClient
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign, GatewaySettings
from globe_sms.ledger import Ledger
from globe_sms.pacing import Pacer, RateLimitTimeout, ensure_global_limit, take_slot_fairly
from tasks.send import Batch, SendContext, send_and_record_batch
from tasks.send_batches import CampaignFailed
from tests.chaos.scenario import valid_numbers
from tests.emulator_fixtures import StartEmulator

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it


SLOW_RATE = 0.05  # one grant per 20 s: a slot taken by "another run" stays taken for the whole test


def hold_slot(name: str) -> None:
    """Create `name` as a slow one-slot bucket and take its slot, as another run on the account would."""
    from prefect.concurrency.sync import rate_limit

    ensure_global_limit(name, SLOW_RATE)
    rate_limit(name, strict=True)


def one_batch_campaign(tmp_path: Path, campaign_id: str, endpoint: str, **gateway: object) -> Campaign:
    """A campaign whose batches a test sends one at a time (`send_and_record_batch`; source never read)."""
    return Campaign.parse(
        {
            "campaign_id": campaign_id,
            "source": {"path": str(tmp_path / "unused.csv")},
            "template": "Hi",
            "sender_id": "GlobeSMS",
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "gateway": {"endpoint": endpoint, **gateway},
        }
    )


def emulator_client(endpoint: str) -> SmsClient:
    """Our client with the emulator's test key."""
    return SmsClient(AccessKey.of("testid", "testsecret"), endpoint=endpoint)


class TestSetting:
    def test_timeout_has_bounds_and_a_default(self) -> None:
        """Positive, at most an hour, 300 s by default."""
        assert GatewaySettings().rate_limit_timeout_seconds == 300
        for bad in (0, -1, 3601):
            with pytest.raises(ValueError, match="rate_limit_timeout_seconds"):
                GatewaySettings(rate_limit_timeout_seconds=bad)


class TestTakeSlot:
    def test_denied_past_the_timeout_raises_an_error_naming_the_limit(self) -> None:
        """A slot never granted: RateLimitTimeout with the limit's name, after the timeout and no later."""
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        with pytest.raises(RateLimitTimeout) as caught:
            take_slot_fairly(
                "sms-acct", lambda name: False, room=None, timeout_seconds=5,
                clock=lambda: now[0], sleep=sleep,
            )
        assert caught.value.limit_name == "sms-acct" and caught.value.timeout_seconds == 5
        assert "'sms-acct'" in str(caught.value) and "prefect gcl inspect sms-acct" in str(caught.value)
        assert 5 <= now[0] < 5.2

    def test_a_slot_granted_in_time_is_taken(self) -> None:
        """Denied twice, then granted within the timeout: no error, denials counted."""
        answers = iter([False, False, True])
        denials = take_slot_fairly(
            "sms-acct", lambda name: next(answers), room=None, timeout_seconds=5,
            clock=lambda: 0.0, sleep=lambda seconds: None,
        )
        assert denials == 2


@pytest.mark.prefect
class TestAgainstPrefect:
    def test_pacer_gives_up_on_a_held_slot_after_the_timeout(self, prefect_server: str) -> None:
        """The real limit, its slot held elsewhere: the pacer raises after ~1 s, naming the limit."""
        hold_slot("globe-sms-timeout-pacer")
        pacer = Pacer(SLOW_RATE, limit_name="globe-sms-timeout-pacer", timeout_seconds=1.0)
        with pytest.raises(RateLimitTimeout, match="globe-sms-timeout-pacer"):
            pacer.wait()

    def test_batch_timing_out_goes_back_to_pending_and_nothing_is_sent(
        self, prefect_server: str, start_emulator: StartEmulator, tmp_path: Path
    ) -> None:
        """Rows written ahead (`submitting`) before an ask that got no slot go back to pending."""
        emulator = start_emulator(batch_calls_per_second=None)
        hold_slot("globe-sms-timeout-batch")
        campaign = one_batch_campaign(tmp_path, "timeout-batch", emulator.url, calls_per_second=SLOW_RATE)
        phones = tuple(number.lstrip("+") for number in valid_numbers(3, seed=1))
        pacer = Pacer(SLOW_RATE, limit_name="globe-sms-timeout-batch", timeout_seconds=1.0)
        with Ledger(campaign.ledger) as ledger, emulator_client(emulator.url) as client:
            ledger.register(campaign.campaign_id, phones)
            context = SendContext(campaign, client, ledger, pacer)
            with pytest.raises(RateLimitTimeout):
                send_and_record_batch(context, Batch(1, phones, ("Hi",) * 3))
            assert ledger.counts(campaign.campaign_id)["pending"] == 3
            # written ahead before each ask, undone when no slot came: the batch row says so
            batches = ledger.batches(campaign.campaign_id)
            assert set(batches["status"].to_list()) <= {"released"}
        assert emulator.state.requests() == []

    def test_rows_stay_pending_while_the_batch_waits_for_its_slot(
        self, start_emulator: StartEmulator, tmp_path: Path
    ) -> None:
        """A crash during the wait (the longest part of a batch) must leave nothing `submitting`.

        The pacer's sleep looks into the ledger while it waits for the second batch's time: its rows are
        still pending, so a process killed then leaves them to be sent by the next run, not marked unknown.
        They become `submitting` (the write-ahead) only just before the slot is asked for, and the gateway
        accepts each batch once.
        """
        emulator = start_emulator(batch_calls_per_second=None)
        campaign = one_batch_campaign(tmp_path, "wait-pending", emulator.url)
        phones = tuple(number.lstrip("+") for number in valid_numbers(6, seed=3))
        first, second = phones[:3], phones[3:]
        seen_while_waiting: list[dict[str, int]] = []
        with Ledger(campaign.ledger) as ledger, emulator_client(emulator.url) as client:
            ledger.register(campaign.campaign_id, phones)

            def sleep(seconds: float) -> None:
                seen_while_waiting.append(ledger.counts(campaign.campaign_id))
                time.sleep(seconds)

            pacer = Pacer(1.0, limit_name="sms", acquire=lambda name: None, sleep=sleep)
            context = SendContext(campaign, client, ledger, pacer)
            send_and_record_batch(context, Batch(1, first, ("Hi",) * 3))
            outcome = send_and_record_batch(context, Batch(2, second, ("Hi",) * 3))
            assert seen_while_waiting, "the second batch never waited"
            assert seen_while_waiting[0] == {**seen_while_waiting[0], "pending": 3, "accepted": 3}
            assert not seen_while_waiting[0].get("submitting")
            assert outcome.accepted == 3 and ledger.counts(campaign.campaign_id)["accepted"] == 6
        assert len(emulator.state.requests()) == 2

    def test_a_batch_whose_grant_went_stale_goes_back_to_pending_and_waits_again(
        self, start_emulator: StartEmulator, tmp_path: Path
    ) -> None:
        """`Pacer.departing()` refuses a grant the call could not use in time: the rows, written ahead, go
        back to `pending` (nothing was sent), the batch waits for a new slot, and the gateway gets it once."""
        emulator = start_emulator(batch_calls_per_second=None)
        campaign = one_batch_campaign(tmp_path, "stale-grant", emulator.url)
        phones = tuple(number.lstrip("+") for number in valid_numbers(3, seed=4))
        with Ledger(campaign.ledger) as ledger, emulator_client(emulator.url) as client:
            ledger.register(campaign.campaign_id, phones)
            seen_when_refused: list[dict[str, int]] = []

            class HeldUpOnce(Pacer):
                def departing(self) -> bool:
                    if not seen_when_refused:
                        seen_when_refused.append(ledger.counts(campaign.campaign_id))
                        return False
                    return super().departing()

            grants: list[str] = []
            pacer = HeldUpOnce(1.0, limit_name="sms", acquire=grants.append)
            context = SendContext(campaign, client, ledger, pacer)
            outcome = send_and_record_batch(context, Batch(1, phones, "Hi"))
            assert seen_when_refused[0]["submitting"] == 3
            assert len(grants) == 2, "asked again"
            assert outcome.accepted == 3 and ledger.counts(campaign.campaign_id)["accepted"] == 3
        assert len(emulator.state.requests()) == 1

    def test_a_stop_request_right_after_the_grant_sends_nothing_and_gives_the_turn_back(
        self, start_emulator: StartEmulator, tmp_path: Path
    ) -> None:
        """A stop request that lands as the slot is granted: the batch, written ahead, goes back to `pending`
        unsent, and the pacer is told (`call_abandoned`), so that it leaves the waiting room at once."""
        import signal

        from tasks.stop import STOP_REQUESTS, StoppedBeforeSending

        emulator = start_emulator(batch_calls_per_second=None)
        campaign = one_batch_campaign(tmp_path, "stop-after-grant", emulator.url)
        phones = tuple(number.lstrip("+") for number in valid_numbers(3, seed=5))
        abandoned: list[dict[str, int]] = []
        with Ledger(campaign.ledger) as ledger, emulator_client(emulator.url) as client:
            ledger.register(campaign.campaign_id, phones)

            class StoppedAsGranted(Pacer):
                def wait(self, *args: object, **kwargs: object) -> None:
                    super().wait(*args, **kwargs)  # type: ignore[arg-type]
                    STOP_REQUESTS._waiting = False  # noqa: SLF001 - the signal lands after the grant, unraised
                    STOP_REQUESTS.handle(signal.SIGTERM)

                def call_abandoned(self) -> None:
                    abandoned.append(ledger.counts(campaign.campaign_id))
                    super().call_abandoned()

            pacer = StoppedAsGranted(1.0, limit_name="sms", acquire=lambda name: None)
            with STOP_REQUESTS.on_signals(), pytest.raises(StoppedBeforeSending):
                send_and_record_batch(SendContext(campaign, client, ledger, pacer), Batch(1, phones, "Hi"))
            assert abandoned and abandoned[0].get("pending") == 3, "released, then the pacer told"
            assert ledger.counts(campaign.campaign_id).get("pending") == 3
        assert emulator.state.requests() == []

    def test_campaign_stops_with_the_limit_named_and_everything_pending(
        self,
        prefect_server: str,
        start_emulator: StartEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The flow: CampaignFailed naming the limit and the setting, no call made, every row pending."""
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        emulator = start_emulator(batch_calls_per_second=None)
        hold_slot("globe-sms-timeout-flow")
        source = tmp_path / "recipients.csv"
        with source.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["phone"])
            writer.writerows([number] for number in valid_numbers(6, seed=2))
        campaign = Campaign.parse(
            {
                "campaign_id": "timeout-flow",
                "source": {"path": str(source)},
                "template": "Hi",
                "sender_id": "GlobeSMS",
                "batch_size": 3,
                "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
                "gateway": {
                    "endpoint": emulator.url,
                    "calls_per_second": SLOW_RATE,
                    "rate_limit_name": "globe-sms-timeout-flow",
                    "rate_limit_timeout_seconds": 1,
                },
            }
        )
        with pytest.raises(CampaignFailed, match="'globe-sms-timeout-flow' within 1 s") as caught:
            send_campaign(campaign)
        assert "rate_limit_timeout_seconds" in str(caught.value)
        assert emulator.state.requests() == []
        with Ledger(campaign.ledger) as ledger:
            assert ledger.counts(campaign.campaign_id)["pending"] == 6
