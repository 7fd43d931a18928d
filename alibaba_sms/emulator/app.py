"""The emulated dysmsapi gateway as a Starlette ASGI app: `create_app(config)`.

`POST /` (and `GET /`, as the real RPC gateway allows for V1) serves `BatchSendMessageToGlobe`,
`SendMessageToGlobe` and `QueryMessage`. Parameters may come in the query string (the official SDK), in an
`application/x-www-form-urlencoded` body (our client), or both. Signatures are checked with the very stages
the client signs with (`alibaba_sms.signing`), in this order, each failure a gateway error (HTTP 4xx/5xx
with `RequestId`, `HostId`, `Code`, `Message`, `Recommend`):

    missing common parameter  -> 400 Missing{Name}
    unknown action / version  -> 404 InvalidApi.NotFound
    unknown AccessKeyId       -> 404 InvalidAccessKeyId.NotFound
    other algorithm / method  -> 400 InvalidSignatureMethod
    timestamp format / skew   -> 400 InvalidTimeStamp.Format / InvalidTimeStamp.Expired
    signature or body hash    -> 400 SignatureDoesNotMatch (V1: "... server string to sign is:<StringToSign>")
    nonce reused for the key  -> 400 SignatureNonceUsed

Then, for BatchSendMessageToGlobe only: flow control (400 `Throttling.User` when a call of the same key
comes sooner than 1/rate seconds after the last admitted one), then the fault (`faults.py`), then the
business checks, whose failures are HTTP 200 with a `ResponseCode` other than `OK` (see "Business rules"
below for the choices made where the documentation is silent).

V3 answers in JSON. V1 answers in JSON when `Format=JSON` (any case) and, like the real gateway, in XML
otherwise. Admin endpoints under `/_emulator/` need no signature:
`GET journal`, `GET|POST faults`, `POST reset`, `GET health`, `GET receipts` (see `Gateway`). Delivery
receipts (outcomes, QueryMessage answers, pushes to a callback URL) are in `receipts.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import httpx
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from alibaba_sms import signing
from alibaba_sms.emulator.state import BATCH_ACTION, EmulatorConfig, EmulatorState, RequestRecord

logger = logging.getLogger(__name__)

SIGNATURE_MISMATCH = "Specified signature is not matched with our calculation."
# The doc requires these to be signed; content-type too when the request has one.
V3_REQUIRED_SIGNED = frozenset(
    {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"}
)
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_V3_COMMON = {
    "x-acs-action": "Action",
    "x-acs-version": "Version",
    "x-acs-date": "Timestamp",
    "x-acs-signature-nonce": "SignatureNonce",
}


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised after a partial response so that the server drops the connection (fault `drop_after_accept`).

    It subclasses httpx's own error so that an in-process client (`httpx.ASGITransport`) sees the same
    exception class as one talking to the emulator over a socket.
    """


