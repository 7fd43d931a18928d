"""The gateway emulator over real loopback sockets, driven by plain httpx with our signing Auths.

The fixtures (tests/emulator_fixtures.py) come through tests/conftest.py.

The official SDK against the same emulator: tests/integration/test_emulator_sdk.py. Signing:
tests/unit/test_signing.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from alibaba_sms.credentials import AccessKey
from alibaba_sms.emulator import DroppedConnection, EmulatorConfig, create_app, parse_fault
from alibaba_sms.emulator import EmulatorServer as Server
from alibaba_sms.emulator.app import segments
from alibaba_sms.signing import API_VERSION, AcsV3Auth, format_timestamp, v1_signature, v1_string_to_sign
from tests.clocks import FakeEpochClock
from tests.emulator_fixtures import (
    BATCH,
    KEY,
    StartEmulator,
    batch_params,
    call,
    send_batch,
    signed_client,
)

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it


HK, SG, TW = "85212345678", "6591234567", "886912345678"
RFC_2822 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0800")


def gateway_error(response: httpx.Response) -> str:
    """The `Code` of a gateway error body, after checking its shape."""
    body = response.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    return str(body["Code"])


class TestSignatures:
    @pytest.mark.parametrize("version", ["v3", "v1"])
    @pytest.mark.parametrize("where", ["body", "query"])
    def test_signed_batch_is_accepted_with_params_in_body_or_query(
        self, emulator: Server, version: str, where: str
    ) -> None:
        """V3 and V1, with the operation parameters in a form body or in the query string."""
        with signed_client(emulator, version) as client:
            response = call(client, BATCH, batch_params([HK, SG], ["Hi 世界 ~*+", "b c"]), where=where)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["ResponseCode"], body["SuccessCount"], body["FailedList"]) == ("OK", "2", "[]")
        assert [m.message for m in emulator.state.accepted_messages()] == ["Hi 世界 ~*+", "b c"]
        assert emulator.state.requests()[0].signature == version

    @pytest.mark.parametrize("version", ["v3", "v1"])
    def test_params_split_between_query_and_body(self, emulator: Server, version: str) -> None:
        """Some parameters in the query, the rest in the body: all are signed and used."""
        with signed_client(emulator, version) as client:
            response = call(
                client, BATCH, batch_params([HK]), query={"TaskId": "split task", "From": "Alicloud"}
            )
        assert response.json()["ResponseCode"] == "OK", response.text
        [message] = emulator.state.accepted_messages()
        assert (message.task_id, message.sender) == ("split task", "Alicloud")

    @pytest.mark.parametrize("version", ["v3", "v1"])
    def test_wrong_secret_is_refused(self, emulator: Server, version: str) -> None:
        """HTTP 400 SignatureDoesNotMatch; V1 appends the server's string to sign, never the secret."""
        with signed_client(emulator, version, AccessKey.of("testid", "not-the-secret")) as client:
            response = send_batch(client, [HK])
        assert (response.status_code, gateway_error(response)) == (400, "SignatureDoesNotMatch")
        message = response.json()["Message"]
        assert message.startswith("Specified signature is not matched with our calculation.")
        assert ("server string to sign is:POST&%2F&AccessKeyId%3Dtestid" in message) == (version == "v1")
        assert "testsecret" not in response.text and "not-the-secret" not in response.text
        assert emulator.state.accepted_messages() == []

    def test_tampered_body_is_refused(self, emulator: Server) -> None:
        """A body that no longer matches x-acs-content-sha256 is refused and nothing is sent."""
        with signed_client(emulator) as client:
            request = client.build_request(
                "POST", "/", data=batch_params([HK]), headers={"x-acs-action": BATCH}
            )
            signed = next(AcsV3Auth(KEY).sync_auth_flow(request))
            tampered = signed.content.replace(b"852", b"853")
            assert len(tampered) == len(signed.content) and tampered != signed.content
            forged = httpx.Request("POST", signed.url, headers=signed.headers, content=tampered)
            response = client.send(forged, auth=None)
            assert gateway_error(response) == "SignatureDoesNotMatch"
            assert client.send(signed, auth=None).json()["ResponseCode"] == "OK"  # the untouched one passes
        assert emulator.state.accepted_numbers() == Counter({HK: 1})

    def test_reused_nonce_is_refused_per_access_key(self, start_emulator: StartEmulator) -> None:
        """A nonce is single-use per AccessKeyId; a failed signature does not spend it."""
        server = start_emulator(
            batch_calls_per_second=None, credentials={"testid": "testsecret", "other": "s2"}
        )

        def fixed() -> str:
            return "the-same-nonce"

        with signed_client(server, key=AccessKey.of("testid", "wrong"), nonce=fixed) as client:
            assert gateway_error(send_batch(client, [HK])) == "SignatureDoesNotMatch"
        with signed_client(server, nonce=fixed) as client:
            assert send_batch(client, [HK]).json()["ResponseCode"] == "OK"
            response = send_batch(client, [HK])
            assert (response.status_code, gateway_error(response)) == (400, "SignatureNonceUsed")
        with signed_client(server, "v1", AccessKey.of("other", "s2"), nonce=fixed) as client:
            assert send_batch(client, [SG]).json()["ResponseCode"] == "OK"
        assert server.state.accepted_numbers() == Counter({HK: 1, SG: 1})

    @pytest.mark.parametrize(
        ("skew_minutes", "accepted"), [(-16, False), (16, False), (-14, True), (14, True)]
    )
    def test_timestamp_must_be_within_15_minutes(
        self, emulator: Server, skew_minutes: int, accepted: bool
    ) -> None:
        """More than 15 minutes off either way is InvalidTimeStamp.Expired."""

        def clock() -> datetime:
            return datetime.now(UTC) + timedelta(minutes=skew_minutes)

        with signed_client(emulator, clock=clock) as client:
            response = send_batch(client, [HK])
        if accepted:
            assert response.json()["ResponseCode"] == "OK"
        else:
            assert (response.status_code, gateway_error(response)) == (400, "InvalidTimeStamp.Expired")

    def test_badly_formatted_timestamp_is_refused(self, emulator: Server) -> None:
        """x-acs-date must be `yyyy-MM-ddTHH:mm:ssZ`."""
        with signed_client(emulator) as client:
            request = client.build_request(
                "POST", "/", data=batch_params([HK]), headers={"x-acs-action": BATCH}
            )
            signed = next(AcsV3Auth(KEY).sync_auth_flow(request))
            signed.headers["x-acs-date"] = "2024-01-01 00:00:00"
            assert gateway_error(client.send(signed, auth=None)) == "InvalidTimeStamp.Format"

    @pytest.mark.parametrize("version", ["v3", "v1"])
    def test_unknown_access_key_and_unknown_action(self, emulator: Server, version: str) -> None:
        """404 InvalidAccessKeyId.NotFound and 404 InvalidApi.NotFound."""
        with signed_client(emulator, version, AccessKey.of("nobody", "x")) as client:
            response = send_batch(client, [HK])
            assert (response.status_code, gateway_error(response)) == (404, "InvalidAccessKeyId.NotFound")
        with signed_client(emulator, version) as client:
            response = call(client, "SendSms", {"PhoneNumbers": "13800138000"})
            assert (response.status_code, gateway_error(response)) == (404, "InvalidApi.NotFound")

    def test_unsigned_request_and_missing_parameter(self, emulator: Server) -> None:
        """No signature at all is SignatureDoesNotMatch; a signed call without `To` is MissingTo."""
        with httpx.Client(base_url=emulator.url, trust_env=False) as plain:
            response = plain.post("/", data=batch_params([HK]), headers={"x-acs-action": BATCH})
            assert (response.status_code, gateway_error(response)) == (400, "SignatureDoesNotMatch")
        with signed_client(emulator) as client:
            response = call(client, BATCH, {"Message": "Hi"})
            assert (response.status_code, gateway_error(response)) == (400, "MissingTo")

    def test_v1_get_without_format_json_is_answered_in_xml(self, emulator: Server) -> None:
        """Like the real gateway, V1 takes GET and defaults to XML (so clients must send Format=JSON)."""
        params = {
            "AccessKeyId": "testid",
            "Action": BATCH,
            "Version": API_VERSION,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": format_timestamp(datetime.now(UTC)),
            **batch_params([HK]),
        }
        params["Signature"] = v1_signature("testsecret", v1_string_to_sign("GET", params))
        response = httpx.get(f"{emulator.url}/", params=params, trust_env=False)
        assert response.headers["content-type"] == "text/xml;charset=utf-8"
        assert "<BatchSendMessageToGlobeResponse><ResponseCode>OK</ResponseCode>" in response.text
        params["SignatureNonce"] = uuid.uuid4().hex  # now the signature no longer matches
        response = httpx.get(f"{emulator.url}/", params=params, trust_env=False)
        assert response.status_code == 400
        assert "<Error><RequestId>" in response.text and "<Code>SignatureDoesNotMatch</Code>" in response.text


