"""Streaming: chunked validation and rendering into the Parquet spool, planning from it, and the flow over
every source kind.

The spool must give the same result whatever the chunk size: the same messages and the same rejects with the
same reasons as validating and rendering the whole list in one frame (the reference below). The flow tests run
on the real Prefect test server, the emulator, PostgreSQL and the local recipients API; the readers alone are
tested in tests/{unit,integration}/test_sources.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_streaming.py.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from globe_sms.template import MessageTemplate, TemplateError
from globe_sms.validation_rules import TooManyRejects, ValidationRules
from tasks.cost import PriceTable, estimate_cost, estimate_cost_of_parts, load_price_table
from tasks.plan import PlannedBatches, plan_read_only, register_and_plan, reopen_and_plan
from tasks.preview import build_preview
from tasks.render import render_messages
from tasks.spool import Spool, reason_counts, write_spool
from tasks.validate import validate_recipients

TEMPLATE = MessageTemplate(text="Hi {first_name}, code {code} – welcome")
HK, SG, GB = "+85291234567", "+6591234567", "+447911123456"
# Row numbers are 1-based. Repeats across any chunking: row 7 repeats row 1 (valid), row 9 repeats row 3
# (whose name is missing: rendering rejects row 3, and row 9 is still a duplicate of it), row 10 is in
# another format of row 2, row 12 repeats the suppressed row 11, row 8 repeats an invalid number.
ROWS = [
    (HK, "Ann", "1"),
    (SG, "Bo", "2"),
    ("+85261234567", "", "3"),
    ("+8613800138000", "Cy", "4"),
    ("hello", "Di", "5"),
    (GB, "Ed", "6"),
    (HK, "Fay", "7"),
    ("+8613800138000", "Gus", "8"),
    ("+852 6123 4567", "Hal", "9"),
    ("0065 9123 4567", "Ida", "10"),
    ("+61412345678", "Jo", "11"),
    ("+61 412 345 678", "Kay", "12"),
    ("+60123456789", "Lu", "13"),
]


def recipients() -> pl.DataFrame:
    return pl.DataFrame(
        ROWS, schema={"phone": pl.String, "first_name": pl.String, "code": pl.String}, orient="row"
    )


@pytest.fixture
def rules(tmp_path: Path) -> ValidationRules:
    opt_out = tmp_path / "opt-out.txt"
    opt_out.write_text("+61412345678\n")
    return ValidationRules(suppression_file=str(opt_out))


def chunks(frame: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    yield from frame.iter_slices(rows)


def spool(tmp_path: Path, rules: ValidationRules, rows: int, frame: pl.DataFrame | None = None) -> Spool:
    frame = recipients() if frame is None else frame
    return write_spool(
        chunks(frame, rows), tmp_path / f"spool-{rows}", phone_column="phone", template=TEMPLATE, rules=rules
    )


def reference(rules: ValidationRules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole list validated and rendered in one frame: messages, and rejects by row."""
    validation = validate_recipients(recipients(), "phone", rules)
    rendered = render_messages(validation.valid, TEMPLATE)
    rejects = pl.concat([validation.rejects, rendered.rejects], how="diagonal_relaxed").sort("source_row")
    return rendered.messages, rejects


