"""The httpx client for BatchSendMessageToGlobe, SendMessageToGlobe and QueryMessage.

Usable without Prefect::

    from alibaba_sms import AccessKey, SmsClient

    with SmsClient(AccessKey.from_env()) as client:
        result = client.send_batch(["85212345678"], ["Hello"], sender="Alicloud", message_type="NOTIFY")

Operation parameters travel as an `application/x-www-form-urlencoded` body: a 1,000-recipient batch does not
fit in a URL. A batch can be prepared (payload built and signed) ahead of the moment it is sent, so that a
rate-paced caller does all per-batch work before its pacing wait, then only transmits.

The client never retries on its own (nor does the official SDK): the caller decides, using the outcome
classes in `alibaba_sms.errors`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from alibaba_sms.credentials import AccessKey
from alibaba_sms.endpoints import resolve_endpoint
from alibaba_sms.errors import InvalidResponse, transport_error
from alibaba_sms.models import BatchSendResult, QueryResult, ResponseFormatError, SendResult
from alibaba_sms.protocol import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    SignatureVersion,
    action_headers,
    auth_for,
    operation_params,
    parse_response,
    sign,
)
from alibaba_sms.signing import Clock, Nonce, random_nonce, utc_now

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BATCH_NUMBERS",
    "USER_AGENT",
    "PreparedBatch",
    "SignatureVersion",
    "SmsClient",
]

MAX_BATCH_NUMBERS = 1000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedBatch:
    """A signed BatchSendMessageToGlobe request, ready to go out, and the numbers it carries."""

    request: httpx.Request
    to: tuple[str, ...]


def _json_array(values: Sequence[str]) -> str:
    # Compact, as in Alibaba's examples; ensure_ascii=False keeps the body small for UCS-2 texts.
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


class SmsClient:
    """A signed client for Alibaba Cloud's international SMS API.

    Args:
        credentials: the AccessKey; its secret is only read when a request is signed.
        endpoint: an explicit base URL (`http://` is allowed for loopback only); overrides `region`.
        region: picks the regional host when no endpoint is given (default `ap-southeast-1`).
        signature_version: `"v3"` (ACS3-HMAC-SHA256, the SDK default) or `"v1"` (HMAC-SHA1).
        timeout: httpx timeout; the SDK's defaults are connect 5 s and read 10 s.
        transport: an httpx transport, e.g. `httpx.MockTransport` or `httpx.ASGITransport` in tests.
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
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        nonce: Nonce = random_nonce,
    ) -> None:
        self._auth = auth_for(signature_version, credentials, clock=clock, nonce=nonce)
        self.base_url = resolve_endpoint(endpoint, region)
        self.signature_version = signature_version
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"accept": "application/json", "user-agent": USER_AGENT},
            trust_env=False,
        )

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeouts of every call (connect, read, write, pool)."""
        return self._http.timeout

    def __repr__(self) -> str:
        return f"SmsClient(base_url={str(self.base_url)!r}, signature_version={self.signature_version!r})"

    def __enter__(self) -> SmsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- building and sending ---------------------------------------------------------------------------

    def _build(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        request = self._http.build_request(
            "POST",
            "/",
            data={key: value for key, value in params.items()},
            headers=action_headers(action),
        )
        # Sign now, so that the request can wait and then go out unchanged.
        return sign(self._auth, request)

    def _send(self, request: httpx.Request, on_sent: Callable[[], None] | None = None) -> dict[str, Any]:
        action = request.headers.get("x-acs-action")
        if on_sent is not None:
            request.extensions["trace"] = when_sent(on_sent)
        try:
            response = self._http.send(request, auth=None)
        except httpx.TransportError as exc:
            raise transport_error(exc, action) from None
        return self._parse(response, action)

    @staticmethod
    def _parse(response: httpx.Response, action: str | None) -> dict[str, Any]:
        return parse_response(response, action)

    # --- operations ---------------------------------------------------------------------------------------

    def prepare_batch(
        self,
        to: Sequence[str],
        messages: Sequence[str] | str,
        *,
        sender: str | None = None,
        message_type: str | None = None,
        task_id: str | None = None,
        validity_period: int | None = None,
        channel_id: str | None = None,
    ) -> PreparedBatch:
        """Build and sign a BatchSendMessageToGlobe request without sending it.

        Args:
            to: up to 1,000 numbers, dialing code + number, digits only (`85212345678`).
            messages: one text per number (parallel to `to`), or one text for all.
            sender: the approved sender ID (`From`).
            message_type: `NOTIFY` or `MKT`.
            task_id: echoed in delivery receipts (1-255 characters).
            validity_period: seconds.
            channel_id: the delivery channel, if the account has one.

        Raises:
            ValueError: an empty batch, more than 1,000 numbers, or texts not parallel to the numbers.
        """
        numbers = tuple(to)
        if not numbers:
            raise ValueError("a batch needs at least one number")
        if len(numbers) > MAX_BATCH_NUMBERS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_NUMBERS} numbers, got {len(numbers)}")
        texts = [messages] * len(numbers) if isinstance(messages, str) else list(messages)
        if len(texts) != len(numbers):
            raise ValueError(f"{len(texts)} messages for {len(numbers)} numbers: they must be parallel")
        params = {"To": _json_array(numbers), "Message": _json_array(texts)}
        params.update(operation_params(sender, message_type, task_id, validity_period, channel_id))
        return PreparedBatch(self._build("BatchSendMessageToGlobe", params), numbers)

    def send_prepared_batch(
        self, prepared: PreparedBatch, *, on_sent: Callable[[], None] | None = None
    ) -> BatchSendResult:
        """Transmit a prepared batch and parse the answer.

        Args:
            prepared: from `prepare_batch`.
            on_sent: called once the whole request has been written to the connection, before the answer
                is read (a rate-paced caller stamps its slot then: see `globe_sms.pacing`). Not called when
                the request never left; called from the sending thread, so it delays reading the answer.

        Raises:
            RetryableError, PermanentError, AmbiguousOutcomeError: see `alibaba_sms.errors`.
        """
        body = self._send(prepared.request, on_sent)
        try:
            return BatchSendResult.from_body(body, prepared.to)
        except ResponseFormatError as exc:
            raise InvalidResponse(str(exc), status=200, request_id=body.get("RequestId")) from None

    def send_batch(self, to: Sequence[str], messages: Sequence[str] | str, **options: Any) -> BatchSendResult:
        """Prepare and send one batch at once; see `prepare_batch` for the arguments."""
        return self.send_prepared_batch(self.prepare_batch(to, messages, **options))

    def send(
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
        """Send one message with SendMessageToGlobe."""
        params = {"To": to, "Message": message}
        params.update(operation_params(sender, message_type, task_id, validity_period, channel_id))
        body = self._send(self._build("SendMessageToGlobe", params))
        try:
            return SendResult.from_body(body)
        except ResponseFormatError as exc:
            raise InvalidResponse(str(exc), status=200, request_id=body.get("RequestId")) from None

    def query(self, message_id: str) -> QueryResult:
        """Look up one message's delivery status with QueryMessage."""
        body = self._send(self._build("QueryMessage", {"MessageId": message_id}))
        return QueryResult.from_body(body)


SENT_EVENTS = ("http11.send_request_body.complete", "http2.send_request_body.complete")


def when_sent(callback: Callable[[], None]) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore `trace` request extension (public, documented: https://www.encode.io/httpcore/extensions/)
    that calls `callback` once, when the request body has been written. httpx hands a request's extensions
    to httpcore unchanged; tests/integration/test_client_emulator.py pins that the callback comes after
    the request left and before the answer is read."""
    fired = False

    def trace(event: str, info: dict[str, Any]) -> None:
        nonlocal fired
        if event in SENT_EVENTS and not fired:
            fired = True
            try:
                callback()
            except Exception:  # the request has left: a failing callback must not turn it into an error
                logger.exception("the on_sent callback failed")

    return trace
