"""Secrets a source names (`SecretRef`): read at the last moment, kept in `SecretStr`, masked in errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from globe_sms.sources import SecretRef
from tasks.sources.errors import SourceSecretError

MASK = "***"


def resolve_secret(ref: SecretRef, field: str, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The secret `ref` points at.

    Args:
        ref: a Secret block name or an environment variable name.
        field: the campaign field, for messages (`source.connection`).
        environ: the environment to read (default: `os.environ`).

    Raises:
        SourceSecretError: the variable is unset or empty, or the block is missing or empty.
    """
    if ref.env is not None:
        value = (os.environ if environ is None else environ).get(ref.env, "")
        if not value:
            raise SourceSecretError(f"{field}: environment variable {ref.env} is not set")
        return SecretStr(value)
    from prefect.blocks.system import Secret

    assert ref.block is not None  # a SecretRef names exactly one of block and env
    try:
        block = cast("Secret[Any]", Secret.load(ref.block))  # sync outside an event loop
        value = block.get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise SourceSecretError(f"{field}: cannot load Secret block {ref.block!r}: {exc}") from None
    if not value or not isinstance(value, str):
        raise SourceSecretError(f"{field}: Secret block {ref.block!r} must hold a non-empty string")
    return SecretStr(value)


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
