"""Integration tests: `WireTransport` over real loopback sockets, against small asyncio servers that answer,
chunk, close, reset, stall or send garbage.

Each row of the error table (alibaba_sms/wire.py) is checked here, because the ledger's exactly-once rests on
it: a failure before the request left is "not sent" (`ConnectError`, `ConnectTimeout`, `PoolTimeout`), one
after is "may have been processed" (`ReadTimeout`, `RemoteProtocolError`, `ReadError`), and the transport
never writes a request twice.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from alibaba_sms.errors import ConnectionFailed, ResponseLost, transport_error
from alibaba_sms.wire import WireTransport

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it


OK_BODY = b'{"ResponseCode":"OK"}'
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


@dataclass
class Server:
    """What a scripted server saw: one entry per request (its raw bytes), and the connections it accepted."""

    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


async def serve(answer: Answer, *, ssl_context: ssl.SSLContext | None = None) -> tuple[Server, Any]:
    """Start a server whose `answer(reader, writer, request)` handles each request; it returns whether the
    connection stays open for another request."""
    seen = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.writers.append(writer)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                seen.requests.append(request)
                if not await answer(reader, writer, request):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    seen.port = server.sockets[0].getsockname()[1]
    return seen, server


def ok_answer(body: bytes = OK_BODY, extra: bytes = b"") -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), extra, body)
        )
        await writer.drain()
        return b"connection: close" not in extra.lower()

    return answer


def post(port: int, *, timeout: httpx.Timeout | None = None, scheme: str = "http", target: str = "/") -> Any:
    return httpx.Request(
        "POST",
        f"{scheme}://127.0.0.1:{port}{target}",
        content=b"To=85291234567&Message=Hi",
        headers={"content-type": "application/x-www-form-urlencoded", "x-acs-action": "SendMessageToGlobe"},
        extensions={"timeout": (timeout or httpx.Timeout(5.0)).as_dict()},
    )


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


# --- answers --------------------------------------------------------------------------------------------


def test_keep_alive_answers_reuse_one_connection_and_the_request_goes_out_as_built() -> None:
    async def scenario() -> tuple[Server, list[tuple[int, bytes]], httpx.Response]:
        seen, server = await serve(ok_answer())
        transport = WireTransport(max_connections=4)
        try:
            answers = [await transport.exchange(post(seen.port, target="/?a=%2F%20b")) for _ in range(3)]
            response = await transport.handle_async_request(post(seen.port))
            await response.aread()
        finally:
            await transport.aclose()
            server.close()
        return seen, answers, response

    seen, answers, response = run(scenario)
    assert answers == [(200, OK_BODY)] * 3 and seen.connections == 1 and len(seen.requests) == 4
    first = seen.requests[0]
    assert first.startswith(b"POST /?a=%2F%20b HTTP/1.1\r\n")  # the target exactly as built: no re-encoding
    assert f"Host: 127.0.0.1:{seen.port}\r\n".encode() in first and b"Content-Length: 25\r\n" in first
    assert first.endswith(b"\r\n\r\nTo=85291234567&Message=Hi")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"ResponseCode": "OK"}


def test_a_chunked_answer_in_pieces_is_joined() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b'{"Response', b'Code":', b'"OK"}'):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async def scenario() -> tuple[Server, list[tuple[int, bytes]]]:
        seen, server = await serve(answer)
        async with WireTransport() as transport:
            answers = [await transport.exchange(post(seen.port)) for _ in range(2)]
        server.close()
        return seen, answers

    seen, answers = run(scenario)
    assert answers == [(200, OK_BODY)] * 2 and seen.connections == 1


def test_a_body_to_the_end_of_the_connection_and_connection_close() -> None:
    """No length, no chunking: the body ends with the connection. `Connection: close`: a new connection
    for the next call."""

    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK_BODY)
        return False

    async def scenario() -> tuple[Server, Server, list[tuple[int, bytes]]]:
        eof, eof_server = await serve(until_eof)
        closing, closing_server = await serve(ok_answer(extra=b"Connection: close\r\n"))
        async with WireTransport() as transport:
            answers = [await transport.exchange(post(eof.port)) for _ in range(2)]
            answers += [await transport.exchange(post(closing.port)) for _ in range(2)]
        eof_server.close()
        closing_server.close()
        return eof, closing, answers

    eof, closing, answers = run(scenario)
    assert answers == [(200, OK_BODY)] * 4
    assert (eof.connections, closing.connections) == (2, 2)


def test_an_interim_100_continue_is_skipped() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        return await ok_answer()(reader, writer, request)

    async def scenario() -> tuple[int, bytes]:
        seen, server = await serve(answer)
        async with WireTransport() as transport:
            answer_ = await transport.exchange(post(seen.port))
        server.close()
        return answer_

    assert run(scenario) == (200, OK_BODY)


def test_an_idle_connection_the_server_closed_is_not_reused_and_idle_ones_expire() -> None:
    """The server drops the connection after each answer without saying so (its keep-alive timeout): the
    next call connects anew instead of writing into a closed connection (which would be ambiguous)."""

    async def scenario() -> tuple[Server, Server, list[tuple[int, bytes]]]:
        dropping, dropping_server = await serve(lambda r, w, q: _answer_then_drop(w))
        kept, kept_server = await serve(ok_answer())
        answers = []
        async with WireTransport() as transport:
            for _ in range(3):
                answers.append(await transport.exchange(post(dropping.port)))
                await asyncio.sleep(0.1)  # the FIN arrives while the connection is idle
        async with WireTransport(keepalive_expiry=0.05) as transport:
            for _ in range(2):
                answers.append(await transport.exchange(post(kept.port)))
                await asyncio.sleep(0.15)
        dropping_server.close()
        kept_server.close()
        return dropping, kept, answers

    dropping, kept, answers = run(scenario)
    assert answers == [(200, OK_BODY)] * 5
    assert (dropping.connections, len(dropping.requests)) == (3, 3)
    assert kept.connections == 2  # the first connection expired while idle


async def _answer_then_drop(writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY))
    await writer.drain()
    return False


def test_the_pool_hands_freed_connections_to_waiters() -> None:
    """Twenty calls, two connections: every call is answered, over those two connections only."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        await asyncio.sleep(0.01)
        return await ok_answer()(reader, writer, request)

    async def scenario() -> tuple[Server, list[tuple[int, bytes]]]:
        seen, server = await serve(slow)
        async with WireTransport(max_connections=2) as transport:
            answers = await asyncio.gather(*(transport.exchange(post(seen.port)) for _ in range(20)))
        server.close()
        return seen, list(answers)

    seen, answers = run(scenario)
    assert answers == [(200, OK_BODY)] * 20 and seen.connections == 2 and len(seen.requests) == 20


