"""Compatibility proof: the official SDK (`alibabacloud-dysmsapi20180501`) against the emulator.

The SDK puts every parameter in the URL query with an empty body, and signs V3 (its default) or, with
`signature_algorithm='v2'`, V1. Our own signing over the same emulator: tests/integration/test_emulator.py.
The fixtures (tests/emulator_fixtures.py) come through tests/conftest.py.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from alibabacloud_dysmsapi20180501 import models
from alibabacloud_dysmsapi20180501.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException

from alibaba_sms.emulator import EmulatorServer
from tests.emulator_fixtures import StartEmulator

MODES = ["v3", "v1"]
HK, SG = "85212345678", "6591234567"


def sdk_client(server: EmulatorServer, mode: str, secret: str = "testsecret") -> Client:
    """The official client, on the emulator over plain HTTP; `v1` is the SDK's `signature_algorithm='v2'`."""
    options: dict[str, Any] = {"signature_algorithm": "v2"} if mode == "v1" else {}
    config = open_api_models.Config(
        access_key_id="testid",
        access_key_secret=secret,
        endpoint=f"127.0.0.1:{server.port}",
        protocol="http",
        **options,
    )
    return Client(config)


def batch_request(
    numbers: list[str], texts: list[str], **options: Any
) -> models.BatchSendMessageToGlobeRequest:
    """A batch as the SDK's users write it: `to` and `message` as JSON-array strings."""
    return models.BatchSendMessageToGlobeRequest(
        to=json.dumps(numbers), message=json.dumps(texts, ensure_ascii=False), **options
    )


@pytest.mark.parametrize("mode", MODES)
def test_sdk_batch_send_is_accepted_and_parsed(emulator: EmulatorServer, mode: str) -> None:
    """V3 and V1: ResponseCode OK, two message ids, SuccessCount '2', all strings."""
    request = batch_request(
        [HK, SG],
        ["Hello 世界 ~*+ test", "second"],
        from_="Alicloud",
        type="NOTIFY",
        task_id="sdk task",
        validity_period=3600,
    )
    response = sdk_client(emulator, mode).batch_send_message_to_globe(request)
    body = response.body
    assert (response.status_code, body.response_code, body.success_count, body.from_) == (
        200,
        "OK",
        "2",
        "Alicloud",
    )
    assert json.loads(body.failed_list) == [] and len(json.loads(body.message_id_list)) == 2
    assert all(isinstance(value, str) for value in body.to_map().values())
    [record] = emulator.state.requests()
    assert (record.signature, record.numbers, record.task_id) == (mode, 2, "sdk task")
    assert [m.message for m in emulator.state.accepted_messages()] == ["Hello 世界 ~*+ test", "second"]


@pytest.mark.parametrize("mode", MODES)
def test_sdk_with_wrong_secret_gets_signature_does_not_match(emulator: EmulatorServer, mode: str) -> None:
    """The SDK raises ClientException (HTTP 400, SignatureDoesNotMatch) and nothing is sent."""
    client = sdk_client(emulator, mode, secret="wrong-secret")
    with pytest.raises(ClientException) as caught:
        client.batch_send_message_to_globe(batch_request([HK], ["Hi"]))
    assert (caught.value.code, caught.value.status_code) == ("SignatureDoesNotMatch", 400)
    assert "wrong-secret" not in str(caught.value.message)
    assert emulator.state.accepted_messages() == []


@pytest.mark.parametrize("mode", MODES)
def test_sdk_send_message_and_query_it(emulator: EmulatorServer, mode: str) -> None:
    """SendMessageToGlobe returns a message id that QueryMessage then reports as delivered."""
    client = sdk_client(emulator, mode)
    sent = client.send_message_to_globe(
        models.SendMessageToGlobeRequest(to=HK, message="Hi there", from_="Alicloud", task_id="one")
    ).body
    assert (sent.response_code, sent.to, sent.segments) == ("OK", HK, "1")
    assert sent.number_detail.country == "Hongkong, China"
    queried = client.query_message(models.QueryMessageRequest(message_id=sent.message_id)).body
    assert (queried.response_code, queried.status, queried.error_code) == ("OK", "1", "DELIVERED")
    assert (queried.to, queried.message) == (HK, "Hi there")
    unknown = client.query_message(models.QueryMessageRequest(message_id="1008030300****")).body
    assert unknown.response_code == "DATA_NOT_EXIST"


def test_sdk_sees_business_errors_as_normal_responses_and_throttling_as_exceptions(
    start_emulator: StartEmulator,
) -> None:
    """A business fault comes back as a body to check; Throttling.User raises ClientException."""
    server = start_emulator()  # default flow control: 1 batch call per second per key
    server.state.faults.script(["business:AMOUNT_NOT_ENOUGH"])
    client = sdk_client(server, "v3")
    body = client.batch_send_message_to_globe(batch_request([HK], ["Hi"])).body
    assert body.response_code == "AMOUNT_NOT_ENOUGH"
    with pytest.raises(ClientException) as caught:
        client.batch_send_message_to_globe(batch_request([HK], ["Hi"]))
    assert (caught.value.code, caught.value.status_code) == ("Throttling.User", 400)
    assert server.state.accepted_messages() == []


def test_sdk_full_batch_in_the_url_query(emulator: EmulatorServer) -> None:
    """The SDK's way (1,000 numbers in the URL, ~40 KB) also gets through: the head limit is raised."""
    numbers = [f"6591{i:06d}" for i in range(1000)]
    body = sdk_client(emulator, "v3").batch_send_message_to_globe(batch_request(numbers, ["Hi"] * 1000)).body
    assert (body.response_code, body.success_count) == ("OK", "1000")
    assert emulator.state.accepted_numbers() == Counter(numbers)


@pytest.mark.parametrize("mode", MODES)
def test_sdk_single_sends_are_throttled_above_their_own_rate(
    start_emulator: StartEmulator, mode: str
) -> None:
    """SendMessageToGlobe has its own limit (here 2 per rolling second, 2,000 by default), apart from the
    batch's: the SDK's third call in the second raises ClientException `Throttling.User`, after a batch
    call in the same second was accepted."""
    server = start_emulator(single_calls_per_second=2)
    client = sdk_client(server, mode)
    assert client.batch_send_message_to_globe(batch_request([SG], ["Hi"])).body.response_code == "OK"
    for number in ("85212345601", "85212345602"):
        request = models.SendMessageToGlobeRequest(to=number, message="Hi", type="OTP")
        assert client.send_message_to_globe(request).body.response_code == "OK"
    with pytest.raises(ClientException) as caught:
        client.send_message_to_globe(models.SendMessageToGlobeRequest(to="85212345603", message="Hi"))
    assert (caught.value.code, caught.value.status_code) == ("Throttling.User", 400)
    assert sorted(server.state.accepted_numbers()) == ["6591234567", "85212345601", "85212345602"]
