"""Receipts as values: parsing both spellings, the delivery states, and the rule that merges them.

Alibaba's HTTP push (international site) spells fields in camelCase (`MessageId`, `To`, `Status`,
`ErrorCode`, `ErrorDescription`, `SendDate`, `ReceiveDate`, `SmsSize`, `TaskId`); the China site's MNS
variant in snake_case (`message_id`, `to`, `status`, `error_code`, ...). Keys are matched ignoring case and
underscores, so both (and `messageId`) parse alike.

`Status` differs by document (alibaba-sms-api.md §12 item 7), so the mapping is explicit:

| Status | ErrorCode | delivery state |
|---|---|---|
| `1` | any | `delivered` (webhook "sent", QueryMessage "sent") |
| `2` | any | `undelivered` (failed) |
| `6` | any | `expired` (validity period ran out: not sent to the carrier, not charged) |
| `3` | `DELIVERED` / `DELIVRD` / `success` | `delivered` (old MNS documents: "3 delivered") |
| `3`, other | other | `sending` (QueryMessage: "being sent") |
| anything else | | `sending`, the raw Status kept |

States are ranked, and a state only ever moves up (`merge`):

    sending (0)  <  unknown (1)  <  delivered | undelivered | expired (2)

* the same state again is a **duplicate** (Alibaba: "dedupe on MessageId + Status");
* a lower state after a higher one is **stale** (receipts arrive out of order) and is ignored;
* a different rank-2 state after a rank-2 state is a **conflict**: the first one is kept;
* `unknown` is what reconciliation gives a message still unsettled after 72 h; it is final for reports, but
  a real receipt that comes even later still settles it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal

ALIBABA_TZ = timezone(timedelta(hours=8))
DELIVERED_CODES = frozenset({"DELIVERED", "DELIVRD", "SUCCESS"})


class ReceiptFormatError(ValueError):
    """A receipt that cannot be used (no MessageId, or not a JSON object)."""


class DeliveryStatus(StrEnum):
    """Where a message accepted by the gateway stands with its recipient."""

    SENDING = "sending"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"

    @property
    def rank(self) -> int:
        """0 not final; 1 final for want of news (`unknown`); 2 final by the carrier's word."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """Everything but `sending`."""
        return self.rank > 0

    @property
    def failed(self) -> bool:
        """`undelivered` or `expired`: the recipient definitely did not get the message."""
        return self in (DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED)


_RANK = {
    DeliveryStatus.SENDING: 0,
    DeliveryStatus.UNKNOWN: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.UNDELIVERED: 2,
    DeliveryStatus.EXPIRED: 2,
}
FINAL_STATUSES = frozenset(status for status in DeliveryStatus if status.is_final)

Verdict = Literal["new", "advance", "duplicate", "stale", "conflict"]


def merge(current: DeliveryStatus | None, incoming: DeliveryStatus) -> Verdict:
    """What an incoming state does to a message's current one (None: nothing seen yet).

    Only `new` and `advance` change the stored state; the others are counted.
    """
    if current is None:
        return "new"
    if incoming == current:
        return "duplicate"
    if incoming.rank > current.rank:
        return "advance"
    if incoming.rank < current.rank:
        return "stale"
    return "conflict" if current.rank == 2 else "duplicate"


def delivery_status(status: str | None, error_code: str | None) -> DeliveryStatus:
    """Map a receipt's or a QueryMessage answer's `Status` (and `ErrorCode`) to a delivery state."""
    code = (status or "").strip()
    if code == "1":
        return DeliveryStatus.DELIVERED
    if code == "2":
        return DeliveryStatus.UNDELIVERED
    if code == "6":
        return DeliveryStatus.EXPIRED
    if code == "3" and (error_code or "").strip().upper() in DELIVERED_CODES:
        return DeliveryStatus.DELIVERED
    return DeliveryStatus.SENDING


def parse_alibaba_date(value: Any) -> datetime | None:
    """`Thu, 25 Nov 2021 10:25:00 +0800` or `2017-06-01 10:00:00` (China time when no offset) as aware UTC.

    Anything else (empty, malformed) is None: a date is never a reason to drop a receipt.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    moment: datetime | None = None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
            try:
                moment = datetime.strptime(text, layout)
                break
            except ValueError:
                continue
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ALIBABA_TZ)
    return moment.astimezone(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Receipt:
    """One delivery report for one message: from the push, from QueryMessage, or the 72 h timeout."""

    message_id: str
    status: DeliveryStatus
    status_code: str | None = None
    to: str | None = None
    task_id: str | None = None
    error_code: str | None = None
    error_description: str | None = None
    send_date: datetime | None = None
    receive_date: datetime | None = None
    segments: int | None = None

    @classmethod
    def from_fields(cls, item: Any) -> Receipt:
        """Parse one pushed receipt in either spelling.

        Raises:
            ReceiptFormatError: not a JSON object, or no MessageId.
        """
        if not isinstance(item, Mapping):
            raise ReceiptFormatError(f"a receipt must be a JSON object, got {type(item).__name__}")
        fields = {str(key).replace("_", "").lower(): value for key, value in item.items()}
        message_id = _text(fields.get("messageid"))
        if message_id is None:
            raise ReceiptFormatError("a receipt without MessageId")
        status_code = _text(fields.get("status"))
        error_code = _text(fields.get("errorcode"))
        return cls(
            message_id=message_id,
            status=delivery_status(status_code, error_code),
            status_code=status_code,
            to=_text(fields.get("to")),
            task_id=_text(fields.get("taskid")),
            error_code=error_code,
            error_description=_text(fields.get("errordescription")),
            send_date=parse_alibaba_date(fields.get("senddate")),
            receive_date=parse_alibaba_date(fields.get("receivedate")),
            segments=_int(fields.get("smssize")),
        )

    @classmethod
    def from_query(cls, result: Any, task_id: str | None = None) -> Receipt:
        """A receipt from a QueryMessage answer (`alibaba_sms.QueryResult`): Status 1 / 2 / 3."""
        return cls(
            message_id=str(result.message_id),
            status=delivery_status(result.status, result.error_code),
            status_code=_text(result.status),
            to=_text(result.to),
            task_id=task_id,
            error_code=_text(result.error_code),
            error_description=_text(result.error_description),
            send_date=parse_alibaba_date(result.send_date),
            receive_date=parse_alibaba_date(result.receive_date),
        )


def parse_receipts(body: Any) -> tuple[list[Receipt], int]:
    """The receipts of one push body (a JSON array; a lone object is taken as one receipt).

    Returns:
        The usable receipts in body order, and how many items were skipped as unusable.

    Raises:
        ReceiptFormatError: the body is neither an array nor an object.
    """
    if isinstance(body, Mapping):
        body = [body]
    if not isinstance(body, list):
        raise ReceiptFormatError(f"the body must be a JSON array of receipts, got {type(body).__name__}")
    receipts: list[Receipt] = []
    skipped = 0
    for item in body:
        try:
            receipts.append(Receipt.from_fields(item))
        except ReceiptFormatError:
            skipped += 1
    return receipts, skipped
