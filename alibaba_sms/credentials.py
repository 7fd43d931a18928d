"""The AccessKey pair, with the secret kept out of every repr, log line and exception.

The secret sits in a pydantic `SecretStr` and is unwrapped only by `AccessKey.secret()`, which the signer
calls at the moment it computes a signature. Credentials come from Alibaba's standard environment variables
(`AccessKey.from_env`) or are handed in as a pair (`AccessKey.of`, or the model's fields with a `SecretStr`).
This package never imports Prefect: `globe_sms.gateway.access_key_from_block` reads a key kept in a Prefect
Secret block.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ACCESS_KEY_ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ACCESS_KEY_SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"


class MissingCredentials(LookupError):
    """No AccessKey could be found where it was looked for."""


class AccessKey(BaseModel):
    """An Alibaba Cloud AccessKey pair. `repr()` and `str()` never show the secret."""

    model_config = ConfigDict(frozen=True)

    access_key_id: str = Field(min_length=1, description="The AccessKeyId (not secret).")
    access_key_secret: SecretStr = Field(description="The AccessKey secret.")

    def secret(self) -> str:
        """The plain secret, for the signer only."""
        return self.access_key_secret.get_secret_value()

    @classmethod
    def of(cls, access_key_id: str, access_key_secret: str) -> AccessKey:
        """Build a key from plain strings."""
        return cls(access_key_id=access_key_id, access_key_secret=SecretStr(access_key_secret))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AccessKey:
        """Read `ALIBABA_CLOUD_ACCESS_KEY_ID` and `ALIBABA_CLOUD_ACCESS_KEY_SECRET`.

        Raises:
            MissingCredentials: either variable is unset or empty.
        """
        env = os.environ if environ is None else environ
        key_id, secret = env.get(ACCESS_KEY_ID_ENV, ""), env.get(ACCESS_KEY_SECRET_ENV, "")
        if not key_id or not secret:
            raise MissingCredentials(
                f"Set {ACCESS_KEY_ID_ENV} and {ACCESS_KEY_SECRET_ENV}, or name a Prefect Secret block "
                "holding the AccessKey (HINT: the endpoint 'emulator' needs no credentials)."
            )
        return cls.of(key_id, secret)
