"""Integration tests: `AsyncSmsClient` (its `WireTransport`) over real loopback sockets against the
emulator, and the emulator's SendMessageToGlobe flow control, faults, journal and receipts.

Edge cases of parsing, signing and error mapping with fakes are in tests/unit/test_async_client_unit.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.async_client import AsyncSmsClient
from alibaba_sms.emulator.receipts import ReceiptSettings
from alibaba_sms.emulator.server import ThreadedUvicorn
from alibaba_sms.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    BusinessRejected,
    BusinessThrottled,
    ConnectionFailed,
    GatewayInternalError,
    GatewayThrottled,
    GatewayUnavailable,
    ResponseLost,
    RetryableError,
    ThrottledError,
)
from alibaba_sms.models import NumberDetail
from alibaba_sms.transport import AiohttpTransport
from alibaba_sms.wire import WireTransport
from tests.emulator_fixtures import KEY, StartEmulator

HK, MO = "85291234567", "85366123456"
UCS2_TEXT = "您好，這是一則測試訊息。" * 6  # 72 UCS-2 characters: two segments


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_send_and_query_one_message(start_emulator: StartEmulator, version: str) -> None:
    """SendMessageToGlobe's answer becomes a `SendResult` (id, segments, sender, number detail), which
    QueryMessage then finds; both signatures verify."""
    server = start_emulator()

    async def scenario() -> tuple[Any, Any]:
        async with AsyncSmsClient(KEY, endpoint=server.url, signature_version=version) as client:  # type: ignore[arg-type]
            sent = await client.send(HK, UCS2_TEXT, sender="GlobeSMS", message_type="OTP", task_id="c-s00001")
            return sent, await client.query(sent.message_id)

    sent, found = run(scenario())
    assert sent.response_code == "OK" and sent.message_id and sent.request_id
    assert sent.to == HK and sent.sender == "GlobeSMS" and sent.segments == 2
    assert sent.number_detail == NumberDetail(country="Hongkong, China", region="HongKong", carrier="CMI")
    assert found.message_id == sent.message_id and found.to == HK and found.message == UCS2_TEXT
    [record] = server.state.accepted_messages()
    assert (record.action, record.type, record.task_id, record.segments) == (
        "SendMessageToGlobe",
        "OTP",
        "c-s00001",
        2,
    )
    assert [r.signature for r in server.state.requests()] == [version, version]


def test_concurrent_sends_are_each_accepted_once_and_counted_with_batches(
    start_emulator: StartEmulator,
) -> None:
    """300 sends in flight through a pool of 20 connections, plus a batch: the journal counts every number
    once, across both operations, and names the operation of each message."""
    server = start_emulator(batch_calls_per_second=None)
    numbers = [str(85290000000 + i) for i in range(300)]

    async def scenario() -> list[Any]:
        async with AsyncSmsClient(KEY, endpoint=server.url, max_connections=20) as client:
            return await asyncio.gather(*(client.send(n, f"Hi {n[-4:]}") for n in numbers))

    results = run(scenario())
    with SmsClient(KEY, endpoint=server.url) as sync_client:
        sync_client.send_batch([MO, "6591234567"], "Hello batch")
    assert sorted(r.to for r in results) == numbers and len({r.message_id for r in results}) == 300
    counts = server.state.accepted_numbers()
    assert len(counts) == 302 and max(counts.values()) == 1
    actions = [m.action for m in server.state.accepted_messages()]
    assert actions.count("SendMessageToGlobe") == 300 and actions.count("BatchSendMessageToGlobe") == 2
    journal = server.state.journal()
    assert sum(1 for m in journal["messages"] if m["action"] == "SendMessageToGlobe") == 300


def test_single_calls_above_the_rate_are_throttled_like_the_gateway(start_emulator: StartEmulator) -> None:
    """At 5 SendMessageToGlobe calls per rolling second, 8 at once: 5 accepted, 3 refused with HTTP 400
    `Throttling.User` (a retryable `ThrottledError`, nothing recorded); a second later there is room again.
    The batch operation's limit is separate: a batch in the same second is accepted."""
    server = start_emulator(single_calls_per_second=5, batch_calls_per_second=1)

    async def burst(client: AsyncSmsClient, first: int) -> list[Any]:
        calls = (client.send(str(85290000000 + first + i), "Hi") for i in range(8))
        return await asyncio.gather(*calls, return_exceptions=True)

    async def scenario() -> tuple[list[Any], Any]:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            first = await burst(client, 0)
            await asyncio.sleep(1.05)
            return first, await client.send("85290009999", "again")

    with SmsClient(KEY, endpoint=server.url) as sync_client:
        sync_client.send_batch([MO], "batch in the same second")
    first, later = run(scenario())
    refused = [r for r in first if isinstance(r, Exception)]
    assert len(refused) == 3 and all(isinstance(e, GatewayThrottled) for e in refused)
    assert all(isinstance(e, ThrottledError) and isinstance(e, RetryableError) for e in refused)
    assert {(e.status, e.code) for e in refused} == {(400, "Throttling.User")}
    assert later.response_code == "OK"
    singles = server.state.requests("SendMessageToGlobe")
    assert [r.code for r in singles].count("Throttling.User") == 3
    assert sum(1 for m in server.state.accepted_messages() if m.action == "SendMessageToGlobe") == 6


