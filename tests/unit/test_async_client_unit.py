"""Unit tests for `AsyncSmsClient`: the same signed requests and the same error classification as the sync
client, through httpx.MockTransport fakes (edge cases only; the real transport runs over sockets in
tests/integration/test_async_client.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.async_client import AsyncSmsClient
from alibaba_sms.endpoints import InsecureEndpoint
from alibaba_sms.errors import (
    BusinessRejected,
    BusinessRetryable,
    BusinessThrottled,
    ConnectionFailed,
    GatewayAuthenticationError,
    GatewayInternalError,
    GatewayThrottled,
    GatewayUnavailable,
    InvalidResponse,
    ResponseLost,
    RetryableError,
    SmsApiError,
)

SECRET = "s3cr3t-never-shown"
KEY = AccessKey.of("testid", SECRET)
MOMENT = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
SEND_BODY = {
    "ResponseCode": "OK",
    "ResponseDescription": "The SMS Send Request was accepted",
    "RequestId": "R-1",
    "MessageId": "1008030300",
    "To": "85212345678",
    "From": "Alicloud",
    "Segments": "2",
    "NumberDetail": {"Country": "Hongkong, China", "Region": "HongKong", "Carrier": "CMI"},
}


def fixed(**options: Any) -> dict[str, Any]:
    return {"clock": lambda: MOMENT, "nonce": lambda: "nonce-1", **options}


def answering(status: int = 200, body: object | None = None, text: str | None = None) -> Any:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def send_with(handler: Any, **options: Any) -> Any:
    async def scenario() -> Any:
        transport = httpx.MockTransport(handler)
        async with AsyncSmsClient(KEY, transport=transport, **fixed(**options)) as client:
            return await client.send("85212345678", "Hello 世界", sender="Alicloud", message_type="OTP")

    return asyncio.run(scenario())


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_the_signed_request_is_the_sync_clients(version: str) -> None:
    """Same clock and nonce: the async client sends the sync client's URL, body and signature."""
    sync_handler, async_handler = answering(body=SEND_BODY), answering(body=SEND_BODY)
    transport = httpx.MockTransport(sync_handler)
    with SmsClient(KEY, transport=transport, signature_version=version, **fixed()) as client:  # type: ignore[arg-type]
        client.send("85212345678", "Hello 世界", sender="Alicloud", message_type="OTP")
    send_with(async_handler, signature_version=version)
    [expected], [got] = sync_handler.seen, async_handler.seen
    assert str(got.url) == str(expected.url) and got.content == expected.content
    signed = ("authorization", "x-acs-signature-nonce", "x-acs-date", "x-acs-content-sha256", "content-type")
    assert [got.headers.get(name) for name in signed] == [expected.headers.get(name) for name in signed]
    assert dict(parse_qsl(got.content.decode())) == {
        "To": "85212345678",
        "Message": "Hello 世界",
        "From": "Alicloud",
        "Type": "OTP",
    }
    assert got.headers["x-acs-action"] == "SendMessageToGlobe" and got.headers["accept"] == "application/json"


def test_the_auth_is_the_packages_and_timeouts_reach_the_transport() -> None:
    handler = answering(body=SEND_BODY)
    result = send_with(handler, timeout=httpx.Timeout(7.0, connect=2.0))
    [request] = handler.seen
    assert request.extensions["timeout"] == {"connect": 2.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert request.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=testid,")
    assert result.segments == 2 and result.number_detail.carrier == "CMI" and result.sender == "Alicloud"
    assert SECRET not in repr(AsyncSmsClient(KEY, transport=httpx.MockTransport(handler)))


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable"),
    [
        (400, {"Code": "Throttling.User", "Message": "user flow control"}, GatewayThrottled, True),
        (429, {"Code": "Throttling", "Message": "slow down"}, GatewayThrottled, True),
        (200, {"ResponseCode": "QPS_LIMIT_CONTROL", "RequestId": "R"}, BusinessThrottled, True),
        (200, {"ResponseCode": "isv.SYSTEM_ERROR", "RequestId": "R"}, BusinessRetryable, True),
        (503, None, GatewayUnavailable, True),
        (500, {"Code": "InternalError", "Message": "oops"}, GatewayInternalError, False),
        (400, {"Code": "SignatureDoesNotMatch", "Message": "no"}, GatewayAuthenticationError, False),
        (200, {"ResponseCode": "MOBILE_NUMBER_ILLEGAL", "RequestId": "R"}, BusinessRejected, False),
        (200, {"ResponseCode": "SOMETHING_NEW", "RequestId": "R"}, BusinessRejected, False),
    ],
)
def test_answers_are_classified_like_the_sync_client(
    status: int, body: object, error: type[SmsApiError], retryable: bool
) -> None:
    handler = answering(status, body, text="Service Unavailable" if body is None else None)
    with pytest.raises(error) as caught:
        send_with(handler)
    with SmsClient(KEY, transport=httpx.MockTransport(handler), **fixed()) as sync_client:
        with pytest.raises(error) as sync_caught:
            sync_client.send("85212345678", "Hi")
    assert (caught.value.code, caught.value.status) == (sync_caught.value.code, sync_caught.value.status)
    assert caught.value.action == "SendMessageToGlobe"
    assert isinstance(caught.value, RetryableError) == retryable


