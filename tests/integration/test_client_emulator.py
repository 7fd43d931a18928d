"""Integration tests: our SmsClient over real loopback sockets against the emulator.

Edge cases of parsing and error mapping are in tests/unit/test_client_unit.py (httpx.MockTransport fakes).
"""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.errors import (
    AuthenticationError,
    BusinessRejected,
    ConnectionFailed,
    GatewayInternalError,
    GatewayThrottled,
    GatewayUnavailable,
    ResponseLost,
)
from tests.emulator_fixtures import StartEmulator

KEY = AccessKey.of("testid", "testsecret")
UCS2_TEXT = ("您好，這是一則測試訊息。" * 14)[:160]


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_full_batch_of_1000_ucs2_messages_is_accepted(start_emulator: StartEmulator, version: str) -> None:
    """1,000 numbers with 160-character UCS-2 texts travel in a form body and are all accepted."""
    server = start_emulator(batch_calls_per_second=0)
    numbers = [f"65912{i:05d}" for i in range(1000)]
    texts = [UCS2_TEXT[:-4] + f"{i:04d}" for i in range(1000)]
    with SmsClient(KEY, endpoint=server.url, signature_version=version) as client:  # type: ignore[arg-type]
        prepared = client.prepare_batch(
            numbers, texts, sender="GlobeSMS", message_type="NOTIFY", task_id="c-b00001"
        )
        assert len(prepared.request.content) > 65_536  # would not fit in a URL
        result = client.send_prepared_batch(prepared)
    assert result.success_count == 1000 and result.failed == ()
    assert set(result.accepted) == set(numbers) and all(result.accepted.values())
    stored = {m.to: m.message for m in server.state.accepted_messages()}
    assert stored["6591200007"] == texts[7]


def test_mainland_and_malformed_numbers_come_back_in_failed_list(start_emulator: StartEmulator) -> None:
    """The gateway refuses +86 and broken numbers per number; the rest get message ids."""
    server = start_emulator(batch_calls_per_second=0)
    with SmsClient(KEY, endpoint=server.url) as client:
        result = client.send_batch(["85291234567", "8613800138000", "12", "85366123456"], "Hi")
    assert set(result.failed) == {"8613800138000", "12"}
    assert set(result.accepted) == {"85291234567", "85366123456"}
    assert server.state.accepted_numbers() == {"85291234567": 1, "85366123456": 1}


def test_send_and_query_a_single_message(start_emulator: StartEmulator) -> None:
    """SendMessageToGlobe returns a message id that QueryMessage then finds."""
    server = start_emulator()
    with SmsClient(KEY, endpoint=server.url) as client:
        sent = client.send("88612345678", "Hello Taipei", sender="GlobeSMS")
        found = client.query(sent.message_id)
    assert sent.to == "88612345678" and sent.segments == 1
    assert found.message_id == sent.message_id and found.to == "88612345678" and found.status_name == "sent"


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_wrong_secret_is_refused_as_authentication_error(start_emulator: StartEmulator, version: str) -> None:
    """A wrong secret gets SignatureDoesNotMatch, mapped to a permanent authentication error."""
    server = start_emulator()
    wrong = AccessKey.of("testid", "not-the-secret")
    with SmsClient(wrong, endpoint=server.url, signature_version=version) as client:  # type: ignore[arg-type]
        with pytest.raises(AuthenticationError) as info:
            client.send_batch(["85291234567"], "Hi")
    assert info.value.code == "SignatureDoesNotMatch" and info.value.status == 400
    assert "not-the-secret" not in str(info.value)
    assert server.state.accepted_numbers() == {}


def test_second_call_within_a_second_is_throttled(start_emulator: StartEmulator) -> None:
    """One BatchSendMessageToGlobe call per second per AccessKeyId: the second is Throttling.User."""
    server = start_emulator(batch_calls_per_second=1.0)
    with SmsClient(KEY, endpoint=server.url) as client:
        client.send_batch(["85291234567"], "one")
        with pytest.raises(GatewayThrottled) as info:
            client.send_batch(["85291234568"], "two")
    assert info.value.code == "Throttling.User"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", GatewayInternalError),
        ("503", GatewayUnavailable),
        ("drop_after_accept", ResponseLost),
        ("business:AMOUNT_NOT_ENOUGH", BusinessRejected),
    ],
)
def test_injected_faults_map_to_their_outcome(start_emulator: StartEmulator, fault: str, error: type) -> None:
    """Each fault reaches the client over the socket as the documented class."""
    server = start_emulator(batch_calls_per_second=0)
    server.state.faults.script([fault])
    with SmsClient(KEY, endpoint=server.url) as client, pytest.raises(error):
        client.send_batch(["85291234567"], "Hi")