@pytest.mark.parametrize(
    ("fault", "error", "recorded"),
    [
        ("throttle", GatewayThrottled, 0),
        ("500", GatewayInternalError, 0),
        ("503", GatewayUnavailable, 0),
        ("business:AMOUNT_NOT_ENOUGH", BusinessRejected, 0),
        ("business:QPS_LIMIT_CONTROL", BusinessThrottled, 0),
        ("drop_after_accept", ResponseLost, 1),
    ],
)
def test_injected_single_call_faults_map_to_their_outcome(
    start_emulator: StartEmulator, fault: str, error: type, recorded: int
) -> None:
    """Scripted faults of SendMessageToGlobe calls (their own script: batch calls are unaffected) reach the
    async client as the sync client's errors; a dropped answer after acceptance is ambiguous."""
    server = start_emulator(batch_calls_per_second=None)
    server.state.faults.script([fault], single=True)

    async def scenario() -> None:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            await client.send(HK, "Hi")

    with pytest.raises(error):
        run(scenario())
    assert len(server.state.accepted_messages()) == recorded
    [request] = server.state.requests("SendMessageToGlobe")
    assert request.fault == fault
    with SmsClient(KEY, endpoint=server.url) as sync_client:  # the batch script was not touched
        assert sync_client.send_batch([MO], "Hi").success_count == 1


def test_read_timeout_after_acceptance_is_ambiguous(start_emulator: StartEmulator) -> None:
    """Accepted, answered after 1.5 s, read timeout 0.3 s: `ResponseLost` (ambiguous), message recorded."""
    server = start_emulator()
    server.state.faults.script(["timeout_after_accept:1.5"], single=True)

    async def scenario() -> None:
        async with AsyncSmsClient(KEY, endpoint=server.url, timeout=httpx.Timeout(0.3)) as client:
            await client.send(HK, "Hi")

    started = time.monotonic()
    with pytest.raises(ResponseLost) as caught:
        run(scenario())
    assert isinstance(caught.value, AmbiguousOutcomeError) and caught.value.code == "ReadTimeout"
    assert time.monotonic() - started < 1.2
    assert server.state.accepted_numbers() == {HK: 1}


def test_random_single_faults_only_when_asked(start_emulator: StartEmulator) -> None:
    """The random fault rates apply to single calls only with `single_calls`, from their own stream."""
    server = start_emulator(faults={"error_500_rate": 1.0})

    async def one(number: str) -> Any:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            return await client.send(number, "Hi")

    assert run(one(HK)).response_code == "OK"
    server.state.faults.configure(single_calls=True)
    with pytest.raises(GatewayInternalError):
        run(one(MO))


