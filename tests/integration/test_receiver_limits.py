"""The receipt receiver's limits over real sockets: a push body over `max_body_bytes` is answered 413 without
being read to its end, and JSON nested deeper than the parser goes is a 400, not a 500.

The token and the receipts themselves are tested in tests/{unit,integration}/test_receipts_auth.py and
tests/{unit,integration}/test_receipts.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from globe_sms.receipts import ReceiptStore
from globe_sms.receipts.auth import ReceiverToken
from globe_sms.receipts.receiver import DEFAULT_MAX_BODY_BYTES, ReceiverServer

SECRET = "s3cr3t-Receipts-Token_0123456789"
LIMIT = 256 * 1024


def receipts(n: int, first: int = 0) -> bytes:
    """`n` receipts as Alibaba pushes them, as a JSON body."""
    return json.dumps(
        [
            {"MessageId": str(first + i), "Status": "1", "ErrorCode": "DELIVERED", "To": "85212345678"}
            for i in range(n)
        ]
    ).encode()


@pytest.fixture
def receiver(tmp_path: Path, no_proxy: None) -> Iterator[ReceiverServer]:
    with ReceiverServer(
        f"sqlite:///{tmp_path / 'ledger.db'}", token=ReceiverToken.of(SECRET), max_body_bytes=LIMIT
    ) as server:
        yield server


def post(url: str, content: object) -> httpx.Response:
    return httpx.post(url, content=content, headers={"content-type": "application/json"}, trust_env=False)  # type: ignore[arg-type]


def stored(server: ReceiverServer, message_id: str) -> bool:
    with ReceiptStore(server.ledger_url) as store:
        return store.get(message_id) is not None


class TestBodyLimit:
    def test_the_default_is_four_mib(self) -> None:
        assert DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024

    def test_a_push_under_the_limit_is_stored(self, receiver: ReceiverServer) -> None:
        body = receipts(100)
        assert len(body) < LIMIT
        answer = post(receiver.push_url(), body)
        assert answer.status_code == 200 and answer.json()["code"] == 0 and stored(receiver, "99")

    def test_a_declared_length_over_the_limit_is_413_and_nothing_is_stored(
        self, receiver: ReceiverServer
    ) -> None:
        body = receipts(5000)
        assert len(body) > LIMIT
        answer = post(receiver.push_url(), body)
        assert answer.status_code == 413 and answer.json() == {
            "code": 413,
            "msg": f"the body is larger than {LIMIT} bytes",
        }
        assert not stored(receiver, "0")

    def test_a_chunked_body_over_the_limit_is_413(self, receiver: ReceiverServer) -> None:
        """No Content-Length: the body is counted as it arrives."""
        body = receipts(5000)
        answer = post(receiver.push_url(), (body[i : i + 8192] for i in range(0, len(body), 8192)))
        assert answer.status_code == 413 and not stored(receiver, "0")

    def test_an_endless_body_is_answered_long_before_its_end(self, receiver: ReceiverServer) -> None:
        """A raw socket sends chunk after chunk and reads: the 413 comes while it is still sending."""
        sent, answer = 0, b""
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(
                f"POST /receipts/{SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            sock.setblocking(False)
            chunk = f"{0x10000:x}\r\n".encode() + b" " * 0x10000 + b"\r\n"
            deadline = time.monotonic() + 30
            while b"\r\n\r\n" not in answer and sent < 256 * 1024 * 1024 and time.monotonic() < deadline:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.001)
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 256 * 1024 * 1024  # it did not wait for the end (there is none)

    def test_the_receiver_keeps_serving_after_a_refusal(self, receiver: ReceiverServer) -> None:
        assert post(receiver.push_url(), receipts(5000)).status_code == 413
        assert post(receiver.push_url(), receipts(3, first=700)).status_code == 200 and stored(
            receiver, "701"
        )


class TestNestedJson:
    @pytest.mark.parametrize(
        "body",
        [
            b"[" * 100_000,
            b"[" * 100_000 + b"]" * 100_000,
            b'[{"MessageId": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]",
        ],
        ids=["unclosed", "closed", "in-a-field"],
    )
    def test_deeply_nested_json_is_400_not_500(self, receiver: ReceiverServer, body: bytes) -> None:
        answer = post(receiver.push_url(), body)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"code": 400, "msg": "the body is JSON nested too deeply"}
        assert httpx.get(receiver.base_url + "/health", trust_env=False).json()["failed_posts"] == 0