def test_read_timeout_after_acceptance_is_ambiguous(start_emulator: StartEmulator) -> None:
    """The batch was accepted but the answer came too late: the client cannot know, so it says so."""
    server = start_emulator(batch_calls_per_second=0)
    server.state.faults.script(["timeout_after_accept:1.5"])
    with SmsClient(KEY, endpoint=server.url, timeout=httpx.Timeout(0.5, connect=2.0)) as client:
        with pytest.raises(ResponseLost):
            client.send_batch(["85291234567"], "Hi")
    assert server.state.accepted_numbers() == {"85291234567": 1}


def test_on_sent_fires_once_as_the_request_leaves_before_the_answer(start_emulator: StartEmulator) -> None:
    """`send_prepared_batch(on_sent=...)` rides on httpcore's public `trace` extension: the callback comes
    once, as the request reaches the gateway, 0.3 s before its (delayed) answer is decided."""
    server = start_emulator(batch_calls_per_second=0, faults={"latency_seconds": 0.3})
    seen: list[tuple[float, int]] = []
    with SmsClient(KEY, endpoint=server.url) as client:
        prepared = client.prepare_batch(["85291234567", "85366123456"], "Hi")
        on_sent = lambda: seen.append((time.time(), len(server.state.requests())))  # noqa: E731
        result = client.send_prepared_batch(prepared, on_sent=on_sent)
    assert result.success_count == 2
    assert len(seen) == 1, "once"
    sent_at, journaled_then = seen[0]
    assert journaled_then == 0, "before the answer: the gateway decides after its 0.3 s latency"
    decided = server.state.requests()[0].time
    assert decided - sent_at > 0.25, "fired as the request arrived, 0.3 s before the gateway decided"


def test_a_failing_on_sent_callback_does_not_fail_the_call_that_left(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_emulator(batch_calls_per_second=0)

    def on_sent() -> None:
        raise RuntimeError("the Prefect server is down")

    with SmsClient(KEY, endpoint=server.url) as client:
        result = client.send_prepared_batch(client.prepare_batch(["85291234567"], "Hi"), on_sent=on_sent)
    assert result.success_count == 1
    assert "on_sent callback failed" in caplog.text


def test_on_sent_is_not_called_when_the_request_never_left(no_proxy: None) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen: list[str] = []
    with SmsClient(KEY, endpoint=f"http://127.0.0.1:{port}") as client:
        prepared = client.prepare_batch(["85291234567"], "Hi")
        with pytest.raises(ConnectionFailed):
            client.send_prepared_batch(prepared, on_sent=lambda: seen.append("sent"))
    assert seen == []


def test_secret_is_absent_from_logs_and_errors_over_real_sockets(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, with httpx and the emulator logging, the secret appears in no record and no error."""
    caplog.set_level(logging.DEBUG)
    server = start_emulator(batch_calls_per_second=0, credentials={"testid": "testsecret"})
    texts: list[str] = []
    for version in ("v3", "v1"):
        with SmsClient(KEY, endpoint=server.url, signature_version=version) as client:  # type: ignore[arg-type]
            client.send_batch(["85291234567"], "Hi")
            texts.append(repr(client))
        with SmsClient(AccessKey.of("testid", "testsecret-wrong"), endpoint=server.url,
                       signature_version=version) as client:  # type: ignore[arg-type]
            with pytest.raises(AuthenticationError) as info:
                client.send_batch(["85291234567"], "Hi")
            texts += [str(info.value), repr(info.value)]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(repr(server.state.config))
    assert caplog.records, "logging was captured"
    assert not [text for text in texts if "testsecret" in text]
