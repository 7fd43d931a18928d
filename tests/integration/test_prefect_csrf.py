"""globe-sms on a Prefect server with CSRF protection on (`PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true`).

Such a server refuses every POST that lacks the token Prefect's public client fetches and adds, so anything
that talks to the REST API around the client (a hand-built request) gets 403. These tests start their own
`prefect server start` with protection on, in a subprocess with its own PREFECT_HOME, and run what a user
runs against it: the `send_campaign` flow (limit set-up, pacer, batches), the pacer's denial path with its
waiting room, and `globe-sms setup`.
"""

from __future__ import annotations

import contextvars
import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import app
from globe_sms.pacing import Pacer, PrefectWaitingRoom, ensure_global_limit, try_rate_limit

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = [f"+6591{i:06d}" for i in range(12)] + [f"+85291{i:06d}" for i in range(9)]

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def csrf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start`, CSRF protection on (SQLite, loopback, own PREFECT_HOME); yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-csrf-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and "PROXY" not in k.upper()}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_CSRF_PROTECTION_ENABLED="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
        DO_NOT_TRACK="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--no-ui"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text(errors="replace")[-4000:]
            try:
                if httpx.get(f"{api_url}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not start in 120 s"
            time.sleep(0.5)
        yield api_url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


@pytest.fixture
def on_csrf_server(csrf_server: str) -> Iterator[str]:
    """Point this test's Prefect client at the CSRF-protected server (client CSRF support on: the default)."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_CSRF_SUPPORT_ENABLED, temporary_settings

    with temporary_settings({PREFECT_API_URL: csrf_server, PREFECT_CLIENT_CSRF_SUPPORT_ENABLED: True}):
        yield csrf_server
        APILogHandler().flush()  # the run's logs go to this server (with the token) before it stops


def test_the_server_really_refuses_a_request_without_the_token(csrf_server: str) -> None:
    """The premise of this module: a POST built by hand (no CSRF headers) is refused with 403."""
    response = httpx.post(
        f"{csrf_server}/v2/concurrency_limits/increment",
        json={"names": ["globe-sms-any"], "slots": 1, "mode": "rate_limit"},
        trust_env=False,
    )
    assert response.status_code == 403 and "CSRF" in response.text


def write_recipients(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate(NUMBERS))
    return path


def test_a_campaign_sends_every_recipient(
    on_csrf_server: str, tmp_path: Path, gateway: EmulatorServer
) -> None:
    """The real flow: the limit is created, each batch's slot taken through the public client, all sent."""
    campaign = Campaign.parse(
        {
            "campaign_id": "csrf-on",
            "source": {"path": str(write_recipients(tmp_path / "recipients.csv"))},
            "template": "Hi {first_name}",
            "sender_id": "GlobeSMS",
            "batch_size": 4,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "gateway": {
                "endpoint": gateway.url,
                "calls_per_second": 10.0,
                "rate_limit_name": "globe-sms-csrf-campaign",
                "rate_limit_timeout_seconds": 60,
            },
        }
    )
    summary = send_campaign(campaign)
    assert summary.accepted == len(NUMBERS) and summary.failed == 0 and summary.unknown == 0
    expected = {number.lstrip("+") for number in NUMBERS}
    assert dict(gateway.state.accepted_numbers()) == dict.fromkeys(expected, 1)
    assert len(gateway.state.requests("BatchSendMessageToGlobe")) == 6


def test_a_denied_pacer_waits_in_the_room_and_gets_the_slot(on_csrf_server: str) -> None:
    """Waiting for a slot another run holds writes too (join and leave the waiting room): it works with
    CSRF on, and the room is empty again once the call has left."""
    from prefect.client.orchestration import get_client

    name = "globe-sms-csrf-denied"
    ensure_global_limit(name, 0.5)  # one grant per 2 s
    room = PrefectWaitingRoom(name)
    with get_client(sync_client=True) as client:
        assert try_rate_limit(client, name)  # "another run" took the slot
    seen_waiting = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen_waiting.is_set():
            if room.others_waiting():
                seen_waiting.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=contextvars.copy_context().run, args=(watch,))  # the same settings
    watcher.start()
    pacer = Pacer(0.5, limit_name=name, timeout_seconds=30)
    try:
        started = time.monotonic()
        pacer.wait()
        waited = time.monotonic() - started
        watcher.join()
        assert pacer.stats.grants == 1 and pacer.stats.handovers == 1  # the slot came from "another run"
        assert seen_waiting.is_set(), "the denied pacer never showed in the waiting room"
        pacer.call_sent()  # the room is left once the call has left, from a thread of its own
        deadline = time.monotonic() + 5
        while room.others_waiting() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not room.others_waiting()
        assert 0.5 < waited < 10
    finally:
        pacer.close()


PREFECT_YAML = """
deployments:
  - name: csrf-campaign
    entrypoint: flows/send_campaign.py:send_campaign
    work_pool: {name: globe-sms-csrf-pool}
    parameters:
      campaign:
        gateway:
          rate_limit_name: globe-sms-csrf-setup
          calls_per_second: 2.0
          credentials_block: globe-sms-csrf-key
"""


def test_globe_sms_setup_creates_the_pool_the_block_and_the_limit(
    on_csrf_server: str, tmp_path: Path
) -> None:
    """`globe-sms setup` (the CLI) writes everything through the public client: created, then found."""
    from prefect.client.orchestration import get_client

    prefect_yaml = tmp_path / "prefect.yaml"
    prefect_yaml.write_text(PREFECT_YAML, encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(app, ["setup", "--prefect-yaml", str(prefect_yaml)], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    for name in ("globe-sms-csrf-pool", "globe-sms-csrf-key", "globe-sms-csrf-setup"):
        assert any(name in line and "created" in line for line in first.output.splitlines()), first.output
    again = runner.invoke(app, ["setup", "--prefect-yaml", str(prefect_yaml)], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "created" not in again.output, again.output
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("globe-sms-csrf-setup")
        room = client.read_global_concurrency_limit_by_name("globe-sms-csrf-setup-waiting")
        assert client.read_work_pool("globe-sms-csrf-pool").type == "process"
    assert (limit.limit, limit.slot_decay_per_second, limit.active) == (1, 2.0, True)
    assert room.limit > 1