class TestSpool:
    @pytest.mark.parametrize("rows", [1, 2, 3, 5, 7, 100])
    def test_any_chunk_size_gives_the_one_frame_result(
        self, tmp_path: Path, rules: ValidationRules, rows: int
    ) -> None:
        """The same messages, the same rejected rows for the same reasons, the same counts.

        One difference is by design: a row rejected for another reason (mainland, suppressed) that repeats
        a number of an earlier chunk does not get `duplicate` added (only rows that could be sent are
        de-duplicated across chunks); within a chunk it does, as in one frame.
        """
        messages, rejects = reference(rules)
        result = spool(tmp_path, rules, rows)
        assert result.scan_messages().collect().equals(messages)
        got = result.scan_rejects().collect()
        assert got["source_row"].to_list() == rejects["source_row"].to_list()
        for mine, theirs in zip(got["reasons"].to_list(), rejects["reasons"].to_list(), strict=True):
            assert mine == theirs or (len(theirs) > 1 and mine == [r for r in theirs if r != "duplicate"])
        assert (result.source_rows, result.valid, result.rejected) == (13, messages.height, rejects.height)
        assert result.rejected_by_reason == dict(reason_counts(got))
        assert result.chunks == -(-13 // rows)
        if rows >= 13:
            assert got.select("source_row", "reasons", "reason_text").equals(
                rejects.select("source_row", "reasons", "reason_text")
            )

    def test_first_occurrence_wins_across_chunks(self, tmp_path: Path, rules: ValidationRules) -> None:
        """Chunks of 2: rows 7, 9 and 10 are rejected as duplicates of rows 1, 3 and 2 in earlier chunks.

        Row 3 itself was rejected by rendering (no name), and still wins over row 9, as in one frame.
        """
        result = spool(tmp_path, rules, 2)
        got = result.scan_rejects().collect()
        duplicates = got.filter(pl.col("reasons") == ["duplicate"]).select("source_row", "reason_text")
        assert duplicates.rows() == [
            (7, "duplicate of row 1"),
            (9, "duplicate of row 3"),
            (10, "duplicate of row 2"),
        ]
        assert result.scan_messages().collect()["source_row"].to_list() == [1, 2, 6, 13]

    def test_source_rows_keep_counting_across_chunks(self, tmp_path: Path) -> None:
        """`source_row` is the row's place in the whole source, not in its chunk."""
        frame = pl.DataFrame(
            {"phone": [f"+659123{i:04d}" for i in range(10)], "first_name": "A", "code": "1"}
        )
        result = spool(tmp_path, ValidationRules(), 3, frame)
        assert result.scan_messages().collect()["source_row"].to_list() == list(range(1, 11))

    def test_the_reject_share_is_checked_on_the_totals(self, tmp_path: Path) -> None:
        """Chunk 1 is all invalid, chunk 2 all valid: 50% invalid overall, over a 40% limit."""
        frame = pl.DataFrame(
            {"phone": ["bad", "worse", "+6591234567", "+6591234568"], "first_name": "A", "code": "1"}
        )
        with pytest.raises(TooManyRejects, match=r"50\.00% of the recipients are invalid \(2 of 4 rows\)"):
            spool(tmp_path, ValidationRules(max_reject_share=0.4), 2, frame)
        assert not (tmp_path / "spool-2").exists()  # removed: it holds phone numbers
        assert spool(tmp_path, ValidationRules(max_reject_share=0.5), 2, frame).invalid == 2

    def test_a_failure_removes_the_spool_and_closes_the_source(self, tmp_path: Path) -> None:
        """A template naming a missing column fails on the first chunk: no folder left, the reader closed."""
        closed: list[bool] = []

        def source() -> Iterator[pl.DataFrame]:
            try:
                yield from chunks(recipients(), 4)
            finally:
                closed.append(True)

        folder = tmp_path / "spool"
        with pytest.raises(TemplateError, match="nickname"):
            write_spool(
                source(), folder, phone_column="phone", template="Hi {nickname}", rules=ValidationRules()
            )
        assert not folder.exists() and closed == [True]

    def test_the_rejects_csv_has_every_rejected_row_by_row_number(
        self, tmp_path: Path, rules: ValidationRules
    ) -> None:
        result = spool(tmp_path, rules, 3)
        path = result.write_rejects_csv(tmp_path / "rejects.csv")
        assert path is not None
        written = pl.read_csv(path, infer_schema=False)
        assert written["source_row"].to_list() == [str(r) for r in (3, 4, 5, 7, 8, 9, 10, 11, 12)]
        assert written.filter(pl.col("source_row") == "3")["reasons"].item() == "missing_value:first_name"

    def test_preview_and_cost_match_the_whole_frame(self, tmp_path: Path, rules: ValidationRules) -> None:
        """Counts come from aggregating the spool, samples from its first rows: as if built from one frame."""
        messages, _ = reference(rules)
        result = spool(tmp_path, rules, 2)
        prices = load_price_table(Path(__file__).parents[2] / "examples" / "prices.csv")
        cost = estimate_cost_of_parts(result.message_parts(), prices)
        whole = estimate_cost(messages, prices)
        assert cost.total == whole.total and cost.per_country.equals(whole.per_country)
        assert (cost.messages, cost.segments) == (whole.messages, whole.segments)
        culprits = render_messages(
            validate_recipients(recipients(), "phone", rules).valid, TEMPLATE
        ).ucs2_culprits
        assert result.ucs2_culprits == culprits
        expected = build_preview(messages, culprits, whole, batches=2, calls_per_second=1.0)
        assert result.preview(cost, batches=2, calls_per_second=1.0) == expected

    def test_cost_by_part_keeps_unpriced_regions_apart(self, tmp_path: Path, rules: ValidationRules) -> None:
        """No default price: unpriced regions get null prices and costs and are listed, as in one frame."""
        messages, _ = reference(rules)
        prices = PriceTable.from_mapping({"HK": "0.05", "SG": "0.012345"})
        cost = estimate_cost_of_parts(spool(tmp_path, rules, 2).message_parts(), prices)
        whole = estimate_cost(messages, prices)
        assert cost.per_country.equals(whole.per_country) and cost.total == whole.total
        assert cost.unpriced == whole.unpriced and "MY" in cost.unpriced and "SG" not in cost.unpriced

    def test_an_empty_source_gives_an_empty_spool(self, tmp_path: Path) -> None:
        result = write_spool(iter([]), tmp_path / "s", phone_column="phone", template=TEMPLATE)
        assert (result.source_rows, result.valid, result.rejected) == (0, 0, 0)
        assert (
            result.scan_messages().collect().height == 0
            and result.write_rejects_csv(tmp_path / "r.csv") is None
        )


# ------------------------------------------------------------------------------------------------------------
# Planning from the spool
# ------------------------------------------------------------------------------------------------------------


def campaign(tmp_path: Path, **overrides: Any) -> Campaign:
    data = {
        "campaign_id": "plan-test",
        "source": {"path": "x.csv"},
        "template": "Hi",
        "batch_size": 4,
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        **overrides,
    }
    return Campaign.parse(data)


def messages(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "phone": [f"659123{i:04d}" for i in range(n)],
            "country": "SG",
            "message": [f"m{i}" for i in range(n)],
        }
    )


