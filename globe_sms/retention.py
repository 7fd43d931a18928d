"""The retention key: the secret behind the keyed hash a purged ledger row keeps instead of its number.

`globe-sms ledger purge` replaces the numbers of finished campaigns with `phone_key(number)`, an
HMAC-SHA256 keyed with this key, so that frequency caps and a rerun's dedupe still recognise a purged number
while the ledger alone (a dump, a backup) does not give it back: phone numbers are few enough that an unkeyed
hash would be reversed by trying them all. Keep the key outside the ledger database, and keep it: with another
key, purged rows no longer match their numbers.

Where it is read, first found wins: the environment variable `GLOBE_SMS_RETENTION_KEY` (the key itself), or
`GLOBE_SMS_RETENTION_KEY_BLOCK` naming a Prefect Secret block that holds it. The key lives in a `SecretStr`
and is unwrapped only inside `RetentionKey.phone_keys`; it never reaches a log, an artifact or an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from pydantic import SecretStr

from globe_sms.secrets import SecretNotFound, read_secret_block

KEY_ENV = "GLOBE_SMS_RETENTION_KEY"
KEY_BLOCK_ENV = "GLOBE_SMS_RETENTION_KEY_BLOCK"
MIN_KEY_LENGTH = 16


class RetentionKeyMissing(SecretNotFound):
    """No retention key is configured (or it is too short), and a purge or a purged row needs one."""


@dataclass(frozen=True)
class RetentionKey:
    """The HMAC key of purged numbers; `repr` and `str` never show it."""

    secret: SecretStr

    def phone_keys(self, phones: Iterable[str]) -> list[str]:
        """HMAC-SHA256 of each number (E.164 digits), as 64 hex digits, in order."""
        key = self.secret.get_secret_value().encode()
        return [hmac.new(key, phone.encode(), hashlib.sha256).hexdigest() for phone in phones]

    def __repr__(self) -> str:
        return "RetentionKey(**********)"


def retention_key(environ: Mapping[str, str] | None = None, *, required: bool = True) -> RetentionKey | None:
    """The configured retention key; None when there is none and it is not `required`.

    Raises:
        RetentionKeyMissing: none is configured and `required`, or it is shorter than `MIN_KEY_LENGTH`, or the
            block named is missing or not a string.
    """
    env = os.environ if environ is None else environ
    value: object = env.get(KEY_ENV, "")
    where = f"environment variable {KEY_ENV}"
    if not value and env.get(KEY_BLOCK_ENV):
        block = env[KEY_BLOCK_ENV]
        where = f"Secret block {block!r} ({KEY_BLOCK_ENV})"
        try:
            value = read_secret_block(block)
        except SecretNotFound as exc:
            raise RetentionKeyMissing(f"retention key: {exc}") from None
    if not value:
        if not required:
            return None
        raise RetentionKeyMissing(
            f"no retention key: set {KEY_ENV} to a secret of at least {MIN_KEY_LENGTH} characters, or "
            f"{KEY_BLOCK_ENV} to the name of a Prefect Secret block holding one (docs/retention.md)"
        )
    if not isinstance(value, str) or len(value) < MIN_KEY_LENGTH:
        raise RetentionKeyMissing(
            f"the retention key in the {where} must be a string of at least {MIN_KEY_LENGTH} characters"
        )
    return RetentionKey(SecretStr(value))


_AGE = re.compile(r"^([0-9]{1,5})([dh])$")


def parse_age(text: str) -> timedelta:
    """`90d` or `36h` as a duration.

    Raises:
        ValueError: anything else.
    """
    match = _AGE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an age: give days or hours, e.g. 90d or 36h")
    amount, unit = int(match[1]), match[2]
    return timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
