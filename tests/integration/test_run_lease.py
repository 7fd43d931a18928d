"""The campaign run lease (`globe_sms.ledger.lease`) against SQLite files and the real PostgreSQL server.

Every ledger test runs on both backends (the fixtures of tests/integration/test_ledger.py); the clock is
injected, so a
lease expires without sleeping. The flows that hold the lease are tested at the end of
tests/integration/test_flow.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from globe_sms.campaign import GatewaySettings
from globe_sms.ledger import CampaignBusy, Ledger, RunLease, RunLeaseLost, RunOwner
from globe_sms.ledger.lease import pid_scope
from tests.clocks import T0, FakeWallClock
from tests.ledger_fixtures import numbers

TTL = 60.0
RACERS = 8


@pytest.fixture
def campaign() -> str:
    return f"lease-{uuid.uuid4().hex[:12]}"


def owner(name: str) -> RunOwner:
    """An owner in this process, with a readable id and description."""
    return RunOwner.this_process(f"run-{name}", f"flow run {name!r}")


def dead_pid() -> int:
    """The pid of a process that ran here and has been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def race(
    url: str, clock: FakeWallClock, attempt: Callable[[Ledger, int], RunLease]
) -> list[RunLease | Exception]:
    """Run `attempt` in `RACERS` threads at once, each with its own ledger (own engine and connections)."""
    ledgers = [Ledger.open(url, clock=clock) for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    results: list[RunLease | Exception] = [RuntimeError("did not run")] * RACERS

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(ledgers[i], i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for opened in ledgers:
        opened.close()
    return results


class TestAcquireAndRelease:
    def test_a_free_campaign_is_acquired_and_then_busy_for_anyone_else(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """The first run gets the lease; a second one gets CampaignBusy naming the holder and the expiry."""
        taken = ledger.acquire_run_lease(campaign, owner("first"), TTL)
        assert (taken.owner, taken.acquired_at, taken.expires_at) == (
            "run-first",
            T0,
            T0 + timedelta(seconds=60),
        )
        assert ledger.run_lease(campaign) == taken
        with Ledger.open(url, clock=clock) as other, pytest.raises(CampaignBusy) as caught:
            other.acquire_run_lease(campaign, owner("second"), TTL)
        message = str(caught.value)
        assert campaign in message and "flow run 'first'" in message and f"pid {taken.pid}" in message
        assert "expires by itself at 2026-03-01 09:31:00 UTC" in message and "Wait" in message
        assert caught.value.expires_at == taken.expires_at and ledger.run_lease(campaign) == taken

    def test_release_frees_the_campaign_and_touches_only_its_own_lease(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """Only the acquiring ledger releases; a second release, or one by a non-holder, changes nothing."""
        with Ledger.open(url, clock=clock) as other:
            ledger.acquire_run_lease(campaign, owner("first"), TTL)
            assert other.release_run_lease(campaign) is False
            assert ledger.release_run_lease(campaign) is True
            assert ledger.run_lease(campaign) is None
            second = other.acquire_run_lease(campaign, owner("second"), TTL)
            assert ledger.release_run_lease(campaign) is False
            assert ledger.run_lease(campaign) == second

    def test_the_held_block_releases_on_an_error(self, ledger: Ledger, campaign: str) -> None:
        """run_lease_held gives the lease back when the block raises."""
        with pytest.raises(ZeroDivisionError), ledger.run_lease_held(campaign, owner("first"), TTL):
            assert ledger.run_lease(campaign) is not None
            _ = 1 / 0
        assert ledger.run_lease(campaign) is None

    def test_leases_are_per_campaign(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """Holding one campaign does not block another."""
        ledger.acquire_run_lease(campaign, owner("first"), TTL)
        with Ledger.open(url, clock=clock) as other:
            assert other.acquire_run_lease(f"{campaign}-b", owner("second"), TTL).owner == "run-second"

    def test_a_lease_needs_a_positive_ttl(self, ledger: Ledger, campaign: str) -> None:
        """Zero or negative: ValueError, nothing taken."""
        for bad in (0, -5):
            with pytest.raises(ValueError, match="ttl_seconds"):
                ledger.acquire_run_lease(campaign, owner("first"), bad)
        assert ledger.run_lease(campaign) is None


class TestExpiryAndTakeover:
    def test_an_expired_lease_is_taken_over(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """Busy until the expiry, free at it (a crashed run's lease expires by itself)."""
        ledger.acquire_run_lease(campaign, owner("crashed"), TTL)
        with Ledger.open(url, clock=clock) as other:
            clock.tick(59)
            with pytest.raises(CampaignBusy):
                other.acquire_run_lease(campaign, owner("next"), TTL)
            clock.tick(1)
            taken = other.acquire_run_lease(campaign, owner("next"), TTL)
        assert taken.owner == "run-next" and taken.acquired_at == T0 + timedelta(seconds=60)
        assert ledger.run_lease(campaign) == taken

    def test_renewal_extends_the_lease_from_now(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """A renewed lease stays busy past its first expiry."""
        ledger.acquire_run_lease(campaign, owner("first"), TTL)
        clock.tick(50)
        ledger.renew_run_lease(campaign)
        clock.tick(50)
        with Ledger.open(url, clock=clock) as other, pytest.raises(CampaignBusy, match="09:31:50 UTC"):
            other.acquire_run_lease(campaign, owner("second"), TTL)

    def test_renewal_after_a_takeover_fails_loudly_and_so_do_fenced_writes(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """The slow run learns it lost the lease: renewal and fenced writes refuse, rows untouched."""
        ledger.register(campaign, numbers(4))
        ledger.acquire_run_lease(campaign, owner("slow"), TTL)
        ledger.mark_submitting(campaign, 1, numbers(2))
        clock.tick(TTL + 1)
        with Ledger.open(url, clock=clock) as other:
            other.acquire_run_lease(campaign, owner("next"), TTL)
            for write in (
                lambda: ledger.renew_run_lease(campaign),
                lambda: ledger.mark_submitting(campaign, 2, numbers(4)[2:]),
                lambda: ledger.recover_interrupted(campaign),
            ):
                with pytest.raises(RunLeaseLost, match="flow run 'next'") as caught:
                    write()
                assert caught.value.campaign_id == campaign and "run_lease_seconds" in str(caught.value)
            assert ledger.counts(campaign) == {
                **dict.fromkeys(("accepted", "failed", "unknown", "skipped"), 0),
                "pending": 2,
                "submitting": 2,
            }
            # The slow run's answer still lands: outcomes are not fenced, the rows were not recovered.
            ledger.record_accepted(campaign, 1, dict.fromkeys(numbers(2), "m"), {}, "r")
            assert ledger.release_run_lease(campaign) is False
            assert other.run_lease(campaign) is not None and other.run_lease(campaign).owner == "run-next"

    def test_an_expired_lease_nobody_took_is_still_renewable(
        self, ledger: Ledger, campaign: str, clock: FakeWallClock
    ) -> None:
        """Past its expiry but not taken over, the lease is still the run's own: renewal succeeds."""
        ledger.acquire_run_lease(campaign, owner("slow"), TTL)
        clock.tick(10 * TTL)
        ledger.renew_run_lease(campaign)
        current = ledger.run_lease(campaign)
        assert current is not None and current.expires_at == clock.now + timedelta(seconds=TTL)

    def test_renewing_a_lease_never_acquired_is_an_error(self, ledger: Ledger, campaign: str) -> None:
        """renew_run_lease without acquire_run_lease: ValueError."""
        with pytest.raises(ValueError, match="holds no run lease"):
            ledger.renew_run_lease(campaign)


class TestSameOwner:
    def test_the_same_owner_gets_the_lease_back_and_the_old_holder_loses_it(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """A UI Retry (same flow run id, new process) gets it back at once; the old acquisition is fenced."""
        first = ledger.acquire_run_lease(campaign, RunOwner.this_process("flow-run-1", "attempt 1"), TTL)
        clock.tick(5)
        with Ledger.open(url, clock=clock) as retry:
            again = retry.acquire_run_lease(campaign, RunOwner.this_process("flow-run-1", "attempt 2"), TTL)
            assert again.owner == first.owner and again.token != first.token
            assert again.acquired_at == T0 + timedelta(seconds=5)
            with pytest.raises(RunLeaseLost, match="attempt 2"):
                ledger.renew_run_lease(campaign)
            assert retry.run_lease(campaign) == again


class TestFencedWrites:
    def test_without_a_lease_recovery_and_submitting_wait_for_the_holder(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """A ledger holding no lease may not recover or submit while another run holds one."""
        ledger.register(campaign, numbers(4))
        ledger.acquire_run_lease(campaign, owner("sending"), TTL)
        ledger.mark_submitting(campaign, 1, numbers(2))
        with Ledger.open(url, clock=clock) as bystander:
            with pytest.raises(CampaignBusy, match="flow run 'sending'"):
                bystander.recover_interrupted(campaign)
            with pytest.raises(CampaignBusy):
                bystander.mark_submitting(campaign, 2, numbers(4)[2:])
            assert (
                bystander.counts(campaign)["submitting"] == 2 and bystander.counts(campaign)["pending"] == 2
            )
            clock.tick(TTL)
            assert bystander.recover_interrupted(campaign) == 2  # the holder's lease expired: a crash

    def test_mark_submitting_and_recovery_renew_the_lease(
        self, ledger: Ledger, campaign: str, clock: FakeWallClock
    ) -> None:
        """Each fenced write extends the lease by its ttl from that moment."""
        ledger.register(campaign, numbers(2))
        ledger.acquire_run_lease(campaign, owner("sending"), TTL)
        clock.tick(40)
        ledger.recover_interrupted(campaign)
        assert ledger.run_lease(campaign).expires_at == T0 + timedelta(seconds=100)
        clock.tick(40)
        ledger.mark_submitting(campaign, 1, numbers(2))
        assert ledger.run_lease(campaign).expires_at == T0 + timedelta(seconds=140)

    def test_without_any_lease_the_ledger_works_as_before(self, ledger: Ledger, campaign: str) -> None:
        """No lease row: recovery and submitting need none (library use, older callers)."""
        ledger.register(campaign, numbers(2))
        ledger.mark_submitting(campaign, 1, numbers(2))
        assert ledger.recover_interrupted(campaign) == 2


@pytest.mark.skipif(pid_scope() is None, reason="process liveness is only checked on Linux")
class TestCrashedHolderOnThisMachine:
    def test_a_gone_process_on_this_machine_is_taken_over_at_once(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """SIGKILLed here: its pid is gone in our PID namespace, so nobody waits for the expiry."""
        gone = RunOwner("killed-run", "flow run 'killed'", dead_pid(), pid_scope())
        ledger.acquire_run_lease(campaign, gone, TTL)
        with Ledger.open(url, clock=clock) as rerun:
            assert rerun.acquire_run_lease(campaign, owner("rerun"), TTL).owner == "run-rerun"

    def test_a_lease_from_another_machine_waits_for_its_expiry(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """A pid from another boot or PID namespace says nothing here: busy until the lease expires."""
        elsewhere = RunOwner("remote-run", "flow run 'remote'", dead_pid(), "another-boot/pid:[1]")
        unknown = RunOwner("unknown-run", "flow run 'unknown'", dead_pid(), None)  # no /proc where it ran
        ledger.acquire_run_lease(campaign, elsewhere, TTL)
        ledger.acquire_run_lease(f"{campaign}-2", unknown, TTL)
        with Ledger.open(url, clock=clock) as rerun:
            with pytest.raises(CampaignBusy, match="remote"):
                rerun.acquire_run_lease(campaign, owner("rerun"), TTL)
            with pytest.raises(CampaignBusy, match="unknown"):
                rerun.acquire_run_lease(f"{campaign}-2", owner("rerun"), TTL)
            clock.tick(TTL)
            assert rerun.acquire_run_lease(campaign, owner("rerun"), TTL).owner == "run-rerun"

    def test_a_bystander_may_recover_what_a_gone_process_left(
        self, ledger: Ledger, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """recover_interrupted without a lease is allowed when the holder is known to be gone."""
        ledger.register(campaign, numbers(2))
        gone = RunOwner("killed-run", "flow run 'killed'", dead_pid(), pid_scope())
        ledger.acquire_run_lease(campaign, gone, TTL)
        ledger.mark_submitting(campaign, 1, numbers(2))
        with Ledger.open(url, clock=clock) as bystander:
            assert bystander.recover_interrupted(campaign) == 2


class TestRace:
    def test_of_many_runs_acquiring_at_once_exactly_one_wins(
        self, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """Eight ledgers (own connections) ask for a free campaign at once: one lease, seven CampaignBusy."""
        results = race(url, clock, lambda ledger, i: ledger.acquire_run_lease(campaign, owner(str(i)), TTL))
        won = [r for r in results if isinstance(r, RunLease)]
        assert len(won) == 1, results
        assert all(isinstance(r, CampaignBusy) for r in results if r is not won[0]), results
        with Ledger.open(url, clock=clock) as check:
            assert check.run_lease(campaign) == won[0]

    def test_of_many_runs_taking_over_an_expired_lease_exactly_one_wins(
        self, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """The same race for a lease that has just expired."""
        with Ledger.open(url, clock=clock) as crashed:
            crashed.acquire_run_lease(campaign, owner("crashed"), TTL)
        clock.tick(TTL)
        results = race(url, clock, lambda ledger, i: ledger.acquire_run_lease(campaign, owner(str(i)), TTL))
        won = [r for r in results if isinstance(r, RunLease)]
        assert len(won) == 1 and won[0].owner != "run-crashed", results
        assert sum(isinstance(r, CampaignBusy) for r in results) == RACERS - 1, results


class TestSchema:
    def test_an_existing_ledger_file_gets_the_table(self, tmp_path: Path, campaign: str) -> None:
        """A ledger made before the lease existed is upgraded on open: the missing table is created."""
        from alembic import command

        from globe_sms.ledger import migration
        from globe_sms.ledger.backends import make_engine

        path = tmp_path / "old.db"
        engine = make_engine(f"sqlite:///{path}")
        with engine.connect() as conn, conn.begin():  # the tables as of revision 0001, before later columns
            command.upgrade(migration.migration_config(conn), "0001")
        engine.dispose()
        with sqlite3.connect(path) as raw:
            raw.execute(
                "INSERT INTO send_ledger (campaign_id, phone, status, attempts, created_at, updated_at) "
                f"VALUES ('{campaign}', '{numbers(1)[0]}', 'pending', 0, '2026-03-01 09:30:00', "
                "'2026-03-01 09:30:00')"
            )
        with sqlite3.connect(path) as raw:  # as made by globe-sms before the lease, and before migrations
            raw.execute("DROP TABLE campaign_runs")
            raw.execute("DROP TABLE globe_sms_ledger_version")
        with Ledger.open(f"sqlite:///{path}") as upgraded:
            assert upgraded.acquire_run_lease(campaign, owner("first"), TTL).owner == "run-first"
            assert upgraded.pending(campaign) == numbers(1)


class TestSetting:
    def test_the_default_lease_outlasts_every_wait_between_renewals(self) -> None:
        """1,200 s by default: longer than a batch attempt's wait, call and back-off for any attempt count."""
        assert GatewaySettings().run_lease_seconds == 1200
        assert GatewaySettings().longest_lease_gap_seconds == pytest.approx(300 + 5 + 10 + 2 * 2**2 * 1.2)
        for attempts in range(1, 11):
            assert GatewaySettings(max_attempts=attempts, read_timeout_seconds=120).run_lease_seconds == 1200

    def test_a_lease_shorter_than_the_gap_is_refused_with_the_fix(self) -> None:
        """A longer rate-limit wait needs a longer lease: the error says which field to raise."""
        with pytest.raises(ValueError, match=r"run_lease_seconds \(1200\) must exceed 1819.6"):
            GatewaySettings(rate_limit_timeout_seconds=1800, read_timeout_seconds=5)
        assert (
            GatewaySettings(rate_limit_timeout_seconds=1800, run_lease_seconds=3600).run_lease_seconds == 3600
        )
        for bad in (0, 29, 86401):
            with pytest.raises(ValueError, match="run_lease_seconds"):
                GatewaySettings(run_lease_seconds=bad)