class TestBatchRules:
    def test_more_than_1000_numbers_is_mobile_count_over_limit(self, emulator: Server) -> None:
        """A business error with HTTP 200; nothing is sent."""
        numbers = [f"8521{i:07d}" for i in range(1001)]
        with signed_client(emulator) as client:
            response = send_batch(client, numbers)
        assert (response.status_code, response.json()["ResponseCode"]) == (200, "MOBILE_COUNT_OVER_LIMIT")
        assert emulator.state.accepted_messages() == []
        assert emulator.state.requests()[0].numbers == 1001

    def test_mainland_and_malformed_numbers_go_to_failed_list(self, emulator: Server) -> None:
        """Bad numbers are listed as failed; the others get ids in `To` order, each with its own text."""
        bad = ["8613800138000", "+85212345678", "085212345678", "852123", "8521234567890123", "85212a45678"]
        numbers = [HK, *bad, SG, TW]
        texts = [f"text for {n}" for n in numbers]
        with signed_client(emulator) as client:
            body = send_batch(client, numbers, texts).json()
        assert body["ResponseCode"] == "OK" and body["SuccessCount"] == "3"
        assert json.loads(body["FailedList"]) == bad
        ids = json.loads(body["MessageIdList"])
        stored = {m.message_id: m for m in emulator.state.accepted_messages()}
        assert [(stored[i].to, stored[i].message) for i in ids] == [
            (n, f"text for {n}") for n in (HK, SG, TW)
        ]
        assert emulator.state.accepted_numbers() == Counter({HK: 1, SG: 1, TW: 1})

    def test_plain_message_is_broadcast_and_parallel_lengths_must_match(self, emulator: Server) -> None:
        """A plain `Message` goes to everyone; a JSON array of another length is INVALID_PARAMETERS."""
        with signed_client(emulator) as client:
            assert send_batch(client, [HK, SG], "Same for all").json()["SuccessCount"] == "2"
            assert send_batch(client, [HK, SG], ["only one"]).json()["ResponseCode"] == "INVALID_PARAMETERS"
            assert call(client, BATCH, {"To": "85212345678", "Message": "x"}).json()["ResponseCode"] == (
                "INVALID_JSON_PARAM"
            )
        assert [m.message for m in emulator.state.accepted_messages()] == ["Same for all"] * 2

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            ({"From": "ABCDEFGHIJK"}, "OK"),
            ({"From": "123456789012345"}, "OK"),
            ({"From": "ABCDEFGHIJKL"}, "INVALID_SENDERID"),
            ({"From": "1234567890123456"}, "INVALID_SENDERID"),
            ({"From": "Ali-cloud"}, "INVALID_SENDERID"),
            ({"Type": "OTP"}, "OK"),
            ({"Type": "GENERAL"}, "INVALID_PARAMETERS"),
            ({"ValidityPeriod": "600"}, "OK"),
            ({"ValidityPeriod": "ten"}, "INVALID_PARAMETERS"),
            ({"TaskId": "t" * 255}, "OK"),
            ({"TaskId": "t" * 256}, "PARAM_LENGTH_LIMIT"),
        ],
    )
    def test_optional_parameters_are_checked(
        self, emulator: Server, extra: dict[str, str], code: str
    ) -> None:
        """Sender id, Type, ValidityPeriod and TaskId rules."""
        with signed_client(emulator) as client:
            assert call(client, BATCH, batch_params([HK], **extra)).json()["ResponseCode"] == code

    @pytest.mark.parametrize("version", ["v3", "v1"])
    def test_full_batch_of_1000_ucs2_messages_in_a_form_body(self, emulator: Server, version: str) -> None:
        """1,000 numbers with 160-character UCS-2 texts (about 1 MB form-encoded) are all accepted."""
        numbers = [f"6591{i:06d}" for i in range(1000)]
        texts = [("您好世界" * 40)[:159] + str(i % 10) for i in range(1000)]
        params = batch_params(numbers, texts)
        assert len(httpx.QueryParams(params).__str__()) > 900_000
        with signed_client(emulator, version) as client:
            body = call(client, BATCH, params).json()
        assert (body["ResponseCode"], body["SuccessCount"]) == ("OK", "1000")
        assert len(json.loads(body["MessageIdList"])) == 1000
        messages = emulator.state.accepted_messages()
        assert {m.segments for m in messages} == {3} and messages[999].message == texts[999]

    def test_segment_counting(self) -> None:
        """GSM-7 160/153 (extension characters count two), UCS-2 70/67."""
        assert [segments("a" * 160), segments("a" * 161), segments("€" * 80), segments("€" * 81)] == [
            1,
            2,
            1,
            2,
        ]
        assert [segments("您" * 70), segments("您" * 71), segments("😀" * 35), segments("😀" * 36)] == [
            1,
            2,
            1,
            2,
        ]


