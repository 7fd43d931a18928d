"""The API operations of the emulated gateway and their business rules: `HANDLERS`.

`BatchSendMessageToGlobe`, `SendMessageToGlobe` and `QueryMessage`, each a function of a verified `Call`
and the `EmulatorState` that returns an `Outcome` or raises a `GatewayError` / `BusinessError`
(`answers.py`). BatchSendMessageToGlobe first applies flow control (400 `Throttling.User` when a call of
the same AccessKeyId comes sooner than 1/rate seconds after the last admitted one), then the fault
(`faults.py`), then the business checks, whose failures are HTTP 200 with a `ResponseCode` other than `OK`.
SendMessageToGlobe does the same with its own limit, separate from the batch's: at most
`single_calls_per_second` (2,000) admitted calls of an AccessKeyId in any rolling second, answered
`Throttling.User` above it, exactly as the batch; QueryMessage likewise when `query_calls_per_second` is set.

Choices where the documentation is silent (alibaba-sms-api.md §12): `Message` may be a JSON array parallel
to `To` or a plain text for everyone; bad numbers (mainland 86, non-digits, under 7 or over 15 digits, a
leading 0) go to `FailedList` and get no message id; `MessageIdList` holds one id per accepted number, in
`To` order. SendMessageToGlobe answers a mainland number with `NOT_SUPPORTED_COUNTRY` (the current code
list's "destination country unsupported"; the legacy lists said `isv.COUNTRY_RESTRICTED`) and a malformed
one with `MOBILE_NUMBER_ILLEGAL`. Delivery outcomes, which QueryMessage reports, come from `receipts.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from alibaba_sms.emulator.answers import (
    DESCRIPTIONS,
    BusinessError,
    GatewayError,
    Outcome,
    business_outcome,
    compact_json,
    missing,
)
from alibaba_sms.emulator.call import Call
from alibaba_sms.emulator.faults import OK, Fault
from alibaba_sms.emulator.receipts import ALIBABA_TZ
from alibaba_sms.emulator.state import BATCH_ACTION, EmulatorState

SEND_ACTION = "SendMessageToGlobe"
MESSAGE_TYPES = ("NOTIFY", "MKT", "OTP")
THROTTLED = ("Throttling.User", "Request was denied due to user flow control.")
_NUMBER = re.compile(r"[1-9][0-9]{6,14}")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")  # each costs two septets
_GSM7_ALL = frozenset(_GSM7 | _GSM7_EXTENDED)
_COUNTRIES = (  # prefix, Country, Region, Carrier
    ("852", "Hongkong, China", "HongKong", "CMI"),
    ("853", "Macao, China", "Macao", "CTM"),
    ("886", "Taiwan, China", "Taiwan", "Chunghwa Telecom"),
    ("65", "Singapore", "Singapore", "Singtel"),
    ("60", "Malaysia", "Malaysia", "Maxis"),
    ("63", "Philippines", "Philippines", "Globe"),
    ("1", "United States", "United States", "Verizon"),
)


# --- numbers, senders and texts -----------------------------------------------------------------------------


def deliverable(number: str) -> bool:
    """Digits only, 7-15 of them, no leading 0, and not Chinese mainland (86)."""
    return bool(_NUMBER.fullmatch(number)) and not number.startswith("86")


def valid_sender(sender: str) -> bool:
    """Letters and digits only; at most 11 with letters, at most 15 digits only."""
    return sender.isascii() and sender.isalnum() and len(sender) <= (15 if sender.isdigit() else 11)


def segments(text: str) -> int:
    """Billed segments: GSM-7 160 single / 153 per part, else UCS-2 70 / 67 (UTF-16 code units)."""
    chars = set(text)
    if chars <= _GSM7_ALL:  # set operations, not a loop per character: this runs on every call
        units, single, part = len(text) + sum(text.count(char) for char in chars & _GSM7_EXTENDED), 160, 153
    else:
        units, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


def number_detail(number: str) -> dict[str, str]:
    """`NumberDetail` for a number, from a small table of dialing codes."""
    for prefix, country, region, carrier in _COUNTRIES:
        if number.startswith(prefix):
            return {"Country": country, "Region": region, "Carrier": carrier}
    return {"Country": "Unknown", "Region": "Unknown", "Carrier": "Unknown"}


_OK_DESCRIPTION = compact_json(DESCRIPTIONS["OK"])
_DETAIL_JSON: dict[str, str] = {}  # compact JSON of each `number_detail` answer, by its country


def send_answer(request_id: str, message_id: str, to: str, sender: str, segments: int) -> Outcome:
    """SendMessageToGlobe's OK answer, its JSON written from a template: every call makes one, and
    `compact_json` costs more than the rest of the answer. Only values that need no JSON escaping go into it
    as they are (a request id and digits; a sender of ASCII letters and digits, as `valid_sender` lets
    through, else the body is encoded the generic way); the rest is encoded once
    (tests/unit/test_emulator_wire.py compares it with `compact_json` of the body)."""
    detail = number_detail(to)
    detail_json = _DETAIL_JSON.get(detail["Country"])
    if detail_json is None:
        detail_json = _DETAIL_JSON[detail["Country"]] = compact_json(detail)
    body = {
        "ResponseCode": "OK",
        "ResponseDescription": DESCRIPTIONS["OK"],
        "RequestId": request_id,
        "MessageId": message_id,
        "To": to,
        "From": sender,
        "Segments": str(segments),
        "NumberDetail": detail,
    }
    if sender and not (sender.isascii() and sender.isalnum()):
        return Outcome(200, "OK", body)
    text = (
        f'{{"ResponseCode":"OK","ResponseDescription":{_OK_DESCRIPTION},"RequestId":"{request_id}",'
        f'"MessageId":"{message_id}","To":"{to}","From":"{sender}","Segments":"{segments}",'
        f'"NumberDetail":{detail_json}}}'
    )
    return Outcome(200, "OK", body, json=text)


# --- parameters ---------------------------------------------------------------------------------------------


def required(params: dict[str, str], name: str) -> str:
    """A required operation parameter; absent or empty is the gateway's `Missing{Name}`."""
    value = params.get(name, "")
    if not value:
        raise missing(name)
    return value


