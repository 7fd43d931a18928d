"""Fixtures for the tests that drive a real browser against a real Prefect server with its UI.

`tests/conftest.py` imports the fixtures (`prefect_ui`, `chromium`, `ui_page`), so every test module can ask
for them by name; modules import only the helpers and types from here. Tests that use them are marked
`browser`.

* `prefect_ui` (session): `prefect server start --ui` on a free loopback port in a temporary PREFECT_HOME (the
  session's `prefect_server` fixture is Prefect's test harness, which serves the API only, no UI), then, as a
  user deploys: `globe-sms setup`, `prefect --no-prompt deploy --all` with GLOBE_SMS_HOME set (every
  deployment of prefect.yaml), and one process worker of the deployments' pool (`globe-sms`). Stopped at the
  end of the session.
* `chromium` (session): Debian's Chromium (`apt-get install chromium`, which `.ci/run` installs), launched
  headless by Playwright through `executable_path`: Playwright never downloads a browser here.
* `ui_page` (per test): a fresh browser context (no cookies, no saved UI preference) and its page.

Without /usr/bin/chromium, or without the `playwright` package, the browser tests skip and say why.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
WORK_POOL = "globe-sms"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        return "the playwright package is missing: `uv sync` (it is a dev dependency)"
    return None


@dataclass
class PrefectUI:
    """A running Prefect server with its UI, the deployments of prefect.yaml, and one worker."""

    stack: Any  # tests.integration.test_workers.PrefectStack
    data_dir: Path | None = None  # the worker's GLOBE_SMS_DATA_DIR: its default ledger is data_dir/ledger.db

    @property
    def url(self) -> str:
        """The UI's root, e.g. http://127.0.0.1:4321 (the API is at url + /api)."""
        return self.stack.api_url.removesuffix("/api")

    @property
    def api_url(self) -> str:
        return str(self.stack.api_url)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call to the server's REST API (`path` below /api); a busy server (503, "database is locked" on
        SQLite) is asked again, as Prefect's own client does."""
        for _ in range(10):
            answer = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            if answer.status_code != 503:
                return answer
            time.sleep(0.5)
        return answer

    def deployment(self, flow_name: str, name: str) -> dict[str, Any]:
        """A deployment as the API returns it (id, parameters, parameter_openapi_schema...)."""
        answer = self.api("GET", f"/deployments/name/{flow_name}/{name}")
        answer.raise_for_status()
        return dict(answer.json())

    def flow_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        query = {"deployments": {"id": {"any_": [deployment_id]}}}
        answer = self.api("POST", "/flow_runs/filter", json=query)
        answer.raise_for_status()
        return list(answer.json())

    def explain(self, flow_run_id: str) -> str:
        """For a failed assertion: the run's states and their messages, its last log lines, the worker's."""
        states = self.api("GET", "/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
        logs = self.api(
            "POST", "/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_DESC", "limit": 40},
        ).json()
        lines = [f"{s['timestamp']} {s['type']} {s['name']}: {s.get('message')}" for s in states]
        lines += ["-- flow run log, newest last --"]
        lines += [f"{entry['timestamp']} {entry['message'][:500]}" for entry in reversed(logs)]
        return "\n".join(lines) + f"\n-- worker log --\n{self.stack.log('worker')}"

    def wait_for_final_state(self, flow_run_id: str, timeout: float = 180) -> dict[str, Any]:
        """The flow run once it is Completed, Failed, Crashed or Cancelled; fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{flow_run_id}").json()
            if run.get("state_type") in FINAL_STATES:
                return run
            time.sleep(1)
        raise AssertionError(
            f"flow run {flow_run_id} still {run.get('state_type')} after {timeout} s; worker log:\n"
            f"{self.stack.log('worker')}"
        )


@contextmanager
def running_prefect_ui(
    home: Path, *, data_dir: Path | None = None, worker: bool = True
) -> Iterator[PrefectUI]:
    """A Prefect server with its UI in `home`, `globe-sms setup`, every deployment of prefect.yaml applied,
    and (unless `worker=False`) a process worker of the `globe-sms` pool whose flow runs keep their default
    ledger, rejects and spools in `data_dir` (`GLOBE_SMS_DATA_DIR`); stopped on exit."""
    from tests.integration.test_workers import PrefectStack  # the harness of the multi-worker tests

    stack = PrefectStack(home)
    try:
        stack.start_server(ui=True)
        stack.run(sys.executable, "-m", "globe_sms.cli", "setup")
        stack.run(sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", timeout=240)
        if worker:
            with pytest.MonkeyPatch.context() as patch:  # PrefectStack hands os.environ to its children
                if data_dir is not None:
                    data_dir.mkdir(parents=True, exist_ok=True)
                    patch.setenv("GLOBE_SMS_DATA_DIR", str(data_dir))
                stack.start_worker("worker")
        yield PrefectUI(stack, data_dir)
    finally:
        stack.stop()


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectUI]:
    """A real Prefect server with its UI, the deployments of prefect.yaml and one process worker."""
    if reason := browser_missing():
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("prefect-ui")  # its logs stay there for a failed test's diagnosis
    with running_prefect_ui(home / "prefect", data_dir=home / "data") as ui:
        yield ui


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Chromium for the whole session."""
    if reason := browser_missing():
        pytest.skip(reason)
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def ui_page(chromium: Browser) -> Iterator[Page]:
    """A fresh page (its own browser context: no cookies, no saved UI version) of the session's Chromium."""
    context = chromium.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def poll(predicate: Callable[[], Any], timeout: float = 30, every: float = 0.5) -> Any:
    """`predicate()`'s first truthy value within `timeout` seconds, else an AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s: {predicate}")
