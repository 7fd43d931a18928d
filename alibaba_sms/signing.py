"""Alibaba Cloud request signatures: V3 (`ACS3-HMAC-SHA256`, the SDK default) and V1 (HMAC-SHA1).

Each algorithm is split into pure stages so that every stage can be checked against the published test
vectors (`shared/reference/alibaba-sms-api.md` §4, §5, §10):

    V3: canonical_request() -> v3_string_to_sign() -> v3_signature() -> v3_authorization()
    V1: v1_canonical_query() -> v1_string_to_sign() -> v1_signature()

`AcsV3Auth` and `AcsV1Auth` plug the stages into httpx as an `httpx.Auth`. They take the clock and the
nonce as callables so that tests pin them instead of patching. The emulator verifies requests with the
same functions, so client and server cannot drift apart.

Operation parameters travel in an `application/x-www-form-urlencoded` body (a full batch does not fit in a
URL). V3 covers the body through `x-acs-content-sha256` and the signed `content-type` header; V1 signs the
query and form parameters together, and its common parameters ride in the query string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl, quote

import httpx

from alibaba_sms.credentials import AccessKey

V3_ALGORITHM = "ACS3-HMAC-SHA256"
V1_SIGNATURE_METHOD = "HMAC-SHA1"
API_VERSION = "2018-05-01"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

# The V1 parameters that the signer owns; they are replaced, never duplicated, when a request is re-signed.
V1_COMMON_PARAMETERS = (
    "AccessKeyId",
    "Action",
    "Format",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
)

Clock = Callable[[], datetime]
Nonce = Callable[[], str]


def utc_now() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


class _RandomBytes(threading.local):
    """OS randomness read 4 KiB at a time, per thread: one system call per 256 nonces, not per nonce."""

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0


_random_bytes = _RandomBytes()


def _forget_random_bytes() -> None:
    # A forked child must not hand out its parent's next nonces (SignatureNonceUsed); only the forking
    # thread lives on in the child, and this runs in it.
    _random_bytes.buffer, _random_bytes.offset = b"", 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random_bytes)


def random_nonce() -> str:
    """A fresh single-use nonce: Alibaba rejects a reused one with `SignatureNonceUsed`. 128 random bits
    from the OS (`os.urandom`, buffered per thread), as hex: what `uuid4().hex` carried, for a fraction of
    its cost."""
    source = _random_bytes
    offset, buffer = source.offset, source.buffer
    if offset + 16 > len(buffer):
        buffer = source.buffer = os.urandom(4096)
        offset = 0
    source.offset = offset + 16
    return buffer[offset : offset + 16].hex()


def format_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 to the second, as both signature versions expect (`2024-01-01T00:00:00Z`).

    Raises:
        ValueError: a naive datetime, which would silently be read as local time.
    """
    if moment.tzinfo is None:
        raise ValueError("signing needs a timezone-aware datetime (e.g. datetime.now(UTC))")
    return _format_second(int(moment.timestamp() // 1))  # 2,000 calls a second share one text


@lru_cache(maxsize=4)
def _format_second(epoch_second: int) -> str:
    m = datetime.fromtimestamp(epoch_second, UTC)  # formatted by hand: strftime costs several times more
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba signs it: keep `A-Z a-z 0-9 - _ . ~`, uppercase hex, space -> `%20`."""
    return quote(value, safe="~")


def _sorted_pairs(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    return sorted(pairs)


# --- V1 -------------------------------------------------------------------------------------------------


def v1_canonical_query(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Sorted `key=value` pairs, each side percent-encoded, without the `Signature` parameter."""
    return "&".join(
        f"{percent_encode(key)}={percent_encode(value)}"
        for key, value in _sorted_pairs(params)
        if key != "Signature"
    )


def v1_string_to_sign(method: str, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """`METHOD&%2F&percentEncode(canonical query)`."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(v1_canonical_query(params))}"


def v1_signature(secret: str, string_to_sign: str) -> str:
    """Base64 HMAC-SHA1 keyed with the secret plus `&`."""
    digest = hmac.digest(f"{secret}&".encode(), string_to_sign.encode(), "sha1")
    return base64.b64encode(digest).decode()


# --- V3 -------------------------------------------------------------------------------------------------


def canonical_query_string(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """The V3 canonical query: sorted, percent-encoded, empty when there is no query."""
    return "&".join(f"{percent_encode(key)}={percent_encode(value)}" for key, value in _sorted_pairs(params))


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str] | Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload_hash: str,
) -> str:
    """The V3 canonical request; `headers` are looked up by lowercase name."""
    lowered = {name.lower(): value for name, value in headers.items()}
    names = tuple(sorted(name.lower() for name in signed_headers))
    return _canonical_request(method, path, canonical_query_string(query), lowered, names, payload_hash)


def _canonical_request(
    method: str,
    path: str,
    canonical_query: str,
    lowered: Mapping[str, str],
    names: tuple[str, ...],
    payload_hash: str,
) -> str:
    """`canonical_request` once the headers are lowercase and the signed names sorted and lowercase."""
    canonical_headers = "".join([f"{name}:{lowered.get(name, '').strip()}\n" for name in names])
    signed = ";".join(names)
    return (
        f"{method.upper()}\n{path or '/'}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload_hash}"
    )


@lru_cache(maxsize=64)
def _signed_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The sorted names a V3 signature covers, of a request with these (lowercase) header names: the same
    few sets come back on every call, so they are sorted once."""
    return tuple(sorted(name for name in names if is_v3_signed_header(name)))


def v3_string_to_sign(canonical: str) -> str:
    """`ACS3-HMAC-SHA256\\n` + hex SHA-256 of the canonical request."""
    return f"{V3_ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def v3_signature(secret: str, string_to_sign: str) -> str:
    """Lowercase hex HMAC-SHA256 keyed with the bare secret."""
    return hmac.digest(secret.encode(), string_to_sign.encode(), "sha256").hex()


def v3_authorization(access_key_id: str, signed_headers: Iterable[str], signature: str) -> str:
    """The `Authorization` header value (no spaces after the commas)."""
    names = ";".join(sorted(name.lower() for name in signed_headers))
    return f"{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={names},Signature={signature}"


class MalformedAuthorization(ValueError):
    """An `Authorization` header that is not a well-formed ACS3 header."""


def parse_v3_authorization(header: str) -> tuple[str, str, list[str], str]:
    """Split an `Authorization` header into (algorithm, access key id, signed headers, signature)."""
    algorithm, _, rest = header.strip().partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise MalformedAuthorization("Authorization header fields must be key=value")
        fields[key] = value
    try:
        return algorithm, fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError as missing:
        raise MalformedAuthorization(f"Authorization header lacks {missing.args[0]}") from None


def is_v3_signed_header(name: str) -> bool:
    """The headers our client signs: `host`, `content-type` and every `x-acs-*` header."""
    lowered = name.lower()
    return lowered in ("host", "content-type") or lowered.startswith("x-acs-")


def verify_signature(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(expected.encode(), given.encode())


# --- httpx integration -------------------------------------------------------------------------------------


def _form_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return []
    return parse_qsl(request.content.decode(), keep_blank_values=True)


class _AcsAuth(httpx.Auth):
    """Signs each request afresh: a retried request gets a new date, nonce and signature."""

    requires_request_body = True

    def __init__(
        self, credentials: AccessKey, *, clock: Clock = utc_now, nonce: Nonce = random_nonce
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"{type(self).__name__}(access_key_id={self._credentials.access_key_id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._sign(request, self._credentials, moment=self._clock(), nonce=self._nonce())
        yield request

    @staticmethod
    def _sign(request: httpx.Request, credentials: AccessKey, *, moment: datetime, nonce: str) -> None:
        raise NotImplementedError


class AcsV3Auth(_AcsAuth):
    """ACS3-HMAC-SHA256 in the `Authorization` header (the official SDK's default)."""

    def signature_headers(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, str]:
        """Sign a request before it is built: the headers to add to it (`v3_signature_headers`, with this
        signer's key, clock and a fresh nonce). The same signature `auth_flow` puts on the built request,
        without rebuilding its headers: `AsyncSmsClient` builds each request once, already signed."""
        return v3_signature_headers(
            method, path, query, headers, body, self._credentials, moment=self._clock(), nonce=self._nonce()
        )

    @staticmethod
    def _sign(request: httpx.Request, credentials: AccessKey, *, moment: datetime, nonce: str) -> None:
        sign_v3(request, credentials, moment=moment, nonce=nonce)


class AcsV1Auth(_AcsAuth):
    """HMAC-SHA1 with the common parameters in the query (the SDK's `signature_algorithm='v2'`).

    The action comes from the `x-acs-action` header that the client sets for both versions.
    """

    @staticmethod
    def _sign(request: httpx.Request, credentials: AccessKey, *, moment: datetime, nonce: str) -> None:
        sign_v1(request, credentials, moment=moment, nonce=nonce)


def v3_signature_headers(
    method: str,
    path: str,
    query: Mapping[str, str] | Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    credentials: AccessKey,
    *,
    moment: datetime,
    nonce: str,
) -> dict[str, str]:
    """The headers V3 adds to a request: `x-acs-version` (kept if given), `x-acs-date`,
    `x-acs-signature-nonce`, `x-acs-content-sha256` and `Authorization`.

    Args:
        headers: the request's other headers, lowercase names (`host` and `content-type` among them).
    """
    payload_hash = hashlib.sha256(body).hexdigest()
    added = {
        "x-acs-version": headers.get("x-acs-version", API_VERSION),
        "x-acs-date": format_timestamp(moment),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": payload_hash,
    }
    current = {**headers, **added}
    signed = _signed_names(tuple(current))
    canonical_query = canonical_query_string(query) if query else ""
    canonical = _canonical_request(method, path, canonical_query, current, signed, payload_hash)
    signature = v3_signature(credentials.secret(), v3_string_to_sign(canonical))
    added["Authorization"] = (
        f"{V3_ALGORITHM} Credential={credentials.access_key_id},SignedHeaders={';'.join(signed)},"
        f"Signature={signature}"
    )  # v3_authorization's text; the names are sorted and lowercase already
    return added


def sign_v3(request: httpx.Request, credentials: AccessKey, *, moment: datetime, nonce: str) -> None:
    """Add the V3 headers and `Authorization` to a built request, in place.

    Each lookup in `httpx.Headers` scans every header, so the headers are read once into a dict and
    written once: signing is on the path of every one of 2,000 calls a second.
    """
    headers = request.headers
    # This could be a retry: drop the previous signature before signing again.
    current = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in headers.raw
        if name.lower() != b"authorization"
    }
    url = request.url
    query = parse_qsl(url.query.decode("ascii"), keep_blank_values=True) if url.query else []
    added = v3_signature_headers(
        request.method, url.path, query, current, request.content, credentials, moment=moment, nonce=nonce
    )
    kept = [(n, v) for n, v in headers.raw if n.lower() not in _V3_REPLACED]
    request.headers = httpx.Headers(kept + [(n.encode(), v.encode()) for n, v in added.items()])


_V3_REPLACED = frozenset(
    {b"authorization", b"x-acs-version", b"x-acs-date", b"x-acs-signature-nonce", b"x-acs-content-sha256"}
)


def sign_v1(request: httpx.Request, credentials: AccessKey, *, moment: datetime, nonce: str) -> None:
    """Put the V1 common parameters and `Signature` into the query of a built request, in place."""
    action = request.headers.get("x-acs-action")
    if not action:
        raise ValueError("V1 signing needs the x-acs-action header to name the API operation")
    own = [(k, v) for k, v in request.url.params.multi_items() if k not in V1_COMMON_PARAMETERS]
    common = [
        ("AccessKeyId", credentials.access_key_id),
        ("Action", action),
        ("Format", "JSON"),
        ("SignatureMethod", V1_SIGNATURE_METHOD),
        ("SignatureNonce", nonce),
        ("SignatureVersion", "1.0"),
        ("Timestamp", format_timestamp(moment)),
        ("Version", request.headers.get("x-acs-version", API_VERSION)),
    ]
    query = own + common
    string_to_sign = v1_string_to_sign(request.method, query + _form_pairs(request))
    signature = v1_signature(credentials.secret(), string_to_sign)
    request.url = request.url.copy_with(params=httpx.QueryParams(query + [("Signature", signature)]))
