"""Reading the secrets a campaign names (`SecretRef`): an environment variable or a Prefect Secret block.

A campaign never holds a secret, only where it is kept (`{env: NAME}` or `{block: NAME}`), so that no flow
parameter, UI form or log line carries it. The value is read here at the last moment, kept in a `SecretStr`,
and unwrapped only where a connection or a request is made. Errors name the campaign field and where the
secret was looked up, never the value.

`read_secret_block` is the one place globe-sms reads a Prefect Secret block (the ledger URL, the sources'
connections and tokens, the receipts push token, the AccessKey: `globe_sms.gateway.access_key_from_block`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

from pydantic import SecretStr

from globe_sms.sources import SecretRef


class SecretNotFound(ValueError):
    """The environment variable or Secret block a campaign names is unset, missing or empty."""


def read_secret_block(name: str) -> Any:
    """The value of the Prefect Secret block `name` (a string, or a mapping for structured secrets).

    Raises:
        SecretNotFound: no such block (Prefect's message says so; the value is never in it).
    """
    from prefect.blocks.system import Secret

    try:
        block = cast("Secret[Any]", Secret.load(name))  # sync outside an event loop
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise SecretNotFound(f"cannot load Secret block {name!r}: {exc}") from None
    return block.get()


def resolve_secret(ref: SecretRef, field: str, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The string secret `ref` points at.

    Args:
        ref: a Secret block name or an environment variable name.
        field: the campaign field, for messages (`ledger`, `source.connection`).
        environ: the environment to read (default: `os.environ`).

    Raises:
        SecretNotFound: the variable is unset or empty, or the block is missing, empty or not a string.
    """
    if ref.env is not None:
        value = (os.environ if environ is None else environ).get(ref.env, "")
        if not value:
            raise SecretNotFound(f"{field}: environment variable {ref.env} is not set")
        return SecretStr(value)
    assert ref.block is not None  # a SecretRef names exactly one of block and env
    try:
        value = read_secret_block(ref.block)
    except SecretNotFound as exc:
        raise SecretNotFound(f"{field}: {exc}") from None
    if not value or not isinstance(value, str):
        raise SecretNotFound(f"{field}: Secret block {ref.block!r} must hold a non-empty string")
    return SecretStr(value)
