"""What the sync and async clients share: building a signed request, and reading the answer.

`SmsClient` (httpx, blocking) and `AsyncSmsClient` (asyncio, a fast transport) differ only in how the bytes
travel; both build the request here, sign it with the same `httpx.Auth` (`AcsV3Auth` / `AcsV1Auth`), and turn
the answer into a result or an error of `alibaba_sms.errors` with `parse_answer`, so an error is classified
the same way whichever client met it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx

from alibaba_sms.errors import InvalidResponse, business_error, gateway_error
from alibaba_sms.signing import API_VERSION, AcsV1Auth, AcsV3Auth, Clock, Nonce

SignatureVersion = Literal["v3", "v1"]
# The official SDK's defaults: connect 5 s, read 10 s.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "globe-sms (alibaba_sms; httpx)"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def auth_for(
    signature_version: SignatureVersion, credentials: Any, *, clock: Clock, nonce: Nonce
) -> AcsV3Auth | AcsV1Auth:
    """The `httpx.Auth` signer of a signature version.

    Raises:
        ValueError: a version other than `"v3"` or `"v1"`.
    """
    if signature_version not in ("v3", "v1"):
        raise ValueError(f"signature_version must be 'v3' or 'v1', got {signature_version!r}")
    auth_class = AcsV3Auth if signature_version == "v3" else AcsV1Auth
    return auth_class(credentials, clock=clock, nonce=nonce)


def operation_params(
    sender: str | None = None,
    message_type: str | None = None,
    task_id: str | None = None,
    validity_period: int | None = None,
    channel_id: str | None = None,
) -> dict[str, str]:
    """The optional send parameters that are set, under their wire names (`From`, `Type`, ...)."""
    values = {
        "From": sender,
        "Type": message_type,
        "TaskId": task_id,
        "ValidityPeriod": None if validity_period is None else str(int(validity_period)),
        "ChannelId": channel_id,
    }
    return {key: value for key, value in values.items() if value is not None}


def form_body(params: Mapping[str, str]) -> bytes:
    """The `application/x-www-form-urlencoded` body of the parameters, byte for byte what httpx encodes
    for `data=` (`urllib.parse.urlencode`: `quote_plus`, UTF-8), without httpx's stream objects."""
    return "&".join([f"{_form_quote(key)}={_form_quote(value)}" for key, value in params.items()]).encode()


def _form_quote(value: str) -> str:
    if value.isascii() and value.isalnum():  # numbers, names: nothing to encode
        return value
    return _quote_cached(value)


# A campaign's calls repeat their text and sender: each is encoded once.
_quote_cached = lru_cache(maxsize=1024)(quote_plus)


def sign(auth: httpx.Auth, request: httpx.Request) -> httpx.Request:
    """Sign a built request now, through the Auth's own flow, so that it can go out unchanged later."""
    return next(auth.sync_auth_flow(request))


def parse_answer(status: int, body: Any, text: str, action: str | None) -> dict[str, Any]:
    """The body of an OK answer, or the error this answer means.

    Args:
        status: the HTTP status.
        body: the decoded JSON body, or None when it is not JSON.
        text: the raw text, quoted (shortened) in the error when the body is not JSON.
        action: the API operation, for the error.

    Raises:
        GatewayError: HTTP 4xx/5xx (throttling, authentication, ... see `gateway_error`).
        BusinessError: HTTP 200 with a `ResponseCode` other than OK.
        InvalidResponse: HTTP 2xx whose body is not a JSON object (ambiguous: it may have been processed).
    """
    if status >= 400:
        data = body if isinstance(body, dict) else {}
        code = data.get("Code") or data.get("code")
        message = data.get("Message") or data.get("message") or text[:200]
        request_id = data.get("RequestId") or data.get("requestId")
        raise gateway_error(status, code, str(message), request_id, action)
    if not isinstance(body, dict):
        raise InvalidResponse(
            f"HTTP {status} with a body that is not a JSON object", status=status, action=action
        )
    if body.get("ResponseCode") != "OK":
        raise business_error(
            body.get("ResponseCode"), str(body.get("ResponseDescription", "")), body.get("RequestId"), action
        )
    return body


def parse_response(response: httpx.Response, action: str | None) -> dict[str, Any]:
    """`parse_answer` for a read httpx response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return parse_answer(response.status_code, body, response.text, action)


def action_headers(action: str) -> Mapping[str, str]:
    """The headers naming the operation (V1 signing reads the action from them too)."""
    return {"x-acs-action": action, "x-acs-version": API_VERSION}
