"""Secrets a source names (`SecretRef`): read at the last moment, kept in `SecretStr`, masked in errors."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote, quote_plus, unquote, urlsplit

import httpx
from pydantic import SecretStr

from globe_sms import secrets
from globe_sms.sources import SecretRef
from tasks.sources.errors import SourceSecretError

MASK = "***"


def resolve_secret(ref: SecretRef, field: str, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The secret `ref` points at (`globe_sms.secrets.resolve_secret`, raising the sources' error).

    Args:
        ref: a Secret block name or an environment variable name.
        field: the campaign field, for messages (`source.connection`).
        environ: the environment to read (default: `os.environ`).

    Raises:
        SourceSecretError: the variable is unset or empty, or the block is missing or empty.
    """
    try:
        return secrets.resolve_secret(ref, field, environ)
    except secrets.SecretNotFound as exc:
        raise SourceSecretError(str(exc)) from None


def secret_parts(secret: SecretStr) -> list[str]:
    """The strings to mask for `secret`: the value and, for a URL, its password (raw and percent-decoded)."""
    value = secret.get_secret_value()
    parts = [value]
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        parts += [password, unquote(password)]
    return [part for part in parts if part]


def mask_secrets(text: str, secrets: Iterable[SecretStr]) -> str:
    """`text` with every part of every secret replaced by `***` (longest first, so a URL goes whole)."""
    parts = sorted({part for secret in secrets for part in secret_parts(secret)}, key=len, reverse=True)
    for part in parts:
        text = text.replace(part, MASK)
    return text


def query_value_forms(value: str) -> list[SecretStr]:
    """`value` as it may appear in a URL's query: raw, as httpx encodes it, and percent- or plus-encoded."""
    encoded = httpx.URL("http://h/", params={"k": value}).query.decode("ascii").partition("=")[2]
    forms = {value, encoded, quote(value, safe=""), quote_plus(value)}
    return [SecretStr(form) for form in forms if form]


class _MaskInLogRecords(logging.Filter):
    """Masks registered secrets in every record of the logger it is on (args and message).

    httpx logs every request's full URL at INFO (`HTTP Request: GET https://...?api_key=... "200 OK"`);
    there is no public option to leave the query out, so the record is rewritten before any handler sees it.
    A filter on the `httpx` logger applies to the records httpx logs there (`logging.getLogger("httpx")`
    in httpx/_client.py); a test pins that this line is still logged and masked.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[SecretStr]) -> list[str]:
        parts = [part for secret in secrets for part in secret_parts(secret)]
        with self._lock:
            self._secrets.update(parts)
        return parts

    def discard(self, parts: list[str]) -> None:
        with self._lock:
            self._secrets.subtract(parts)
            self._secrets += Counter()  # drop the parts no longer registered

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = [SecretStr(part) for part in self._secrets]
        if not secrets:
            return True
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_secrets(str(arg), secrets) if isinstance(arg, (str, httpx.URL)) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = mask_secrets(record.msg, secrets)
        return True


_HTTPX_LOG_MASK = _MaskInLogRecords()


@contextmanager
def masked_in_httpx_log(secrets: Iterable[SecretStr]) -> Iterator[None]:
    """While inside, every part of `secrets` is masked (`***`) in the records of the `httpx` logger."""
    httpx_logger = logging.getLogger("httpx")
    if _HTTPX_LOG_MASK not in httpx_logger.filters:
        httpx_logger.addFilter(_HTTPX_LOG_MASK)
    parts = _HTTPX_LOG_MASK.add(secrets)
    try:
        yield
    finally:
        _HTTPX_LOG_MASK.discard(parts)