def check_options(params: dict[str, str]) -> tuple[str | None, str | None]:
    """Validate `From`, `Type`, `ValidityPeriod` and `TaskId`; return (sender, type)."""
    sender, message_type = params.get("From") or None, params.get("Type") or None
    if sender is not None and not valid_sender(sender):
        raise BusinessError("INVALID_SENDERID")
    if message_type is not None and message_type not in MESSAGE_TYPES:
        raise BusinessError("INVALID_PARAMETERS")
    validity = params.get("ValidityPeriod") or ""
    if validity and not (validity.isascii() and validity.isdigit() and int(validity) > 0):
        raise BusinessError("INVALID_PARAMETERS")
    if len(params.get("TaskId") or "") > 255:
        raise BusinessError("PARAM_LENGTH_LIMIT")
    return sender, message_type


def json_list(raw: str) -> list[Any] | None:
    """The items of a JSON-array string, or None for anything else."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def json_strings(raw: str) -> list[str] | None:
    """A JSON-array string of strings, or None."""
    value = json_list(raw)
    return value if value is not None and all(isinstance(item, str) for item in value) else None


def message_texts(raw: str, count: int) -> list[str]:
    """Per-recipient texts: a JSON array parallel to `To`, or one plain text for all."""
    value = json_list(raw)
    if value is None:
        return [raw] * count
    if len(value) != count or not all(isinstance(text, str) and text for text in value):
        raise BusinessError("INVALID_PARAMETERS")
    return value


def numbers_in(call: Call) -> int:
    """How many numbers a call carries as sent, before any check (for the journal)."""
    if call.action == BATCH_ACTION:
        return len(json_strings(call.params.get("To", "")) or [])
    if call.action == SEND_ACTION:
        return int(bool(call.params.get("To")))
    return 0


# --- the operations -----------------------------------------------------------------------------------------


def apply_fault(call: Call, fault: Fault) -> Outcome | None:
    """Journal a call's fault and answer it: raise the refusal it means (throttle, 500, business), return
    the 503 answer, or None when the call goes on to be processed."""
    call.fault = None if fault.kind == "ok" else fault.label()
    if fault.kind == "throttle":
        raise GatewayError(400, *THROTTLED)
    if fault.kind == "500":  # nothing recorded, yet a client must treat a 500 as "may have been processed"
        raise GatewayError(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error, exception or failure.",
        )
    if fault.kind == "503":
        return Outcome(503, "ServiceUnavailable", text="Service Unavailable")
    if fault.kind == "business":
        raise BusinessError(fault.code)
    return None


def ok(call: Call, description: str | None = None, **fields: object) -> Outcome:
    """A successful business result carrying `fields`."""
    return business_outcome(call.request_id, "OK", description, **fields)


def send_batch(call: Call, state: EmulatorState) -> Outcome:
    """BatchSendMessageToGlobe: flow control, fault, checks, then accept the deliverable numbers."""
    params = call.params
    numbers, text_raw = json_strings(required(params, "To")), required(params, "Message")
    # Single event-loop thread and no await from check to admission: concurrent calls cannot both slip in.
    if not state.batch_call_allowed(call.access_key_id):
        raise GatewayError(400, *THROTTLED)
    fault = state.faults.next_batch_fault()
    if fault.kind != "throttle":  # a throttled call is not admitted; a 500, 503 or business refusal is
        state.admit_batch_call(call.access_key_id)
    refused = apply_fault(call, fault)
    if refused is not None:
        return refused
    if not numbers:
        raise BusinessError("INVALID_JSON_PARAM")
    if len(numbers) > state.config.max_numbers_per_call:
        raise BusinessError("MOBILE_COUNT_OVER_LIMIT")
    texts = message_texts(text_raw, len(numbers))
    sender, message_type = check_options(params)
    items = [(n, text, segments(text)) for n, text in zip(numbers, texts, strict=True) if deliverable(n)]
    accepted = state.accept_messages(
        BATCH_ACTION, call.request_id, items, task_id=call.task_id, sender=sender, message_type=message_type
    )
    answer = ok(
        call,
        FailedList=compact_json([n for n in numbers if not deliverable(n)]),
        MessageIdList=compact_json([record.message_id for record in accepted]),
        SuccessCount=str(len(accepted)),
        From=sender or "",
    )
    return replace(answer, delay=fault.seconds, drop=fault.kind == "drop_after_accept")


def send_one(call: Call, state: EmulatorState) -> Outcome:
    """SendMessageToGlobe: flow control (its own rolling window), fault, checks, then one number, one text."""
    to, text = required(call.params, "To"), required(call.params, "Message")
    if not state.admit_call(SEND_ACTION, call.access_key_id):
        raise GatewayError(400, *THROTTLED)
    fault = state.faults.next_single_fault()
    refused = None if fault is OK else apply_fault(call, fault)
    if refused is not None:
        return refused
    sender, message_type = check_options(call.params)
    if not _NUMBER.fullmatch(to):
        raise BusinessError("MOBILE_NUMBER_ILLEGAL")
    if not deliverable(to):
        raise BusinessError("NOT_SUPPORTED_COUNTRY")
    [record] = state.accept_messages(
        call.action,
        call.request_id,
        [(to, text, segments(text))],
        task_id=call.task_id,
        sender=sender,
        message_type=message_type,
    )
    answer = send_answer(call.request_id, record.message_id, to, sender or "", record.segments)
    if fault is OK:
        return answer
    return replace(answer, delay=fault.seconds, drop=fault.kind == "drop_after_accept")


def query_message(call: Call, state: EmulatorState) -> Outcome:
    """QueryMessage: an accepted message, with the outcome its receipt carries (`receipts.py`)."""
    message_id = required(call.params, "MessageId")
    if not state.admit_call(call.action, call.access_key_id):
        raise GatewayError(400, *THROTTLED)
    record = state.message(message_id)
    if record is None:
        raise BusinessError("DATA_NOT_EXIST")
    sent = datetime.fromtimestamp(record.time, ALIBABA_TZ)
    outcome = state.receipts.query_fields(record)
    return ok(
        call,
        "OK",
        MessageId=record.message_id,
        To=record.to,
        Message=record.message,
        Status=outcome["Status"],
        ErrorCode=outcome["ErrorCode"],
        ErrorDescription=outcome["ErrorDescription"],
        SendDate=format_datetime(sent),
        ReceiveDate=outcome["ReceiveDate"],
        NumberDetail=number_detail(record.to),
    )


HANDLERS: dict[str, Callable[[Call, EmulatorState], Outcome]] = {
    BATCH_ACTION: send_batch,
    SEND_ACTION: send_one,
    "QueryMessage": query_message,
}
