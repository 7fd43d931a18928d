"""Delivery receipts: parsing both spellings, the merge rule, the store (SQLite and PostgreSQL), the receiver
over real sockets, and the emulator pushing receipts to it.

Reconciliation through QueryMessage and "retry failed only" run flows under the Prefect server: see
tests/integration/test_reconcile.py. The receiver's token (refused pushes, redacted logs):
tests/{unit,integration}/test_receipts_auth.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_receipts.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
import pytest

from globe_sms.receipts import (
    DeliveryStatus,
    Receipt,
    ReceiptFormatError,
    delivery_status,
    merge,
    parse_receipts,
    summarise,
)
from globe_sms.receipts.model import parse_alibaba_date
from globe_sms.receipts.receiver import ReceiverServer
from globe_sms.receipts.retry import is_retryable

D, U, E, S, X = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.EXPIRED,
    DeliveryStatus.SENDING,
    DeliveryStatus.UNKNOWN,
)


def camel(
    message_id: str, status: str, code: str = "", task: str = "", to: str = "85212345678"
) -> dict[str, str]:
    """A receipt as Alibaba's international webhook spells it."""
    return {
        "To": to,
        "SendDate": "Thu, 25 Nov 2021 10:25:00 +0800",
        "ReceiveDate": "Thu, 25 Nov 2021 10:25:33 +0800",
        "Status": status,
        "ErrorCode": code,
        "ErrorDescription": code.lower(),
        "TaskId": task,
        "SmsSize": "2",
        "MessageId": message_id,
    }


def snake(
    message_id: str, status: str, code: str = "", task: str = "", to: str = "85212345678"
) -> dict[str, str]:
    """The same receipt in the China site's snake_case spelling."""
    return {
        "to": to,
        "send_date": "2021-11-25 10:25:00",
        "receive_date": "2021-11-25 10:25:33",
        "status": status,
        "error_code": code,
        "error_description": code.lower(),
        "task_id": task,
        "sms_size": "2",
        "message_id": message_id,
    }


# --- parsing and the merge rule -----------------------------------------------------------------------------


class TestParsing:
    def test_both_spellings_parse_to_the_same_receipt(self) -> None:
        """camelCase and snake_case give equal receipts, dates in UTC (China time assumed without offset)."""
        a = Receipt.from_fields(camel("1001", "2", "ABSENT_SUBSCRIBER", "c-b00001"))
        b = Receipt.from_fields(snake("1001", "2", "ABSENT_SUBSCRIBER", "c-b00001"))
        assert a == b
        assert a.status is U and a.error_code == "ABSENT_SUBSCRIBER" and a.segments == 2
        assert a.send_date == datetime(2021, 11, 25, 2, 25, tzinfo=UTC)
        assert Receipt.from_fields({"messageId": "7", "status": 1}).status is D  # numbers and mixed case too

    @pytest.mark.parametrize(
        ("status", "code", "expected"),
        [
            ("1", "DELIVERED", D),
            ("1", "success", D),
            ("2", "UNKNOWN_SUBSCRIBER", U),
            ("6", "EXPIRED", E),
            ("3", "", S),
            ("3", "DELIVERED", D),
            ("9", "", S),
            (None, None, S),
        ],
    )
    def test_status_codes_map_to_delivery_states(
        self, status: str | None, code: str | None, expected: str
    ) -> None:
        """Webhook 1/2/6, QueryMessage 3 (sending), and old MNS '3 delivered' told apart by ErrorCode."""
        assert delivery_status(status, code) is expected

    def test_unusable_items_are_skipped_and_counted(self) -> None:
        """Items without MessageId (or not objects) are skipped; a lone object is one receipt."""
        receipts, skipped = parse_receipts([camel("1", "1"), {"Status": "1"}, "junk", snake("2", "2")])
        assert [x.message_id for x in receipts] == ["1", "2"] and skipped == 2
        assert parse_receipts(camel("3", "6"))[0][0].status is E
        with pytest.raises(ReceiptFormatError):
            parse_receipts("not a list")

    def test_dates_in_either_layout_or_none(self) -> None:
        """RFC 2822 with offset, the China site's layout, and garbage (None, never an error)."""
        assert parse_alibaba_date("Mon, 24 Dec 2018 16:58:22 +0800") == datetime(
            2018, 12, 24, 8, 58, 22, tzinfo=UTC
        )
        assert parse_alibaba_date("2017-06-01 10:00:00") == datetime(2017, 6, 1, 2, 0, tzinfo=UTC)
        assert parse_alibaba_date("yesterday") is None and parse_alibaba_date("") is None


