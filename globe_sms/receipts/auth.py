"""The receiver's shared secret: a token in the callback URL, checked in constant time and never logged.

Alibaba's receipt push carries no signature and no header we can choose, so the one thing we control is the
URL entered in the SMS console. It carries a random token, and a push without the right one is refused:

    https://receipts.example.com/receipts/<token>      the primary form: a path segment
    https://receipts.example.com/receipts?token=<token>  also accepted

A path segment is primary because it survives every hop: some consoles and proxies drop or rewrite query
strings, and frameworks treat the path as part of the route while query strings are easy to lose on a
redirect. Either form is as secret as the logs that record it, so every log line this package writes shows
the path and query redacted (`/receipts/****`, `token=****`), including uvicorn's access log when enabled.

The token lives in a pydantic `SecretStr` (`repr()` shows `**********`) and is unwrapped only by
`ReceiverToken.matches`, which compares SHA-256 digests with `hmac.compare_digest`: constant time, and
the length of the token does not show either. It comes from `GLOBE_SMS_RECEIPTS_TOKEN` or from a Prefect
Secret block, like the AccessKey (`alibaba_sms/credentials.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, SecretStr

TOKEN_ENV = "GLOBE_SMS_RECEIPTS_TOKEN"
TOKEN_BLOCK_ENV = "GLOBE_SMS_RECEIPTS_TOKEN_BLOCK"
TOKEN_PATH_PREFIX = "/receipts/"
TOKEN_QUERY_PARAMETER = "token"
MIN_TOKEN_LENGTH = 16
MASK = "****"
# RFC 3986 unreserved characters: the token goes into a URL path as it is, no encoding to get wrong.
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")
# Path segments that are never secret: everything else in a logged path is masked.
_PUBLIC_SEGMENTS = frozenset({"", "receipts", "health"})
_PUBLIC_QUERY_NAMES = frozenset({TOKEN_QUERY_PARAMETER})


class InvalidReceiverToken(ValueError):
    """A configured token that cannot be used; the message never contains the value."""


class ReceiverToken(BaseModel):
    """The receiver's shared secret. `repr()` and `str()` never show it; `matches` compares in constant time.

    Example:
        token = ReceiverToken.of(secrets.token_urlsafe(32))
        token.matches(presented)  # True only for the same token
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    token: SecretStr

    @classmethod
    def of(cls, text: str, *, source: str = "the receipts token") -> ReceiverToken:
        """Check a plain string and wrap it.

        Args:
            text: the token: at least 16 characters of `A-Z a-z 0-9 . _ ~ -`.
            source: where it came from, for the error message (the value itself is never shown).

        Raises:
            InvalidReceiverToken: too short, or a character that would need encoding in a URL.
        """
        text = text.strip()
        if len(text) < MIN_TOKEN_LENGTH:
            raise InvalidReceiverToken(
                f"{source} is too short: use at least {MIN_TOKEN_LENGTH} characters "
                "(HINT: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not _TOKEN_PATTERN.fullmatch(text):
            raise InvalidReceiverToken(
                f"{source} may hold only letters, digits and . _ ~ - (it goes into a URL path unencoded)"
            )
        return cls(token=SecretStr(text))

    @classmethod
    def generate(cls) -> ReceiverToken:
        """A fresh random token (256 bits), e.g. for the embedded receiver of one run."""
        return cls.of(secrets.token_urlsafe(32))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverToken | None:
        """`GLOBE_SMS_RECEIPTS_TOKEN`, or None when it is unset or empty.

        Raises:
            InvalidReceiverToken: the variable is set to an unusable token.
        """
        env = os.environ if environ is None else environ
        text = env.get(TOKEN_ENV, "").strip()
        return cls.of(text, source=TOKEN_ENV) if text else None

    @classmethod
    def from_secret_block(cls, block_name: str) -> ReceiverToken:
        """Load the token from a Prefect `Secret` block: a plain string, or `{"token": ...}`.

        Raises:
            InvalidReceiverToken: the block holds no usable token.
            globe_sms.secrets.SecretNotFound: there is no such block.
        """
        from globe_sms.secrets import read_secret_block

        value = read_secret_block(block_name)
        if isinstance(value, Mapping):
            if "token" not in value:
                raise InvalidReceiverToken(f"Secret block {block_name!r} holds a mapping without 'token'")
            value = value["token"]
        return cls.of(str(value), source=f"Secret block {block_name!r}")

    def matches(self, presented: str | None) -> bool:
        """Whether a presented token is this one, in constant time (digests hide the length too)."""
        if not presented:
            return False
        expected = hashlib.sha256(self.token.get_secret_value().encode()).digest()
        given = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(expected, given)

    def url_path(self) -> str:
        """`/receipts/<token>`, the path to enter in the Alibaba console. Holds the secret: never log it."""
        return TOKEN_PATH_PREFIX + self.token.get_secret_value()


def resolve_token(
    block_name: str | None = None, environ: Mapping[str, str] | None = None
) -> ReceiverToken | None:
    """The configured token: the named Secret block if any, else `GLOBE_SMS_RECEIPTS_TOKEN`, else None.

    Raises:
        InvalidReceiverToken: the token found cannot be used.
    """
    if block_name:
        return ReceiverToken.from_secret_block(block_name)
    return ReceiverToken.from_env(environ)


def masked_push_url(base_url: str, token: ReceiverToken | None) -> str:
    """The push URL as it may be shown: `http://host:port/receipts/****`, or `http://host:port/`."""
    base = base_url.rstrip("/")
    return f"{base}{TOKEN_PATH_PREFIX}{MASK}" if token is not None else f"{base}/"


# --- keeping the token out of logs ------------------------------------------------------------------------


def redact_path(path: str, query: str = "") -> str:
    """A request target fit for a log line: every value, and every name but a few known ones, masked.

    Only the path segments `receipts` and `health` and the query name `token` are kept, so a token sent
    to the wrong place is masked as well: `/receipts/abc` -> `/receipts/****`,
    `/abc?token=x&abc` -> `/****?token=****&****=****`.
    """
    segments = [s if s in _PUBLIC_SEGMENTS else MASK for s in path.split("/")]
    redacted = "/".join(segments) or "/"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        shown = [(k if k in _PUBLIC_QUERY_NAMES else MASK, MASK) for k, _ in pairs]
        redacted += "?" + (urlencode(shown, safe="*") if shown else MASK)
    return redacted


def redact_target(target: str) -> str:
    """`redact_path` for a target written as one string, `/path?query` or a full URL."""
    parts = urlsplit(target)
    redacted = redact_path(parts.path, parts.query)
    if parts.scheme or parts.netloc:
        path, _, query = redacted.partition("?")
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
    return redacted


class RedactTargets(logging.Filter):
    """Masks the request target in uvicorn's access log lines (`'%s - "%s %s HTTP/%s" %d'`).

    Installed on `uvicorn.access` by the receiver, in case an operator turns that log on: the line then
    reads `POST /receipts/**** HTTP/1.1 200`. Other records pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2]), args[3], args[4])
        return True


def install_access_log_filter() -> None:
    """Put `RedactTargets` on uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTargets) for f in access.filters):
        access.addFilter(RedactTargets())


