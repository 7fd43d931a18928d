"""The terminal's progress bar (globe_sms/cli.py `progress_fields`) says what it counts."""

from __future__ import annotations

from globe_sms.cli import progress_fields
from globe_sms.progress import SendProgress


def test_the_batch_lane_counts_batches_with_its_recipients_beside() -> None:
    fields = progress_fields(SendProgress("c", 49, 10, 970, 200, 2.0))
    assert fields == {
        "description": "batches", "total": 49, "completed": 10, "recipients": "200/970 recipients",
    }


def test_the_single_and_both_lanes_count_recipients_once() -> None:
    fields = progress_fields(SendProgress("c", 970, 300, 970, 300, 90.0, unit="recipients"))
    assert fields == {"description": "recipients", "total": 970, "completed": 300, "recipients": ""}