def test_https_with_the_given_context_and_an_untrusted_certificate_is_not_sent(tmp_path: Path) -> None:
    server_context, client_context = tls_contexts(tmp_path)

    async def scenario() -> tuple[Server, tuple[int, bytes], BaseException | None]:
        seen, server = await serve(ok_answer(), ssl_context=server_context)
        async with WireTransport(ssl_context=client_context) as transport:
            answer = await transport.exchange(post(seen.port, scheme="https"))
        untrusted: BaseException | None = None
        async with WireTransport() as transport:  # the system's trust store: no such certificate
            try:
                await transport.exchange(post(seen.port, scheme="https"))
            except httpx.TransportError as exc:
                untrusted = exc
        server.close()
        return seen, answer, untrusted

    seen, answer, untrusted = run(scenario)
    assert answer == (200, OK_BODY) and len(seen.requests) == 1  # the refused handshake sent nothing
    assert isinstance(untrusted, httpx.ConnectError)
    assert isinstance(transport_error(untrusted), ConnectionFailed)


# --- the error table --------------------------------------------------------------------------------------


def failure(answer: Answer | None, **options: Any) -> tuple[Exception, Server]:
    """The error of one call to a server answering with `answer` (None: nothing listens)."""
    timeout = options.pop("timeout", httpx.Timeout(2.0))

    async def scenario() -> tuple[Exception, Server]:
        if answer is None:
            seen, server = Server(port=free_port()), None
        else:
            seen, server = await serve(answer)
        try:
            async with WireTransport(**options) as transport:
                await transport.exchange(post(seen.port, timeout=timeout))
        except httpx.TransportError as exc:
            return exc, seen
        finally:
            if server is not None:
                server.close()
        raise AssertionError("the call did not fail")

    return run(scenario)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    await asyncio.sleep(30)
    return False


