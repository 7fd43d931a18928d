"""The asyncio client for the high-rate path: SendMessageToGlobe (2,000 calls/s per account) and QueryMessage
(300 calls/s), many calls in flight at once.

The same package shape as `SmsClient`: requests are built as `httpx.Request`s and signed by the same
`httpx.Auth` signers (`AcsV3Auth` / `AcsV1Auth`), answers become the same result models (`SendResult`,
`QueryResult`) or the same errors (`alibaba_sms.errors`, classified by `alibaba_sms.protocol.parse_answer` and
`transport_error`), and endpoints resolve the same way (`alibaba_sms.endpoints`). Only the transport differs:
by default a `WireTransport` (`alibaba_sms.wire`: HTTP/1.1 on asyncio, parsed by httptools), because httpx's
own async transport costs 1-4 ms of CPU per call and aiohttp's client about 0.4-0.6 ms, too much for 2,000
calls a second on a small machine (bench/README-single.md). Any `httpx.AsyncBaseTransport` can be given
instead (`httpx.MockTransport` in tests, `httpx.AsyncHTTPTransport` and `AiohttpTransport` in the benchmark).

V3 requests are signed before they are built (`AcsV3Auth.signature_headers`); through a `WireTransport`
they are then written out as the bytes that go on the wire (`WireTransport.exchange_raw`), no
`httpx.Request` built unless asked for (`PreparedSend.request`), otherwise built once, with every header.
V1 requests are built, then signed through the Auth's flow. Either way the bytes are the sync client's
(tests/unit/test_async_client_unit.py), and the written-out ones those of the built request
(tests/integration/test_wire_transport.py).

Usable without Prefect::

    async with AsyncSmsClient(AccessKey.from_env()) as client:
        result = await client.send("85212345678", "Your code: 123456", sender="Alicloud", message_type="OTP")
        status = await client.query(result.message_id)

Like the sync client it never retries: a `ThrottledError` says slow down, a `RetryableError` that the call was
definitely not processed, an `AmbiguousOutcomeError` that it may have been (the recipient's outcome is
unknown; never resend on your own). A call cancelled while in flight is ambiguous too.

One client belongs to one event loop (its connection pool does); open it with `async with`, or let the first
call open it and `await client.aclose()` at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import httpx

from alibaba_sms.credentials import AccessKey
from alibaba_sms.endpoints import resolve_endpoint
from alibaba_sms.errors import InvalidResponse, transport_error
from alibaba_sms.models import QueryResult, ResponseFormatError, SendResult
from alibaba_sms.protocol import (
    DEFAULT_TIMEOUT,
    FORM_CONTENT_TYPE,
    USER_AGENT,
    SignatureVersion,
    auth_for,
    form_body,
    operation_params,
    parse_answer,
    parse_response,
    sign,
)
from alibaba_sms.signing import API_VERSION, AcsV3Auth, Clock, Nonce, random_nonce, utc_now
from alibaba_sms.wire import DEFAULT_MAX_CONNECTIONS, WireTransport, origin_of

SEND_ACTION = "SendMessageToGlobe"
QUERY_ACTION = "QueryMessage"


class PreparedSend:
    """A signed SendMessageToGlobe request, ready to go out, and the number it is for.

    `wire` is the request as the bytes that go on the wire, when the client that prepared it sends through
    a `WireTransport` (V3): it then goes out exactly so, and no `httpx.Request` is built for it. `request`
    is the same request as an `httpx.Request` (built on first use when there are `wire` bytes): what other
    transports send, and what tests read.
    """

    __slots__ = ("_make_request", "_request", "action", "to", "wire")

    def __init__(
        self,
        request: httpx.Request | Callable[[], httpx.Request],
        to: str,
        action: str = SEND_ACTION,
        wire: bytes | None = None,
    ) -> None:
        built = isinstance(request, httpx.Request)
        self._request: httpx.Request | None = request if built else None  # type: ignore[assignment]
        self._make_request = None if built else request
        self.to = to
        self.action = action
        self.wire = wire

    @property
    def request(self) -> httpx.Request:
        """The signed request as an `httpx.Request`."""
        if self._request is None:
            assert self._make_request is not None
            self._request = self._make_request()
        return self._request

    def __repr__(self) -> str:
        return f"PreparedSend(action={self.action!r}, to={self.to!r}, wire={self.wire is not None})"


class AsyncSmsClient:
    """A signed asyncio client for SendMessageToGlobe and QueryMessage.

    Args:
        credentials: the AccessKey; its secret is only read when a request is signed.
        endpoint: an explicit base URL (`http://` is allowed for loopback only); overrides `region`.
        region: picks the regional host when no endpoint is given (default `ap-southeast-1`).
        signature_version: `"v3"` (ACS3-HMAC-SHA256, the SDK default) or `"v1"` (HMAC-SHA1).
        timeout: connect / read / pool timeouts of every call; the SDK's defaults are connect 5 s, read 10 s.
        max_connections: the connection pool's size, i.e. at most this many calls in flight (the default
            transport's; ignored when `transport` is given).
        transport: any httpx async transport; default a `WireTransport`. The client closes it.
        clock, nonce: injected for reproducible signatures.
    """

    def __init__(
        self,
        credentials: AccessKey,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        signature_version: SignatureVersion = "v3",
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = utc_now,
        nonce: Nonce = random_nonce,
    ) -> None:
        self._auth = auth_for(signature_version, credentials, clock=clock, nonce=nonce)
        self.base_url = resolve_endpoint(endpoint, region)
        self._host = self.base_url.netloc.decode("ascii")  # the Host header, as httpx would send it
        self.signature_version = signature_version
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._timeouts = self._timeout.as_dict()
        self._extensions = {"timeout": self._timeouts}
        self._transport = transport or WireTransport(max_connections=max_connections)
        # The fast paths, for the package's own transport: (status, body) without an httpx.Response; and
        # V3 requests written out as bytes, without an httpx.Request (`_wire_bytes`).
        wire = self._transport if isinstance(self._transport, WireTransport) else None
        self._exchange = wire.exchange if wire is not None else None
        self._exchange_raw = wire.exchange_raw if wire is not None else None
        self._origin = origin_of(self.base_url)
        self._target = self.base_url.raw_path
        self._heads: dict[str, str] = {}  # action -> the request line and the headers every call has
        self._fixed_names = frozenset(self._fixed_headers(""))
        self._closed = False

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeouts of every call (connect, read, write, pool)."""
        return self._timeout

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport the calls travel through."""
        return self._transport

    def __repr__(self) -> str:
        return (
            f"AsyncSmsClient(base_url={str(self.base_url)!r}, signature_version={self.signature_version!r}, "
            f"transport={type(self._transport).__name__})"
        )

    async def __aenter__(self) -> AsyncSmsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport and its connections; the client cannot be used afterwards."""
        self._closed = True
        await self._transport.aclose()

    # --- building and sending ---------------------------------------------------------------------------

    def _fixed_headers(self, action: str) -> dict[str, str]:
        return {
            "host": self._host,
            "accept": "application/json",
            "user-agent": USER_AGENT,
            "x-acs-action": action,
            "x-acs-version": API_VERSION,
            "content-type": FORM_CONTENT_TYPE,
        }

    def _prepare(self, action: str, body: bytes, to: str = "") -> PreparedSend:
        """Build and sign a request with this form body (`form_body`). V3 signs the parts first
        (`AcsV3Auth.signature_headers`): through a `WireTransport` the request is written out as bytes at
        once (`_wire_bytes`), the `httpx.Request` only built if asked for; otherwise it is built once, with
        every header, which is the same request `sign` would produce at a third of the cost. Other signers
        sign the built request through their flow."""
        headers = self._fixed_headers(action)
        auth = self._auth
        if isinstance(auth, AcsV3Auth):
            signature = auth.signature_headers("POST", "/", (), headers, body)
            headers.update(signature)
            headers["content-length"] = str(len(body))
            make = partial(self._request_of, headers, body)
            if self._exchange_raw is None:
                return PreparedSend(make(), to, action)
            return PreparedSend(make, to, action, self._wire_bytes(action, signature, body))
        request = httpx.Request(
            "POST", self.base_url, content=body, headers=headers, extensions=self._extensions
        )
        return PreparedSend(sign(auth, request), to, action)

    def _request_of(self, headers: Mapping[str, str], body: bytes) -> httpx.Request:
        """The signed request as an `httpx.Request`: every header is given, so the body goes in as a stream
        (httpx's encoding and header defaulting, a third of the request's cost, have nothing to add), read
        at once, as `content=`."""
        request = httpx.Request(
            "POST", self.base_url, headers=headers, stream=httpx.ByteStream(body), extensions=self._extensions
        )
        request.read()
        return request

    def _wire_bytes(self, action: str, signature: Mapping[str, str], body: bytes) -> bytes:
        """The bytes `WireTransport` writes for `_request_of(headers, body)`, written directly: the request
        line and the fixed headers once per action, then the signature's headers (those not among the fixed
        ones, in their order), `content-length` and the body (tests/integration/test_wire_transport.py
        compares the two byte for byte). Names as given, values ASCII, as `httpx.Headers` encodes them."""
        head = self._heads.get(action)
        if head is None:
            fixed = self._fixed_headers(action)
            lines = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
            head = self._heads[action] = f"POST {self._target.decode('ascii')} HTTP/1.1\r\n{lines}"
        fixed = self._fixed_names
        signed = "".join([f"{name}: {value}\r\n" for name, value in signature.items() if name not in fixed])
        return f"{head}{signed}content-length: {len(body)}\r\n\r\n".encode("ascii") + body

    async def _deliver(self, prepared: PreparedSend) -> dict[str, Any]:
        """Send a prepared request (its wire bytes when this client can), and the body of an OK answer."""
        if self._closed:
            raise RuntimeError("the AsyncSmsClient is closed")
        action = prepared.action
        try:
            if prepared.wire is not None and self._exchange_raw is not None:
                status, content = await self._exchange_raw(self._origin, prepared.wire, self._timeouts)
            elif self._exchange is not None:  # no httpx.Response for a small JSON body
                status, content = await self._exchange(prepared.request)
            else:
                response = await self._transport.handle_async_request(prepared.request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                return parse_response(response, action)
        except httpx.TransportError as exc:
            raise transport_error(exc, action) from None
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        return parse_answer(status, body, content.decode("utf-8", "replace"), action)

    # --- operations ---------------------------------------------------------------------------------------

    def prepare_send(
        self,
        to: str,
        message: str,
        *,
        sender: str | None = None,
        message_type: str | None = None,
        task_id: str | None = None,
        validity_period: int | None = None,
        channel_id: str | None = None,
    ) -> PreparedSend:
        """Build and sign a SendMessageToGlobe request without sending it (see `send` for the arguments).

        Raises:
            ValueError: an empty number or message.
        """
        if not to or not message:
            raise ValueError("SendMessageToGlobe needs a number and a message")
        params = {"To": to, "Message": message}
        params.update(operation_params(sender, message_type, task_id, validity_period, channel_id))
        return self._prepare(SEND_ACTION, form_body(params), to)

    def prepare_sends(
        self,
        numbers: Sequence[str],
        messages: Sequence[str],
        *,
        sender: str | None = None,
        message_type: str | None = None,
        task_id: str | None = None,
        validity_period: int | None = None,
        channel_id: str | None = None,
    ) -> list[PreparedSend]:
        """`prepare_send` for each number and its message, with the same options (a chunk of the single
        lane): the same requests, the options encoded once instead of once per call.

        Raises:
            ValueError: an empty number or message, or not one message per number.
        """
        if len(numbers) != len(messages):
            raise ValueError(f"{len(numbers)} numbers but {len(messages)} messages")
        options = form_body(operation_params(sender, message_type, task_id, validity_period, channel_id))
        tail = b"&" + options if options else b""  # form_body's order: To, Message, then the options
        prepared = []
        for to, message in zip(numbers, messages, strict=True):
            if not to or not message:
                raise ValueError("SendMessageToGlobe needs a number and a message")
            prepared.append(self._prepare(SEND_ACTION, form_body({"To": to, "Message": message}) + tail, to))
        return prepared

    async def send_prepared(self, prepared: PreparedSend) -> SendResult:
        """Transmit a SendMessageToGlobe request this client prepared, and parse the answer.

        Raises:
            RetryableError, PermanentError, AmbiguousOutcomeError: see `alibaba_sms.errors`.
        """
        body = await self._deliver(prepared)
        try:
            return SendResult.from_body(body)
        except ResponseFormatError as exc:
            raise InvalidResponse(str(exc), status=200, request_id=body.get("RequestId")) from None

    async def send(
        self,
        to: str,
        message: str,
        *,
        sender: str | None = None,
        message_type: str | None = None,
        task_id: str | None = None,
        validity_period: int | None = None,
        channel_id: str | None = None,
    ) -> SendResult:
        """Send one message with SendMessageToGlobe.

        Args:
            to: the number, dialing code + number, digits only (`85212345678`).
            message: the text (billed per segment, `SendResult.segments`).
            sender: the approved sender ID (`From`).
            message_type: `OTP`, `NOTIFY` or `MKT`.
            task_id: echoed in the delivery receipt (1-255 characters).
            validity_period: seconds.
            channel_id: the delivery channel, if the account has one.

        Raises:
            ThrottledError: flow control (`Throttling.User`, `QPS_LIMIT_CONTROL`): slow down, then send again.
            RetryableError: definitely not processed (connection failed, 503, `SYSTEM_ERROR`, ...).
            PermanentError: refused for good (signature, number, sender ID, balance, unknown codes, ...).
            AmbiguousOutcomeError: the message may have gone out (read timeout, dropped connection, 500).
        """
        return await self.send_prepared(
            self.prepare_send(
                to,
                message,
                sender=sender,
                message_type=message_type,
                task_id=task_id,
                validity_period=validity_period,
                channel_id=channel_id,
            )
        )

    async def query(self, message_id: str) -> QueryResult:
        """Look up one message's delivery status with QueryMessage (errors as for `send`)."""
        body = await self._deliver(self._prepare(QUERY_ACTION, form_body({"MessageId": message_id})))
        return QueryResult.from_body(body)