class TestMerge:
    @pytest.mark.parametrize(
        ("current", "incoming", "verdict"),
        [
            (None, S, "new"),
            (None, D, "new"),
            (S, D, "advance"),
            (S, X, "advance"),
            (X, U, "advance"),
            (D, D, "duplicate"),
            (S, S, "duplicate"),
            (X, X, "duplicate"),
            (D, S, "stale"),
            (U, X, "stale"),
            (X, S, "stale"),
            (D, U, "conflict"),
            (U, E, "conflict"),
        ],
    )
    def test_states_only_move_up(
        self, current: DeliveryStatus | None, incoming: DeliveryStatus, verdict: str
    ) -> None:
        """sending < unknown < delivered | undelivered | expired; the first of two finals is kept."""
        assert merge(current, incoming) == verdict

    def test_retryable_codes(self) -> None:
        """Temporary codes and expired are retried; permanent, unrecognised and delivered are not."""
        assert is_retryable("undelivered", "ABSENT_SUBSCRIBER") and is_retryable("expired", None)
        assert not is_retryable("expired", None, include_expired=False)
        assert not is_retryable("undelivered", "UNKNOWN_SUBSCRIBER")
        assert not is_retryable("undelivered", "SOMETHING_NEW") and not is_retryable(
            "delivered", "ABSENT_SUBSCRIBER"
        )


def test_report_counts_delivered_failed_by_code_and_pending_by_country() -> None:
    """The pure report over ledger rows joined with receipts."""
    rows = pl.DataFrame(
        {
            "phone": [str(i) for i in range(8)],
            "country": ["HK", "HK", "HK", "SG", "SG", "SG", None, "HK"],
            "status": ["accepted"] * 7 + ["failed"],
            "message_id": [str(i) for i in range(7)] + [None],
            "delivery_status": [
                "delivered",
                "undelivered",
                None,
                "delivered",
                "expired",
                "sending",
                "unknown",
                None,
            ],
            "error_code": [
                "DELIVERED",
                "BLACKLISTED",
                None,
                "DELIVERED",
                None,
                None,
                "NO_FINAL_RECEIPT",
                None,
            ],
            "status_code": ["1", "2", None, "1", "6", "3", None, None],
        }
    )
    report = summarise(rows, "c", {"duplicates": 3, "stale": 1, "conflicts": 0, "orphans": 2})
    assert (report.accepted, report.delivered, report.failed, report.pending, report.unknown) == (
        7,
        2,
        2,
        2,
        1,
    )
    assert report.not_accepted == {"failed": 1} and report.retryable_failed == 1
    by_country = {c.country: (c.delivered, c.failed, c.pending, c.unknown) for c in report.by_country}
    assert by_country == {"HK": (1, 1, 1, 0), "SG": (1, 1, 1, 0), "??": (0, 0, 0, 1)}
    assert {(f.country, f.error_code, f.retry) for f in report.failures} == {
        ("HK", "BLACKLISTED", "permanent"),
        ("SG", "EXPIRED", "retryable"),
    }
    markdown = report.to_markdown()
    assert "| HK | 3 | 1 | 1 | 1 | 0 |" in markdown and "2 orphans" in markdown
    assert "| BLACKLISTED | undelivered | 1 | permanent | HK 1 |" in markdown


# --- the receiver over real sockets -------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path, no_proxy: None) -> Iterator[ReceiverServer]:  # noqa: ANN001
    with ReceiverServer(f"sqlite:///{tmp_path / 'ledger.db'}") as server:
        yield server