async def close_without_answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> bool:
    return False


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    writer.transport.abort()
    return False


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    writer.write(b"SMS/9 banana\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(1)
    return False


async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK_BODY)
    await writer.drain()
    return False


@pytest.mark.parametrize(
    ("answer", "error", "timeout"),
    [
        (never_answer, httpx.ReadTimeout, httpx.Timeout(0.3)),
        (close_without_answer, httpx.RemoteProtocolError, None),
        (half_answer, httpx.RemoteProtocolError, None),
        (garbage, httpx.RemoteProtocolError, None),
        (reset, httpx.ReadError, None),
    ],
)
def test_failures_after_the_request_left_may_have_been_processed(
    answer: Answer, error: type[Exception], timeout: httpx.Timeout | None
) -> None:
    raised, seen = failure(answer, timeout=timeout or httpx.Timeout(2.0))
    assert type(raised) is error
    assert isinstance(transport_error(raised), ResponseLost)
    assert len(seen.requests) == 1  # written once, never again


def test_a_refused_connection_is_not_sent() -> None:
    raised, _ = failure(None)
    assert type(raised) is httpx.ConnectError and isinstance(transport_error(raised), ConnectionFailed)


def test_a_connection_that_cannot_be_made_in_time_is_not_sent() -> None:
    """A listener whose accept queue is full (nobody accepts): the handshake is never completed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)

    async def scenario() -> Exception:
        async with WireTransport() as transport:
            try:
                await transport.exchange(post(port, timeout=httpx.Timeout(2.0, connect=0.3)))
            except httpx.TransportError as exc:
                return exc
        raise AssertionError("the call did not fail")

    try:
        raised = run(scenario)
    finally:
        for sock in [*fillers, listener]:
            sock.close()
    assert type(raised) is httpx.ConnectTimeout and isinstance(transport_error(raised), ConnectionFailed)


def test_a_full_pool_is_not_sent_and_a_read_timeout_is_the_gap_between_reads() -> None:
    """One connection, the server answers slowly in small pieces: the first call is answered although the
    whole answer takes longer than the read timeout (no gap does); the second waits for the pool past its
    pool timeout and never leaves."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY))
        for byte in OK_BODY:
            await writer.drain()
            await asyncio.sleep(0.03)  # 21 bytes: ~0.6 s in all
            writer.write(bytes([byte]))
        return True

    timeout = httpx.Timeout(0.4, pool=0.1)

    async def scenario() -> tuple[Server, list[Any]]:
        seen, server = await serve(drip)
        async with WireTransport(max_connections=1) as transport:
            first = asyncio.ensure_future(transport.exchange(post(seen.port, timeout=timeout)))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(transport.exchange(post(seen.port, timeout=timeout)))
            answers = await asyncio.gather(first, second, return_exceptions=True)
        server.close()
        return seen, answers

    seen, (first, second) = run(scenario)
    assert first == (200, OK_BODY)
    assert type(second) is httpx.PoolTimeout and isinstance(transport_error(second), ConnectionFailed)
    assert len(seen.requests) == 1