@pytest.mark.parametrize(
    ("body", "text"),
    [(None, "<html>gateway page</html>"), ({**SEND_BODY, "Segments": "two"}, None)],
)
def test_an_unreadable_ok_answer_is_ambiguous(body: object, text: str | None) -> None:
    with pytest.raises(InvalidResponse):
        send_with(answering(200, body, text))


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (httpx.ConnectError("refused"), ConnectionFailed),
        (httpx.ConnectTimeout("slow"), ConnectionFailed),
        (httpx.PoolTimeout("full"), ConnectionFailed),
        (httpx.ReadTimeout("late"), ResponseLost),
        (httpx.RemoteProtocolError("dropped"), ResponseLost),
        (httpx.ReadError("reset"), ResponseLost),
    ],
)
def test_transport_failures_tell_not_sent_from_maybe_sent(raised: Exception, error: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(error) as caught:
        send_with(handler)
    assert caught.value.code == type(raised).__name__


def test_query_parses_the_sync_clients_model_and_prepare_validates() -> None:
    body = {
        "ResponseCode": "OK",
        "RequestId": "R-2",
        "MessageId": "1008030300",
        "To": "85212345678",
        "Status": "1",
        "ErrorCode": "DELIVERED",
        "SendDate": "Mon, 24 Dec 2018 16:58:22 +0800",
    }

    async def scenario() -> Any:
        async with AsyncSmsClient(KEY, transport=httpx.MockTransport(answering(body=body))) as client:
            with pytest.raises(ValueError):
                client.prepare_send("", "text")
            return await client.query("1008030300")

    found = asyncio.run(scenario())
    assert (found.status_name, found.error_code, found.message_id) == ("sent", "DELIVERED", "1008030300")


def test_plain_http_only_to_loopback_and_region_hosts() -> None:
    with pytest.raises(InsecureEndpoint):
        AsyncSmsClient(KEY, endpoint="http://example.com")
    assert str(AsyncSmsClient(KEY).base_url) == "https://dysmsapi.ap-southeast-1.aliyuncs.com/"
    europe = AsyncSmsClient(KEY, region="eu-central-1")
    assert str(europe.base_url) == "https://dysmsapi.eu-central-1.aliyuncs.com/"
    with pytest.raises(ValueError):
        AsyncSmsClient(KEY, signature_version="v2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [
        {"To": "85212345678", "Message": "Hello 世界 ~*+&=%/?#", "From": "Ali cloud"},
        {"MessageId": "1008030300"},
        {"Message": ""},
    ],
)
def test_the_form_body_is_httpxs_encoding(params: dict[str, str]) -> None:
    """The client encodes the body itself (cached per value): byte for byte what httpx sends for `data=`."""
    from alibaba_sms.protocol import form_body

    for _ in range(2):  # the second time from the cache
        assert form_body(params) == httpx.Request("POST", "http://x/", data=params).content


def test_a_prepared_send_names_its_action_and_carries_a_read_request() -> None:
    """What the lane keeps between signing and sending: the number, the action (so the answer's error names
    it without a header lookup), and a request whose body and length are set, ready for any transport."""
    client = AsyncSmsClient(KEY, **fixed())
    prepared = client.prepare_send("85212345678", "Hi there", sender="Alicloud")
    assert (prepared.to, prepared.action) == ("85212345678", "SendMessageToGlobe")
    request = prepared.request
    assert request.content == b"To=85212345678&Message=Hi+there&From=Alicloud"
    assert request.headers["content-length"] == str(len(request.content))
    assert request.headers["host"] == "dysmsapi.ap-southeast-1.aliyuncs.com"
    assert request.headers.get_list("authorization") == [request.headers["authorization"]]


@pytest.mark.parametrize("transport", [None, httpx.MockTransport(answering(body=SEND_BODY))])
def test_a_chunk_prepared_at_once_is_the_same_requests_as_one_by_one(transport: Any) -> None:
    """`prepare_sends` (the single lane's chunks: options encoded once) builds exactly `prepare_send`'s
    requests: the same written-out bytes through the default `WireTransport`, the same `httpx.Request`
    otherwise; and it refuses an empty number or message, or a message missing."""
    client = AsyncSmsClient(KEY, transport=transport, **fixed())
    numbers, texts = ["85212345678", "85312345678"], ["Hi there", "Hello 世界 ~*+&=%/?#"]
    options: dict[str, Any] = {"sender": "Ali cloud", "message_type": "NOTIFY", "task_id": "c-b00007"}
    for given in (options, {}):
        chunk = client.prepare_sends(numbers, texts, **given)
        one_by_one = [client.prepare_send(to, text, **given) for to, text in zip(numbers, texts, strict=True)]
        assert [p.to for p in chunk] == numbers
        assert [p.wire for p in chunk] == [p.wire for p in one_by_one]
        assert [(p.request.content, p.request.headers.raw) for p in chunk] == [
            (p.request.content, p.request.headers.raw) for p in one_by_one
        ]
    assert (chunk[0].wire is None) == (transport is not None)
    with pytest.raises(ValueError):
        client.prepare_sends(["85212345678", ""], texts)
    with pytest.raises(ValueError):
        client.prepare_sends(numbers, texts[:1])