def test_refused_connection_is_definitely_not_sent() -> None:
    """Nothing listens on the port: `ConnectionFailed`, a `RetryableError` (the request never left)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        async with AsyncSmsClient(KEY, endpoint=f"http://127.0.0.1:{port}") as client:
            await client.send(HK, "Hi")

    with pytest.raises(ConnectionFailed) as caught:
        run(scenario())
    assert isinstance(caught.value, RetryableError) and caught.value.code == "ConnectError"


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections, reads the request, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for connection in accepted:
        connection.close()


def test_no_answer_is_ambiguous_and_a_full_pool_is_not_sent(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    """One connection allowed: the first call leaves and gets no answer (read timeout: ambiguous); the
    second waits for the pool, times out, and never left (`ConnectionFailed`)."""
    port, _ = silent_server
    timeout = httpx.Timeout(0.5, connect=0.2, pool=0.1)

    async def scenario() -> list[Any]:
        async with AsyncSmsClient(
            KEY, endpoint=f"http://127.0.0.1:{port}", timeout=timeout, max_connections=1
        ) as client:
            first = asyncio.ensure_future(client.send(HK, "first"))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(client.send(MO, "second"))
            return await asyncio.gather(first, second, return_exceptions=True)

    first, second = run(scenario())
    assert isinstance(first, ResponseLost) and first.code == "ReadTimeout"
    assert isinstance(second, ConnectionFailed) and second.code == "PoolTimeout"


def test_dropped_connection_before_the_answer_is_ambiguous(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    """The server closes the connection after reading the request: `ResponseLost` (it may have been sent)."""
    port, accepted = silent_server

    async def scenario() -> None:
        async with AsyncSmsClient(KEY, endpoint=f"http://127.0.0.1:{port}") as client:
            task = asyncio.ensure_future(client.send(HK, "Hi"))
            while not accepted:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            accepted[0].close()
            await task

    with pytest.raises(ResponseLost):
        run(scenario())


def test_wrong_secret_is_an_authentication_error(start_emulator: StartEmulator) -> None:
    server = start_emulator()

    async def scenario() -> None:
        async with AsyncSmsClient(AccessKey.of("testid", "wrong"), endpoint=server.url) as client:
            await client.query("1")

    with pytest.raises(AuthenticationError) as caught:
        run(scenario())
    assert "wrong" not in str(caught.value)


def test_query_message_limit_when_set(start_emulator: StartEmulator) -> None:
    """`query_calls_per_second` (off by default) throttles QueryMessage above it, like the send limits."""
    server = start_emulator(query_calls_per_second=3)

    async def scenario() -> list[Any]:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            sent = await client.send(HK, "Hi")
            queries = (client.query(sent.message_id) for _ in range(5))
            return await asyncio.gather(*queries, return_exceptions=True)

    answers = run(scenario())
    assert sum(isinstance(a, GatewayThrottled) for a in answers) == 2


@pytest.fixture
def receipt_sink() -> Iterator[tuple[str, list[Any]]]:
    """A webhook that stores every receipt POST and answers as Alibaba expects."""
    posts: list[Any] = []

    async def receive(request: Request) -> JSONResponse:
        posts.append(await request.json())
        return JSONResponse({"code": 0, "msg": "ok"})

    runner = ThreadedUvicorn(
        Starlette(routes=[Route("/receipts", receive, methods=["POST"])]),
        host="127.0.0.1",
        port=0,
        startup_timeout=10,
        name="receipt-sink",
    )
    port = runner.start()
    yield f"http://127.0.0.1:{port}/receipts", posts
    runner.stop(timeout=5)


def test_single_calls_get_delivery_receipts(
    start_emulator: StartEmulator, receipt_sink: tuple[str, list[Any]]
) -> None:
    """A message sent with SendMessageToGlobe gets its receipt pushed (MessageId, TaskId, SmsSize), and
    QueryMessage reports the same outcome."""
    url, posts = receipt_sink
    server = start_emulator(
        seed=3, receipt_callback_url=url, receipts=ReceiptSettings(delay_seconds=0, failed_weight=0)
    )

    async def scenario() -> Any:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            sent = await client.send(HK, UCS2_TEXT, task_id="c-s00007")
            return sent, await client.query(sent.message_id)

    sent, _ = run(scenario())
    assert server.state.receipts.drain(10)
    [receipt] = [item for post in posts for item in post if item["MessageId"] == sent.message_id]
    fields = (receipt["To"], receipt["TaskId"], receipt["SmsSize"], receipt["Status"])
    assert fields == (HK, "c-s00007", "2", "1")

    async def query_again() -> Any:
        async with AsyncSmsClient(KEY, endpoint=server.url) as client:
            return await client.query(sent.message_id)

    assert run(query_again()).status == "1"


def test_closed_client_and_transport_reuse() -> None:
    """A closed client refuses to send (its pool is gone); a transport is reusable after `aclose`."""

    async def scenario() -> None:
        client = AsyncSmsClient(KEY, endpoint="http://127.0.0.1:9")
        await client.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await client.query("1")
        for transport in (WireTransport(max_connections=1), AiohttpTransport(max_connections=1)):
            await transport.aclose()

    run(scenario())


@pytest.mark.parametrize("make_transport", [WireTransport, AiohttpTransport])
def test_the_transport_serves_a_plain_httpx_async_client(
    start_emulator: StartEmulator, make_transport: type[httpx.AsyncBaseTransport]
) -> None:
    """The package's transports are ordinary httpx transports: an `httpx.AsyncClient` signing with the
    package's Auth sends through them and reads an `httpx.Response` (the client takes a shorter path)."""
    from alibaba_sms.signing import AcsV3Auth

    server = start_emulator()

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=server.url, transport=make_transport(max_connections=2), auth=AcsV3Auth(KEY)
        ) as client:
            return await client.post(
                "/",
                data={"To": HK, "Message": "Hi"},
                headers={"x-acs-action": "SendMessageToGlobe", "x-acs-version": "2018-05-01"},
            )

    response = run(scenario())
    assert response.status_code == 200 and response.json()["ResponseCode"] == "OK"
    assert response.headers["content-type"].startswith("application/json")
    assert server.state.accepted_numbers() == {HK: 1}
