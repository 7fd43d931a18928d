"""Typed results of the three operations.

Alibaba returns every field as a string, and `FailedList` / `MessageIdList` as JSON strings inside the JSON
body: the parsers here do the second decode and the integer conversion once, so no caller ever does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ResponseFormatError(ValueError):
    """A 200 response body that does not have the documented shape."""


def _json_list(value: Any, name: str) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, list):  # the SDK passes values through untyped; be as lenient
        return tuple(str(item) for item in value)
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError) as exc:
        raise ResponseFormatError(f"{name} is not a JSON array string: {value!r:.80}") from exc
    if not isinstance(decoded, list):
        raise ResponseFormatError(f"{name} is not a JSON array: {value!r:.80}")
    return tuple(str(item) for item in decoded)


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ResponseFormatError(f"{name} is not an integer: {value!r:.40}") from exc


@dataclass(frozen=True)
class BatchSendResult:
    """The answer to one BatchSendMessageToGlobe call, joined back to the numbers that were sent.

    `accepted` maps each number that is not in `FailedList` to its message id, pairing `MessageIdList` with
    the accepted numbers in `To` order; when the two lists differ in length the ids cannot be paired and the
    numbers map to `None` (they were still accepted).
    """

    request_id: str
    response_code: str
    description: str
    success_count: int
    failed: tuple[str, ...]
    message_ids: tuple[str, ...]
    sender: str | None = None
    accepted: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], to: Sequence[str]) -> BatchSendResult:
        """Parse an OK body for the numbers in `to`."""
        failed = _json_list(body.get("FailedList"), "FailedList")
        message_ids = _json_list(body.get("MessageIdList"), "MessageIdList")
        failed_set = set(failed)
        accepted_numbers = [number for number in to if number not in failed_set]
        if len(message_ids) == len(accepted_numbers):
            accepted: dict[str, str | None] = dict(zip(accepted_numbers, message_ids, strict=True))
        else:
            accepted = dict.fromkeys(accepted_numbers)
        return cls(
            request_id=str(body.get("RequestId", "")),
            response_code=str(body.get("ResponseCode", "")),
            description=str(body.get("ResponseDescription", "")),
            success_count=_int(body.get("SuccessCount", len(accepted)), "SuccessCount"),
            failed=failed,
            message_ids=message_ids,
            sender=body.get("From"),
            accepted=accepted,
        )


@dataclass(frozen=True)
class NumberDetail:
    """Where a number is: country, region and carrier as Alibaba names them."""

    country: str | None = None
    region: str | None = None
    carrier: str | None = None

    @classmethod
    def from_body(cls, value: Any) -> NumberDetail:
        data = value if isinstance(value, Mapping) else {}
        return cls(country=data.get("Country"), region=data.get("Region"), carrier=data.get("Carrier"))


@dataclass(frozen=True)
class SendResult:
    """The answer to one SendMessageToGlobe call."""

    request_id: str
    response_code: str
    description: str
    message_id: str
    to: str
    segments: int
    sender: str | None = None
    number_detail: NumberDetail = field(default_factory=NumberDetail)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SendResult:
        return cls(
            request_id=str(body.get("RequestId", "")),
            response_code=str(body.get("ResponseCode", "")),
            description=str(body.get("ResponseDescription", "")),
            message_id=str(body.get("MessageId", "")),
            to=str(body.get("To", "")),
            segments=_int(body.get("Segments", 1), "Segments"),
            sender=body.get("From"),
            number_detail=NumberDetail.from_body(body.get("NumberDetail")),
        )


# QueryMessage `Status`: 1 sent, 2 failed, 3 being sent (the webhook also uses 6 for expired).
MESSAGE_STATUS = {"1": "sent", "2": "failed", "3": "sending", "6": "expired"}


@dataclass(frozen=True)
class QueryResult:
    """The answer to one QueryMessage call."""

    request_id: str
    message_id: str
    to: str
    status: str
    error_code: str | None
    error_description: str | None
    send_date: str | None
    receive_date: str | None
    message: str | None = None
    number_detail: NumberDetail = field(default_factory=NumberDetail)

    @property
    def status_name(self) -> str:
        """`sent`, `failed`, `sending`, `expired`, or `unknown:<code>`."""
        return MESSAGE_STATUS.get(self.status, f"unknown:{self.status}")

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> QueryResult:
        return cls(
            request_id=str(body.get("RequestId", "")),
            message_id=str(body.get("MessageId", "")),
            to=str(body.get("To", "")),
            status=str(body.get("Status", "")),
            error_code=body.get("ErrorCode"),
            error_description=body.get("ErrorDescription"),
            send_date=body.get("SendDate"),
            receive_date=body.get("ReceiveDate"),
            message=body.get("Message"),
            number_detail=NumberDetail.from_body(body.get("NumberDetail")),
        )
