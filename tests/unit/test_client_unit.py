"""Unit tests for the client's parsing, error mapping and endpoint rules, through httpx.MockTransport fakes.

The same client runs over real sockets against the emulator in tests/integration/test_client_emulator.py.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

import httpx
import pytest

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.endpoints import InsecureEndpoint, resolve_endpoint
from alibaba_sms.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    BusinessError,
    BusinessRejected,
    ConnectionFailed,
    GatewayError,
    GatewayInternalError,
    GatewayThrottled,
    GatewayUnavailable,
    PermanentError,
    ResponseLost,
    RetryableError,
    ThrottledError,
    normalise_code,
)

SECRET = "s3cr3t-never-shown"
KEY = AccessKey.of("testid", SECRET)


class RecordingApi:
    """A fake gateway answering with a canned response and recording the requests it saw."""

    def __init__(self, status: int = 200, body: object | None = None, text: str | None = None) -> None:
        self.status, self.body, self.text = status, body, text
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.text is not None:
            return httpx.Response(self.status, text=self.text)
        return httpx.Response(self.status, json=self.body)


def ok_body(failed: list[str], ids: list[str]) -> dict[str, str]:
    return {
        "ResponseCode": "OK",
        "ResponseDescription": "OK",
        "RequestId": "R-1",
        "FailedList": json.dumps(failed),
        "MessageIdList": json.dumps(ids),
        "SuccessCount": str(len(ids)),
        "From": "Alicloud",
    }


def client_for(api: object, **kwargs: object) -> SmsClient:
    return SmsClient(KEY, endpoint="http://127.0.0.1:1", transport=httpx.MockTransport(api), **kwargs)  # type: ignore[arg-type]


class TestBatchParsing:
    def test_failed_list_and_message_ids_are_decoded_and_paired_in_to_order(self) -> None:
        """FailedList / MessageIdList are JSON strings inside JSON; SuccessCount is a string."""
        api = RecordingApi(body=ok_body(["8613800138000"], ["m1", "m2"]))
        with client_for(api) as client:
            result = client.send_batch(["85212345678", "8613800138000", "6591234567"], ["a", "b", "c"])
        assert result.success_count == 2
        assert result.failed == ("8613800138000",)
        assert dict(result.accepted) == {"85212345678": "m1", "6591234567": "m2"}

    def test_parameters_travel_in_a_form_body_not_the_url(self) -> None:
        """A full batch does not fit in a URL, so To and Message go in the body."""
        api = RecordingApi(body=ok_body([], ["m1"]))
        with client_for(api) as client:
            client.send_batch(
                ["85212345678"], ["Hi"], sender="Alicloud", message_type="NOTIFY", task_id="c-b1"
            )
        sent = api.requests[0]
        assert "To" not in str(sent.url)
        form = dict(parse_qsl(sent.content.decode()))
        assert form == {"To": '["85212345678"]', "Message": '["Hi"]', "From": "Alicloud", "Type": "NOTIFY",
                        "TaskId": "c-b1"}
        assert sent.headers["content-type"] == "application/x-www-form-urlencoded"

    def test_mismatched_id_list_still_counts_numbers_as_accepted(self) -> None:
        """When MessageIdList cannot be paired, accepted numbers map to None rather than being lost."""
        api = RecordingApi(body=ok_body([], ["only-one"]))
        with client_for(api) as client:
            result = client.send_batch(["85212345678", "6591234567"], "same text")
        assert dict(result.accepted) == {"85212345678": None, "6591234567": None}

    @pytest.mark.parametrize(
        ("to", "messages", "match"),
        [([], [], "at least one"), (["1"] * 1001, "x", "at most 1000"), (["1", "2"], ["a"], "parallel")],
    )
    def test_bad_batches_are_refused_before_sending(
        self, to: list[str], messages: object, match: str
    ) -> None:
        """Nothing leaves for an empty, oversized or misaligned batch."""
        api = RecordingApi(body=ok_body([], []))
        with client_for(api) as client, pytest.raises(ValueError, match=match):
            client.send_batch(to, messages)  # type: ignore[arg-type]
        assert api.requests == []


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "code", "expected", "outcome"),
        [
            (400, "SignatureDoesNotMatch", GatewayError, AuthenticationError),
            (404, "InvalidAccessKeyId.NotFound", GatewayError, AuthenticationError),
            (400, "Throttling.User", GatewayThrottled, ThrottledError),
            (429, "Throttling", GatewayThrottled, RetryableError),
            (400, "MissingTo", GatewayError, PermanentError),
            (500, "InternalError", GatewayInternalError, AmbiguousOutcomeError),
            (503, "ServiceUnavailable", GatewayUnavailable, RetryableError),
        ],
    )
    def test_gateway_errors(self, status: int, code: str, expected: type, outcome: type) -> None:
        """HTTP errors map by code and status to one layer and one outcome."""
        api = RecordingApi(status, {"RequestId": "R-9", "Code": code, "Message": "nope"})
        with client_for(api) as client, pytest.raises(expected) as info:
            client.send_batch(["85212345678"], "x")
        assert isinstance(info.value, outcome)
        assert info.value.request_id == "R-9" and info.value.code == code and info.value.status == status
        assert "R-9" in str(info.value) and code in str(info.value)

    def test_plain_text_503_is_retryable(self) -> None:
        """A 503 with a non-JSON body (as the SDK meets it) is still a retryable gateway error."""
        with (
            client_for(RecordingApi(503, text="Service Unavailable")) as client,
            pytest.raises(GatewayUnavailable),
        ):
            client.send_batch(["85212345678"], "x")

    @pytest.mark.parametrize(
        ("code", "outcome"),
        [
            ("QPS_LIMIT_CONTROL", ThrottledError),
            ("isv.BUSINESS_LIMIT_CONTROL", ThrottledError),
            ("SYSTEM_ERROR", RetryableError),
            ("AMOUNT_NOT_ENOUGH", PermanentError),
            ("INVALID_SENDERID", PermanentError),
            ("isv.SOMETHING_NEW", PermanentError),
        ],
    )
    def test_business_codes(self, code: str, outcome: type) -> None:
        """Non-OK ResponseCodes raise, prefixes are dropped, and an unknown code is a failure."""
        body = {"ResponseCode": code, "ResponseDescription": "d", "RequestId": "R-2"}
        with client_for(RecordingApi(200, body)) as client, pytest.raises(BusinessError) as info:
            client.send_batch(["85212345678"], "x")
        assert isinstance(info.value, outcome)
        assert info.value.code == normalise_code(code)

    def test_missing_response_code_is_not_success(self) -> None:
        """A 200 without ResponseCode is a failure, never an accepted batch."""
        with client_for(RecordingApi(200, {"RequestId": "R"})) as client, pytest.raises(BusinessRejected):
            client.send_batch(["85212345678"], "x")

    def test_unparseable_200_is_ambiguous(self) -> None:
        """A 200 that is not JSON may mean the batch went out: ambiguous, not retryable."""
        with client_for(RecordingApi(200, text="<html>")) as client, pytest.raises(AmbiguousOutcomeError):
            client.send_batch(["85212345678"], "x")

    def test_connect_error_is_retryable_and_read_timeout_is_ambiguous(self) -> None:
        """Before sending: safe to retry. After sending: outcome unknown."""

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        def time_out(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        with client_for(refuse) as client, pytest.raises(ConnectionFailed):
            client.send_batch(["85212345678"], "x")
        with client_for(time_out) as client, pytest.raises(ResponseLost):
            client.send_batch(["85212345678"], "x")


class TestEndpoints:
    def test_default_is_the_international_host(self) -> None:
        assert str(resolve_endpoint()) == "https://dysmsapi.ap-southeast-1.aliyuncs.com/"

    def test_regions_follow_the_sdk_map(self) -> None:
        assert resolve_endpoint(region="eu-central-1").host == "dysmsapi.eu-central-1.aliyuncs.com"
        assert resolve_endpoint(region="nowhere-1").host == "dysmsapi.aliyuncs.com"

    @pytest.mark.parametrize("endpoint", ["http://dysmsapi.aliyuncs.com", "http://10.0.0.5:8080", "http://example.com"])
    def test_plain_http_is_refused_except_on_loopback(self, endpoint: str) -> None:
        with pytest.raises(InsecureEndpoint):
            resolve_endpoint(endpoint)

    @pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://localhost:1", "http://[::1]:80"])
    def test_loopback_http_is_allowed(self, endpoint: str) -> None:
        assert resolve_endpoint(endpoint).scheme == "http"


class TestSecretHygiene:
    def test_secret_never_reaches_reprs_errors_or_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        """The test secret appears in no repr, exception text or log record, even at DEBUG."""
        caplog.set_level(logging.DEBUG)
        api = RecordingApi(400, {"RequestId": "R", "Code": "SignatureDoesNotMatch", "Message": "bad"})
        texts = []
        for version in ("v3", "v1"):
            with client_for(api, signature_version=version) as client:
                texts.append(repr(client))
                with pytest.raises(GatewayError) as info:
                    client.send_batch(["85212345678"], "x")
                texts += [str(info.value), repr(info.value)]
            for request in api.requests:
                texts += [str(request.url), str(request.headers), request.content.decode()]
        texts += [repr(KEY), str(KEY), KEY.model_dump_json()]
        texts += [record.getMessage() for record in caplog.records]
        assert all(SECRET not in text for text in texts)
        assert any("testid" in text for text in texts)  # the key id is not secret, and the check is live
