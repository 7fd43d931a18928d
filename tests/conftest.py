"""Shared fixtures: an isolated Prefect home, one real Prefect test server for the whole session, and the
emulator fixtures of tests/emulator_fixtures.py for every test module.

Prefect reads its settings at import, so the environment is set here, before anything imports prefect.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="globe-sms-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_TASKS_REFRESH_CACHE", "true")
os.environ.setdefault(
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem"
)
# Campaigns without a ledger or data folder use the default data folder: a scratch one, never the home's.
os.environ["GLOBE_SMS_DATA_DIR"] = tempfile.mkdtemp(prefix="globe-sms-data-")
# A secret in the environment must never leak: the secret-hygiene tests look for it everywhere.
for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "HTTP_PROXY", "HTTPS_PROXY",
             "http_proxy", "https_proxy"):
    os.environ.pop(name, None)

import pytest  # noqa: E402

# The emulator, ledger and browser fixtures, imported here (not in each test module) so that pytest offers
# them to every test module under tests/ and each is registered once. Test modules import only helpers
# and types.
from tests.browser_fixtures import chromium, prefect_ui, ui_page  # noqa: E402, F401 - fixtures
from tests.emulator_fixtures import (  # noqa: E402, F401 - fixtures
    emulator,
    gateway,
    no_proxy,
    shared_emulator,
    start_emulator,
)
from tests.ledger_fixtures import clock, ledger, pg_url, url  # noqa: E402, F401 - fixtures


@pytest.fixture(autouse=True)
def globe_sms_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A default data folder of the test's own (`GLOBE_SMS_DATA_DIR`): the default ledger, the rejects file
    and the spools of campaigns that name no ledger or data_dir land there, never in the home directory nor
    in another test's ledger."""
    folder = tmp_path_factory.mktemp("globe-sms-data")
    monkeypatch.setenv("GLOBE_SMS_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real Prefect server (SQLite, loopback) for every test that runs flows; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()