class TestFlowControl:
    def test_second_batch_within_a_second_is_throttled_then_accepted(
        self, start_emulator: StartEmulator
    ) -> None:
        """Default 1 call/s per key: a call sooner than 1 s after the last admitted one is Throttling.User."""
        clock = FakeEpochClock()
        server = start_emulator(clock=clock)
        with signed_client(server) as client:
            assert send_batch(client, [HK]).json()["ResponseCode"] == "OK"
            clock.advance(0.5)
            response = send_batch(client, [SG])
            assert (response.status_code, gateway_error(response)) == (400, "Throttling.User")
            assert response.json()["Message"] == "Request was denied due to user flow control."
            clock.advance(0.5)
            assert send_batch(client, [SG]).json()["ResponseCode"] == "OK"
        assert server.state.accepted_numbers() == Counter({HK: 1, SG: 1})
        first, second = server.state.batch_call_times()
        assert second - first == pytest.approx(1.0)

    def test_rate_is_per_access_key_and_configurable(self, start_emulator: StartEmulator) -> None:
        """Another key has its own window; at 4 calls/s, 0.25 s apart is enough."""
        clock = FakeEpochClock()
        server = start_emulator(clock=clock, batch_calls_per_second=4, credentials={"a": "1", "b": "2"})
        with (
            signed_client(server, key=AccessKey.of("a", "1")) as a,
            signed_client(server, key=AccessKey.of("b", "2")) as b,
        ):
            assert send_batch(a, [HK]).json()["ResponseCode"] == "OK"
            assert send_batch(b, [HK]).json()["ResponseCode"] == "OK"
            assert gateway_error(send_batch(a, [SG])) == "Throttling.User"
            clock.advance(0.25)
            assert send_batch(a, [SG]).json()["ResponseCode"] == "OK"

    def test_unlimited_rate(self, start_emulator: StartEmulator) -> None:
        """batch_calls_per_second=0 turns flow control off."""
        server = start_emulator(batch_calls_per_second=0, clock=FakeEpochClock())
        with signed_client(server) as client:
            assert [send_batch(client, [HK]).json()["ResponseCode"] for _ in range(3)] == ["OK"] * 3


