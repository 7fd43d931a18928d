"""Tests of the send ledger (`globe_sms.ledger`) against SQLite and the real PostgreSQL server.

Every test runs on both backends (the `url`, `ledger` and `clock` fixtures of `tests/ledger_fixtures.py`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from globe_sms.ids import parse_task_id, task_id
from globe_sms.ledger import (
    BATCH_SCHEMA,
    INTERRUPTED,
    ROW_SCHEMA,
    Lane,
    Ledger,
    LedgerStateError,
    Status,
)
from globe_sms.ledger.store import SingleOutcome
from tests.clocks import T0, FakeWallClock
from tests.ledger_fixtures import numbers

ALL_STATUSES = {"pending", "submitting", "accepted", "failed", "unknown", "skipped"}


@pytest.fixture
def campaign() -> str:
    return f"camp-{uuid.uuid4().hex[:12]}"


def statuses(ledger: Ledger, campaign: str) -> dict[str, str]:
    """phone -> status for the whole campaign."""
    frame = ledger.rows(campaign)
    return dict(zip(frame["phone"].to_list(), frame["status"].to_list(), strict=True))


class TestOpen:
    def test_sqlite_file_and_parent_directories_are_created(self, tmp_path: Path) -> None:
        """A SQLite URL in a missing directory works, and the file is in WAL mode."""
        path = tmp_path / "a" / "b" / "ledger.db"
        with Ledger.open(f"sqlite:///{path}") as ledger:
            ledger.register("c", ["85212345678"])
        assert path.exists()
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
                "send_ledger",
                "campaign_batches",
            }

    def test_open_twice_is_idempotent_and_sees_the_same_rows(self, url: str, campaign: str) -> None:
        """Opening an existing ledger creates nothing twice and keeps the rows."""
        with Ledger.open(url) as first:
            first.register(campaign, numbers(3))
        with Ledger.open(url) as second, Ledger.open(url) as third:
            assert second.pending(campaign) == numbers(3)
            assert third.counts(campaign)["pending"] == 3

    def test_in_memory_sqlite_is_one_shared_database(self) -> None:
        """`sqlite://` keeps its rows across calls (one shared connection)."""
        with Ledger.open("sqlite://") as ledger:
            ledger.register("c", numbers(2))
            assert ledger.pending("c") == numbers(2)

    def test_naive_clock_is_refused(self, tmp_path: Path) -> None:
        """Timestamps must be aware; a naive clock fails loudly instead of storing local time."""
        with Ledger.open(f"sqlite:///{tmp_path}/l.db", clock=lambda: datetime(2026, 1, 1)) as ledger:
            with pytest.raises(ValueError, match="naive"):
                ledger.register("c", ["85212345678"])
            assert ledger.counts("c")["pending"] == 0

    def test_bare_postgresql_url_uses_psycopg(self, pg_url: str) -> None:
        """`postgresql://` works without naming the driver (psycopg2 is not installed)."""
        with Ledger.open(pg_url.replace("postgresql+psycopg://", "postgresql://")) as ledger:
            assert ledger.counts("nobody")["pending"] == 0

    def test_repr_hides_the_password(self) -> None:
        """The URL shown in logs never carries the password."""
        with Ledger.open("sqlite://") as ledger:
            assert "Ledger('sqlite://')" == repr(ledger)


class TestRegister:
    def test_register_is_idempotent_and_leaves_existing_rows_alone(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """A second registration inserts only new numbers; known rows keep status and country."""
        assert ledger.register(campaign, numbers(3), ["HK", "HK", "HK"]) == 3
        ledger.mark_submitting(campaign, 1, numbers(1))
        before = ledger.rows(campaign)
        assert ledger.register(campaign, numbers(3), ["SG", "SG", "SG"]) == 0
        assert_frame_equal(ledger.rows(campaign), before)
        assert ledger.register(campaign, numbers(5), ["SG"] * 5) == 2
        assert ledger.rows(campaign)["country"].to_list() == ["HK", "HK", "HK", "SG", "SG"]
        assert ledger.counts(campaign) == {
            "pending": 4,
            "submitting": 1,
            "accepted": 0,
            "failed": 0,
            "unknown": 0,
            "skipped": 0,
        }

    def test_pending_keeps_registration_order(self, ledger: Ledger, campaign: str) -> None:
        """Order is the order of registration, not of the digits."""
        first = ["6591234567", "85212345678", "447700900123"]
        ledger.register(campaign, first)
        ledger.register(campaign, ["12025550123", "6591234567"])
        assert ledger.pending(campaign) == [*first, "12025550123"]

    def test_repeats_in_one_call_count_once_and_keep_the_first_country(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """A number given twice is one row, with the country that came first."""
        assert ledger.register(campaign, ["85212345678", "85212345678"], ["HK", "MO"]) == 1
        assert ledger.rows(campaign)["country"].to_list() == ["HK"]

    @pytest.mark.parametrize("bad", ["+85212345678", "085212345678", "852 1234 5678", "", "1234567890123456"])
    def test_malformed_numbers_are_refused_and_nothing_is_inserted(
        self, ledger: Ledger, campaign: str, bad: str
    ) -> None:
        """Only E.164 digits without '+' get in; one bad number refuses the whole call."""
        with pytest.raises(ValueError, match="E.164"):
            ledger.register(campaign, ["85212345678", bad])
        assert ledger.counts(campaign)["pending"] == 0

    def test_countries_of_another_length_are_refused(self, ledger: Ledger, campaign: str) -> None:
        """Countries must line up with the numbers."""
        with pytest.raises(ValueError, match="countries"):
            ledger.register(campaign, numbers(2), ["HK"])

    def test_rows_are_stamped_by_the_clock_in_utc(
        self, ledger: Ledger, campaign: str, clock: FakeWallClock
    ) -> None:
        """created_at / updated_at come back timezone-aware UTC, equal to the injected clock."""
        ledger.register(campaign, numbers(1))
        row = ledger.rows(campaign).row(0, named=True)
        assert row["created_at"] == row["updated_at"] == T0
        assert row["created_at"].utcoffset() == timedelta(0)
        assert row["submitted_at"] is None and row["attempts"] == 0 and row["status"] == "pending"


class TestLifecycle:
    def test_submitting_then_accepted_and_failed(
        self, ledger: Ledger, campaign: str, clock: FakeWallClock
    ) -> None:
        """pending -> submitting -> accepted / failed, with MessageId, error code, request id, batch row."""
        ledger.register(campaign, numbers(5))
        batch = numbers(3)
        sent_at = clock.tick()
        ledger.mark_submitting(campaign, 1, batch)
        assert ledger.counts(campaign)["submitting"] == 3
        assert ledger.pending(campaign) == numbers(5)[3:]
        submitted = ledger.rows(campaign).filter(pl.col("status") == "submitting")
        assert submitted["batch_no"].to_list() == [1, 1, 1]
        assert submitted["attempts"].to_list() == [1, 1, 1]
        assert submitted["submitted_at"].to_list() == [sent_at] * 3
        assert ledger.batches(campaign).row(0, named=True)["status"] == "submitting"

        done_at = clock.tick()
        ledger.record_accepted(
            campaign, 1, {batch[0]: "m-1", batch[1]: None}, {batch[2]: "isv.MOBILE_NUMBER_ILLEGAL"}, "req-1"
        )
        rows = {r["phone"]: r for r in ledger.rows(campaign).iter_rows(named=True)}
        assert (rows[batch[0]]["status"], rows[batch[0]]["message_id"], rows[batch[0]]["error_code"]) == (
            "accepted",
            "m-1",
            None,
        )
        assert (rows[batch[1]]["status"], rows[batch[1]]["message_id"]) == ("accepted", None)
        assert (rows[batch[2]]["status"], rows[batch[2]]["error_code"]) == (
            "failed",
            "isv.MOBILE_NUMBER_ILLEGAL",
        )
        assert {rows[p]["request_id"] for p in batch} == {"req-1"}
        assert rows[batch[0]]["updated_at"] == done_at
        summary = ledger.batches(campaign).row(0, named=True)
        assert summary == {
            "campaign_id": campaign,
            "batch_no": 1,
            "status": "accepted",
            "recipients": 3,
            "accepted": 2,
            "failed": 1,
            "unknown": 0,
            "request_id": "req-1",
            "error_code": None,
            "started_at": sent_at,
            "finished_at": done_at,
            "lane": "batch",
            "task_id": f"{campaign}-b00001",
        }
        assert ledger.counts(campaign) == {
            "pending": 2,
            "submitting": 0,
            "accepted": 2,
            "failed": 1,
            "unknown": 0,
            "skipped": 0,
        }

    def test_record_failed_fails_the_whole_batch(self, ledger: Ledger, campaign: str) -> None:
        """A permanent business error moves every number of the batch to failed."""
        ledger.register(campaign, numbers(2))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.record_failed(campaign, 1, numbers(2), "isv.AMOUNT_NOT_ENOUGH", "req-9")
        frame = ledger.rows(campaign)
        assert frame["status"].to_list() == ["failed", "failed"]
        assert frame["error_code"].to_list() == ["isv.AMOUNT_NOT_ENOUGH"] * 2
        batch = ledger.batches(campaign).row(0, named=True)
        assert (batch["status"], batch["failed"], batch["error_code"]) == (
            "failed",
            2,
            "isv.AMOUNT_NOT_ENOUGH",
        )

    def test_release_returns_rows_to_pending_and_the_batch_can_be_retried(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """Not processed: rows are pending again (reason kept); the released batch number may be reused."""
        ledger.register(campaign, numbers(2))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.release(campaign, 1, numbers(2), "Throttling.User")
        assert ledger.pending(campaign) == numbers(2)
        assert ledger.rows(campaign)["error_code"].to_list() == ["Throttling.User"] * 2
        assert ledger.batches(campaign)["status"].to_list() == ["released"]
        ledger.mark_submitting(campaign, 1, numbers(2))
        assert ledger.rows(campaign)["attempts"].to_list() == [2, 2]
        assert ledger.batches(campaign)["status"].to_list() == ["submitting"]

    def test_mark_unknown_keeps_rows_out_of_pending(self, ledger: Ledger, campaign: str) -> None:
        """Maybe processed: the rows are unknown and never offered for sending again by themselves."""
        ledger.register(campaign, numbers(3))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.mark_unknown(campaign, 1, numbers(2), "ReadTimeout", None)
        assert ledger.pending(campaign) == numbers(3)[2:]
        assert ledger.counts(campaign)["unknown"] == 2
        batch = ledger.batches(campaign).row(0, named=True)
        assert (batch["status"], batch["unknown"], batch["error_code"]) == ("unknown", 2, "ReadTimeout")

    def test_a_chunk_of_single_calls_records_each_rows_own_outcome(
        self, ledger: Ledger, campaign: str, url: str, clock: FakeWallClock
    ) -> None:
        """The single lane: a chunk goes pending -> submitting (lane single), then each row to its own call's
        outcome, with its own request id, segments and carrier; the chunk's batch row counts them. A second
        mark or record is refused; only pending rows become submitting. On SQLite both writes store
        timestamps as SQLAlchemy writes them (text with microseconds), like every other write."""
        ledger.register(campaign, numbers(6))
        chunk = numbers(5)
        sent_at = clock.tick()
        ledger.mark_submitting(campaign, 1, chunk, Lane.SINGLE)
        with pytest.raises(LedgerStateError):  # not pending any more: nothing changes
            ledger.mark_submitting(campaign, 2, [chunk[0], numbers(6)[5]], Lane.SINGLE)
        assert ledger.pending(campaign) == numbers(6)[5:]
        done_at = clock.tick()
        outcomes = {
            chunk[0]: SingleOutcome(Status.ACCEPTED, "m-0", None, "req-0", 2, "CMI"),
            chunk[1]: SingleOutcome(Status.ACCEPTED, "m-1", None, "req-1", 1, None),
            chunk[2]: SingleOutcome(Status.FAILED, error_code="MOBILE_NUMBER_ILLEGAL", request_id="req-2"),
            chunk[3]: SingleOutcome(Status.PENDING, error_code="Throttling.User"),
            chunk[4]: SingleOutcome(Status.UNKNOWN, error_code="ReadTimeout"),
        }
        ledger.record_singles(campaign, 1, outcomes)
        with pytest.raises(LedgerStateError):  # the rows are no longer submitting
            ledger.record_singles(campaign, 1, outcomes)
        columns = ["phone", "status", "message_id", "error_code", "request_id", "segments", "carrier"]
        rows = ledger.rows(campaign, columns=[*columns, "lane", "attempts", "batch_no", "updated_at"])
        assert rows.select(columns).rows()[:5] == [
            (chunk[0], "accepted", "m-0", None, "req-0", 2, "CMI"),
            (chunk[1], "accepted", "m-1", None, "req-1", 1, None),
            (chunk[2], "failed", None, "MOBILE_NUMBER_ILLEGAL", "req-2", None, None),
            (chunk[3], "pending", None, "Throttling.User", None, None, None),
            (chunk[4], "unknown", None, "ReadTimeout", None, None, None),
        ]
        assert rows["lane"].to_list() == ["single"] * 5 + [None]
        assert rows["attempts"].to_list() == [1] * 5 + [0] and rows["batch_no"].to_list() == [1] * 5 + [None]
        assert rows["updated_at"].to_list()[:5] == [done_at] * 5
        batch = ledger.batches(campaign).row(0, named=True)
        assert (batch["status"], batch["lane"], batch["recipients"], batch["started_at"]) == (
            "accepted",
            "single",
            5,
            sent_at,
        )
        counts = (batch["accepted"], batch["failed"], batch["unknown"], batch["error_code"])
        assert counts == (2, 1, 1, "MIXED")
        if url.startswith("sqlite"):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
                stamps = raw.execute(
                    "SELECT submitted_at, updated_at FROM send_ledger WHERE phone = ?", (chunk[0],)
                ).fetchone()
            assert stamps == (f"{sent_at:%Y-%m-%d %H:%M:%S}.000000", f"{done_at:%Y-%m-%d %H:%M:%S}.000000")

    def test_task_id_round_trips(self) -> None:
        """TaskId is campaign plus a five-digit batch number, and parses back."""
        assert task_id("spring-sale", 7) == "spring-sale-b00007"
        assert parse_task_id("spring-b-sale-b00012") == ("spring-b-sale", 12)
        with pytest.raises(ValueError):
            parse_task_id("spring-sale")


class TestIllegalTransitions:
    def test_mark_submitting_an_accepted_number_raises_and_changes_nothing(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """One number not pending refuses the whole batch; its pending neighbours stay pending."""
        ledger.register(campaign, numbers(4))
        ledger.mark_submitting(campaign, 1, numbers(1))
        ledger.record_accepted(campaign, 1, {numbers(1)[0]: "m"}, {}, "r")
        before, batches_before = ledger.rows(campaign), ledger.batches(campaign)
        with pytest.raises(LedgerStateError, match="not pending") as caught:
            ledger.mark_submitting(campaign, 2, numbers(4))
        assert caught.value.offenders == {numbers(1)[0]: "accepted in batch 1"}
        assert numbers(1)[0] not in str(caught.value)  # numbers are masked in messages
        assert_frame_equal(ledger.rows(campaign), before)
        assert_frame_equal(ledger.batches(campaign), batches_before)
        assert ledger.next_batch_no(campaign) == 2

    def test_mark_submitting_an_unregistered_number_raises(self, ledger: Ledger, campaign: str) -> None:
        """A number the campaign does not have cannot be sent."""
        ledger.register(campaign, numbers(1))
        with pytest.raises(LedgerStateError) as caught:
            ledger.mark_submitting(campaign, 1, [*numbers(1), "447700900123"])
        assert caught.value.offenders == {"447700900123": None}
        assert ledger.pending(campaign) == numbers(1)

    def test_a_used_batch_number_is_refused(self, ledger: Ledger, campaign: str) -> None:
        """Only a released batch number may be submitted again (TaskIds stay unique per attempt)."""
        ledger.register(campaign, numbers(4))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.mark_unknown(campaign, 1, numbers(2), "ReadTimeout", None)
        with pytest.raises(LedgerStateError, match="already unknown"):
            ledger.mark_submitting(campaign, 1, numbers(4)[2:])
        assert ledger.pending(campaign) == numbers(4)[2:]

    def test_a_number_twice_in_one_batch_is_refused(self, ledger: Ledger, campaign: str) -> None:
        """A repeated number would be sent twice."""
        ledger.register(campaign, numbers(1))
        with pytest.raises(ValueError, match="more than once"):
            ledger.mark_submitting(campaign, 1, numbers(1) * 2)
        assert ledger.counts(campaign)["submitting"] == 0

    def test_outcome_naming_a_number_outside_the_batch_raises_and_changes_nothing(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """record_accepted must name exactly the batch, or nothing is recorded (mark_unknown still works)."""
        ledger.register(campaign, numbers(3))
        ledger.mark_submitting(campaign, 1, numbers(2))
        before = ledger.rows(campaign)
        accepted = {p: "m" for p in numbers(3)}  # numbers(3)[2] is pending, not in batch 1
        with pytest.raises(LedgerStateError, match="nothing was recorded") as caught:
            ledger.record_accepted(campaign, 1, accepted, {}, "r")
        assert caught.value.offenders == {numbers(3)[2]: "pending"}
        assert_frame_equal(ledger.rows(campaign), before)
        assert ledger.batches(campaign)["status"].to_list() == ["submitting"]
        ledger.mark_unknown(campaign, 1, numbers(2), "LedgerMismatch", "r")
        assert ledger.counts(campaign)["unknown"] == 2

    def test_outcome_leaving_out_a_batch_number_raises(self, ledger: Ledger, campaign: str) -> None:
        """A response that does not account for every number of the batch is refused."""
        ledger.register(campaign, numbers(3))
        ledger.mark_submitting(campaign, 1, numbers(3))
        with pytest.raises(LedgerStateError) as caught:
            ledger.record_accepted(campaign, 1, {numbers(3)[0]: "m"}, {numbers(3)[1]: "isv.X"}, "r")
        assert caught.value.offenders == {numbers(3)[2]: "missing from the call"}
        assert ledger.counts(campaign)["submitting"] == 3

    def test_an_outcome_cannot_be_recorded_twice(self, ledger: Ledger, campaign: str) -> None:
        """Once settled, the batch's rows are no longer submitting: a second outcome is refused."""
        ledger.register(campaign, numbers(2))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.record_accepted(campaign, 1, {p: "m" for p in numbers(2)}, {}, "r")
        with pytest.raises(LedgerStateError):
            ledger.mark_unknown(campaign, 1, numbers(2), "ReadTimeout", None)
        with pytest.raises(LedgerStateError):
            ledger.release(campaign, 1, numbers(2), "Throttling")
        with pytest.raises(LedgerStateError):
            ledger.record_failed(campaign, 1, numbers(2), "isv.X", None)
        with pytest.raises(LedgerStateError):
            ledger.record_accepted(campaign, 1, {p: "m2" for p in numbers(2)}, {}, "r2")
        assert ledger.counts(campaign)["accepted"] == 2
        assert ledger.batches(campaign)["status"].to_list() == ["accepted"]

    def test_outcomes_on_pending_numbers_are_refused(self, ledger: Ledger, campaign: str) -> None:
        """pending -> accepted/unknown skips submitting: illegal."""
        ledger.register(campaign, numbers(2))
        with pytest.raises(LedgerStateError):
            ledger.record_accepted(campaign, 1, {p: "m" for p in numbers(2)}, {}, "r")
        with pytest.raises(LedgerStateError):
            ledger.mark_unknown(campaign, 1, numbers(2), "ReadTimeout", None)
        assert ledger.pending(campaign) == numbers(2)

    def test_a_number_both_accepted_and_failed_is_refused(self, ledger: Ledger, campaign: str) -> None:
        """The accepted and failed maps must not overlap."""
        ledger.register(campaign, numbers(1))
        ledger.mark_submitting(campaign, 1, numbers(1))
        with pytest.raises(ValueError, match="both accepted and failed"):
            ledger.record_accepted(campaign, 1, {numbers(1)[0]: "m"}, {numbers(1)[0]: "isv.X"}, "r")
        assert ledger.counts(campaign)["submitting"] == 1

    def test_only_one_of_several_racing_writers_gets_the_batch(self, url: str, campaign: str) -> None:
        """Ledgers in parallel threads marking the same numbers: exactly one wins, the others raise."""
        with Ledger.open(url) as setup:
            setup.register(campaign, numbers(50))
        ledgers = [Ledger.open(url) for _ in range(6)]
        outcomes: list[str] = []
        start = threading.Barrier(len(ledgers))

        def race(ledger: Ledger, batch_no: int) -> None:
            start.wait()
            try:
                ledger.mark_submitting(campaign, batch_no, numbers(50))
                outcomes.append("won")
            except LedgerStateError:
                outcomes.append("refused")

        threads = [threading.Thread(target=race, args=(led, n)) for n, led in enumerate(ledgers, start=1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for led in ledgers:
            led.close()
        assert sorted(outcomes) == ["refused"] * 5 + ["won"]
        with Ledger.open(url) as check:
            frame = check.rows(campaign)
            assert frame["attempts"].to_list() == [1] * 50 and frame["batch_no"].n_unique() == 1

    def test_racing_writers_cannot_share_a_new_batch_number(self, url: str, campaign: str) -> None:
        """Disjoint numbers under one new batch number from parallel runs: one batch row, one winner."""
        with Ledger.open(url) as setup:
            setup.register(campaign, numbers(60))
        ledgers = [Ledger.open(url) for _ in range(6)]
        outcomes: list[str] = []
        start = threading.Barrier(len(ledgers))

        def race(ledger: Ledger, part: int) -> None:
            start.wait()
            try:
                ledger.mark_submitting(campaign, 1, numbers(60)[part * 10 : part * 10 + 10])
                outcomes.append("won")
            except LedgerStateError:
                outcomes.append("refused")

        threads = [threading.Thread(target=race, args=(led, n)) for n, led in enumerate(ledgers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for led in ledgers:
            led.close()
        assert sorted(outcomes) == ["refused"] * 5 + ["won"]
        with Ledger.open(url) as check:
            assert check.counts(campaign)["submitting"] == 10
            assert check.batches(campaign)["recipients"].to_list() == [10]

    def test_one_ledger_is_shared_by_threads(self, ledger: Ledger, campaign: str) -> None:
        """Threads sending different batches through one Ledger all succeed."""
        ledger.register(campaign, numbers(40))
        errors: list[BaseException] = []

        def send(batch_no: int) -> None:
            phones = numbers(40)[(batch_no - 1) * 10 : batch_no * 10]
            try:
                ledger.mark_submitting(campaign, batch_no, phones)
                ledger.record_accepted(campaign, batch_no, dict.fromkeys(phones, "m"), {}, f"r{batch_no}")
            except BaseException as exc:  # reported below, with the thread's own traceback
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert ledger.counts(campaign)["accepted"] == 40
        assert ledger.batches(campaign)["status"].to_list() == ["accepted"] * 4


class TestRecovery:
    def test_crash_leaves_submitting_and_the_next_run_makes_it_unknown(
        self, url: str, campaign: str, clock: FakeWallClock
    ) -> None:
        """mark_submitting, close (crash), reopen: rows are still submitting, then recovered as unknown."""
        crashed = Ledger.open(url, clock=clock)
        crashed.register(campaign, numbers(4))
        crashed.mark_submitting(campaign, 1, numbers(2))
        crashed.close()

        with Ledger.open(url, clock=clock) as rerun:
            assert rerun.counts(campaign)["submitting"] == 2
            assert rerun.recover_interrupted(campaign) == 2
            assert rerun.recover_interrupted(campaign) == 0
            assert rerun.pending(campaign) == numbers(4)[2:]
            unknown = rerun.rows(campaign).filter(pl.col("status") == "unknown")
            assert unknown["phone"].to_list() == numbers(2)
            assert unknown["error_code"].to_list() == [INTERRUPTED] * 2
            batch = rerun.batches(campaign).row(0, named=True)
            assert (batch["status"], batch["unknown"], batch["error_code"]) == ("unknown", 2, INTERRUPTED)
            assert rerun.next_batch_no(campaign) == 2

    def test_recovery_touches_only_its_campaign(self, ledger: Ledger, campaign: str) -> None:
        """Another campaign's batch in flight is left alone."""
        other = f"{campaign}-other"
        for name in (campaign, other):
            ledger.register(name, numbers(2))
            ledger.mark_submitting(name, 1, numbers(2))
        assert ledger.recover_interrupted(campaign) == 2
        assert ledger.counts(other)["submitting"] == 2

    def test_pending_never_returns_unknown_accepted_or_failed(self, ledger: Ledger, campaign: str) -> None:
        """Only pending rows are offered for sending, also when asked for specific numbers."""
        ledger.register(campaign, numbers(5))
        batch = numbers(4)
        ledger.mark_submitting(campaign, 1, batch[:2])
        ledger.record_accepted(campaign, 1, {batch[0]: "m"}, {batch[1]: "isv.X"}, "r")
        ledger.mark_submitting(campaign, 2, batch[2:])
        ledger.mark_unknown(campaign, 2, batch[2:], "ReadTimeout", "r")
        assert ledger.counts(campaign) == {
            "pending": 1,
            "submitting": 0,
            "accepted": 1,
            "failed": 1,
            "unknown": 2,
            "skipped": 0,
        }
        assert ledger.pending(campaign) == [numbers(5)[4]]
        assert ledger.pending(campaign, numbers(5)) == [numbers(5)[4]]
        assert ledger.pending(campaign, [numbers(5)[4], "447700900123", numbers(5)[4]]) == [numbers(5)[4]]
        assert ledger.pending(campaign, []) == []

    def test_resend_unknown_reopens_unknown_rows_only(self, ledger: Ledger, campaign: str) -> None:
        """unknown -> pending on request; the retry counts as a second attempt."""
        ledger.register(campaign, numbers(4))
        ledger.mark_submitting(campaign, 1, numbers(2))
        ledger.mark_unknown(campaign, 1, numbers(2), "ReadTimeout", None)
        ledger.mark_submitting(campaign, 2, numbers(4)[2:3])
        ledger.record_accepted(campaign, 2, {numbers(4)[2]: "m"}, {}, "r")
        assert ledger.resend_unknown(campaign) == 2
        assert ledger.resend_unknown(campaign) == 0
        assert ledger.pending(campaign) == [*numbers(2), numbers(4)[3]]
        ledger.mark_submitting(campaign, 3, numbers(2))
        assert ledger.rows(campaign).filter(pl.col("batch_no") == 3)["attempts"].to_list() == [2, 2]

    def test_reopen_retryable_failures_reopens_only_the_given_codes(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """failed -> pending only for retryable codes; other failures and unknowns stay."""
        ledger.register(campaign, numbers(4))
        batch = numbers(4)
        ledger.mark_submitting(campaign, 1, batch)
        failed = {batch[0]: "isv.BUSINESS_LIMIT_CONTROL", batch[1]: "isv.MOBILE_NUMBER_ILLEGAL"}
        ledger.record_accepted(campaign, 1, {batch[2]: "m", batch[3]: "m2"}, failed, "r")
        assert ledger.reopen_retryable_failures(campaign, []) == 0
        assert ledger.reopen_retryable_failures(campaign, {"isv.BUSINESS_LIMIT_CONTROL", "isv.OTHER"}) == 1
        assert ledger.pending(campaign) == [batch[0]]
        assert statuses(ledger, campaign) == {
            batch[0]: "pending",
            batch[1]: "failed",
            batch[2]: "accepted",
            batch[3]: "accepted",
        }

    def test_reopen_for_resend_moves_only_the_asked_statuses_and_names_them(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """failed and/or unknown -> pending on request; accepted and pending rows are never touched."""
        batch = numbers(7)
        ledger.register(campaign, batch)
        ledger.mark_submitting(campaign, 1, batch[:3])
        ledger.record_accepted(campaign, 1, {batch[0]: "m", batch[2]: "m2"}, {batch[1]: "FAILED_LIST"}, "r1")
        ledger.mark_submitting(campaign, 2, batch[3:5])
        ledger.mark_unknown(campaign, 2, batch[3:5], "ReadTimeout", None)
        ledger.mark_submitting(campaign, 3, batch[5:6])
        ledger.record_failed(campaign, 3, batch[5:6], "AMOUNT_NOT_ENOUGH", "r3")
        assert ledger.reopen_for_resend(campaign, ["unknown"]) == batch[3:5]
        reopened = ledger.reopen_for_resend(campaign, ["failed"], failed_codes={"AMOUNT_NOT_ENOUGH"})
        assert reopened == [batch[5]]
        assert statuses(ledger, campaign)[batch[1]] == "failed"
        assert ledger.reopen_for_resend(campaign, ["failed", "unknown"]) == [batch[1]]
        assert ledger.reopen_for_resend(campaign, ["failed", "unknown"]) == []
        assert statuses(ledger, campaign) == {
            batch[0]: "accepted", batch[1]: "pending", batch[2]: "accepted", batch[3]: "pending",
            batch[4]: "pending", batch[5]: "pending", batch[6]: "pending",
        }

    def test_reopen_for_resend_can_be_limited_to_some_numbers(self, ledger: Ledger, campaign: str) -> None:
        """Only the given numbers move; an empty list moves nothing."""
        batch = numbers(3)
        ledger.register(campaign, batch)
        ledger.mark_submitting(campaign, 1, batch)
        ledger.record_failed(campaign, 1, batch, "AMOUNT_NOT_ENOUGH", "r")
        assert ledger.reopen_for_resend(campaign, ["failed"], phones=[]) == []
        assert ledger.reopen_for_resend(campaign, ["failed"], phones=[batch[2], "447700900123"]) == [batch[2]]
        assert ledger.pending(campaign) == [batch[2]]

    def test_reopen_for_resend_refuses_other_statuses(self, ledger: Ledger, campaign: str) -> None:
        """Accepted or pending rows can never be reopened through it: nothing moves."""
        ledger.register(campaign, numbers(1))
        for bad in (["accepted"], ["pending", "failed"], [], ["nonsense"]):
            with pytest.raises(ValueError):
                ledger.reopen_for_resend(campaign, bad)


class TestReads:
    def test_next_batch_no_increases_across_calls_and_reopens(self, url: str, campaign: str) -> None:
        """1 first, then one more than the highest used, also after a release and in a new process."""
        with Ledger.open(url) as ledger:
            assert ledger.next_batch_no(campaign) == 1
            ledger.register(campaign, numbers(6))
            ledger.mark_submitting(campaign, 1, numbers(2))
            assert ledger.next_batch_no(campaign) == 2
            ledger.release(campaign, 1, numbers(2), "Throttling")
            assert ledger.next_batch_no(campaign) == 2
            ledger.mark_submitting(campaign, 2, numbers(6)[2:4])
            ledger.record_accepted(campaign, 2, {p: "m" for p in numbers(6)[2:4]}, {}, "r")
        with Ledger.open(url) as again:
            assert again.next_batch_no(campaign) == 3
            assert again.next_batch_no(f"{campaign}-other") == 1

    def test_counts_has_every_status(self, ledger: Ledger, campaign: str) -> None:
        """Zeros included, also for a campaign that does not exist."""
        assert ledger.counts(campaign) == dict.fromkeys(ALL_STATUSES, 0)
        assert set(ledger.counts(campaign)) == {s.value for s in Status}
        ledger.register(campaign, numbers(2))
        assert ledger.counts(campaign) == {**dict.fromkeys(ALL_STATUSES, 0), "pending": 2}

    def test_frames_have_a_fixed_schema_even_when_empty(self, ledger: Ledger, campaign: str) -> None:
        """rows() and batches() keep their dtypes (UTC timestamps) with or without data."""
        assert ledger.rows(campaign).schema == pl.Schema(ROW_SCHEMA)
        assert ledger.batches(campaign).schema == pl.Schema({**BATCH_SCHEMA, "task_id": pl.String})
        ledger.register(campaign, numbers(1))
        ledger.mark_submitting(campaign, 1, numbers(1))
        assert ledger.rows(campaign).schema == pl.Schema(ROW_SCHEMA)
        assert ledger.batches(campaign).schema["started_at"] == pl.Datetime("us", "UTC")


    def test_rows_filter_status_columns_and_count_in_the_database(
        self, ledger: Ledger, campaign: str
    ) -> None:
        """Only the asked statuses and columns, in registration order, at most `limit` of them."""
        ledger.register(campaign, numbers(6))
        ledger.mark_submitting(campaign, 1, numbers(6)[1:4])
        ledger.mark_unknown(campaign, 1, numbers(6)[1:4], "ReadTimeout", None)
        unknown = ledger.rows(campaign, statuses=["unknown"], columns=["phone", "error_code"])
        assert unknown.schema == pl.Schema({"phone": pl.String, "error_code": pl.String})
        assert unknown.rows() == [(n, "ReadTimeout") for n in numbers(6)[1:4]]
        assert ledger.rows(campaign, statuses=[Status.UNKNOWN], limit=2)["phone"].to_list() == numbers(6)[1:3]
        pending = ledger.rows(campaign, statuses=["pending", "accepted"], columns=["phone"])
        assert pending["phone"].to_list() == [numbers(6)[0], *numbers(6)[4:]]
        assert ledger.rows(campaign, statuses=[]).is_empty()
        with pytest.raises(ValueError):
            ledger.rows(campaign, statuses=["sent"])


class TestSpeed:
    def test_register_60k_and_record_1000(self, ledger: Ledger, campaign: str, url: str) -> None:
        """register(60,000) well under 2 s on SQLite; a 1,000-number batch is settled in milliseconds."""
        phones = numbers(60_000)
        started = time.perf_counter()
        assert ledger.register(campaign, phones, ["HK"] * len(phones)) == 60_000
        register_s = time.perf_counter() - started
        assert ledger.register(campaign, phones) == 0
        batch = ledger.pending(campaign)[:1000]
        assert batch == phones[:1000]
        started = time.perf_counter()
        ledger.mark_submitting(campaign, 1, batch)
        submit_s = time.perf_counter() - started
        started = time.perf_counter()
        ledger.record_accepted(
            campaign, 1, {p: f"m{p}" for p in batch[:990]}, dict.fromkeys(batch[990:], "isv.X"), "r"
        )
        record_s = time.perf_counter() - started
        assert ledger.counts(campaign) == {
            "pending": 59_000,
            "submitting": 0,
            "accepted": 990,
            "failed": 10,
            "unknown": 0,
            "skipped": 0,
        }
        limit = 2.0 if url.startswith("sqlite") else 4.0
        assert register_s < limit, f"register(60,000) took {register_s:.2f} s"
        assert submit_s < 0.5 and record_s < 0.5, (
            f"mark_submitting {submit_s:.3f} s, record_accepted {record_s:.3f} s"
        )
