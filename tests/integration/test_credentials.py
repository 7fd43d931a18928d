"""Credentials: Alibaba's environment variables, a Prefect Secret block, and a secret that never shows.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_credentials.py.
"""

from __future__ import annotations

import pytest

from alibaba_sms.credentials import MissingCredentials
from globe_sms.gateway import access_key_from_block
from globe_sms.secrets import SecretNotFound


@pytest.mark.usefixtures("prefect_server")
class TestFromSecretBlock:
    def test_a_block_holding_both_halves(self) -> None:
        """A JSON Secret block with the id and the secret, as `globe-sms setup` expects it."""
        from prefect.blocks.system import Secret

        Secret(value={"access_key_id": "LTAIblock", "access_key_secret": "block-secret-9"}).save(
            "globe-sms-test-key", overwrite=True
        )
        key = access_key_from_block("globe-sms-test-key")
        assert key.access_key_id == "LTAIblock" and key.secret() == "block-secret-9"
        assert "block-secret-9" not in repr(key)

    def test_a_block_holding_only_the_secret_takes_the_id_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from prefect.blocks.system import Secret

        Secret(value="plain-secret-7").save("globe-sms-test-plain", overwrite=True)
        monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID", raising=False)
        with pytest.raises(MissingCredentials, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
            access_key_from_block("globe-sms-test-plain")
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv")
        key = access_key_from_block("globe-sms-test-plain")
        assert key.access_key_id == "LTAIenv" and key.secret() == "plain-secret-7"

    def test_a_missing_block_is_named(self) -> None:
        with pytest.raises(SecretNotFound, match="'globe-sms-test-no-such-key'"):
            access_key_from_block("globe-sms-test-no-such-key")
