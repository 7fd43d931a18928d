"""Secrets a source names (`SecretRef`): read at the last moment, kept in `SecretStr`, masked in errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

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
