"""The ledger side of the limits across campaigns, on SQLite and PostgreSQL: what a frequency cap counts,
skipping, and the account volume counters (atomic reservation: concurrent reservers never exceed a limit).

The flow side (three campaigns, a rerun) is in test_guardrails.py.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from globe_sms.ledger import Ledger, RunOwner, Status
from globe_sms.ledger.caps import sent_counts, skip
from globe_sms.ledger.volume import give_back, periods, reserve, used
from tests.clocks import T0, FakeWallClock
from tests.ledger_fixtures import numbers as _numbers

# PostgreSQL tests share one schema per session: each test gets its own numbers and campaign ids.
_next = itertools.count(random.randrange(10_000) * 10_000)


def numbers(n: int) -> list[str]:
    """`n` numbers no other test of the session uses."""
    return _numbers(n, 85_290_000_000 + next(_next) * 100)


class Names(dict[str, str]):
    """Campaign and account names made unique for the test: `n["a"]` is `a-<tag>`."""

    def __init__(self) -> None:
        super().__init__()
        self.tag = uuid.uuid4().hex[:8]

    def __missing__(self, name: str) -> str:
        self[name] = f"{name}-{self.tag}"
        return self[name]


@pytest.fixture
def n() -> Names:
    return Names()


def send(
    ledger: Ledger, campaign: str, phones: list[str], outcome: str, message_type: str | None = "MKT"
) -> None:
    """Register `phones` in `campaign` and take them through one batch to `outcome`."""
    ledger.register(campaign, phones, message_type=message_type)
    if outcome == "pending":
        return
    batch_no = ledger.next_batch_no(campaign)
    ledger.mark_submitting(campaign, batch_no, phones)
    if outcome == "accepted":
        ledger.record_accepted(campaign, batch_no, {p: f"m-{campaign}-{p}" for p in phones}, {}, "r")
    elif outcome == "unknown":
        ledger.mark_unknown(campaign, batch_no, phones, "ReadTimeout", None)
    elif outcome == "failed":
        ledger.record_failed(campaign, batch_no, phones, "isv.MOBILE_NUMBER_ILLEGAL", "r")


class TestFrequencyCapCounts:
    def test_accepted_unknown_and_in_flight_count_failed_and_pending_do_not(
        self, n: Names, ledger: Ledger, clock: FakeWallClock
    ) -> None:
        phones = numbers(5)
        send(ledger, n["a"], phones[:1], "accepted")
        send(ledger, n["b"], phones[1:2], "unknown")
        send(ledger, n["c"], phones[2:3], "failed")
        send(ledger, n["d"], phones[3:4], "pending")
        ledger.register(n["e"], phones[4:5])
        ledger.mark_submitting(n["e"], 1, phones[4:5])  # in flight in another run
        counts = sent_counts(ledger, n["new"], phones, clock.now - timedelta(hours=24))
        assert counts == {phones[0]: 1, phones[1]: 1, phones[4]: 1}

    def test_the_window_other_campaigns_and_types(
        self, n: Names, ledger: Ledger, clock: FakeWallClock
    ) -> None:
        phone = numbers(1)
        send(ledger, n["old"], phone, "accepted")
        clock.tick(3 * 3600)
        send(ledger, n["notify"], phone, "accepted", "NOTIFY")
        send(ledger, n["untyped"], phone, "accepted", None)  # before revision 0003: counts whatever the types
        send(ledger, n["self"], phone, "accepted")
        since_two_hours = clock.now - timedelta(hours=2)
        assert sent_counts(ledger, n["self"], phone, since_two_hours) == {phone[0]: 2}
        assert sent_counts(ledger, n["self"], phone, since_two_hours, ["MKT"]) == {phone[0]: 1}
        assert sent_counts(ledger, n["x"], phone, clock.now - timedelta(hours=4)) == {phone[0]: 4}
        assert sent_counts(ledger, n["x"], phone, clock.now - timedelta(hours=4), ["MKT"]) == {phone[0]: 3}

    def test_skip_moves_only_pending_rows(self, n: Names, ledger: Ledger) -> None:
        phones = numbers(4)
        send(ledger, n["camp"], phones[:2], "accepted")
        ledger.register(n["camp"], phones)
        assert skip(ledger, n["camp"], phones, "frequency_cap") == 2
        rows = ledger.rows(n["camp"])
        assert rows.filter(rows["status"] == Status.SKIPPED)["phone"].to_list() == phones[2:]
        assert set(rows.filter(rows["status"] == "skipped")["error_code"]) == {"frequency_cap"}
        assert ledger.counts(n["camp"])["skipped"] == 2 and ledger.pending(n["camp"]) == []


class TestVolume:
    def test_periods_follow_the_time_zone(self) -> None:
        moment = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # 2027-01-01 04:00 in Singapore
        day, month = periods(moment, "Asia/Singapore", 10, None)
        assert (day.start, month.start) == ("2027-01-01", "2027-01")
        assert day.ends_at == datetime(2027, 1, 1, 16, 0, tzinfo=UTC)
        assert month.ends_at == datetime(2027, 1, 31, 16, 0, tzinfo=UTC)
        assert [p.start for p in periods(moment, "UTC", None, None)] == ["2026-12-31", "2026-12"]

    def test_a_run_gets_what_is_left_and_gives_back_what_it_did_not_send(
        self, n: Names, ledger: Ledger
    ) -> None:
        first = reserve(ledger, n["acct"], 150, "UTC", None, None)  # no limit: counted all the same
        assert first.granted == 150 and first.held_back_by is None
        second = reserve(ledger, n["acct"], 100, "UTC", 200, 10_000)
        assert (second.granted, second.deferred, second.held_back_by) == (50, 50, "daily_limit")
        assert second.until == datetime(2026, 3, 2, tzinfo=UTC) and second.left("day") == 50
        assert reserve(ledger, n["acct"], 100, "UTC", 200, None).granted == 0
        assert give_back(ledger, second, 20) == 20
        assert used(ledger, n["acct"]) == {"day": 180, "month": 180}
        assert reserve(ledger, n["other-account"], 100, "UTC", 200, None).granted == 100

    def test_the_monthly_limit_defers_until_the_month_ends(
        self, n: Names, ledger: Ledger, clock: FakeWallClock
    ) -> None:
        reserve(ledger, n["acct"], 900, "UTC", None, None)
        clock.tick(86400)  # the next day: the daily counter is new, the monthly one is not
        got = reserve(ledger, n["acct"], 500, "UTC", 400, 1000)
        assert (got.granted, got.held_back_by, got.until) == (
            100,
            "monthly_limit",
            datetime(2026, 4, 1, tzinfo=UTC),
        )

    def test_a_new_day_opens_the_limit_again(self, n: Names, ledger: Ledger, clock: FakeWallClock) -> None:
        assert reserve(ledger, n["acct"], 300, "UTC", 200, None).granted == 200
        clock.now = T0.replace(hour=0) + timedelta(days=1)
        assert reserve(ledger, n["acct"], 300, "UTC", 200, None).granted == 200


@pytest.fixture
def many_ledgers(url: str) -> Iterator[list[Ledger]]:
    opened = [Ledger.open(url) for _ in range(6)]
    yield opened
    for each in opened:
        each.close()


def test_concurrent_reservations_never_exceed_the_limit(many_ledgers: list[Ledger]) -> None:
    """Six ledgers (six connection pools) reserve at once, 40 times each: the grants add up to the limit."""
    account, limit = f"acct-{id(many_ledgers)}", 1_000
    start = threading.Barrier(len(many_ledgers))
    granted: list[int] = []
    lock = threading.Lock()

    def hammer(ledger: Ledger) -> None:
        start.wait()
        for i in range(40):
            got = reserve(ledger, account, 7 + i % 5, "UTC", limit, None).granted
            with lock:
                granted.append(got)

    threads = [threading.Thread(target=hammer, args=(ledger,)) for ledger in many_ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asked = sum(7 + i % 5 for i in range(40)) * len(many_ledgers)
    assert asked > limit and sum(granted) == limit
    assert used(many_ledgers[0], account)["day"] == limit


class TestRunsPlanningAtOnce:
    """Two runs of two campaigns to the same numbers, both running: the one that claimed later yields."""

    def cap_run(self, ledger: Ledger, campaign: str, phones: list[str]) -> int:
        from globe_sms.campaign import Campaign
        from tasks.limits import cap_pending

        capped = Campaign.parse(
            {
                "campaign_id": campaign,
                "source": {"path": "x.csv"},
                "template": "Hi",
                "message_type": "MKT",
                "frequency_cap": {"max_messages": 1, "per": "24h"},
            }
        )
        return cap_pending(ledger, capped)

    def start(self, url: str, campaign: str, phones: list[str]) -> Ledger:
        """A run of `campaign`: its own ledger connection, its run lease, its rows registered."""
        run = Ledger.open(url)
        run.acquire_run_lease(campaign, RunOwner.this_process(f"run-{campaign}", campaign), 600)
        run.register(campaign, phones, message_type="MKT")
        return run

    def test_a_run_yields_to_the_running_campaign_that_claimed_first(self, n: Names, url: str) -> None:
        from globe_sms.ledger.caps import claim

        phones = numbers(6)
        first = self.start(url, n["first"], phones[:4])
        second = self.start(url, n["second"], phones)
        try:
            claim(first, n["first"])  # an uncapped run claims too
            assert self.cap_run(second, n["second"], phones) == 4  # first's pending rows will go out
            assert second.pending(n["second"]) == phones[4:]
            assert first.pending(n["first"]) == phones[:4]
            # The first run, capped or not, never counts the run that claimed after it.
            assert self.cap_run(first, n["first"], phones[:4]) == 0
        finally:
            first.close()
            second.close()

    def test_rows_submitted_since_the_count_and_finished_runs(self, n: Names, url: str) -> None:
        from globe_sms.ledger.caps import claim

        phones = numbers(4)
        first = self.start(url, n["first"], phones[:2])
        second = self.start(url, n["second"], phones)
        try:
            claim(first, n["first"])
            first.mark_submitting(n["first"], 1, phones[:1])  # in flight: counted as sent
            first.release_run_lease(n["first"])  # the first run ended: its pending row is not coming
            assert self.cap_run(second, n["second"], phones) == 1
            assert second.pending(n["second"]) == phones[1:]
        finally:
            first.close()
            second.close()
