"""What the pacer relies on in Prefect's public client (prefect 3.9), pinned so that an upgrade changing it
fails here rather than slowing or breaking every send.

* A denied slot: `increment_concurrency_slots` raises `httpx.HTTPStatusError` with status 423 at once (the
  client never retries a 423), the server's `Retry-After` on the response. The public method hides the
  denial in an exception, so `try_rate_limit` reads the status off it.
* A busy server (503): the client retries by itself after 2 s, 4 s, 8 s...; with `PREFECT_CLIENT_MAX_RETRIES`
  at 0 (through `temporary_settings`) it still sleeps 2 s before it gives up. The pacer's client
  (`open_pacing_client`: a response hook passed through `get_client`'s public `httpx_settings`) hands the
  503 back at once.
* The limit's read carries its decayed `active_slots` and `updated`, the time of its last grant, which a
  denial does not move (the hand-over margin is timed from it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from globe_sms.pacing import ServerBusy, ensure_global_limit, open_pacing_client, slot_wait, try_rate_limit

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it



@pytest.mark.usefixtures("prefect_server")
def test_a_denied_slot_is_a_423_raised_at_once_with_retry_after() -> None:
    from prefect.client.orchestration import get_client

    name = "globe-sms-pin-denied"
    ensure_global_limit(name, 0.2)  # one grant per 5 s
    with get_client(sync_client=True) as client:
        granted = client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
        assert granted.status_code == 200 and granted.json()
        last_grant = client.read_global_concurrency_limit_by_name(name).updated
        started = time.monotonic()
        with pytest.raises(httpx.HTTPStatusError) as denied:
            client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")
        assert time.monotonic() - started < 0.5  # no retry, no backoff
        assert denied.value.response.status_code == 423
        assert float(denied.value.response.headers["Retry-After"]) > 0
        assert not try_rate_limit(client, name)
        limit = client.read_global_concurrency_limit_by_name(name)
        assert limit.active_slots == 1 and limit.updated == last_grant  # the denials did not move it
        assert limit.updated is not None and limit.updated.tzinfo is not None
        assert (datetime.now(UTC) - limit.updated).total_seconds() < 5
        assert 4.0 < slot_wait(client, name, 0.1) <= 5.1  # taken: free one interval (5 s) after the grant


@pytest.mark.usefixtures("prefect_server")
def test_an_update_that_changes_nothing_restamps_the_slot() -> None:
    """`Pacer.restamp_slot` relies on this: an update of the limit (`active=True`, nothing else changed) moves
    its `updated` stamp, from which the slot decays, so the next grant comes one spacing after the update."""
    from globe_sms.pacing import Pacer

    name = "globe-sms-pin-restamp"
    ensure_global_limit(name, 0.5)  # one grant per 2 s
    with get_client_sync() as client:
        assert try_rate_limit(client, name)
        granted = client.read_global_concurrency_limit_by_name(name).updated
        time.sleep(1.2)
        pacer = Pacer(0.5, limit_name=name)
        try:
            pacer.restamp_slot()
        finally:
            pacer.close()
        limit = client.read_global_concurrency_limit_by_name(name)
        assert granted is not None and limit.updated is not None
        assert (limit.updated - granted).total_seconds() > 1.0, "the update moved the stamp"
        assert limit.active and limit.limit == 1 and limit.slot_decay_per_second == 0.5
        assert pacer.stats.restamps == 1
        time.sleep(0.9)  # 2.1 s after the grant: free by the old stamp, not by the new one
        assert not try_rate_limit(client, name)
        assert 0.9 < slot_wait(client, name, 0.0) <= 1.2


@pytest.mark.usefixtures("prefect_server")
def test_a_call_that_left_late_after_its_ask_restamps_the_slot_once_sent() -> None:
    """A call that leaves 80 ms after its grant (a slow grant, a loaded machine) stamps the slot again as soon
    as it has left, not once answered, so the next holder waits for it. (Whether a call on time keeps the
    stamp depends on how fast this server grants: see tests/unit/test_pacing.py, with a fake clock.)"""
    from globe_sms.pacing import Pacer

    name = "globe-sms-pin-late"
    ensure_global_limit(name, 2.0)
    pacer = Pacer(2.0, limit_name=name, timeout_seconds=10)
    try:
        with get_client_sync() as client:
            pacer.wait()
            assert pacer.departing()
            pacer.call_sent()
            pacer.call_answered()
            before = pacer.stats.restamps  # 0, or 1 if this loaded server took over 15 ms to grant
            stamp = client.read_global_concurrency_limit_by_name(name).updated
            pacer.wait()
            time.sleep(0.08)
            assert pacer.departing()
            left = datetime.now(UTC)
            pacer.call_sent()
            assert pacer.stats.restamps == before + 1
            restamped = client.read_global_concurrency_limit_by_name(name).updated
            pacer.call_answered()
            assert pacer.stats.restamps == before + 1, "not again once answered"
            assert stamp is not None and restamped is not None
            assert (restamped - stamp).total_seconds() > 0.5 + 0.08
            assert restamped >= left - timedelta(milliseconds=1), "stamped after the call left"
    finally:
        pacer.close()


def get_client_sync():  # noqa: ANN201 - Prefect's sync client, as the pacer opens it
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


class BusyServer:
    """A real HTTP server that answers 503 to every API call (a Prefect server whose database is locked)."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/api/csrf-token"):
                    self.answer(422, b'{"detail": "CSRF protection is disabled."}')
                else:
                    self.answer(503, b'{"detail": "database is locked"}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.hits += 1
                self.answer(503, b'{"detail": "database is locked"}')

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def busy_server(no_proxy: None) -> Iterator[BusyServer]:
    server = BusyServer()
    yield server
    server.close()


def test_the_pacers_client_hands_a_busy_server_back_at_once(busy_server: BusyServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        PREFECT_CLIENT_RETRY_JITTER_FACTOR,
        temporary_settings,
    )

    settings = {PREFECT_API_URL: busy_server.url, PREFECT_CLIENT_RETRY_JITTER_FACTOR: 0}
    with temporary_settings(settings), open_pacing_client() as client:
        started = time.monotonic()
        assert not try_rate_limit(client, "globe-sms-any")  # busy: the pacer asks again ~50 ms later
        with pytest.raises(ServerBusy):
            client.increment_concurrency_slots(names=["globe-sms-any"], slots=1, mode="rate_limit")
        assert busy_server.hits == 2 and time.monotonic() - started < 1.0
    # Why the hook: Prefect's own handling sleeps 2 s on a 503 even when told not to retry at all ...
    no_retries = {**settings, PREFECT_CLIENT_MAX_RETRIES: 0}
    with temporary_settings(no_retries), get_client(sync_client=True) as client:
        started = time.monotonic()
        with pytest.raises(httpx.HTTPStatusError, match="503"):
            client.increment_concurrency_slots(names=["globe-sms-any"], slots=1, mode="rate_limit")
        assert busy_server.hits == 3 and time.monotonic() - started >= 1.9


@pytest.mark.usefixtures("prefect_server")
def test_a_hand_over_leaves_the_waiting_room_once_the_call_has_left_not_before() -> None:
    """A pacer denied the slot stands in the waiting room; it leaves it after its call has left (`call_sent`),
    so the leave's write never sits between its grant and its call; at once when the call will not be sent
    (`call_abandoned`: a stop request right after the grant); and `close()` leaves a room that no call report
    emptied."""
    from globe_sms.pacing import Pacer, PrefectWaitingRoom

    name = "globe-sms-pin-leave"
    ensure_global_limit(name, 4.0)  # one grant per 250 ms
    room = PrefectWaitingRoom(name)

    with get_client_sync() as client:
        for report in ("call_sent", "call_abandoned", "close"):
            assert try_rate_limit(client, name)  # another process's grant: this pacer is denied, then waits
            pacer = Pacer(4.0, limit_name=name, timeout_seconds=10)
            try:
                pacer.wait()
                assert pacer.stats.grants == 1
                assert room.others_waiting(), "still in the room between its grant and its call"
                if report != "close":
                    if report == "call_sent":
                        assert pacer.departing()
                    getattr(pacer, report)()
                    deadline = time.monotonic() + 5
                    while room.others_waiting() and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert not room.others_waiting(), f"left after {report}"
            finally:
                pacer.close()
            assert not room.others_waiting(), "close() leaves the room, whatever the reports"
            time.sleep(0.3)  # the slot frees