class TestSingleAndQuery:
    def test_query_finds_an_accepted_message_and_not_an_unknown_one(self, emulator: Server) -> None:
        """QueryMessage reports an accepted message delivered; an unknown id is DATA_NOT_EXIST."""
        with signed_client(emulator, "v1") as client:
            [message_id] = json.loads(send_batch(client, [HK], ["Hello there"]).json()["MessageIdList"])
            body = call(client, "QueryMessage", {"MessageId": message_id}).json()
            missing = call(client, "QueryMessage", {"MessageId": "1008030300****"}).json()
        assert (body["Status"], body["ErrorCode"], body["To"], body["Message"]) == (
            "1",
            "DELIVERED",
            HK,
            "Hello there",
        )
        assert RFC_2822.fullmatch(body["SendDate"]) and RFC_2822.fullmatch(body["ReceiveDate"])
        assert missing["ResponseCode"] == "DATA_NOT_EXIST"

    def test_send_message_to_globe(self, emulator: Server) -> None:
        """One number: MessageId, Segments and NumberDetail; mainland and malformed numbers are refused."""
        with signed_client(emulator) as client:
            body = call(
                client, "SendMessageToGlobe", {"To": HK, "Message": "您" * 71, "From": "Alicloud"}
            ).json()
            mainland = call(client, "SendMessageToGlobe", {"To": "8613800138000", "Message": "x"}).json()
            malformed = call(client, "SendMessageToGlobe", {"To": "+85212345678", "Message": "x"}).json()
        assert (body["ResponseCode"], body["To"], body["From"], body["Segments"]) == (
            "OK",
            HK,
            "Alicloud",
            "2",
        )
        assert body["NumberDetail"]["Country"] == "Hongkong, China"
        assert emulator.state.message(body["MessageId"]) is not None
        assert (mainland["ResponseCode"], malformed["ResponseCode"]) == (
            "NOT_SUPPORTED_COUNTRY",
            "MOBILE_NUMBER_ILLEGAL",
        )


