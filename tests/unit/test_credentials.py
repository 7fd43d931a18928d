"""Credentials: Alibaba's environment variables, a Prefect Secret block, and a secret that never shows.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_credentials.py.
"""

from __future__ import annotations

import pytest

from alibaba_sms.credentials import AccessKey, MissingCredentials


class TestFromEnvironment:
    def test_reads_alibabas_standard_variables(self) -> None:
        env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIexample", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "shh-1234"}
        key = AccessKey.from_env(env)
        assert key.access_key_id == "LTAIexample" and key.secret() == "shh-1234"
        assert (
            "shh-1234" not in repr(key)
            and "shh-1234" not in str(key)
            and "shh-1234" not in key.model_dump_json()
        )

    @pytest.mark.parametrize(
        "env", [{}, {"ALIBABA_CLOUD_ACCESS_KEY_ID": "x"}, {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "y"}]
    )
    def test_missing_variables_are_a_clear_error(self, env: dict[str, str]) -> None:
        with pytest.raises(MissingCredentials, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
            AccessKey.from_env(env)
