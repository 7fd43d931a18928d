"""Unit tests for request signing against the published vectors (alibaba-sms-api.md §4, §5, §10).

The emulator verifies with the same functions; tests/integration/test_emulator_sdk.py shows the official SDK
agrees.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from alibaba_sms.credentials import AccessKey
from alibaba_sms.signing import (
    EMPTY_BODY_SHA256,
    AcsV1Auth,
    AcsV3Auth,
    canonical_request,
    parse_v3_authorization,
    percent_encode,
    v1_signature,
    v1_string_to_sign,
    v3_signature,
    v3_string_to_sign,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "signing"
NONCE = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
SMS_PARAMS = {
    "To": '["85212345678","6591234567"]',
    "From": "Alicloud",
    "Message": "Hello 世界 ~*+ test",
    "Type": "NOTIFY",
    "TaskId": "task-001",
    "ValidityPeriod": "3600",
}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().rstrip("\n")


class TestPercentEncode:
    def test_keeps_unreserved_and_encodes_the_rest_in_uppercase_hex(self) -> None:
        """Space is %20 (never +), * is %2A, ~ stays, / and : are encoded."""
        assert percent_encode("a b*~/:+=é") == "a%20b%2A~%2F%3A%2B%3D%C3%A9"


class TestV1Vectors:
    GENERIC = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": NONCE,
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }

    def test_official_doc_example_get(self) -> None:
        """The doc's DescribeRegions example, string to sign and signature byte for byte."""
        sts = v1_string_to_sign("GET", self.GENERIC)
        assert sts == fixture("v1_describe_regions_get.sts")
        assert v1_signature("testsecret", sts) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="

    def test_same_parameters_with_post(self) -> None:
        """The derived POST variant."""
        assert v1_signature("testsecret", v1_string_to_sign("POST", self.GENERIC)) == (
            "MxbnVAM4w6sft9xjVpe/GCKueuk="
        )

    def test_old_doc_timestamp_spelling(self) -> None:
        """The old Chinese doc spelled the key `TimeStamp`; sorting is case-sensitive."""
        params = dict(self.GENERIC)
        params["TimeStamp"] = params.pop("Timestamp")
        assert v1_signature("testsecret", v1_string_to_sign("GET", params)) == (
            "CT9X0VtwR86fNWSnsc6v8YGOjuE="
        )

    def test_sms_batch_vector(self) -> None:
        """The SDK's V1 capture of BatchSendMessageToGlobe (§10.2)."""
        params = {
            **SMS_PARAMS,
            "AccessKeyId": "testid",
            "Action": "BatchSendMessageToGlobe",
            "Format": "json",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": NONCE,
            "SignatureVersion": "1.0",
            "Timestamp": "2024-01-01T00:00:00Z",
            "Version": "2018-05-01",
        }
        sts = v1_string_to_sign("POST", params)
        assert sts == fixture("v1_sms_batch.sts")
        assert v1_signature("testsecret", sts) == "O9AyDwiCpFIjKRVH+J1NGsJnQg4="

    def test_signature_parameter_is_never_signed(self) -> None:
        """A request being verified carries `Signature`; it must not enter the string to sign."""
        with_signature = {**self.GENERIC, "Signature": "whatever"}
        assert v1_string_to_sign("GET", with_signature) == v1_string_to_sign("GET", self.GENERIC)


