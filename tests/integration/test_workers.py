"""Two campaigns at once on two process workers, as in production: real `prefect server start`, real workers.

Each scenario starts everything itself in its own process groups and temporary PREFECT_HOME, and stops it in
`finally`: a Prefect server on a free loopback port, `globe-sms setup`, `prefect deploy` of the
`send-campaign` deployment from prefect.yaml, and two `prefect worker start` processes (one flow run each).
Two campaigns of 15 batches go out through deployment runs to one emulator (no flow control of its own, so
that it records every call as it arrives). At the emulator:

* the account's calls are never closer than one second apart (at most one call in any rolling second);
* neither campaign starves: while both send, the longest gap between one campaign's batches is at most 3 s;
* every recipient got exactly one message.

The same again with the Prefect server and the ledger in PostgreSQL (127.0.0.1:5432, user postgres, throwaway
databases created and dropped here): the multi-machine setup.

First, the pieces that make the sharing fair (`globe_sms.pacing`: waiting room, polling, stepping aside,
hand-over margin), with fakes and against the session's Prefect test server. Other pacer unit tests:
tests/{unit,integration}/test_pacing.py; the deployments themselves: tests/integration/test_deployments.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_workers.py.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from globe_sms.pacing import (
    PrefectWaitingRoom,
    ensure_global_limit,
    slot_wait,
    try_rate_limit,
    waiting_room_name,
)

ROOT = Path(__file__).resolve().parents[2]
BATCHES = 15
BATCH_SIZE = 4
MAX_GAP_SECONDS = 3.0
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = [pytest.mark.alone, pytest.mark.timeout(420)]


@pytest.mark.usefixtures("prefect_server")
class TestAgainstAPrefectServer:
    def test_the_limit_comes_with_its_waiting_room(self) -> None:
        """`ensure_global_limit` creates the room too; a waiter's lease shows in it until it leaves."""
        from prefect.client.orchestration import get_client

        ensure_global_limit("globe-sms-fair-test", 1.0)
        room = PrefectWaitingRoom("globe-sms-fair-test")
        assert room.name == waiting_room_name("globe-sms-fair-test") and not room.others_waiting()
        with get_client(sync_client=True) as client:
            ticket = room.join(client)
            assert room.others_waiting()
            room.leave(client, ticket)
        assert not room.others_waiting()

    def test_one_try_is_granted_then_denied_and_the_read_tells_when_to_ask(self) -> None:
        """try_rate_limit never blocks; slot_wait tells how long until the slot frees plus the margin."""
        from prefect.client.orchestration import get_client
        from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

        ensure_global_limit("globe-sms-try-test", 1.0)
        with get_client(sync_client=True) as client:
            assert try_rate_limit(client, "globe-sms-try-test")
            started = time.monotonic()
            assert not try_rate_limit(client, "globe-sms-try-test")
            assert time.monotonic() - started < 0.5  # no client-side retry or backoff
            assert 0.5 < slot_wait(client, "globe-sms-try-test", 0.1) <= 1.1  # taken: the time left, computed
            time.sleep(1.05)
            assert 0.0 <= slot_wait(client, "globe-sms-try-test", 0.2) <= 0.2
            with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"):
                try_rate_limit(client, "globe-sms-no-such-limit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrefectStack:
    """A Prefect server and its workers as child process groups, with one environment for all of them."""

    home: Path
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        inherited = os.environ.items()
        env = {k: v for k, v in inherited if not k.startswith("PREFECT_") and "PROXY" not in k.upper()}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            PREFECT_LOGGING_LEVEL="INFO",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
            PREFECT_WORKER_QUERY_SECONDS="2",
            PREFECT_WORKER_HEARTBEAT_SECONDS="5",
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            GLOBE_SMS_HOME=str(ROOT),
            ALIBABA_CLOUD_ACCESS_KEY_ID="testid",
            ALIBABA_CLOUD_ACCESS_KEY_SECRET="testsecret",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        return env

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `args` in its own process group, logging to `<home>/<name>.log`."""
        log = (self.home / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(args), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append((name, process))
        return process

    def run(self, *args: str, timeout: float = 120) -> str:
        """Run a command to completion; its output, or an assertion error showing it."""
        done = subprocess.run(
            list(args), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def start_server(self, timeout: float = 90, *, ui: bool = False) -> None:
        """`prefect server start` (without its UI unless asked), and wait until /api/health answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        server = self.spawn(
            "server", sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(self.port), "--ui" if ui else "--no-ui",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, self.log("server")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the Prefect server did not start in {timeout} s:\n{self.log('server')}")

    def start_worker(self, name: str) -> None:
        """A process worker of the globe-sms pool that runs one flow run at a time."""
        self.spawn(
            name, sys.executable, "-m", "prefect", "worker", "start", "--pool", "globe-sms",
            "--type", "process", "--name", name, "--limit", "1",
        )

    def log(self, name: str, tail: int | None = 4000) -> str:
        path = self.home / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        """SIGINT each process group (workers stop on it), then SIGKILL what is left."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def write_recipients(path: Path, prefix: str, count: int) -> list[str]:
    """`count` distinct valid Singapore mobiles, as E.164 digits."""
    numbers = [f"65{prefix}{i:06d}" for i in range(count)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([f"+{n}", f"Name{i}"] for i, n in enumerate(numbers))
    return numbers


def campaign_parameters(campaign_id: str, source: Path, ledger: str, endpoint: str) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "source": {"kind": "csv", "path": str(source)},
        "template": {"text": "Hi {first_name}, this is globe-sms."},
        "sender_id": "GlobeSMS",
        "batch_size": BATCH_SIZE,
        "ledger": ledger,
        "gateway": {"endpoint": endpoint, "calls_per_second": 1.0, "max_attempts": 2},
        "validation": {"max_reject_share": 0.0},
    }


def longest_gap_while_both_send(times: dict[str, list[float]]) -> dict[str, float]:
    """Per campaign, the longest gap between two of its consecutive calls that overlaps the time both send.

    Both send from the later first call to the earlier last call. A gap that starts before that window ends
    and ends after it starts counts in full: a campaign waiting from its first call until the other one is
    done has starved for that whole wait.
    """
    start = max(min(ts) for ts in times.values())
    end = min(max(ts) for ts in times.values())
    gaps = {}
    for campaign, ts in times.items():
        ordered = sorted(ts)
        pairs = zip(ordered, ordered[1:], strict=False)
        gaps[campaign] = max((b - a for a, b in pairs if a < end and b > start), default=0.0)
    return gaps


def run_two_campaigns(stack: PrefectStack, tmp_path: Path, ledger: str) -> dict[str, Any]:
    """Deploy, start two workers, run two campaigns at once; return what the emulator saw."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with EmulatorServer(EmulatorConfig(batch_calls_per_second=None)) as emulator:
        stack.run(sys.executable, "-m", "globe_sms.cli", "setup")
        stack.run(sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "send-campaign")
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        numbers = {}
        runs = []
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            for name, prefix in (("north", "81"), ("south", "82")):
                source = tmp_path / f"{name}.csv"
                numbers[name] = write_recipients(source, prefix, BATCHES * BATCH_SIZE)
                parameters = {"campaign": campaign_parameters(f"two-{name}", source, ledger, emulator.url)}
                runs.append(run_deployment("send-campaign/send-campaign", parameters=parameters, timeout=0))
            states = {}
            deadline = time.monotonic() + 240
            with get_client(sync_client=True) as client:
                while time.monotonic() < deadline:
                    states = {run.id: client.read_flow_run(run.id) for run in runs}
                    if all(fr.state is not None and fr.state.is_final() for fr in states.values()):
                        break
                    time.sleep(1)
        calls = emulator.state.requests("BatchSendMessageToGlobe")
        accepted = emulator.state.accepted_numbers()
    logs = "\n".join(stack.log(name) for name in ("worker-1", "worker-2"))
    for fr in states.values():
        assert fr.state is not None and fr.state.is_completed(), f"{fr.name}: {fr.state}\n{logs}"
    for worker in ("worker-1", "worker-2"):  # one campaign each (a flow run logs to its worker's output)
        ran = [name for name in ("north", "south") if f"two-{name}-batch-" in stack.log(worker, tail=None)]
        assert len(ran) == 1, f"{worker} ran {ran}\n{logs}"
    times: dict[str, list[float]] = {"north": [], "south": []}
    for call in calls:
        times["north" if call.task_id.startswith("two-north") else "south"].append(call.time)
    return {
        "calls": calls, "times": times, "accepted": accepted, "numbers": numbers, "runs": states,
        "logs": "\n".join(stack.log(name, tail=None) for name in ("worker-1", "worker-2")),
    }


def check_two_campaigns(result: dict[str, Any]) -> dict[str, float]:
    """The assertions both scenarios share; returns the figures for the report."""
    calls, times = result["calls"], result["times"]
    assert all(call.code == "OK" for call in calls)
    expected = {n for numbers in result["numbers"].values() for n in numbers}
    assert dict(result["accepted"]) == dict.fromkeys(expected, 1), "every recipient exactly once"
    assert {k: len(v) for k, v in times.items()} == {"north": BATCHES, "south": BATCHES}
    moments = sorted(call.time for call in calls)
    gaps = [b - a for a, b in zip(moments, moments[1:], strict=False)]
    starving = longest_gap_while_both_send(times)
    overlap = min(max(ts) for ts in times.values()) - max(min(ts) for ts in times.values())
    figures = {
        "min_gap_s": min(gaps),
        "aggregate_calls_per_s": (len(moments) - 1) / (moments[-1] - moments[0]),
        "overlap_s": overlap,
        **{f"longest_gap_{k}_s": v for k, v in starving.items()},
    }
    # n0.00 s1.05 n2.26 ...: which campaign called when, for the record (shown with -s)
    in_order = sorted(calls, key=lambda c: c.time)
    timeline = " ".join(f"{c.task_id[4]}{c.time - moments[0]:.2f}" for c in in_order)
    print(f"two campaigns on two workers: {figures}\n{timeline}")  # noqa: T201
    assert min(gaps) >= 1.0, f"two calls {min(gaps):.3f} s apart: over one call per second ({figures})"
    assert overlap > 10, f"the campaigns barely overlapped ({figures})"
    # On failure, the flow runs' own account of each batch (timestamped lines of the workers' logs).
    batch_lines = "\n".join(line for line in result["logs"].splitlines() if "batch" in line)
    assert max(starving.values()) <= MAX_GAP_SECONDS, f"a campaign starved ({figures})\n{batch_lines}"
    return figures


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_two_campaigns_on_two_workers_share_the_rate_fairly_sqlite(
    tmp_path: Path, no_proxy_env: None
) -> None:
    """SQLite server and ledger: at most one call per second in total, and no campaign waits over 3 s."""
    stack = PrefectStack(tmp_path / "prefect")
    try:
        stack.start_server()
        result = run_two_campaigns(stack, tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    finally:
        stack.stop()
    check_two_campaigns(result)


@pytest.fixture
def pg_databases() -> Iterator[tuple[str, str]]:
    """Throwaway PostgreSQL databases for the Prefect server and the ledger; skipped if the server is down."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    names = (f"globe_sms_prefect_test_{os.getpid()}", f"globe_sms_ledger_test_{os.getpid()}")
    with admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (
                f"postgresql+asyncpg://postgres@127.0.0.1:5432/{names[0]}",
                f"postgresql+psycopg://postgres@127.0.0.1:5432/{names[1]}",
            )
        finally:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_two_campaigns_on_two_workers_share_the_rate_fairly_postgres(
    tmp_path: Path, no_proxy_env: None, pg_databases: tuple[str, str]
) -> None:
    """Prefect server and ledger in PostgreSQL (the multi-machine setup): the same guarantees."""
    prefect_db, ledger_db = pg_databases
    stack = PrefectStack(tmp_path / "prefect", database_url=prefect_db)
    try:
        stack.start_server(timeout=120)
        result = run_two_campaigns(stack, tmp_path, ledger_db)
    finally:
        stack.stop()
    check_two_campaigns(result)
    from globe_sms.ledger import Ledger

    with Ledger(ledger_db) as ledger:
        for name in ("north", "south"):
            assert ledger.counts(f"two-{name}")["accepted"] == BATCHES * BATCH_SIZE
