"""The receiver's shared token: refused pushes store nothing, the right one behaves as before, and the token
never reaches a log line, a repr, an answer or the command's output.

Unit tests of the token, the redaction and the refusal log first; then the receiver over real sockets, the
emulator pushing to a token URL, the embedded receiver of a run, and `globe-sms receipts serve` as a real
process. The receipts themselves (parsing, merging, the store) are tested in
tests/{unit,integration}/test_receipts.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_receipts_auth.py.
"""

from __future__ import annotations

import logging

import pytest

from alibaba_sms.emulator.receipts import masked_url
from globe_sms.receipts.auth import (
    TOKEN_ENV,
    InvalidReceiverToken,
    ReceiverToken,
    RedactTargets,
    RefusalLog,
    redact_path,
    redact_target,
    resolve_token,
)

SECRET = "s3cr3t-Receipts-Token_0123456789"
WRONG = "wrong-Guess-Token_9876543210abcd"


# --- the token, the redaction and the refusal log -----------------------------------------------------------


class TestToken:
    def test_the_token_never_shows_in_repr_str_or_dumps(self) -> None:
        """SecretStr all the way: repr, str, model_dump and JSON show asterisks."""
        token = ReceiverToken.of(SECRET)
        for shown in (repr(token), str(token), str(token.model_dump()), token.model_dump_json()):
            assert SECRET not in shown and "*" in shown

    def test_matches_only_the_same_token(self) -> None:
        """Right, wrong, a prefix, empty, missing and undecodable values."""
        token = ReceiverToken.of(SECRET)
        assert token.matches(SECRET)
        for presented in (WRONG, SECRET[:-1], SECRET + "x", "", None, "\udcff" * 20, "é" * 20):
            assert not token.matches(presented)

    @pytest.mark.parametrize("bad", ["short-Secret", "with/slash-0123456789", "spaces in it 0123456789"])
    def test_an_unusable_token_is_refused_without_showing_it(self, bad: str) -> None:
        """Too short, or characters a URL would need encoded: the message names the rule, not the value."""
        with pytest.raises(InvalidReceiverToken) as caught:
            ReceiverToken.of(bad, source=TOKEN_ENV)
        assert bad not in str(caught.value) and TOKEN_ENV in str(caught.value)

    def test_from_env_is_none_when_unset_and_checked_when_set(self) -> None:
        """Unset or blank: no token; set: the token; set to junk: an error without the value."""
        assert ReceiverToken.from_env({}) is None and resolve_token(None, {TOKEN_ENV: "  "}) is None
        token = ReceiverToken.from_env({TOKEN_ENV: SECRET})
        assert token is not None and token.matches(SECRET)
        with pytest.raises(InvalidReceiverToken) as caught:
            ReceiverToken.from_env({TOKEN_ENV: "tiny"})
        assert "tiny" not in str(caught.value)

    def test_generated_tokens_are_long_random_and_url_safe(self) -> None:
        """The embedded receiver's per-run token: two draws differ, and each is a valid token."""
        a, b = ReceiverToken.generate(), ReceiverToken.generate()
        assert not a.matches(b.token.get_secret_value())
        assert ReceiverToken.of(a.token.get_secret_value()).matches(a.token.get_secret_value())


class TestRedaction:
    @pytest.mark.parametrize(
        ("path", "query", "shown"),
        [
            (f"/receipts/{SECRET}", "", "/receipts/****"),
            ("/receipts", f"token={SECRET}", "/receipts?token=****"),
            (f"/{SECRET}", f"a=1&token={SECRET}", "/****?****=****&token=****"),
            ("/", "", "/"),
            ("/health", "", "/health"),
            ("/receipts", SECRET, "/receipts?****=****"),
            ("/receipts", f"{SECRET}=1", "/receipts?****=****"),
        ],
    )
    def test_paths_and_queries_are_masked_except_the_public_parts(
        self, path: str, query: str, shown: str
    ) -> None:
        """Only `receipts` and `health` survive; a token in the wrong place is masked as well."""
        assert redact_path(path, query) == shown

    def test_full_urls_keep_their_origin(self) -> None:
        """Scheme and host stay readable, the secret does not."""
        assert redact_target(f"http://h:1/receipts/{SECRET}?token={SECRET}") == (
            "http://h:1/receipts/****?token=****"
        )
        assert masked_url(f"http://h:1/receipts/{SECRET}") == "http://h:1/receipts/****"
        assert masked_url(f"http://h:1/receipts?token={SECRET}") == "http://h:1/receipts?****"
        assert masked_url("http://h:1/") == "http://h:1/" and masked_url(None) is None

    def test_the_access_log_filter_rewrites_uvicorns_line(self) -> None:
        """uvicorn's access record, `'%s - "%s %s HTTP/%s" %d'`, comes out with the target masked."""
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "POST", f"/receipts/{SECRET}", "1.1", 200),
            None,
        )
        assert RedactTargets().filter(record)
        assert record.getMessage() == '127.0.0.1:5 - "POST /receipts/**** HTTP/1.1" 200'


class TestRefusalLog:
    def test_one_warning_per_interval_with_the_count(self, caplog: pytest.LogCaptureFixture) -> None:
        """The first refusal at once; the next ones summed after the interval, and on flush."""
        now = [0.0]
        log = RefusalLog(logging.getLogger("test.refusals"), interval_seconds=60, clock=lambda: now[0])
        caplog.set_level(logging.WARNING, logger="test.refusals")
        log.note(missing=True, client="203.0.113.5")
        for _ in range(5):
            now[0] += 1
            log.note(missing=False, client="203.0.113.6")
        assert len(caplog.records) == 1 and "1 without a token" in caplog.records[0].getMessage()
        now[0] = 61
        log.note(missing=False, client="203.0.113.7")
        assert len(caplog.records) == 2
        assert "refused 6" in caplog.records[1].getMessage() and "6 with a wrong token" in caplog.text
        log.flush()
        assert len(caplog.records) == 2 and log.total == 7  # nothing new to say
        log.note(missing=True, client="x")
        log.flush()
        assert len(caplog.records) == 3