class TestV3Vectors:
    def test_official_doc_example(self) -> None:
        """The doc's RunInstances example: hashed canonical request and signature."""
        headers = {
            "host": "ecs.cn-shanghai.aliyuncs.com",
            "x-acs-action": "RunInstances",
            "x-acs-content-sha256": EMPTY_BODY_SHA256,
            "x-acs-date": "2023-10-26T10:22:32Z",
            "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
            "x-acs-version": "2014-05-26",
        }
        query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
        creq = canonical_request("POST", "/", query, headers, headers.keys(), EMPTY_BODY_SHA256)
        assert hashlib.sha256(creq.encode()).hexdigest() == (
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        )
        assert v3_signature("YourAccessKeySecret", v3_string_to_sign(creq)) == (
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        )

    SMS_HEADERS = {
        "accept": "application/json",
        "host": "127.0.0.1:18765",
        "user-agent": "test-agent",
        "x-acs-action": "BatchSendMessageToGlobe",
        "x-acs-content-sha256": EMPTY_BODY_SHA256,
        "x-acs-credentials-provider": "static_ak",
        "x-acs-date": "2024-01-01T00:00:00Z",
        "x-acs-signature-nonce": NONCE,
        "x-acs-version": "2018-05-01",
    }

    def test_sms_batch_vector(self) -> None:
        """The SDK's deterministic V3 run (§5): canonical request, string-to-sign hash and signature."""
        creq = canonical_request(
            "POST", "/", SMS_PARAMS, self.SMS_HEADERS, self.SMS_HEADERS, EMPTY_BODY_SHA256
        )
        assert creq == fixture("v3_sms_batch.creq")
        sts = v3_string_to_sign(creq)
        assert sts == ("ACS3-HMAC-SHA256\n86570cce58467198dfefdb7a1b9539b18b7a2fc4a55cf17c9fdff2a4af83cb15")
        assert v3_signature("testsecret", sts) == (
            "6b5b440d6f867e083c2a07f3bc3b13f5da72eca409be5aa0960c980a516f8fbc"
        )

    def test_sms_natural_capture(self) -> None:
        """The SDK's natural run (§10.1), with its real user-agent, date and nonce."""
        headers = {
            **self.SMS_HEADERS,
            "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
            "x-acs-date": "2026-11-25T07:30:08Z",
            "x-acs-signature-nonce": "99ec90e442c738caad5bee823a7a95b7",
        }
        query = {**SMS_PARAMS, "To": '["85212345678", "6591234567"]', "TaskId": "mode-ok-batch"}
        creq = canonical_request("POST", "/", query, headers, headers, EMPTY_BODY_SHA256)
        assert v3_signature("testsecret", v3_string_to_sign(creq)) == (
            "14921453dd0d22e153259705e46c755ddc4f0fe5f72792a30b057633bc8b7544"
        )


FIXED = datetime(2024, 1, 1, tzinfo=UTC)
KEY = AccessKey.of("testid", "testsecret")


def _form_request() -> httpx.Request:
    return httpx.Request(
        "POST",
        "http://127.0.0.1:18765/",
        data=SMS_PARAMS,
        headers={"x-acs-action": "BatchSendMessageToGlobe", "x-acs-version": "2018-05-01"},
    )


def _run_auth(auth: httpx.Auth, request: httpx.Request) -> httpx.Request:
    flow = auth.sync_auth_flow(request)
    return next(flow)


class TestAuthFlows:
    def test_v3_auth_signs_the_form_body_and_its_content_type(self) -> None:
        """The body hash and content-type are signed.

        The signature checks out against the canonical request.
        """
        signed = _run_auth(AcsV3Auth(KEY, clock=lambda: FIXED, nonce=lambda: NONCE), _form_request())
        algorithm, key_id, names, signature = parse_v3_authorization(signed.headers["Authorization"])
        assert (algorithm, key_id) == ("ACS3-HMAC-SHA256", "testid")
        assert "content-type" in names and "x-acs-content-sha256" in names and "host" in names
        assert signed.headers["x-acs-content-sha256"] == hashlib.sha256(signed.content).hexdigest()
        assert signed.headers["x-acs-date"] == "2024-01-01T00:00:00Z"
        creq = canonical_request(
            "POST", "/", [], dict(signed.headers), names, signed.headers["x-acs-content-sha256"]
        )
        assert signature == v3_signature("testsecret", v3_string_to_sign(creq))

    def test_v3_resigning_uses_a_fresh_nonce_and_replaces_the_header(self) -> None:
        """A retry must never reuse a nonce (SignatureNonceUsed)."""
        nonces = iter(["n1", "n2"])
        auth = AcsV3Auth(KEY, clock=lambda: FIXED, nonce=lambda: next(nonces))
        first = _run_auth(auth, _form_request())
        first_auth = first.headers["Authorization"]
        again = _run_auth(auth, first)
        assert again.headers["x-acs-signature-nonce"] == "n2"
        assert again.headers.get_list("Authorization") == [again.headers["Authorization"]]
        assert again.headers["Authorization"] != first_auth

    def test_v1_auth_matches_the_sdk_vector_with_parameters_in_the_body(self) -> None:
        """V1 signs query and form together.

        It gives the same signature as the all-in-query SDK capture, modulo Format.
        """
        signed = _run_auth(AcsV1Auth(KEY, clock=lambda: FIXED, nonce=lambda: NONCE), _form_request())
        query = dict(signed.url.params.multi_items())
        assert query["Action"] == "BatchSendMessageToGlobe" and query["Format"] == "JSON"
        everything = {**query, **dict(parse_qsl(signed.content.decode()))}
        expected = v1_signature("testsecret", v1_string_to_sign("POST", everything))
        assert query["Signature"] == expected
        # With the SDK's lowercase Format the algorithm reproduces the published vector exactly.
        everything["Format"] = "json"
        assert v1_signature("testsecret", v1_string_to_sign("POST", everything)) == (
            "O9AyDwiCpFIjKRVH+J1NGsJnQg4="
        )

    def test_v1_resigning_replaces_common_parameters(self) -> None:
        """Re-signing does not duplicate Signature, Timestamp or SignatureNonce."""
        nonces = iter(["n1", "n2"])
        auth = AcsV1Auth(KEY, clock=lambda: FIXED, nonce=lambda: next(nonces))
        again = _run_auth(auth, _run_auth(auth, _form_request()))
        items = again.url.params.multi_items()
        assert [k for k, _ in items].count("Signature") == 1
        assert dict(items)["SignatureNonce"] == "n2"

    def test_v1_needs_the_action_header(self) -> None:
        """Without x-acs-action there is no operation to sign."""
        request = httpx.Request("POST", "http://127.0.0.1/", data={"To": "1"})
        with pytest.raises(ValueError, match="x-acs-action"):
            _run_auth(AcsV1Auth(KEY), request)

    def test_auth_repr_hides_the_secret(self) -> None:
        """The signer's repr names the key id only."""
        for auth in (AcsV1Auth(KEY), AcsV3Auth(KEY)):
            assert "testsecret" not in repr(auth) and "testid" in repr(auth)
        assert "testsecret" not in repr(KEY) and "testsecret" not in str(KEY)


