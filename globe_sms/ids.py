"""The `TaskId` convention: how a batch is named to Alibaba, so its delivery receipts join back to it.

`task_id(campaign_id, batch_no)` is sent with every batch and echoed in its receipts; the ledger keys batches
by the same pair, and the receipt store reads it back with `parse_task_id`. Nothing here needs the ledger's
database, so the campaign model can name its batches without loading SQLAlchemy.
"""

from __future__ import annotations

__all__ = ["parse_task_id", "task_id"]


def task_id(campaign_id: str, batch_no: int) -> str:
    """The `TaskId` sent with a batch and echoed in its receipts: `f"{campaign_id}-b{batch_no:05d}"`."""
    return f"{campaign_id}-b{batch_no:05d}"


def parse_task_id(value: str) -> tuple[str, int]:
    """Split a `TaskId` made by `task_id` back into `(campaign_id, batch_no)`.

    Raises:
        ValueError: `value` was not made by `task_id`.
    """
    campaign_id, sep, number = value.rpartition("-b")
    if not sep or not campaign_id or len(number) < 5 or not (number.isascii() and number.isdigit()):
        raise ValueError(f"not a globe-sms TaskId: {value!r}")
    return campaign_id, int(number)