class TestScriptedFaults:
    def test_throttle_500_503_and_business_faults_accept_nothing(self, emulator: Server) -> None:
        """Each entry applies to the next batch call; none of these records a message."""
        emulator.state.faults.script(["throttle", "500", "503", "business:AMOUNT_NOT_ENOUGH", "ok"])
        with signed_client(emulator) as client:
            throttled, error, unavailable, business, accepted = (send_batch(client, [HK]) for _ in range(5))
            assert (throttled.status_code, gateway_error(throttled)) == (400, "Throttling.User")
            assert (error.status_code, gateway_error(error)) == (500, "InternalError")
            assert (unavailable.status_code, unavailable.text) == (503, "Service Unavailable")
            assert (business.status_code, business.json()["ResponseCode"]) == (200, "AMOUNT_NOT_ENOUGH")
            assert accepted.json()["ResponseCode"] == "OK"
        assert emulator.state.accepted_numbers() == Counter({HK: 1})
        assert [r.fault for r in emulator.state.requests()] == [
            "throttle",
            "500",
            "503",
            "business:AMOUNT_NOT_ENOUGH",
            None,
        ]

    def test_drop_after_accept_is_a_transport_error_after_the_batch_was_accepted(
        self, emulator: Server
    ) -> None:
        """The client sees a broken response (not a clean 500) although the messages were accepted."""
        emulator.state.faults.script(["drop_after_accept"])
        with signed_client(emulator) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                send_batch(client, [HK, SG])
            assert send_batch(client, [TW]).json()["ResponseCode"] == "OK"  # the emulator carries on
        assert emulator.state.accepted_numbers() == Counter({HK: 1, SG: 1, TW: 1})
        assert emulator.state.requests()[0].fault == "drop_after_accept"

    def test_timeout_after_accept_makes_a_short_read_timeout_expire(self, emulator: Server) -> None:
        """Accepted and journaled, then answered too late for a 0.2 s read timeout."""
        emulator.state.faults.script(["timeout_after_accept:1.5"])
        started = time.monotonic()
        with signed_client(emulator) as client, pytest.raises(httpx.ReadTimeout):
            client.post(
                "/",
                data=batch_params([HK]),
                headers={"x-acs-action": BATCH},
                timeout=httpx.Timeout(5, read=0.2),
            )
        assert time.monotonic() - started < 1.0
        assert emulator.state.accepted_numbers() == Counter({HK: 1})
        assert emulator.state.requests()[0].fault == "timeout_after_accept:1.5"

    def test_scripted_faults_skip_other_actions_and_bad_entries_are_rejected(self, emulator: Server) -> None:
        """QueryMessage does not consume a batch fault; an unknown entry raises and queues nothing."""
        emulator.state.faults.script(["500"])
        with signed_client(emulator) as client:
            assert call(client, "QueryMessage", {"MessageId": "1"}).json()["ResponseCode"] == "DATA_NOT_EXIST"
            assert send_batch(client, [HK]).status_code == 500
        with pytest.raises(ValueError, match="unknown fault"):
            emulator.state.faults.script(["ok", "explode"])
        assert emulator.state.faults.pending() == []
        assert parse_fault("timeout_after_accept:2").seconds == 2.0


def fault_sequence(server: Server, calls: int) -> list[str]:
    """The outcome of `calls` batch calls: an HTTP status, or `dropped`."""
    outcomes = []
    with signed_client(server) as client:
        for _ in range(calls):
            try:
                outcomes.append(str(send_batch(client, [HK]).status_code))
            except httpx.TransportError:
                outcomes.append("dropped")
    return outcomes


class TestRandomFaults:
    def test_same_seed_gives_the_same_fault_sequence(self, start_emulator: StartEmulator) -> None:
        """Random 500s, spurious throttling and drops are reproducible under a seed."""
        rates = {"error_500_rate": 0.25, "spurious_throttle_rate": 0.25, "drop_after_accept_rate": 0.25}
        runs = [
            fault_sequence(start_emulator(batch_calls_per_second=None, seed=seed, faults=rates), 24)
            for seed in (7, 7, 8)
        ]
        assert runs[0] == runs[1] != runs[2]
        assert {"200", "400", "500", "dropped"} <= set(runs[0])

    def test_latency_is_added(self, start_emulator: StartEmulator) -> None:
        """latency_seconds delays every API answer."""
        server = start_emulator(batch_calls_per_second=None, faults={"latency_seconds": 0.2})
        with signed_client(server) as client:
            started = time.monotonic()
            assert call(client, "QueryMessage", {"MessageId": "1"}).status_code == 200
        assert time.monotonic() - started >= 0.2


