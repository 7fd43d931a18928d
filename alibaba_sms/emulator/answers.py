"""How the emulated gateway answers: `Outcome`, the two kinds of refusal, and their rendering.

Verification and the operations either return an `Outcome` or raise one of two errors, each of which
knows its own outcome:

    GatewayError   a gateway (POP) error: HTTP 4xx/5xx, body `RequestId`, `HostId`, `Code`, `Message`,
                   `Recommend`
    BusinessError  a business result other than OK: HTTP 200, body `ResponseCode`, `ResponseDescription`,
                   `RequestId`

`render` writes an outcome in the call's format: V3 answers in JSON; V1 answers in JSON when `Format=JSON`
(any case) and, like the real gateway, in XML otherwise, as an `Answer` (status, headers, bytes) sent
straight over ASGI; `Answer.drop` carries the fault `drop_after_accept`: half the body, then a dropped
connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import httpx
from starlette.types import Send

from alibaba_sms.emulator.call import Call

DESCRIPTIONS = {
    "OK": "The SMS Send Request was accepted",
    "INVALID_SENDERID": "The sender ID is invalid or has not been approved.",
    "INVALID_PARAMETERS": "The parameters are invalid.",
    "INVALID_JSON_PARAM": "The parameter is empty or is not a valid JSON array string.",
    "MOBILE_COUNT_OVER_LIMIT": "The number of mobile numbers exceeds the limit.",
    "MOBILE_NUMBER_ILLEGAL": "The mobile number is invalid.",
    "NOT_SUPPORTED_COUNTRY": "The destination country or region is not supported.",
    "PARAM_LENGTH_LIMIT": "The parameter exceeds the length limit.",
    "DATA_NOT_EXIST": "The record does not exist.",
    "AMOUNT_NOT_ENOUGH": "The account balance is insufficient.",
    "QPS_LIMIT_CONTROL": "The QPS limit of the user is exceeded.",
    "SYSTEM_ERROR": "A system error occurred. Try again later.",
}


@dataclass(frozen=True)
class Outcome:
    """How to answer: status, code, body (or plain text), and the accept-then-misbehave faults."""

    status: int
    code: str
    body: dict[str, object] = field(default_factory=dict)
    message: str = ""
    text: str | None = None
    delay: float = 0.0
    drop: bool = False
    json: str | None = None  # `body` already written as compact JSON (the SendMessageToGlobe answer)


def business_outcome(request_id: str, code: str, description: str | None = None, **fields: object) -> Outcome:
    """An HTTP 200 business result with `ResponseCode` = `code`, then `fields`."""
    body = {
        "ResponseCode": code,
        "ResponseDescription": DESCRIPTIONS.get(code, code) if description is None else description,
        "RequestId": request_id,
    }
    return Outcome(200, code, {**body, **fields})


class GatewayError(Exception):
    """A gateway (POP) error: HTTP 4xx/5xx with `Code` and `Message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message

    def outcome(self, request_id: str) -> Outcome:
        """The answer to this error (`render` adds `RequestId` and the rest of the body)."""
        return Outcome(self.status, self.code, message=self.message)


class BusinessError(Exception):
    """A business result other than OK: HTTP 200 with this `ResponseCode`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def outcome(self, request_id: str) -> Outcome:
        """The answer to this error, described from `DESCRIPTIONS` (else by its code)."""
        return business_outcome(request_id, self.code)


def missing(name: str, shown: str | None = None) -> GatewayError:
    """The gateway's error for an absent required parameter (`MissingTo`, `MissingTimestamp`, ...)."""
    return GatewayError(400, f"Missing{name}", f"{shown or name} is mandatory for this action.")


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised after a partial response so that the server drops the connection (fault `drop_after_accept`).

    It subclasses httpx's own error so that an in-process client (`httpx.ASGITransport`) sees the same
    exception class as one talking to the emulator over a socket.
    """


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one encoder, not one per call


def compact_json(value: object) -> str:
    """JSON as Alibaba writes it, e.g. `["1","2"]`: no spaces, non-ASCII kept as is."""
    return _COMPACT.encode(value)


def to_xml(root: str, body: dict[str, object]) -> str:
    """The XML form of a flat (or one-level nested) response body."""

    def element(name: str, value: object) -> str:
        if isinstance(value, dict):
            inner = "".join(element(key, item) for key, item in value.items())
        else:
            inner = escape(str(value))
        return f"<{name}>{inner}</{name}>"

    return "<?xml version='1.0' encoding='UTF-8'?>" + element(root, body)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as bytes, ready for ASGI; `drop` sends half the body, then drops the connection."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    drop: bool = False

    async def send(self, send: Send) -> None:
        """Send it over ASGI (`drop`: the status line, headers with the full length and half the body, then
        `DroppedConnection`)."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        if not self.drop:
            await send({"type": "http.response.body", "body": self.body})
            return
        await send(
            {"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True}
        )
        raise DroppedConnection("emulator fault drop_after_accept: connection dropped mid-response")


_JSON = b"application/json;charset=utf-8"
_XML = b"text/xml;charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"


def render(call: Call, outcome: Outcome, host_id: str) -> Answer:
    """Turn an outcome into the HTTP answer, in the call's format; `host_id` goes into error bodies."""
    if outcome.text is not None:
        content, media = outcome.text.encode(), _TEXT
    else:
        body = outcome.body
        if outcome.status >= 400:
            body = {
                "RequestId": call.request_id,
                "HostId": host_id,
                "Code": outcome.code,
                "Message": outcome.message,
                "Recommend": f"https://api.aliyun.com/troubleshoot?q={outcome.code}&product=Dysmsapi",
            }
        if call.fmt == "XML":
            root = "Error" if outcome.status >= 400 else f"{call.action}Response"
            content, media = to_xml(root, body).encode(), _XML
        else:
            text = outcome.json if outcome.json is not None and outcome.status < 400 else compact_json(body)
            content, media = text.encode(), _JSON
    headers = [
        (b"x-acs-request-id", call.request_id.encode("latin-1")),
        (b"content-length", str(len(content)).encode()),
        (b"content-type", media),
    ]
    return Answer(outcome.status, headers, content, outcome.drop)
