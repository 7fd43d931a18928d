"""\"Retry failed only\": which failed deliveries are worth a second message, and reopening them.

Alibaba does not publish the catalogue of receipt `ErrorCode`s (alibaba-sms-api.md §12 item 8), so the
lists below are a policy. They use the carrier-style names that SMS gateways commonly report, and the
campaign can pass its own codes instead. A code that is in neither list is **not** retried: when in doubt,
no second message.

Retryable: the recipient exists and the failure was temporary.

| code | meaning |
|---|---|
| `ABSENT_SUBSCRIBER` | handset off or out of coverage until the validity period ran out |
| `HANDSET_BUSY`, `MEMORY_CAPACITY_EXCEEDED` | handset busy, or its message store full |
| `CARRIER_BUSY`, `NETWORK_ERROR`, `NETWORK_TIMEOUT`, `SYSTEM_ERROR` | carrier or gateway side, temporary |
| `EXPIRED` (and every `expired` receipt, Status 6) | validity ran out before the carrier: not charged |

Permanent: a second message fails the same way, or must not be sent.

| code | meaning |
|---|---|
| `UNKNOWN_SUBSCRIBER`, `INVALID_NUMBER`, `MOBILE_NUMBER_ILLEGAL` | the number does not exist |
| `BLACKLISTED`, `BLACKLIST`, `USER_OPTED_OUT` | the recipient or the number is blocked, or opted out |
| `CONTENT_REJECTED`, `SPAM_REJECTED`, `SMS_CONTENT_ILLEGAL` | the carrier refused the content |
| `NOT_SUPPORTED_COUNTRY`, `ROAMING_RESTRICTED` | the destination cannot be reached from this account |
| `SP_UNKNOW_ERROR`, `UNDELIV`, `REJECTD` | unspecified: not retried (no second message when in doubt) |
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from globe_sms.ledger import Ledger
from globe_sms.receipts.model import DeliveryStatus
from globe_sms.receipts.store import ReceiptStore

RETRYABLE_RECEIPT_CODES = frozenset(
    {
        "ABSENT_SUBSCRIBER",
        "HANDSET_BUSY",
        "MEMORY_CAPACITY_EXCEEDED",
        "CARRIER_BUSY",
        "NETWORK_ERROR",
        "NETWORK_TIMEOUT",
        "SYSTEM_ERROR",
        "EXPIRED",
    }
)
PERMANENT_RECEIPT_CODES = frozenset(
    {
        "UNKNOWN_SUBSCRIBER",
        "INVALID_NUMBER",
        "MOBILE_NUMBER_ILLEGAL",
        "BLACKLISTED",
        "BLACKLIST",
        "USER_OPTED_OUT",
        "CONTENT_REJECTED",
        "SPAM_REJECTED",
        "SMS_CONTENT_ILLEGAL",
        "NOT_SUPPORTED_COUNTRY",
        "ROAMING_RESTRICTED",
        "SP_UNKNOW_ERROR",
        "UNDELIV",
        "REJECTD",
    }
)


def is_retryable(
    status: str | DeliveryStatus,
    error_code: str | None,
    retryable_codes: Collection[str] = RETRYABLE_RECEIPT_CODES,
    *,
    include_expired: bool = True,
) -> bool:
    """Whether a failed delivery (`undelivered` / `expired`) may be sent again."""
    state = DeliveryStatus(status)
    if not state.failed:
        return False
    if state is DeliveryStatus.EXPIRED and include_expired:
        return True
    codes = {code.upper() for code in retryable_codes}
    return (error_code or "").strip().upper() in codes


def classify(status: str | DeliveryStatus, error_code: str | None) -> str:
    """`retryable`, `permanent` or `unrecognised` under the default lists (for reports)."""
    if is_retryable(status, error_code):
        return "retryable"
    return "permanent" if (error_code or "").strip().upper() in PERMANENT_RECEIPT_CODES else "unrecognised"


@dataclass(frozen=True)
class Reopened:
    """What `reopen_failed_deliveries` did."""

    failed: int  # accepted rows whose current message failed
    phones: list[str] = field(default_factory=list)  # reopened to pending, registration order
    skipped_codes: dict[str, int] = field(default_factory=dict)  # failed but not retryable, by code


def reopen_failed_deliveries(
    store: ReceiptStore,
    ledger: Ledger,
    campaign_id: str,
    retryable_codes: Collection[str] | None = None,
    *,
    include_expired: bool = True,
    dry_run: bool = False,
) -> Reopened:
    """Reopen (accepted -> pending) the recipients whose receipts say they failed with a retryable code.

    Orphan receipts are joined first, so a receipt that beat its ledger write still counts.

    Args:
        store: the receipts.
        ledger: the send ledger of the same database.
        campaign_id: the campaign.
        retryable_codes: receipt error codes to retry; None: `RETRYABLE_RECEIPT_CODES`.
        include_expired: also retry `expired` receipts (never handed to the carrier), whatever their code.
        dry_run: name the numbers that would be reopened, and change nothing.
    """
    codes = RETRYABLE_RECEIPT_CODES if retryable_codes is None else frozenset(retryable_codes)
    store.adopt_orphans()
    failed = store.failed_deliveries(campaign_id)
    wanted: list[str] = []
    skipped: dict[str, int] = {}
    would: list[str] = []
    for message_id, phone, status, code in failed:
        if is_retryable(status, code, codes, include_expired=include_expired):
            wanted.append(message_id)
            would.append(phone)
        else:
            skipped[code or "(none)"] = skipped.get(code or "(none)", 0) + 1
    phones = would if dry_run else ledger.reopen_undelivered(campaign_id, wanted)
    return Reopened(len(failed), phones, skipped)
