"""The receiver's shared token: refused pushes store nothing, the right one behaves as before, and the token
never reaches a log line, a repr, an answer or the command's output.

Unit tests of the token, the redaction and the refusal log first; then the receiver over real sockets, the
emulator pushing to a token URL, the embedded receiver of a run, and `globe-sms receipts serve` as a real
process. The receipts themselves (parsing, merging, the store) are tested in
tests/{unit,integration}/test_receipts.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_receipts_auth.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alibaba_sms import SmsClient
from alibaba_sms.emulator import EmulatorConfig
from alibaba_sms.emulator.receipts import ReceiptSettings
from globe_sms.cli import app as cli_app
from globe_sms.ids import task_id
from globe_sms.ledger import Ledger
from globe_sms.receipts import ReceiptStore
from globe_sms.receipts.auth import (
    TOKEN_ENV,
    ReceiverToken,
    resolve_token,
)
from globe_sms.receipts.receiver import EmulatorWithReceipts, ReceiverServer
from tests.emulator_fixtures import (
    KEY,
    StartEmulator,
)

SECRET = "s3cr3t-Receipts-Token_0123456789"
WRONG = "wrong-Guess-Token_9876543210abcd"
CAMPAIGN = "guarded"
runner = CliRunner()


def receipt(message_id: str, status: str = "1") -> dict[str, str]:
    """One receipt as Alibaba's international webhook spells it."""
    return {"MessageId": message_id, "Status": status, "ErrorCode": "DELIVERED", "To": "85212345678"}