def test_a_cancelled_call_frees_its_connection() -> None:
    """A call cancelled while waiting for its answer: its connection is closed (its state is unknown) and
    the pool's one slot serves the next call."""
    calls = 0

    async def first_stalls(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        return await ok_answer()(reader, writer, request)

    async def scenario() -> tuple[Server, tuple[int, bytes]]:
        seen, server = await serve(first_stalls)
        async with WireTransport(max_connections=1) as transport:
            stalled = asyncio.ensure_future(transport.exchange(post(seen.port)))
            await asyncio.sleep(0.1)
            stalled.cancel()
            answer = await transport.exchange(post(seen.port, timeout=httpx.Timeout(2.0, pool=1.0)))
        server.close()
        return seen, answer

    seen, answer = run(scenario)
    assert answer == (200, OK_BODY) and seen.connections == 2


def test_the_transport_serves_an_httpx_async_client() -> None:
    async def scenario() -> httpx.Response:
        seen, server = await serve(ok_answer(extra=b"X-Acs-Request-Id: R-1\r\n"))
        async with httpx.AsyncClient(transport=WireTransport()) as client:
            response = await client.post(f"http://127.0.0.1:{seen.port}/", data={"To": "1"})
        server.close()
        return response

    response = run(scenario)
    assert response.status_code == 200 and response.headers["x-acs-request-id"] == "R-1"
    assert response.json() == {"ResponseCode": "OK"} and response.http_version == "HTTP/1.1"


class Forwarding(httpx.AsyncBaseTransport):
    """Hands `httpx.Request`s to a `WireTransport`: the async client then takes its httpx path."""

    def __init__(self, wire: WireTransport) -> None:
        self.wire = wire

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.wire.handle_async_request(request)

    async def aclose(self) -> None:
        await self.wire.aclose()


@pytest.mark.parametrize("text", ["Hi there", "Hello 世界 ~*+&=%/?#"])
def test_the_clients_written_out_requests_are_byte_for_byte_its_httpx_requests(text: str) -> None:
    """`AsyncSmsClient` writes V3 requests out itself for its `WireTransport` (`PreparedSend.wire`, no
    `httpx.Request`): the server reads exactly the bytes that the same calls send as `httpx.Request`s
    (through any other transport, here one forwarding to a `WireTransport`), a send and a query; a V1
    request has no such bytes."""
    from datetime import UTC
    from datetime import datetime as Datetime

    from alibaba_sms import AccessKey
    from alibaba_sms.async_client import AsyncSmsClient

    moment = Datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    body = b'{"ResponseCode":"OK","RequestId":"R-1","MessageId":"1008","Segments":"1","To":"1","Status":"1"}'
    key = AccessKey.of("testid", "testsecret")

    async def scenario() -> tuple[Server, list[Any], list[bytes | None]]:
        seen, server = await serve(ok_answer(body))
        fixed = {"endpoint": f"http://127.0.0.1:{seen.port}", "clock": lambda: moment, "nonce": lambda: "n-1"}
        results, wires = [], []
        try:
            for transport in (None, Forwarding(WireTransport()), None):
                version = "v1" if len(wires) == 2 else "v3"
                options = {"transport": transport, "signature_version": version, **fixed}
                async with AsyncSmsClient(key, **options) as client:
                    prepared = client.prepare_send("85291234567", text, sender="Alicloud", task_id="c-b1")
                    wires.append(prepared.wire)
                    results += [await client.send_prepared(prepared), await client.query("1008")]
        finally:
            server.close()
        return seen, results, wires

    seen, results, wires = run(scenario)
    raw_send, raw_query, httpx_send, httpx_query, v1_send, _ = seen.requests
    assert raw_send == httpx_send and raw_query == httpx_query
    assert wires[0] == raw_send and wires[1] is None and wires[2] is None  # V1: built as an httpx.Request
    assert raw_send.startswith(b"POST / HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nAuthorization: ACS3-HMAC-SHA256 Credential=testid," in raw_send
    form = {"To": "85291234567", "Message": text, "From": "Alicloud", "TaskId": "c-b1"}
    assert raw_send.split(b"\r\n\r\n", 1)[1] == httpx.Request("POST", "http://x/", data=form).content
    assert b"Signature=" in v1_send.split(b"\r\n", 1)[0]
    assert [r.message_id for r in results[::2]] == ["1008"] * 3


def test_max_connections_must_be_positive_and_unknown_schemes_are_refused() -> None:
    with pytest.raises(ValueError):
        WireTransport(max_connections=0)

    async def scenario() -> None:
        async with WireTransport() as transport:
            await transport.exchange(httpx.Request("POST", "ftp://127.0.0.1/"))

    with pytest.raises(httpx.UnsupportedProtocol):
        run(scenario)


# --- TLS material -----------------------------------------------------------------------------------------


def tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context, and a client context trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    return server_context, client_context


def test_closing_the_transport_closes_connections_still_in_use_once_answered() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        await asyncio.sleep(0.2)
        return await ok_answer()(reader, writer, request)

    async def scenario() -> tuple[tuple[int, bytes], bool]:
        seen, server = await serve(slow)
        transport = WireTransport()
        call = asyncio.ensure_future(transport.exchange(post(seen.port)))
        await asyncio.sleep(0.05)
        await transport.aclose()
        answer = await call
        await asyncio.sleep(0.05)
        closed = seen.writers[0].transport.is_closing()  # the server saw the client close it
        server.close()
        return answer, closed

    answer, closed = run(scenario)
    assert answer == (200, OK_BODY) and closed
