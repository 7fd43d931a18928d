"""The exactly-once invariants, checked from the emulator's journal file and the send ledger.

The gateway's journal is the truth about what was sent: one `message` line per number it accepted (a
message is billed, and delivered, from the moment it is accepted). The ledger is what globe-sms believes.
For every valid recipient of the campaign:

| ledger row | journal messages for the number |
|---|---|
| `accepted` | exactly 1, with the row's MessageId and the row's batch TaskId |
| `failed` (with an error code) | 0: the gateway refused it |
| `unknown` | 0 or 1 (see below) |
| `pending`, `submitting`, no row | **lost**: the campaign claims to be done with it unsent |

An `unknown` row lost its answer: a crash between the call and the ledger write (`Interrupted`), a read
timeout, a dropped connection, an HTTP 500. The ledger never got a MessageId, so there is no id to compare;
1 message means it was in fact delivered, 0 that it was not, and more than 1 is a duplicate like any other.

Any number with 2 or more messages is a **duplicate**, whatever its row says. A message to a number that is
not a valid recipient of the campaign is a **stray** (an invalid row reached the gateway).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from globe_sms.ids import parse_task_id, task_id
from globe_sms.ledger import Ledger
from globe_sms.masking import mask_number

TERMINAL = ("accepted", "failed", "unknown")


def journal_messages(journal_path: Path, campaign_id: str) -> list[dict[str, Any]]:
    """The campaign's `message` lines of a journal file (matched by TaskId), in the order written."""
    messages = []
    with journal_path.open(encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            if entry.get("kind") != "message" or not entry.get("task_id"):
                continue
            try:
                owner, _ = parse_task_id(entry["task_id"])
            except ValueError:
                continue
            if owner == campaign_id:
                messages.append(entry)
    return messages


def journal_requests(journal_path: Path) -> list[dict[str, Any]]:
    """Every `request` line of a journal file."""
    with journal_path.open(encoding="utf-8") as handle:
        return [entry for line in handle if (entry := json.loads(line)).get("kind") == "request"]


@dataclass
class Verdict:
    """The invariants' outcome for one campaign; `ok` when none is broken. Numbers are kept masked."""

    expected: int
    statuses: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    unknown_delivered: int = 0
    unknown_not_delivered: int = 0
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    id_mismatches: list[str] = field(default_factory=list)
    failed_but_delivered: list[str] = field(default_factory=list)
    failed_without_reason: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.lost
            or self.id_mismatches
            or self.failed_but_delivered
            or self.failed_without_reason
            or self.strays
        )

    def problems(self) -> dict[str, list[str]]:
        """The broken invariants, each with its (masked) numbers."""
        named = {
            "duplicates": self.duplicates,
            "lost": self.lost,
            "id_mismatches": self.id_mismatches,
            "failed_but_delivered": self.failed_but_delivered,
            "failed_without_reason": self.failed_without_reason,
            "strays": self.strays,
        }
        return {name: numbers for name, numbers in named.items() if numbers}

    def figures(self) -> dict[str, Any]:
        """Counts for reports: no number appears."""
        return {
            "expected": self.expected,
            "accepted": self.statuses.get("accepted", 0),
            "failed": self.statuses.get("failed", 0),
            "unknown": self.statuses.get("unknown", 0),
            "unknown_delivered": self.unknown_delivered,
            "unknown_not_delivered": self.unknown_not_delivered,
            "messages": self.messages,
            "duplicates": len(self.duplicates),
            "lost": len(self.lost),
            "id_mismatches": len(self.id_mismatches),
            "failed_but_delivered": len(self.failed_but_delivered),
            "strays": len(self.strays),
        }


def check_campaign(
    rows: pl.DataFrame, messages: Iterable[Mapping[str, Any]], expected: set[str], campaign_id: str
) -> Verdict:
    """Check the invariants of the module docstring.

    Args:
        rows: the campaign's ledger (`Ledger.rows()`).
        messages: the campaign's journal messages (`journal_messages()`).
        expected: the valid recipients, as the ledger keys them (digits without `+`).
        campaign_id: the campaign.
    """
    by_number: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for message in messages:
        by_number[str(message["to"])].append(message)
    ledger = {row["phone"]: row for row in rows.iter_rows(named=True)}
    verdict = Verdict(expected=len(expected), messages=sum(len(found) for found in by_number.values()))
    for row in ledger.values():
        verdict.statuses[row["status"]] = verdict.statuses.get(row["status"], 0) + 1
    verdict.duplicates = sorted(mask_number(n) for n, found in by_number.items() if len(found) > 1)
    verdict.strays = sorted(mask_number(n) for n in by_number if n not in expected)
    for number in sorted(expected):
        row = ledger.get(number)
        found = by_number.get(number, [])
        status = row["status"] if row else None
        if status not in TERMINAL:
            verdict.lost.append(mask_number(number))
        elif status == "accepted":
            batch_task = task_id(campaign_id, row["batch_no"]) if row["batch_no"] is not None else None
            if (
                len(found) != 1
                or row["message_id"] is None
                or found[0]["message_id"] != row["message_id"]
                or found[0]["task_id"] != batch_task
            ):
                verdict.id_mismatches.append(mask_number(number))
        elif status == "failed":
            if found:
                verdict.failed_but_delivered.append(mask_number(number))
            if not row["error_code"]:
                verdict.failed_without_reason.append(mask_number(number))
        elif len(found) == 1:  # unknown; more than one message is already a duplicate
            verdict.unknown_delivered += 1
        elif not found:
            verdict.unknown_not_delivered += 1
    return verdict


def check(journal_path: Path, ledger_url: str, campaign_id: str, expected: set[str]) -> Verdict:
    """Read the journal file and the ledger, then `check_campaign`."""
    with Ledger(ledger_url) as ledger:
        rows = ledger.rows(campaign_id)
    return check_campaign(rows, journal_messages(journal_path, campaign_id), expected, campaign_id)