def post(url: str, body: object) -> httpx.Response:
    return httpx.post(
        url, content=json.dumps(body).encode(), headers={"content-type": "application/json"}, trust_env=False
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll until true: log lines are written by the server thread, possibly after the answer left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, formatted with its exception text, but the test's own httpx client's lines.

    The test plays Alibaba: its client knows the token and httpx logs each URL it requests. The server's
    threads and the emulator's pusher (thread `emulator-receipts`) are all checked.
    """
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(
        formatter.format(record)
        for record in caplog.records
        if not (record.name.startswith(("httpx", "httpcore")) and record.threadName == "MainThread")
    )


@pytest.mark.usefixtures("prefect_server")
class TestFromSecretBlock:
    def test_a_block_holding_the_token_plain_or_as_a_mapping(self) -> None:
        """`Secret(value="...")` and `Secret(value={"token": "..."})` both give the token; the name wins."""
        from prefect.blocks.system import Secret

        Secret(value=SECRET).save("globe-sms-test-receipts-plain", overwrite=True)
        Secret(value={"token": SECRET}).save("globe-sms-test-receipts-map", overwrite=True)
        for name in ("globe-sms-test-receipts-plain", "globe-sms-test-receipts-map"):
            token = resolve_token(name, {TOKEN_ENV: WRONG})
            assert token is not None and token.matches(SECRET)

    def test_a_missing_block_exits_2_naming_it(self) -> None:
        """`--token-block` naming no block: exit 2 before anything is served."""
        result = runner.invoke(cli_app, ["receipts", "serve", "--token-block", "globe-sms-no-such-block"])
        assert result.exit_code == 2 and "globe-sms-no-such-block" in result.output


# --- the receiver over real sockets -------------------------------------------------------------------------


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def guarded(ledger_url: str, no_proxy: None, caplog: pytest.LogCaptureFixture) -> Iterator[ReceiverServer]:
    """A receiver requiring SECRET, every log record of the process captured from DEBUG up."""
    caplog.set_level(logging.DEBUG)
    with ReceiverServer(ledger_url, token=ReceiverToken.of(SECRET)) as server:
        yield server


class TestGuardedReceiver:
    def test_the_right_token_stores_in_the_path_or_the_query(self, guarded: ReceiverServer) -> None:
        """`/receipts/<token>` (primary) and `?token=` both store and answer code 0, as before."""
        in_path = post(guarded.push_url(), [receipt("801"), receipt("802", "2")])
        in_query = post(f"{guarded.base_url}/receipts?token={SECRET}", [receipt("803", "6")])
        assert in_path.status_code == in_query.status_code == 200
        assert in_path.json()["code"] == in_query.json()["code"] == 0
        rows = {mid: guarded.store.get(mid) for mid in ("801", "802", "803")}
        states = {mid: row["delivery_status"] for mid, row in rows.items() if row is not None}
        assert states == {"801": "delivered", "802": "undelivered", "803": "expired"}
        assert guarded.push_url() == f"{guarded.base_url}/receipts/{SECRET}"

    @pytest.mark.parametrize(
        ("target", "status"),
        [
            ("/", 401),
            ("/receipts", 401),
            ("/receipts?token=", 401),
            (f"/receipts/{WRONG}", 403),
            (f"/receipts?token={WRONG}", 403),
            (f"/receipts/{SECRET[:-1]}", 403),
            (f"/receipts/{SECRET.upper()}", 403),
        ],
    )
    def test_a_missing_or_wrong_token_is_refused_and_nothing_is_stored(
        self, guarded: ReceiverServer, target: str, status: int
    ) -> None:
        """401 without a token, 403 with a wrong one; a numeric `code`; no row; counted in /health."""
        answer = post(guarded.base_url + target, [receipt("901")])
        assert answer.status_code == status and answer.json()["code"] == status
        assert guarded.store.get("901") is None
        assert SECRET not in answer.text
        health = httpx.get(guarded.base_url + "/health", trust_env=False).json()
        assert (health["refused_posts"], health["posts"], health["new"]) == (1, 0, 0)

    def test_a_refused_push_is_not_even_parsed(self, guarded: ReceiverServer) -> None:
        """Garbage without the token is a 401, not a 400: the body is never read."""
        answer = httpx.post(guarded.base_url + "/", content=b"{not json", trust_env=False)
        assert answer.status_code == 401

    def test_the_token_never_reaches_a_log_line(
        self, guarded: ReceiverServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Right, missing and wrong tokens, and a storage failure: our access lines and the warnings are
        redacted, and neither the token nor the value presented appears anywhere."""
        assert post(guarded.push_url(), [receipt("811")]).status_code == 200
        assert post(f"{guarded.base_url}/receipts?token={SECRET}", [receipt("812")]).status_code == 200
        assert post(f"{guarded.base_url}/receipts/{WRONG}", [receipt("813")]).status_code == 403
        assert post(f"{guarded.base_url}/receipts?token={WRONG}", [receipt("814")]).status_code == 403
        assert post(f"{guarded.base_url}/", [receipt("815")]).status_code == 401

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("database is locked")

        monkeypatch.setattr(guarded.store, "record", broken)
        assert post(guarded.push_url(), [receipt("816")]).status_code == 500
        access = "globe_sms.receipts.access"
        assert wait_for(lambda: sum(r.name == access for r in caplog.records) >= 6)
        text = all_log_text(caplog) + repr(guarded) + guarded.url
        assert SECRET not in text and WRONG not in text
        assert '"POST /receipts/****" 200' in text and '"POST /receipts?token=****" 403' in text
        assert "could not be stored" in text and "RuntimeError" in caplog.text  # the failure is still logged
        refusals = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
        assert len(refusals) == 1  # three refusals, one line: the rest waits for the next interval
        assert guarded.url == f"{guarded.base_url}/receipts/****"

    def test_uvicorns_own_access_log_is_redacted_too(
        self,
        ledger_url: str,
        no_proxy: None,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Should an operator turn uvicorn's access log on, its lines show `/receipts/****`."""
        import alibaba_sms.emulator.server as server_module

        real_config = server_module.uvicorn_config

        def with_access_log(*args: object, **kwargs: object):  # noqa: ANN202
            config = real_config(*args, **kwargs)  # type: ignore[arg-type]
            config.access_log = True
            return config

        monkeypatch.setattr(server_module, "uvicorn_config", with_access_log)
        with ReceiverServer(ledger_url, token=ReceiverToken.of(SECRET)) as server:
            uvicorn_access = logging.getLogger("uvicorn.access")
            monkeypatch.setattr(uvicorn_access, "propagate", True)  # uvicorn_config had cut it off
            caplog.set_level(logging.INFO, logger="uvicorn.access")
            # a fresh connection per request: h11 decides whether to log when the connection opens
            assert post(server.push_url(), [receipt("821")]).status_code == 200
            assert post(f"{server.base_url}/receipts?token={WRONG}", [receipt("822")]).status_code == 403
            assert wait_for(lambda: sum(r.name == "uvicorn.access" for r in caplog.records) >= 2)
        lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
        assert any('"POST /receipts/**** HTTP/1.1" 200' in line for line in lines), lines
        assert any('"POST /receipts?token=**** HTTP/1.1" 403' in line for line in lines), lines
        assert SECRET not in all_log_text(caplog) and WRONG not in all_log_text(caplog)

    def test_refusals_are_summed_and_flushed_on_stop(
        self, ledger_url: str, no_proxy: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Five bad pushes: one warning at once, one with the other four when the receiver stops."""
        caplog.set_level(logging.WARNING, logger="globe_sms.receipts.receiver")
        with ReceiverServer(ledger_url, token=ReceiverToken.of(SECRET)) as server:
            for _ in range(5):
                post(f"{server.base_url}/receipts/{WRONG}", [receipt("831")])
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 2 and "refused 1 " in refusals[0] and "refused 4 " in refusals[1]
        assert "4 with a wrong token (403)" in refusals[1] and WRONG not in "".join(refusals)


class TestUnguardedReceiver:
    def test_without_a_token_it_warns_once_and_accepts_every_push(
        self, ledger_url: str, no_proxy: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Local and test use: one clear warning at start, then pushes are stored as before, quietly."""
        caplog.set_level(logging.WARNING)
        with ReceiverServer(ledger_url) as server:
            for target in ("/", "/receipts", "/receipts/anything-at-all-here"):
                answer = post(server.base_url + target, [receipt(f"84{len(target)}")])
                assert answer.status_code == 200 and answer.json()["code"] == 0
            assert server.url == server.push_url() == server.base_url + "/"
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "UNAUTHENTICATED" in warnings[0].getMessage()
        assert TOKEN_ENV in warnings[0].getMessage()


# --- the emulator pushing to a token URL --------------------------------------------------------------------


def send_batch(emulator_url: str, ledger_url: str, campaign: str, phones: list[str]) -> dict[str, str]:
    """One batch through the emulator, recorded in the ledger as the send task does; phone -> id."""
    with Ledger(ledger_url) as ledger, SmsClient(KEY, endpoint=emulator_url) as client:
        ledger.register(campaign, phones, ["HK"] * len(phones))
        ledger.mark_submitting(campaign, 1, phones)
        result = client.send_batch(phones, "Hello", task_id=task_id(campaign, 1))
        ledger.record_accepted(campaign, 1, result.accepted, {}, result.request_id)
    return {phone: str(mid) for phone, mid in result.accepted.items()}


class TestEmulatorPush:
    def test_pushes_to_the_token_url_reach_the_store(
        self, guarded: ReceiverServer, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        """End to end: the emulator POSTs to `/receipts/<token>`, every message settles, nothing leaks."""
        emulator = start_emulator(
            batch_calls_per_second=None,
            seed=11,
            receipt_callback_url=guarded.push_url(),
            receipts=ReceiptSettings(delay_seconds=0, duplicate_rate=0.3, max_per_post=5),
        )
        ids = send_batch(
            emulator.url, guarded.ledger_url, CAMPAIGN, [str(85291000000 + i) for i in range(20)]
        )
        assert emulator.state.receipts.drain(10)
        rows = guarded.store.delivery_rows(CAMPAIGN)
        assert set(rows["message_id"]) == set(ids.values()) and rows["delivery_status"].null_count() == 0
        assert emulator.state.receipts.stats.refused_posts == 0 and guarded.receiver.refusals.total == 0
        admin = httpx.get(emulator.url + "/_emulator/receipts", trust_env=False).json()
        assert admin["callback_url"] == f"{guarded.base_url}/receipts/****"
        assert SECRET not in all_log_text(caplog)

    def test_pushes_with_a_wrong_token_are_refused_retried_and_dropped(
        self, guarded: ReceiverServer, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A console URL with the wrong token: every POST refused, nothing stored, the emulator gives up."""
        emulator = start_emulator(
            batch_calls_per_second=None,
            receipt_callback_url=f"{guarded.base_url}/receipts/{WRONG}",
            receipts=ReceiptSettings(delay_seconds=0, retry_seconds=0.01, max_attempts=2),
        )
        send_batch(emulator.url, guarded.ledger_url, CAMPAIGN, ["85291000001", "85291000002"])
        assert emulator.state.receipts.drain(10)
        stats = emulator.state.receipts.stats
        assert (stats.posts, stats.refused_posts, stats.dropped_receipts) == (0, 2, 2)
        assert guarded.store.delivery_rows(CAMPAIGN)["delivery_status"].null_count() == 2
        assert guarded.receiver.refusals.total == 2 and WRONG not in all_log_text(caplog)


def test_the_embedded_receiver_of_a_run_requires_its_own_random_token(
    ledger_url: str, no_proxy: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The emulator's receipts arrive through a per-run token; a push without it is refused; no warning."""
    caplog.set_level(logging.INFO)
    embedded = EmulatorWithReceipts(EmulatorConfig(batch_calls_per_second=None), ledger_url, drain_seconds=10)
    emulator = embedded.start()
    try:
        ids = send_batch(emulator.url, ledger_url, CAMPAIGN, [str(85291000000 + i) for i in range(10)])
        receiver = embedded.receiver
        assert receiver.token is not None and receiver.url.endswith("/receipts/****")
        assert post(receiver.base_url + "/", [receipt("999")]).status_code == 401
        secret = receiver.token.token.get_secret_value()
    finally:
        embedded.stop()
    with ReceiptStore(ledger_url) as store:
        rows = store.delivery_rows(CAMPAIGN)
        assert set(rows["message_id"]) == set(ids.values()) and store.get("999") is None
    assert "UNAUTHENTICATED" not in caplog.text and secret not in all_log_text(caplog)


# --- `globe-sms receipts serve` -----------------------------------------------------------------------------


class TestServeCommand:
    def test_require_token_without_one_exits_2(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`--require-token` and nothing configured: a clear error, exit 2, no server."""
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        result = runner.invoke(cli_app, ["receipts", "serve", "--require-token"])
        assert result.exit_code == 2 and TOKEN_ENV in result.output

    def test_an_unusable_token_exits_2_without_showing_it(self) -> None:
        """A too-short token in the environment is refused by name, never echoed."""
        result = runner.invoke(cli_app, ["receipts", "serve"], env={TOKEN_ENV: "hunter2-short"})
        assert result.exit_code == 2 and TOKEN_ENV in result.output and "hunter2" not in result.output

    def test_serves_with_the_token_and_prints_the_masked_url(self, tmp_path: Path, no_proxy: None) -> None:
        """A real process: the console URL printed masked, pushes checked, and the token in no output."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = Path(sys.executable).with_name("globe-sms")
        env = {**os.environ, TOKEN_ENV: SECRET}
        ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        process = subprocess.Popen(
            [str(command), "receipts", "serve", "--port", str(port), "--ledger", ledger, "--require-token"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            assert wait_for(lambda: _answers(base + "/health"), timeout=60), "receiver did not start"
            assert post(f"{base}/receipts/{SECRET}", [receipt("851")]).status_code == 200
            assert post(f"{base}/receipts/{WRONG}", [receipt("852")]).status_code == 403
            assert post(f"{base}/receipts", [receipt("853")]).status_code == 401
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        assert f"{base}/receipts/****" in out and TOKEN_ENV in out, out
        assert '"POST /receipts/****" 200' in err and "refused" in err, err
        assert SECRET not in out + err and WRONG not in out + err
        with ReceiptStore(ledger) as store:
            assert store.get("851") is not None and store.get("852") is None and store.get("853") is None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