class RefusalLog:
    """Counts refused pushes and logs them at most once per `interval_seconds`, never with the token.

    The first refusal is logged at once; later ones are summed into one line per interval, so a scan or a
    misconfigured console cannot flood the log.

    Args:
        logger: where the warning goes.
        interval_seconds: the shortest time between two warnings.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._missing = self._wrong = 0
        self._last_client = "?"
        self._logged_at: float | None = None
        self.total = 0

    def note(self, *, missing: bool, client: str) -> None:
        """Count one refusal (no token, or a wrong one) and log if the interval has passed."""
        with self._lock:
            self.total += 1
            if missing:
                self._missing += 1
            else:
                self._wrong += 1
            self._last_client = client
            now = self._clock()
            if self._logged_at is None or now - self._logged_at >= self._interval:
                self._emit_locked(now)

    def flush(self) -> None:
        """Log the refusals counted since the last line (on shutdown)."""
        with self._lock:
            if self._missing or self._wrong:
                self._emit_locked(self._clock())

    def _emit_locked(self, now: float) -> None:
        since = "" if self._logged_at is None else f" in the last {now - self._logged_at:.0f} s"
        self._logger.warning(
            "refused %s receipt push(es)%s: %s without a token (401), %s with a wrong token (403); "
            "latest from %s. Nothing was stored. If these are Alibaba's, check the URL in the SMS console",
            self._missing + self._wrong,
            since,
            self._missing,
            self._wrong,
            self._last_client,
        )
        self._missing = self._wrong = 0
        self._logged_at = now
