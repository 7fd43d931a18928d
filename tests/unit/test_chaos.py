"""The chaos suite, short form: faults, SIGKILLs and reruns, then the exactly-once invariants.

Each scenario runs the campaign flow in child processes against the emulator in this process (its journal
goes to a file, so it outlives the children), kills them at seeded points and reruns until the campaign is
done; `tests/chaos/check.py` then checks the journal against the ledger. The full form, with figures, is
`uv run python bench/chaos.py --runs 50`; crash-free behaviour of the flow is in
tests/integration/test_flow.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_chaos.py.
"""

from __future__ import annotations

import polars as pl

from tests.chaos.check import check_campaign


def _rows(*rows: tuple[str, str, int | None, str | None, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"phone": pl.String, "status": pl.String, "batch_no": pl.Int64, "message_id": pl.String,
                "error_code": pl.String},
        orient="row",
    )


def _message(to: str, message_id: str, batch_no: int = 1) -> dict[str, str]:
    return {"to": to, "message_id": message_id, "task_id": f"c-b{batch_no:05d}"}


class TestCheck:
    """The checker itself must be able to fail: each broken invariant is reported."""

    EXPECTED = {"6591000001", "6591000002", "6591000003"}

    def test_accepted_failed_and_unknown_rows_that_match_the_journal_pass(self) -> None:
        """One message per accepted row with its id; none for failed; 0 or 1 for unknown."""
        rows = _rows(("6591000001", "accepted", 1, "m1", None), ("6591000002", "failed", 1, None, "X"),
                     ("6591000003", "unknown", 2, None, "Interrupted"))
        verdict = check_campaign(rows, [_message("6591000001", "m1"), _message("6591000003", "m9", 2)],
                                 self.EXPECTED, "c")
        assert verdict.ok and verdict.unknown_delivered == 1 and verdict.unknown_not_delivered == 0

    def test_a_second_message_to_a_number_is_a_duplicate(self) -> None:
        """Two journal messages for one number, whatever its ledger row says."""
        rows = _rows(("6591000001", "unknown", 1, None, "ReadTimeout"),
                     ("6591000002", "failed", 1, None, "X"), ("6591000003", "failed", 1, None, "X"))
        verdict = check_campaign(rows, [_message("6591000001", "m1"), _message("6591000001", "m2")],
                                 self.EXPECTED, "c")
        assert verdict.duplicates == ["659100****"] and not verdict.ok

    def test_pending_submitting_or_missing_rows_are_lost(self) -> None:
        """A campaign that claims to be done must have no row short of a terminal state."""
        rows = _rows(("6591000001", "pending", None, None, None), ("6591000002", "submitting", 1, None, None))
        verdict = check_campaign(rows, [], self.EXPECTED, "c")
        assert len(verdict.lost) == 3 and not verdict.ok

    def test_accepted_row_must_carry_the_journal_message_id_and_batch(self) -> None:
        """A wrong id, a missing message or another batch's TaskId are all mismatches."""
        rows = _rows(("6591000001", "accepted", 1, "m1", None), ("6591000002", "accepted", 1, "m2", None),
                     ("6591000003", "accepted", 1, "m3", None))
        messages = [_message("6591000001", "other"), _message("6591000003", "m3", batch_no=2)]
        verdict = check_campaign(rows, messages, self.EXPECTED, "c")
        assert len(verdict.id_mismatches) == 3 and not verdict.ok

    def test_failed_rows_need_a_reason_and_no_message(self) -> None:
        """A failed row without an error code, or with a delivered message, breaks the invariant."""
        rows = _rows(("6591000001", "failed", 1, None, None), ("6591000002", "failed", 1, None, "X"),
                     ("6591000003", "accepted", 1, "m3", None))
        verdict = check_campaign(rows, [_message("6591000002", "m2"), _message("6591000003", "m3")],
                                 self.EXPECTED, "c")
        assert verdict.failed_without_reason and verdict.failed_but_delivered and not verdict.ok

    def test_a_message_to_a_number_outside_the_campaign_is_a_stray(self) -> None:
        """An invalid row must never reach the gateway."""
        rows = _rows(*((n, "accepted", 1, f"m{n}", None) for n in sorted(self.EXPECTED)))
        messages = [_message(n, f"m{n}") for n in sorted(self.EXPECTED)] + [_message("8613800138000", "x")]
        verdict = check_campaign(rows, messages, self.EXPECTED, "c")
        assert verdict.strays == ["861380013****"] and not verdict.ok