class TestPlanFromSpool:
    def test_frames_lazy_frames_and_parquet_files_plan_the_same_batches(self, tmp_path: Path) -> None:
        """Batches of 4 across plan parts of 50,000 rows or fewer: numbered, complete, in order."""
        frame = messages(11)
        frame.head(5).write_parquet(tmp_path / "part-0.parquet")
        frame.tail(6).write_parquet(tmp_path / "part-1.parquet")
        plans = []
        for source in (frame, frame.lazy(), tmp_path):
            with Ledger("sqlite://") as ledger:
                plans.append(register_and_plan(ledger, campaign(tmp_path), source))
        for plan in plans:
            batches = list(plan.batches)
            assert (
                [b.batch_no for b in batches] == [1, 2, 3]
                and len(plan.batches) == 3
                and plan.recipients == 11
            )
            assert [p for b in batches for p in b.phones] == frame["phone"].to_list()
            assert [m for b in batches for m in b.messages] == frame["message"].to_list()

    def test_batches_span_plan_parts(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Plan parts of 3 rows still give full batches of 4; the parts are files read one at a time."""
        monkeypatch.setattr("tasks.plan.PLAN_CHUNK_ROWS", 3)
        with Ledger("sqlite://") as ledger:
            plan = register_and_plan(ledger, campaign(tmp_path), messages(10).lazy(), tmp_path / "plan")
        assert isinstance(plan.batches, PlannedBatches)
        assert all(isinstance(part, Path) for part in plan.batches.parts) and len(plan.batches.parts) == 4
        assert [len(b) for b in plan.batches] == [4, 4, 2]

    def test_a_stop_request_between_chunks_ends_the_registration_the_chunks_before_stay_pending(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Ctrl-C or SIGTERM recorded while a long list is registered ends it at the next chunk."""
        from tasks.stop import StoppedBeforeSending, StopRequests

        requests = StopRequests()
        monkeypatch.setattr("tasks.stop.STOP_REQUESTS", requests)
        monkeypatch.setattr("tasks.plan.PLAN_CHUNK_ROWS", 3)
        c = campaign(tmp_path)
        with Ledger(c.ledger) as ledger:
            register = ledger.register

            def register_then_stop(*args: Any, **kwargs: Any) -> int:
                registered = register(*args, **kwargs)
                requests.handle(signal.SIGTERM)  # as the handler records a signal: no exception here
                return registered

            monkeypatch.setattr(ledger, "register", register_then_stop)
            with requests.on_signals(), pytest.raises(
                StoppedBeforeSending, match=r"^stop requested \(SIGTERM\) while registering its recipients$"
            ):
                register_and_plan(ledger, c, messages(10).lazy(), tmp_path / "plan")
            counts = ledger.counts(c.campaign_id)
        assert counts["pending"] == sum(counts.values()) == 3, counts

    def test_a_first_run_plans_without_reading_the_numbers_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new campaign: all it registered is pending, so the ledger is not asked for its pending list."""

        def no_lookup(*args: object, **kwargs: object) -> list[str]:
            raise AssertionError("a first run must not read the pending numbers back")

        with Ledger("sqlite://") as ledger:
            monkeypatch.setattr(ledger, "pending", no_lookup)
            plan = register_and_plan(ledger, campaign(tmp_path), messages(9).lazy())
        assert plan.registered == 9 and plan.recipients == 9

    def test_a_rerun_plans_only_what_is_still_pending(self, tmp_path: Path) -> None:
        """Rows accepted by an earlier run are registered but not planned again; batch numbers go on."""
        c = campaign(tmp_path)
        with Ledger(c.ledger) as ledger:
            first = list(register_and_plan(ledger, c, messages(6)).batches)[0]
            ledger.mark_submitting(c.campaign_id, first.batch_no, list(first.phones))
            ledger.record_accepted(
                c.campaign_id, first.batch_no, {p: f"id-{p}" for p in first.phones}, {}, "r1"
            )
            again = register_and_plan(ledger, c, messages(9))
        assert again.registered == 3 and again.recipients == 5 and again.already_final["accepted"] == 4
        assert [b.batch_no for b in again.batches] == [2, 3]
        assert not set(first.phones) & {p for b in again.batches for p in b.phones}

    def test_a_dry_run_plan_reads_the_ledger_without_writing(self, tmp_path: Path) -> None:
        """Accepted rows are left out, unknown rows only with resend_unknown; the ledger is not changed."""
        c = campaign(tmp_path)
        phones = messages(6)["phone"].to_list()
        with Ledger(c.ledger) as ledger:
            ledger.register(c.campaign_id, phones[:3])
            ledger.mark_submitting(c.campaign_id, 1, phones[:1])
            ledger.record_accepted(c.campaign_id, 1, {phones[0]: "m0"}, {}, "r")
            ledger.mark_submitting(c.campaign_id, 2, phones[1:2])
            ledger.mark_unknown(c.campaign_id, 2, [phones[1]], "ReadTimeout", None)
            before = ledger.counts(c.campaign_id)
            plain = plan_read_only(ledger, c, messages(6))
            resend = plan_read_only(ledger, c.model_copy(update={"resend_unknown": True}), messages(6))
            assert ledger.counts(c.campaign_id) == before
        assert [p for b in plain.batches for p in b.phones] == phones[2:]
        assert [p for b in resend.batches for p in b.phones] == phones[1:]
        assert plain.batches.first_batch_no == 3  # type: ignore[union-attr]


class TestResendPlan:
    """`reopen_and_plan` (the `plan-resend` task): chunk by chunk into plan parts, as `register_and_plan`.

    The resend flow end to end is tested in tests/integration/test_flow.py and
    tests/integration/test_quiet_hours.py."""

    def failed_campaign(self, tmp_path: Path, ledger: Ledger) -> tuple[Campaign, list[str]]:
        """10 numbers: 0-3 failed AMOUNT_NOT_ENOUGH, 4-5 failed INVALID_SENDERID, 6 unknown, 7-9 accepted."""
        c = campaign(tmp_path)
        phones = messages(10)["phone"].to_list()
        ledger.register(c.campaign_id, phones)
        for no, (rows, code) in enumerate(
            ((phones[:4], "AMOUNT_NOT_ENOUGH"), (phones[4:6], "INVALID_SENDERID")), start=1
        ):
            ledger.mark_submitting(c.campaign_id, no, rows)
            ledger.record_failed(c.campaign_id, no, rows, code, "r")
        ledger.mark_submitting(c.campaign_id, 3, phones[6:7])
        ledger.mark_unknown(c.campaign_id, 3, phones[6:7], "ReadTimeout", None)
        ledger.mark_submitting(c.campaign_id, 4, phones[7:])
        ledger.record_accepted(c.campaign_id, 4, {p: f"m{p}" for p in phones[7:]}, {}, "r")
        return c, phones

    def test_the_chosen_rows_are_reopened_chunk_by_chunk_into_parts_on_disk(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Chunks of 3 messages: each chunk's chosen rows are reopened and written as a part; the batches
        hold exactly them, in source order, numbered after the earlier runs' batches."""
        monkeypatch.setattr("tasks.plan.PLAN_CHUNK_ROWS", 3)
        with Ledger("sqlite://") as ledger:
            c, phones = self.failed_campaign(tmp_path, ledger)
            plan = reopen_and_plan(
                ledger, c, messages(10).lazy(), ["failed", "unknown"], ["AMOUNT_NOT_ENOUGH"], tmp_path / "p"
            )
            counts = ledger.counts(c.campaign_id)
        assert isinstance(plan.batches, PlannedBatches)
        assert all(isinstance(part, Path) for part in plan.batches.parts) and len(plan.batches.parts) == 3
        assert [list(b.phones) for b in plan.batches] == [phones[:4], [phones[6]]]
        assert [b.batch_no for b in plan.batches] == [5, 6]
        assert [list(b.messages) for b in plan.batches][1] == ["m6"]
        assert plan.reopened == 5 and (counts["pending"], counts["failed"], counts["accepted"]) == (5, 2, 3)

    def test_a_dry_run_counts_the_same_rows_and_changes_nothing(self, tmp_path: Path) -> None:
        """The read-only resend plan picks the rows the real one would reopen; the ledger is untouched."""
        with Ledger("sqlite://") as ledger:
            c, phones = self.failed_campaign(tmp_path, ledger)
            before = ledger.counts(c.campaign_id)
            dry = c.model_copy(update={"dry_run": True})
            plan = reopen_and_plan(ledger, dry, messages(10), ["failed"], [])
            assert ledger.counts(c.campaign_id) == before
        assert plan.reopened == 6 and [p for b in plan.batches for p in b.phones] == phones[:6]

    def test_numbers_the_source_no_longer_renders_are_not_reopened(self, tmp_path: Path) -> None:
        """Only the first 5 messages are rendered now: failed rows 5 and the unknown row stay as they were."""
        with Ledger("sqlite://") as ledger:
            c, phones = self.failed_campaign(tmp_path, ledger)
            plan = reopen_and_plan(ledger, c, messages(5), ["failed", "unknown"])
            rows = ledger.rows(c.campaign_id, columns=["phone", "status"])
        assert plan.recipients == 5 and [p for b in plan.batches for p in b.phones] == phones[:5]
        status = dict(rows.iter_rows())
        assert status[phones[5]] == "failed" and status[phones[6]] == "unknown"

    def test_the_frequency_cap_holds_back_numbers_other_campaigns_messaged_not_its_own_attempt(
        self, tmp_path: Path
    ) -> None:
        """Cap 1 per 24h: phone 0 (failed here) got another campaign's message within the window, so it is
        held back and stays `failed`; phone 6 (`unknown` here, counted as sent for other campaigns' caps) is
        not held back by this campaign's own earlier attempt. The dry run counts the same, read-only."""
        with Ledger("sqlite://") as ledger:
            c, phones = self.failed_campaign(tmp_path, ledger)
            c = c.model_copy(
                update={"frequency_cap": Campaign.parse(
                    {"campaign_id": "x", "source": {"path": "x.csv"}, "template": "Hi",
                     "frequency_cap": {"max_messages": 1, "per": "24h"}}
                ).frequency_cap}
            )
            ledger.register("other", [phones[0]])
            ledger.mark_submitting("other", 1, [phones[0]])
            ledger.record_accepted("other", 1, {phones[0]: "o0"}, {}, "r")
            before = ledger.counts(c.campaign_id)
            dry_c = c.model_copy(update={"dry_run": True})
            dry = reopen_and_plan(ledger, dry_c, messages(10), ["failed", "unknown"])
            assert ledger.counts(c.campaign_id) == before
            plan = reopen_and_plan(ledger, c, messages(10), ["failed", "unknown"])
            status = dict(ledger.rows(c.campaign_id, columns=["phone", "status"]).iter_rows())
        sent = [p for b in plan.batches for p in b.phones]
        assert sent == phones[1:7] == [p for b in dry.batches for p in b.phones]
        assert plan.resend_held_by_cap == dry.resend_held_by_cap == 1
        assert plan.reopened == 6 and status[phones[0]] == "failed" and status[phones[6]] == "pending"

    def test_only_failed_and_unknown_rows_can_be_resent(self, tmp_path: Path) -> None:
        with Ledger("sqlite://") as ledger, pytest.raises(ValueError, match="only failed and unknown"):
            reopen_and_plan(ledger, campaign(tmp_path), messages(2), ["accepted"])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------------------------
# The flow over every source kind
# ------------------------------------------------------------------------------------------------------------
