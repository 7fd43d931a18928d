"""Shared fixtures: an isolated Prefect home, one real Prefect test server for the whole session, and the
emulator fixtures of tests/emulator_fixtures.py for every test module, in tests/unit and tests/integration.

The folders mirror what a test needs: tests/unit holds pure functions and models (no server, no network,
no subprocess; `uv run pytest tests/unit` runs in seconds) and every test there is marked `unit`;
tests/integration holds the tests of real servers (Prefect, the emulator, PostgreSQL, loopback HTTP) and real
processes, marked `integration`. A unit test that asks for a server fixture fails, saying to move it.

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
from tests.alone import turn  # noqa: E402
from tests.browser_fixtures import chromium, prefect_ui, ui_page  # noqa: E402, F401 - fixtures
from tests.emulator_fixtures import (  # noqa: E402, F401 - fixtures
    emulator,
    gateway,
    no_proxy,
    shared_emulator,
    start_emulator,
)
from tests.ledger_fixtures import clock, ledger, pg_url, url  # noqa: E402, F401 - fixtures
from tests.recipients_api import recipients_api  # noqa: E402, F401 - fixtures

_TESTS = Path(__file__).resolve().parent
# Fixtures that start or reach a server; a test under tests/unit must not ask for any of them (`url` and
# `ledger` are parametrised over the PostgreSQL server too).
SERVER_FIXTURES = frozenset({
    "prefect_server", "gateway", "emulator", "start_emulator", "shared_emulator", "no_proxy", "pg_url", "url",
    "ledger", "recipients_api", "prefect_ui", "ui_page", "chromium",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder (`unit` or `integration`) so that `-m` selects either."""
    for item in items:
        folder = Path(str(item.path)).resolve().relative_to(_TESTS).parts[0]
        if folder in ("unit", "integration"):
            item.add_marker(folder)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist, a test marked `alone` or `browser` runs with no other test beside it
    (tests/alone.py)."""
    alone = item.get_closest_marker("alone") is not None or item.get_closest_marker("browser") is not None
    with turn(item.config, alone=alone):
        return (yield)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A unit test may not ask for a server: it fails, naming the fixtures, before any of them starts."""
    if item.get_closest_marker("unit") is None:
        return
    wanted = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if wanted:
        pytest.fail(
            f"{item.nodeid} is under tests/unit but needs {', '.join(wanted)}: a unit test runs without a "
            "server or network; move it to tests/integration",
            pytrace=False,
        )


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
