"""Authentication of API calls: V3 (ACS3-HMAC-SHA256) and V1 (HMAC-SHA1) signatures, clock and nonce.

Signatures are checked with the very stages the client signs with (`alibaba_sms.signing`), in this
order, each failure a `GatewayError`:

    missing common parameter  -> 400 Missing{Name}
    unknown action / version  -> 404 InvalidApi.NotFound
    unknown AccessKeyId       -> 404 InvalidAccessKeyId.NotFound
    other algorithm / method  -> 400 InvalidSignatureMethod
    timestamp format / skew   -> 400 InvalidTimeStamp.Format / InvalidTimeStamp.Expired
    signature or body hash    -> 400 SignatureDoesNotMatch (V1: "... server string to sign is:<StringToSign>")
    nonce reused for the key  -> 400 SignatureNonceUsed

An unsigned call does not match any signature. Only a verified call spends its nonce.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from datetime import UTC, datetime

from alibaba_sms import signing
from alibaba_sms.emulator.answers import GatewayError, missing
from alibaba_sms.emulator.call import Call
from alibaba_sms.emulator.operations import HANDLERS
from alibaba_sms.emulator.state import EmulatorState

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
_V1_COMMON = ("AccessKeyId", "Action", "Version", "Timestamp", "SignatureNonce", "SignatureMethod")


def signature_mismatch(detail: str = "") -> GatewayError:
    """The gateway's error for a signature (or body hash) that does not check out."""
    return GatewayError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH + detail)


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


@functools.lru_cache(maxsize=16)
def epoch_seconds(value: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC timestamp to the second (`2026-01-02T03:04:05Z`).

    Cached: the calls of one second (up to 2,000 of them) carry the same timestamp, parsed once.

    Raises:
        ValueError: `value` is not such a timestamp.
    """
    if not _TIMESTAMP.fullmatch(value):
        raise ValueError(value)
    # By hand: strptime costs more than the rest of the check.
    moment = datetime(
        int(value[0:4]),
        int(value[5:7]),
        int(value[8:10]),
        int(value[11:13]),
        int(value[14:16]),
        int(value[17:19]),
        tzinfo=UTC,
    )
    return moment.timestamp()


def check_timestamp(value: str, state: EmulatorState) -> None:
    """ISO 8601 UTC to the second, within the allowed skew of the emulator's clock."""
    try:
        moment = epoch_seconds(value)
    except ValueError:
        raise GatewayError(
            400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
        ) from None
    if abs(moment - state.now()) > state.config.max_clock_skew_seconds:
        raise GatewayError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")


def check_nonce(state: EmulatorState, access_key_id: str, nonce: str) -> None:
    """Single use per AccessKeyId; only a verified request spends its nonce."""
    if not state.use_nonce(access_key_id, nonce):
        raise GatewayError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def verify_v3(call: Call, state: EmulatorState) -> None:
    """Check an ACS3-HMAC-SHA256 `Authorization` header against the rebuilt canonical request."""
    headers = call.headers
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
        raise signature_mismatch() from None
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
        canonical = signing.canonical_request(
            call.method, call.path, call.query, signed_values(call, names), sorted(names), payload_hash
        )
        expected = signing.v3_signature(secret, signing.v3_string_to_sign(canonical))
        reason = "" if signing.verify_signature(expected, given) else "signature differs"
    if reason:
        logger.info("V3 request %s refused: %s", call.request_id, reason)
        raise signature_mismatch()
    check_nonce(state, call.access_key_id, headers["x-acs-signature-nonce"])


def signed_values(call: Call, names: set[str]) -> dict[str, str]:
    """Each signed header's value as the canonical request takes it: a header sent more than once gives its
    stripped values sorted and joined with commas, one sent once its value, one not sent ``."""
    headers, repeated = call.headers, call.repeated
    return {
        name: ",".join(sorted(v.strip() for v in call.header_values(name)))
        if name in repeated
        else headers.get(name, "")
        for name in names
    }


def verify_v1(call: Call, state: EmulatorState) -> None:
    """Check an HMAC-SHA1 `Signature` over all query and form parameters but itself."""
    params = call.params
    for name in _V1_COMMON:
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
        raise signature_mismatch(f" server string to sign is:{string_to_sign}")
    check_nonce(state, call.access_key_id, params["SignatureNonce"])


def authenticate(call: Call, state: EmulatorState) -> None:
    """Verify the request's V3 or V1 signature; an unsigned request does not match any signature."""
    if call.version == "v3":
        verify_v3(call, state)
    elif call.version == "v1":
        verify_v1(call, state)
    else:
        raise signature_mismatch()
