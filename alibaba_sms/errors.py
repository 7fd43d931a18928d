"""One exception tree for everything that can go wrong at the Alibaba SMS boundary.

Every error raised by the client belongs to exactly one *layer* and exactly one *outcome*::

    SmsApiError
    ├── layer ─────────────────────────────────────────────────────────────────────────────────
    │   ├── GatewayError          HTTP 4xx/5xx with Code / Message / RequestId (the POP gateway)
    │   ├── BusinessError         HTTP 200 whose ResponseCode is not OK (the SMS service)
    │   └── TransportError        no usable HTTP response at all
    └── outcome ───────────────────────────────────────────────────────────────────────────────
        ├── RetryableError        definitely not processed; sending again is safe
        │   └── ThrottledError    Throttling*, QPS_LIMIT_CONTROL: wait, then send again
        ├── PermanentError        will fail the same way again (signature, parameters, balance, sender id,
        │   └── AuthenticationError   unknown codes, ...)
        └── AmbiguousOutcomeError the request may have been processed: read timeout, connection dropped
                                  after sending, HTTP 500. Record the recipients as *unknown*, never resend
                                  them on your own.

The concrete classes combine one of each, e.g. `GatewayThrottled(GatewayError, ThrottledError)`, so callers
catch by the question they ask: "may I retry?" (`RetryableError`), "did it maybe go out?"
(`AmbiguousOutcomeError`), or "who said no?" (`GatewayError` / `BusinessError`).

Codes match with or without their legacy `isv.` / `isp.` prefixes. An unknown business code is a failure,
never a success. Messages carry the code, the text and the RequestId, and never a credential.
"""

from __future__ import annotations

import httpx


def normalise_code(code: str | None) -> str:
    """Drop the legacy `isv.` / `isp.` prefix: `isv.BUSINESS_LIMIT_CONTROL` -> `BUSINESS_LIMIT_CONTROL`."""
    if not code:
        return ""
    for prefix in ("isv.", "isp."):
        if code.startswith(prefix):
            return code[len(prefix) :]
    return code


class SmsApiError(Exception):
    """Base of every error at the Alibaba SMS boundary."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        action: str | None = None,
    ) -> None:
        self.code = normalise_code(code) or None
        self.status = status
        self.request_id = request_id
        self.action = action
        prefix = f"Request {request_id}: " if request_id else ""
        super().__init__(f"{prefix}{message}")


# --- layers ---------------------------------------------------------------------------------------------
class GatewayError(SmsApiError):
    """The gateway refused the call with an HTTP error status."""


class BusinessError(SmsApiError):
    """The SMS service answered HTTP 200 with a ResponseCode other than OK."""


class TransportError(SmsApiError):
    """No usable HTTP response: connection, timeout or protocol failure."""


# --- outcomes -------------------------------------------------------------------------------------------
class RetryableError(SmsApiError):
    """The request was definitely not processed; sending it again is safe."""


class ThrottledError(RetryableError):
    """Flow control: wait, then send again."""


class PermanentError(SmsApiError):
    """The request will fail the same way again; do not retry."""


class AuthenticationError(PermanentError):
    """The credentials or the signature were refused."""


class AmbiguousOutcomeError(SmsApiError):
    """The request may have been processed; its recipients' outcome is unknown."""


# --- concrete combinations ------------------------------------------------------------------------------
class GatewayThrottled(GatewayError, ThrottledError):
    """`Throttling`, `Throttling.User`, `Throttling.Api`, ... whatever the HTTP status."""


class GatewayUnavailable(GatewayError, RetryableError):
    """HTTP 503 / `ServiceUnavailable`: the gateway did not take the request."""


class GatewayRejected(GatewayError, PermanentError):
    """A 4xx refusal: parameters, timestamp, nonce, unknown action."""


class GatewayAuthenticationError(GatewayError, AuthenticationError):
    """Signature, AccessKey or permission refused."""


class GatewayInternalError(GatewayError, AmbiguousOutcomeError):
    """HTTP 500 (and other 5xx): the gateway may have processed the request before failing."""


class BusinessThrottled(BusinessError, ThrottledError):
    """`QPS_LIMIT_CONTROL` and friends."""


class BusinessRetryable(BusinessError, RetryableError):
    """`SYSTEM_ERROR`, `ONLINE_BILLING_FAILED`: transient on the service side."""


class BusinessRejected(BusinessError, PermanentError):
    """Every other business code, including codes we do not know."""


class ConnectionFailed(TransportError, RetryableError):
    """The connection failed before the request was sent."""


class ResponseLost(TransportError, AmbiguousOutcomeError):
    """The request left but no complete response came back (read timeout, dropped connection)."""


class InvalidResponse(TransportError, AmbiguousOutcomeError):
    """A response arrived but could not be understood; the request may have been processed."""


# --- classification -------------------------------------------------------------------------------------
AUTHENTICATION_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidAccessKeyId",
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
        "Forbidden.RAM",
        "Forbidden.AccessKeyDisabled",
        "NoPermission",
    }
)
RETRYABLE_BUSINESS_CODES = frozenset({"SYSTEM_ERROR", "ONLINE_BILLING_FAILED"})
THROTTLING_BUSINESS_CODES = frozenset(
    {"QPS_LIMIT_CONTROL", "BUSINESS_LIMIT_CONTROL", "BUSINESS_LIMIT_CONTROL_MINUTE"}
)
RETRYABLE_GATEWAY_CODES = frozenset({"ServiceUnavailable"})


def is_throttling_code(code: str | None) -> bool:
    """Every `Throttling*` gateway code, and the business flow-control codes."""
    normal = normalise_code(code)
    return normal.startswith("Throttling") or normal in THROTTLING_BUSINESS_CODES


def gateway_error(
    status: int, code: str | None, message: str, request_id: str | None, action: str | None = None
) -> GatewayError:
    """Map an HTTP error response to its class."""
    normal = normalise_code(code)
    kwargs = {"code": normal or None, "status": status, "request_id": request_id, "action": action}
    text = f"{normal or 'HTTP ' + str(status)}: {message}".rstrip(": ")
    if is_throttling_code(normal):
        return GatewayThrottled(text, **kwargs)
    if status == 503 or normal in RETRYABLE_GATEWAY_CODES:
        return GatewayUnavailable(text, **kwargs)
    if status >= 500:
        return GatewayInternalError(text, **kwargs)
    if normal in AUTHENTICATION_CODES or status in (401, 403):
        return GatewayAuthenticationError(text, **kwargs)
    return GatewayRejected(text, **kwargs)


def business_error(
    code: str | None, description: str, request_id: str | None, action: str | None = None
) -> BusinessError:
    """Map a non-OK ResponseCode to its class; unknown codes are permanent failures."""
    normal = normalise_code(code)
    kwargs = {"code": normal or "UNKNOWN", "status": 200, "request_id": request_id, "action": action}
    text = f"{normal or 'missing ResponseCode'}: {description}".rstrip(": ")
    if is_throttling_code(normal):
        return BusinessThrottled(text, **kwargs)
    if normal in RETRYABLE_BUSINESS_CODES:
        return BusinessRetryable(text, **kwargs)
    return BusinessRejected(text, **kwargs)


def transport_error(exc: httpx.TransportError, action: str | None = None) -> TransportError:
    """Tell a failure before sending (retryable) from one after sending (ambiguous)."""
    name = type(exc).__name__
    if isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol
    ):
        return ConnectionFailed(f"{name}: the request was not sent ({exc})", code=name, action=action)
    return ResponseLost(f"{name}: the request may have been processed ({exc})", code=name, action=action)
