"""Delivery receipts: what became of each message after the gateway accepted it.

"Accepted" is not "delivered". This package closes the loop between the send ledger and the recipients:

```
Alibaba push ──► receiver (POST, JSON array) ──► ReceiptStore.record ──► delivery_receipts (by MessageId)
                                                        ▲                        │ joins send_ledger through
QueryMessage ◄── reconcile (overdue, ≤300/s) ───────────┘                        │ MessageId and TaskId
                                                                                 ▼
                         report: delivered / failed by code / pending, by country ──► retry failed only:
                                                                                      accepted ─► pending
```

| module | holds |
|---|---|
| `model` | `Receipt` (both spellings), `DeliveryStatus` (`sending` < `unknown` < final) and `merge` |
| `store` | the `delivery_receipts` table and `ReceiptStore`: idempotent upserts, orphans, reads |
| `receiver` | the Starlette endpoint (`globe-sms receipts serve`), `ReceiverServer` for threads |
| `auth` | `ReceiverToken`, the push URL's shared secret (`/receipts/<token>`), and log redaction |
| `reconcile` | QueryMessage for overdue messages; final `unknown` after 72 h |
| `report` | `DeliveryReport` by country and error code |
| `retry` | the retryable receipt codes, and `reopen_failed_deliveries` |
"""

from __future__ import annotations

from globe_sms.receipts.auth import ReceiverToken
from globe_sms.receipts.model import (
    DeliveryStatus,
    Receipt,
    ReceiptFormatError,
    delivery_status,
    merge,
    parse_receipts,
)
from globe_sms.receipts.report import DeliveryReport, build_report, summarise
from globe_sms.receipts.retry import (
    PERMANENT_RECEIPT_CODES,
    RETRYABLE_RECEIPT_CODES,
    is_retryable,
    reopen_failed_deliveries,
)
from globe_sms.receipts.store import ApplyResult, ReceiptStore, delivery_receipts

__all__ = [
    "PERMANENT_RECEIPT_CODES",
    "RETRYABLE_RECEIPT_CODES",
    "ApplyResult",
    "DeliveryReport",
    "DeliveryStatus",
    "Receipt",
    "ReceiptFormatError",
    "ReceiptStore",
    "ReceiverToken",
    "build_report",
    "delivery_receipts",
    "delivery_status",
    "is_retryable",
    "merge",
    "parse_receipts",
    "reopen_failed_deliveries",
    "summarise",
]