class TestCheapParts:
    """The per-call shortcuts (issue #16) give the same text as the plain stages."""

    def test_timestamps_are_utc_to_the_second_whatever_the_zone_and_naive_is_refused(self) -> None:
        from datetime import timedelta, timezone

        from alibaba_sms.signing import format_timestamp

        moments = [
            datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        ]
        moments.append(datetime(2024, 1, 1, 8, 0, 1, tzinfo=timezone(timedelta(hours=8))))
        assert [format_timestamp(m) for m in moments] == [
            "2024-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:01Z",
        ]
        with pytest.raises(ValueError, match="timezone-aware"):
            format_timestamp(datetime(2024, 1, 1))

    def test_nonces_are_128_random_bits_in_hex(self) -> None:
        from alibaba_sms.signing import random_nonce

        nonces = {random_nonce() for _ in range(1000)}
        assert len(nonces) == 1000 and all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)

    def test_signing_the_parts_first_is_signing_the_built_request(self) -> None:
        """`AcsV3Auth.signature_headers` before the request exists == the Auth's flow on the built request."""
        auth = AcsV3Auth(KEY, clock=lambda: FIXED, nonce=lambda: NONCE)
        flowed = _run_auth(auth, _form_request())
        unsigned = _form_request()
        headers = {name.lower(): value for name, value in unsigned.headers.items()}
        added = auth.signature_headers("POST", "/", [], headers, unsigned.content)
        assert added == {name: flowed.headers[name] for name in added}
        assert added["Authorization"] == flowed.headers["authorization"]


def test_nonces_differ_across_threads_and_in_a_forked_child() -> None:
    """Buffered per thread, the nonces stay unique: between threads, and in a child forked after the
    parent drew some (the child must not repeat the parent's next ones)."""
    import os
    import threading

    from alibaba_sms.signing import random_nonce

    drawn: list[str] = [random_nonce()]
    threads = [
        threading.Thread(target=lambda: drawn.extend(random_nonce() for _ in range(300))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next nonces and leave at once
        os.write(writer, "".join(random_nonce() for _ in range(10)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child = os.read(reader, 4096).decode()
    os.close(reader)
    parent_next = [random_nonce() for _ in range(10)]
    from_child = [child[i : i + 32] for i in range(0, len(child), 32)]
    assert len(from_child) == 10
    everything = drawn + parent_next + from_child
    assert len(set(everything)) == len(everything) == 1 + 1200 + 20