class DroppedResponse(Response):
    """Sends the status line, headers with the full Content-Length and half the body, then fails."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send(
            {"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True}
        )
        raise DroppedConnection("emulator fault drop_after_accept: connection dropped mid-response")


@dataclass
class Call:
    """One API request as parsed, plus what the journal records about it."""

    method: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    body: bytes
    params: dict[str, str]
    version: str  # "v3", "v1" or "" (unsigned)
    fmt: str  # "JSON" or "XML"
    action: str
    request_id: str
    access_key_id: str = ""
    numbers: int = 0
    task_id: str | None = None
    fault: str | None = None


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


class GatewayError(Exception):
    """A gateway (POP) error: HTTP 4xx/5xx with `Code` and `Message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class BusinessError(Exception):
    """A business result other than OK: HTTP 200 with this `ResponseCode`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def missing(name: str, shown: str | None = None) -> GatewayError:
    """The gateway's error for an absent required parameter (`MissingTo`, `MissingTimestamp`, ...)."""
    return GatewayError(400, f"Missing{name}", f"{shown or name} is mandatory for this action.")


# --- parsing and verification -------------------------------------------------------------------------------


async def parse_call(request: Request, state: EmulatorState) -> Call:
    """Read a request's parameters from its query and form body, and tell its signature version."""
    body = await request.body()
    # The SDK's query uses `+` for spaces while the signature encodes `%20`: decode before canonicalising.
    query = parse_qsl(request.scope["query_string"].decode("utf-8", "replace"), keep_blank_values=True)
    form: list[tuple[str, str]] = []
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    params = dict(query + form)
    if "authorization" in request.headers:
        version = "v3"
    elif {"Signature", "AccessKeyId", "SignatureMethod"} & params.keys():
        version = "v1"
    else:
        version = ""
    fmt = "XML" if version == "v1" and params.get("Format", "XML").upper() != "JSON" else "JSON"
    header_action = "" if version == "v1" else request.headers.get("x-acs-action", "")
    action = header_action or params.get("Action", "")
    return Call(request.method, query, form, body, params, version, fmt, action, state.new_request_id())


def check_action(call: Call, api_version: str) -> None:
    """Only this product's three actions at version 2018-05-01 exist here."""
    if call.action not in HANDLERS or api_version != signing.API_VERSION:
        raise GatewayError(
            404, "InvalidApi.NotFound", "Specified api is not found, please check your url and method."
        )


def known_secret(state: EmulatorState, access_key_id: str) -> str:
    """The key's secret, or the gateway's 404 for an unknown AccessKeyId."""
    secret = state.secret_for(access_key_id)
    if secret is None:
        raise GatewayError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    return secret


def check_timestamp(value: str, state: EmulatorState) -> None:
    """ISO 8601 UTC to the second, within the allowed skew of the emulator's clock."""
    try:
        if not _TIMESTAMP.fullmatch(value):
            raise ValueError(value)
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise GatewayError(
            400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
        ) from None
    if abs(moment.timestamp() - state.now()) > state.config.max_clock_skew_seconds:
        raise GatewayError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")


def check_nonce(state: EmulatorState, access_key_id: str, nonce: str) -> None:
    """Single use per AccessKeyId; only a verified request spends its nonce."""
    if not state.use_nonce(access_key_id, nonce):
        raise GatewayError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def verify_v3(call: Call, request: Request, state: EmulatorState) -> None:
    """Check an ACS3-HMAC-SHA256 `Authorization` header against the rebuilt canonical request."""
    headers = request.headers
    for header, name in _V3_COMMON.items():
        if not headers.get(header):
            raise missing(name, header)
    check_action(call, headers["x-acs-version"])
    try:
        algorithm, call.access_key_id, signed, given = signing.parse_v3_authorization(
            headers["authorization"]
        )
    except signing.MalformedAuthorization as exc:
        logger.info("V3 request %s: %s", call.request_id, exc)
        raise GatewayError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH) from None
    secret = known_secret(state, call.access_key_id)
    if algorithm != signing.V3_ALGORITHM:
        raise GatewayError(
            400, "InvalidSignatureMethod", f"Specified signature method {algorithm!r} is not supported."
        )
    check_timestamp(headers["x-acs-date"], state)
    names = {name.strip().lower() for name in signed}
    required = V3_REQUIRED_SIGNED | ({"content-type"} if "content-type" in headers else set())
    payload_hash = headers.get("x-acs-content-sha256", "")
    reason = ""
    if not required <= names:
        reason = f"unsigned required headers {sorted(required - names)}"
    elif not signing.verify_signature(hashlib.sha256(call.body).hexdigest(), payload_hash):
        reason = "x-acs-content-sha256 differs from the body's SHA-256"
    else:
        values = {name: ",".join(sorted(v.strip() for v in headers.getlist(name))) for name in names}
        canonical = signing.canonical_request(
            call.method, request.url.path, call.query, values, sorted(names), payload_hash
        )
        expected = signing.v3_signature(secret, signing.v3_string_to_sign(canonical))
        reason = "" if signing.verify_signature(expected, given) else "signature differs"
    if reason:
        logger.info("V3 request %s refused: %s", call.request_id, reason)
        raise GatewayError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)
    check_nonce(state, call.access_key_id, headers["x-acs-signature-nonce"])


def verify_v1(call: Call, state: EmulatorState) -> None:
    """Check an HMAC-SHA1 `Signature` over all query and form parameters but itself."""
    params = call.params
    for name in ("AccessKeyId", "Action", "Version", "Timestamp", "SignatureNonce", "SignatureMethod"):
        if not params.get(name):
            raise missing(name)
    check_action(call, params["Version"])
    call.access_key_id = params["AccessKeyId"]
    secret = known_secret(state, call.access_key_id)
    if (
        params["SignatureMethod"] != signing.V1_SIGNATURE_METHOD
        or params.get("SignatureVersion", "1.0") != "1.0"
    ):
        raise GatewayError(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
    check_timestamp(params["Timestamp"], state)
    string_to_sign = signing.v1_string_to_sign(call.method, call.query + call.form)
    expected = signing.v1_signature(secret, string_to_sign)
    if not signing.verify_signature(expected, params.get("Signature", "")):
        # The real gateway appends its string to sign (never the key), which lets a client debug encoding.
        raise GatewayError(
            400, "SignatureDoesNotMatch", f"{SIGNATURE_MISMATCH} server string to sign is:{string_to_sign}"
        )
    check_nonce(state, call.access_key_id, params["SignatureNonce"])


def authenticate(call: Call, request: Request, state: EmulatorState) -> None:
    """Verify the request's V3 or V1 signature; an unsigned request does not match any signature."""
    if call.version == "v3":
        verify_v3(call, request, state)
    elif call.version == "v1":
        verify_v1(call, state)
    else:
        raise GatewayError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)


# --- business rules -----------------------------------------------------------------------------------------
#
# Choices where the documentation is silent (alibaba-sms-api.md §12): `Message` may be a JSON array parallel
# to `To` or a plain text for everyone; bad numbers (mainland 86, non-digits, under 7 or over 15 digits, a
# leading 0) go to `FailedList` and get no message id; `MessageIdList` holds one id per accepted number, in
# `To` order. SendMessageToGlobe answers a mainland number with `NOT_SUPPORTED_COUNTRY` (the current code
# list's "destination country unsupported"; the legacy lists said `isv.COUNTRY_RESTRICTED`) and a malformed
# one with `MOBILE_NUMBER_ILLEGAL`.

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
MESSAGE_TYPES = ("NOTIFY", "MKT", "OTP")
_NUMBER = re.compile(r"[1-9][0-9]{6,14}")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")  # each costs two septets
_COUNTRIES = (  # prefix, Country, Region, Carrier
    ("852", "Hongkong, China", "HongKong", "CMI"),
    ("853", "Macao, China", "Macao", "CTM"),
    ("886", "Taiwan, China", "Taiwan", "Chunghwa Telecom"),
    ("65", "Singapore", "Singapore", "Singtel"),
    ("60", "Malaysia", "Malaysia", "Maxis"),
    ("63", "Philippines", "Philippines", "Globe"),
    ("1", "United States", "United States", "Verizon"),
)
ALIBABA_TZ = timezone(timedelta(hours=8))


def deliverable(number: str) -> bool:
    """Digits only, 7-15 of them, no leading 0, and not Chinese mainland (86)."""
    return bool(_NUMBER.fullmatch(number)) and not number.startswith("86")


def valid_sender(sender: str) -> bool:
    """Letters and digits only; at most 11 with letters, at most 15 digits only."""
    return sender.isascii() and sender.isalnum() and len(sender) <= (15 if sender.isdigit() else 11)


def segments(text: str) -> int:
    """Billed segments: GSM-7 160 single / 153 per part, else UCS-2 70 / 67 (UTF-16 code units)."""
    if all(char in _GSM7 or char in _GSM7_EXTENDED for char in text):
        units, single, part = sum(2 if char in _GSM7_EXTENDED else 1 for char in text), 160, 153
    else:
        units, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


def number_detail(number: str) -> dict[str, str]:
    """`NumberDetail` for a number, from a small table of dialing codes."""
    for prefix, country, region, carrier in _COUNTRIES:
        if number.startswith(prefix):
            return {"Country": country, "Region": region, "Carrier": carrier}
    return {"Country": "Unknown", "Region": "Unknown", "Carrier": "Unknown"}


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


def json_strings(raw: str) -> list[str] | None:
    """A JSON-array string of strings, or None."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else None


def message_texts(raw: str, count: int) -> list[str]:
    """Per-recipient texts: a JSON array parallel to `To`, or one plain text for all."""
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw] * count
    if not isinstance(value, list):
        return [raw] * count
    if len(value) != count or not all(isinstance(text, str) and text for text in value):
        raise BusinessError("INVALID_PARAMETERS")
    return value


def ok(call: Call, description: str = DESCRIPTIONS["OK"], **fields: object) -> Outcome:
    """A successful business result carrying `fields`."""
    body = {"ResponseCode": "OK", "ResponseDescription": description, "RequestId": call.request_id}
    return Outcome(200, "OK", {**body, **fields})


def compact(values: list[str]) -> str:
    """A JSON array string as Alibaba writes it, e.g. `["1","2"]`."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


THROTTLED = ("Throttling.User", "Request was denied due to user flow control.")


def batch_send(call: Call, state: EmulatorState) -> Outcome:
    """BatchSendMessageToGlobe: flow control, fault, checks, then accept the deliverable numbers."""
    params = call.params
    numbers, text_raw = json_strings(required(params, "To")), required(params, "Message")
    # Single event-loop thread and no await from check to admission: concurrent calls cannot both slip in.
    if not state.batch_call_allowed(call.access_key_id):
        raise GatewayError(400, *THROTTLED)
    fault = state.faults.next_batch_fault()
    call.fault = None if fault.kind == "ok" else fault.label()
    if fault.kind == "throttle":
        raise GatewayError(400, *THROTTLED)
    state.admit_batch_call(call.access_key_id)
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
        FailedList=compact([n for n in numbers if not deliverable(n)]),
        MessageIdList=compact([record.message_id for record in accepted]),
        SuccessCount=str(len(accepted)),
        From=sender or "",
    )
    return replace(answer, delay=fault.seconds, drop=fault.kind == "drop_after_accept")


def send_one(call: Call, state: EmulatorState) -> Outcome:
    """SendMessageToGlobe: one number, one text."""
    to, text = required(call.params, "To"), required(call.params, "Message")
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
    return ok(
        call,
        MessageId=record.message_id,
        To=to,
        From=sender or "",
        Segments=str(record.segments),
        NumberDetail=number_detail(to),
    )


def query_message(call: Call, state: EmulatorState) -> Outcome:
    """QueryMessage: an accepted message, with the outcome its receipt carries (`receipts.py`)."""
    record = state.message(required(call.params, "MessageId"))
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


HANDLERS = {BATCH_ACTION: batch_send, "SendMessageToGlobe": send_one, "QueryMessage": query_message}


# --- answering ----------------------------------------------------------------------------------------------


def to_xml(root: str, body: dict[str, object]) -> str:
    """The XML form of a flat (or one-level nested) response body."""

    def element(name: str, value: object) -> str:
        if isinstance(value, dict):
            inner = "".join(element(key, item) for key, item in value.items())
        else:
            inner = escape(str(value))
        return f"<{name}>{inner}</{name}>"

    return "<?xml version='1.0' encoding='UTF-8'?>" + element(root, body)


def render(call: Call, outcome: Outcome, state: EmulatorState) -> Response:
    """Turn an outcome into the HTTP response, in the call's format."""
    headers = {"x-acs-request-id": call.request_id}
    if outcome.text is not None:
        return PlainTextResponse(outcome.text, outcome.status, headers=headers)
    body = dict(outcome.body)
    if outcome.status >= 400:
        body = {
            "RequestId": call.request_id,
            "HostId": state.config.host_id,
            "Code": outcome.code,
            "Message": outcome.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={outcome.code}&product=Dysmsapi",
        }
    if call.fmt == "XML":
        root = "Error" if outcome.status >= 400 else f"{call.action}Response"
        content, media = to_xml(root, body).encode(), "text/xml;charset=utf-8"
    else:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        media = "application/json;charset=utf-8"
    response_class = DroppedResponse if outcome.drop else Response
    return response_class(content, outcome.status, headers=headers, media_type=media)


async def pause(request: Request, seconds: float) -> None:
    """Wait up to `seconds`, ending early when the client goes away (so shutdown is never held up)."""
    if seconds <= 0:
        return

    async def until_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), seconds)
    except TimeoutError:
        pass


class Gateway:
    """The endpoints, bound to one emulator state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def api(self, request: Request) -> Response:
        """The RPC endpoint: verify, apply latency, dispatch, journal, answer."""
        state = self.state
        call = await parse_call(request, state)
        call.task_id = call.params.get("TaskId") or None
        if call.action == BATCH_ACTION:
            call.numbers = len(json_strings(call.params.get("To", "")) or [])
        elif call.action == "SendMessageToGlobe":
            call.numbers = int(bool(call.params.get("To")))
        try:
            authenticate(call, request, state)
            await pause(request, state.faults.latency())
            outcome = HANDLERS[call.action](call, state)
        except GatewayError as error:
            outcome = Outcome(error.status, error.code, message=error.message)
        except BusinessError as error:
            body = {
                "ResponseCode": error.code,
                "ResponseDescription": DESCRIPTIONS.get(error.code, error.code),
            }
            outcome = Outcome(200, error.code, {**body, "RequestId": call.request_id})
        state.record_request(
            RequestRecord(
                state.now(),
                call.action,
                call.access_key_id,
                outcome.status,
                outcome.code,
                call.numbers,
                call.task_id,
                call.request_id,
                call.version,
                call.fault,
            )
        )
        await pause(request, outcome.delay)
        return render(call, outcome, state)

    async def journal(self, request: Request) -> Response:
        """`GET /_emulator/journal`: `{"requests": [...], "messages": [...]}`."""
        return JSONResponse(self.state.journal())

    async def faults(self, request: Request) -> Response:
        """`GET|POST /_emulator/faults`: show or change fault config fields, `script`, `clear_script`."""
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                script, clear = data.pop("script", None), bool(data.pop("clear_script", False))
                if data:
                    self.state.faults.configure(**data)
                if script is not None or clear:
                    if isinstance(script, str) or not isinstance(script or [], list):
                        raise ValueError("script must be a list of strings")
                    self.state.faults.script(script or [], replace=clear)
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        faults = self.state.faults
        return JSONResponse({"faults": faults.config.model_dump(), "script": faults.pending()})

    async def reset(self, request: Request) -> Response:
        """`POST /_emulator/reset`: forget everything but the configuration."""
        self.state.reset()
        return JSONResponse({"status": "reset"})

    async def receipts(self, request: Request) -> Response:
        """`GET /_emulator/receipts`: decided outcomes and what the receipt pusher did."""
        return JSONResponse(self.state.receipts.summary())

    async def health(self, request: Request) -> Response:
        """`GET /_emulator/health`."""
        return JSONResponse({"status": "ok", "actions": sorted(HANDLERS)})


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build the emulator app; its state is `app.state.emulator` (an `EmulatorState`).

    Example:
        app = create_app(EmulatorConfig(batch_calls_per_second=None))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator")
    """
    state = EmulatorState(config or EmulatorConfig())
    gateway = Gateway(state)
    app = Starlette(
        routes=[
            Route("/", gateway.api, methods=["GET", "POST"]),
            Route("/_emulator/journal", gateway.journal, methods=["GET"]),
            Route("/_emulator/faults", gateway.faults, methods=["GET", "POST"]),
            Route("/_emulator/reset", gateway.reset, methods=["POST"]),
            Route("/_emulator/health", gateway.health, methods=["GET"]),
            Route("/_emulator/receipts", gateway.receipts, methods=["GET"]),
        ]
    )
    app.state.emulator = state
    return app