class TestJournal:
    def test_journal_file_has_one_json_line_per_request_and_message(
        self, start_emulator: StartEmulator, tmp_path: Path
    ) -> None:
        """Requests and accepted messages are appended as JSON lines; the secret never appears."""
        path = tmp_path / "journal" / "emulator.jsonl"
        server = start_emulator(journal_path=path, batch_calls_per_second=None)
        with signed_client(server) as client:
            send_batch(client, [HK, "8613800138000", SG])
        with signed_client(server, key=AccessKey.of("testid", "wrong")) as client:
            send_batch(client, [HK])
        text = path.read_text(encoding="utf-8")
        entries = [json.loads(line) for line in text.splitlines()]
        assert [e["kind"] for e in entries] == ["message", "message", "request", "request"]
        assert [e["to"] for e in entries[:2]] == [HK, SG]
        first, refused = entries[2], entries[3]
        assert (first["code"], first["numbers"], first["status"]) == ("OK", 3, 200)
        assert (refused["code"], refused["status"]) == ("SignatureDoesNotMatch", 400)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["iso_time"])
        assert "testsecret" not in text and "testsecret" not in repr(server.state.config)

    def test_admin_endpoints(self, emulator: Server) -> None:
        """health, faults (config and script), journal and reset over HTTP, without signatures."""
        with httpx.Client(base_url=emulator.url, trust_env=False) as admin:
            assert admin.get("/_emulator/health").json()["status"] == "ok"
            answer = admin.post("/_emulator/faults", json={"error_500_rate": 0.5, "script": ["503"]}).json()
            assert (answer["faults"]["error_500_rate"], answer["script"]) == (0.5, ["503"])
            assert admin.post("/_emulator/faults", json={"error_500_rate": 2}).status_code == 400
            assert admin.post("/_emulator/faults", json={"script": ["nonsense"]}).status_code == 400
            with signed_client(emulator) as client:
                assert send_batch(client, [HK]).status_code == 503
            assert admin.get("/_emulator/journal").json()["requests"][0]["code"] == "ServiceUnavailable"
            assert admin.post("/_emulator/reset").status_code == 200
            assert admin.get("/_emulator/journal").json() == {"requests": [], "messages": []}
            assert admin.get("/_emulator/faults").json()["faults"]["error_500_rate"] == 0.0


class TestConfig:
    def test_credentials_from_environment(self) -> None:
        """Alibaba's standard variables choose the accepted key; without them it is testid/testsecret."""
        env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "envid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "envsecret"}
        assert EmulatorConfig.from_env(env).credentials == {"envid": "envsecret"}
        assert EmulatorConfig.from_env({}, seed=3).credentials == {"testid": "testsecret"}
        with pytest.raises(ValueError, match="both"):
            EmulatorConfig.from_env({"ALIBABA_CLOUD_ACCESS_KEY_ID": "envid"})
        assert "envsecret" not in repr(EmulatorConfig.from_env(env))


class TestInProcess:
    def test_asgi_app_serves_in_process_and_drops_like_a_socket(self) -> None:
        """Through httpx.ASGITransport: a batch is accepted, and a drop raises an httpx transport error."""
        app = create_app(EmulatorConfig(batch_calls_per_second=None, seed=1))
        app.state.emulator.faults.script(["ok", "drop_after_accept"])

        async def scenario() -> tuple[httpx.Response, BaseException | None]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://emulator", auth=AcsV3Auth(KEY)
            ) as c:
                headers = {"x-acs-action": BATCH}
                first = await c.post("/", data=batch_params([HK]), headers=headers)
                try:
                    await c.post("/", data=batch_params([SG]), headers=headers)
                except httpx.TransportError as exc:
                    return first, exc
                return first, None

        first, error = asyncio.run(scenario())
        assert first.json()["ResponseCode"] == "OK"
        assert isinstance(error, DroppedConnection)
        assert app.state.emulator.accepted_numbers() == Counter({HK: 1, SG: 1})
