"""Delivery receipts: parsing both spellings, the merge rule, the store (SQLite and PostgreSQL), the receiver
over real sockets, and the emulator pushing receipts to it.

Reconciliation through QueryMessage and "retry failed only" run flows under the Prefect server: see
tests/integration/test_reconcile.py. The receiver's token (refused pushes, redacted logs):
tests/{unit,integration}/test_receipts_auth.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_receipts.py.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from alibaba_sms import SmsClient
from alibaba_sms.emulator import EmulatorServer
from alibaba_sms.emulator.receipts import ReceiptSettings
from globe_sms.ids import task_id
from globe_sms.ledger import Ledger
from globe_sms.receipts import (
    DeliveryStatus,
    Receipt,
    ReceiptStore,
)
from globe_sms.receipts.receiver import ReceiverServer
from globe_sms.receipts.retry import reopen_failed_deliveries
from tests.clocks import FakeEpochClock
from tests.emulator_fixtures import (
    KEY,
    StartEmulator,
)

D, U, E, S, X = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.EXPIRED,
    DeliveryStatus.SENDING,
    DeliveryStatus.UNKNOWN,
)
WEBHOOK_STATE = {"delivered": "delivered", "failed": "undelivered", "expired": "expired", "stuck": None}


def camel(
    message_id: str, status: str, code: str = "", task: str = "", to: str = "85212345678"
) -> dict[str, str]:
    """A receipt as Alibaba's international webhook spells it."""
    return {
        "To": to,
        "SendDate": "Thu, 25 Nov 2021 10:25:00 +0800",
        "ReceiveDate": "Thu, 25 Nov 2021 10:25:33 +0800",
        "Status": status,
        "ErrorCode": code,
        "ErrorDescription": code.lower(),
        "TaskId": task,
        "SmsSize": "2",
        "MessageId": message_id,
    }


def snake(
    message_id: str, status: str, code: str = "", task: str = "", to: str = "85212345678"
) -> dict[str, str]:
    """The same receipt in the China site's snake_case spelling."""
    return {
        "to": to,
        "send_date": "2021-11-25 10:25:00",
        "receive_date": "2021-11-25 10:25:33",
        "status": status,
        "error_code": code,
        "error_description": code.lower(),
        "task_id": task,
        "sms_size": "2",
        "message_id": message_id,
    }


def r(message_id: str, status: DeliveryStatus, code: str | None = None, task: str | None = None) -> Receipt:
    return Receipt(message_id, status, error_code=code, task_id=task)


# --- the store, on both backends ----------------------------------------------------------------------------


# `url` (SQLite, or the session's throwaway PostgreSQL schema) comes from tests/ledger_fixtures.py.


@pytest.fixture
def campaign() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def accept(url: str, campaign: str, ids: dict[str, str], batch_no: int = 1, country: str = "HK") -> None:
    """Register numbers and record them accepted in one batch: phone -> message id."""
    with Ledger(url) as ledger:
        ledger.register(campaign, list(ids), [country] * len(ids))
        ledger.mark_submitting(campaign, batch_no, list(ids))
        ledger.record_accepted(campaign, batch_no, ids, {}, "req")


def unique_ids(n: int) -> list[str]:
    base = random.randrange(10**14, 9 * 10**14)
    return [str(base + i) for i in range(n)]


class TestStore:
    def test_duplicates_change_nothing_and_are_counted(self, url: str, campaign: str) -> None:
        """The same receipt three times: one row, two duplicates, first_seen kept."""
        [mid] = unique_ids(1)
        accept(url, campaign, {"85291000001": mid})
        with ReceiptStore(url) as store:
            first = store.record([r(mid, D, "DELIVERED", task_id(campaign, 1))])
            again = store.record([r(mid, D, "DELIVERED")] * 2)
            row = store.get(mid)
        assert (first.new, again.duplicates, again.new) == (1, 2, 0)
        assert row is not None and row["delivery_status"] == "delivered" and row["duplicates"] == 2
        assert (
            row["receipts"] == 3
            and row["matched"]
            and row["campaign_id"] == campaign
            and row["batch_no"] == 1
        )

    def test_a_final_state_never_moves_back(self, url: str, campaign: str) -> None:
        """delivered, then a late sending (stale) and a different final (conflict): still delivered."""
        [mid] = unique_ids(1)
        accept(url, campaign, {"85291000001": mid})
        with ReceiptStore(url) as store:
            store.record([r(mid, S)])
            advanced = store.record([r(mid, D, "DELIVERED")])
            late = store.record([r(mid, S), r(mid, U, "ABSENT_SUBSCRIBER"), r(mid, X)])
            row = store.get(mid)
        assert advanced.advanced == 1 and (late.stale, late.conflicts) == (2, 1)
        assert row is not None and row["delivery_status"] == "delivered" and row["error_code"] == "DELIVERED"
        assert (row["stale"], row["conflicts"]) == (2, 1)

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_any_order_and_chunking_gives_the_same_states(self, url: str, campaign: str, seed: int) -> None:
        """Finals, interim and duplicate receipts for 40 messages, shuffled and split across calls."""
        ids = unique_ids(40)
        accept(url, campaign, {str(85291000000 + i): mid for i, mid in enumerate(ids)})
        finals = {mid: random.Random(i).choice([D, U, E]) for i, mid in enumerate(ids)}
        receipts = [r(mid, state, "X" if state is not D else "DELIVERED") for mid, state in finals.items()]
        receipts += [r(mid, S) for mid in ids[::2]] + receipts[::3]
        random.Random(seed).shuffle(receipts)
        with ReceiptStore(url) as store:
            results = [store.record(receipts[start : start + 7]) for start in range(0, len(receipts), 7)]
            rows = store.delivery_rows(campaign)
        assert dict(zip(rows["message_id"], rows["delivery_status"], strict=True)) == finals
        # Each message is stored once; it advances once more only if its `sending` came before its final.
        first = {x.message_id: x.status for x in reversed(receipts)}
        assert sum(x.new for x in results) == 40
        assert sum(x.advanced for x in results) == sum(1 for state in first.values() if state is S)

    def test_task_id_picks_the_row_when_a_message_id_repeats(self, url: str) -> None:
        """Two campaigns whose (emulated) gateways gave out the same id: TaskId says which row it is."""
        [mid] = unique_ids(1)
        a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
        accept(url, a, {"85291000001": mid}, batch_no=1)
        accept(url, b, {"6591000002": mid}, batch_no=3)
        with ReceiptStore(url) as store:
            store.record([r(mid, D, task=task_id(b, 3))])
            row = store.get(mid)
        assert row is not None and (row["campaign_id"], row["phone"], row["batch_no"]) == (b, "6591000002", 3)

    def test_a_task_id_of_another_campaign_makes_an_orphan_not_a_wrong_join(self, url: str) -> None:
        """The id is only on campaign a's row, but the TaskId names campaign c: kept as c's orphan."""
        [mid] = unique_ids(1)
        a, c = f"a-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
        accept(url, a, {"85291000001": mid})
        with ReceiptStore(url) as store:
            assert store.record([r(mid, D, task=task_id(c, 1))]).orphans == 1
            row = store.get(mid)
            assert row is not None and not row["matched"] and row["campaign_id"] == c
            assert store.record([Receipt(mid, D, task_id="not-ours")]).orphans == 0

    def test_orphans_are_kept_counted_and_adopted_once_the_ledger_knows_them(
        self, url: str, campaign: str
    ) -> None:
        """A receipt that beats its ledger write is stored as an orphan, then joined by adopt_orphans."""
        [mid] = unique_ids(1)
        with ReceiptStore(url) as store:
            result = store.record([r(mid, U, "ABSENT_SUBSCRIBER", task_id(campaign, 2))])
            assert result.orphans == 1 and store.anomalies(campaign)["orphans"] == 1
            row = store.get(mid)
            assert (
                row is not None
                and not row["matched"]
                and (row["campaign_id"], row["batch_no"]) == (campaign, 2)
            )
            accept(url, campaign, {"85291000009": mid}, batch_no=2)
            assert store.adopt_orphans() == 1
            row = store.get(mid)
            assert row is not None and row["matched"] and row["phone"] == "85291000009"
            assert store.anomalies(campaign)["orphans"] == 0

    def test_unknown_is_final_but_a_later_real_receipt_settles_it(self, url: str, campaign: str) -> None:
        """The 72 h timeout is final for reports; the carrier's word, even later, still wins."""
        [mid] = unique_ids(1)
        accept(url, campaign, {"85291000001": mid})
        with ReceiptStore(url) as store:
            store.record([r(mid, X)], source="timeout")
            assert store.unsettled(campaign, datetime.now(UTC) + timedelta(days=1)) == []
            store.record([r(mid, D)])
            row = store.get(mid)
        assert row is not None and row["delivery_status"] == "delivered" and row["source"] == "receipt"

    def test_concurrent_pushes_of_the_same_messages(self, url: str, campaign: str) -> None:
        """Eight threads record the same 20 new receipts at once: 20 rows, every receipt counted once."""
        ids = unique_ids(20)
        accept(url, campaign, {str(85291000000 + i): mid for i, mid in enumerate(ids)})
        with ReceiptStore(url) as store:
            barrier = threading.Barrier(8)
            errors: list[BaseException] = []

            def push() -> None:
                try:
                    barrier.wait()
                    store.record([r(mid, D) for mid in ids])
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=push) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            rows = [store.get(mid) for mid in ids]
        assert all(row is not None and row["receipts"] == 8 and row["duplicates"] == 7 for row in rows)

    def test_reopen_undelivered_moves_only_those_accepted_rows_once(self, url: str, campaign: str) -> None:
        """accepted -> pending for failed messages with a retryable code; a second call changes nothing."""
        ids = unique_ids(4)
        phones = [str(85291000000 + i) for i in range(4)]
        accept(url, campaign, dict(zip(phones, ids, strict=True)))
        with ReceiptStore(url) as store, Ledger(url) as ledger:
            store.record(
                [
                    r(ids[0], D),
                    r(ids[1], U, "ABSENT_SUBSCRIBER"),
                    r(ids[2], U, "BLACKLISTED"),
                    r(ids[3], E, "EXPIRED"),
                ]
            )
            reopened = reopen_failed_deliveries(store, ledger, campaign)
            assert reopened.phones == [phones[1], phones[3]] and reopened.skipped_codes == {"BLACKLISTED": 1}
            assert ledger.pending(campaign) == [phones[1], phones[3]]
            assert ledger.counts(campaign)["accepted"] == 2
            assert reopen_failed_deliveries(store, ledger, campaign).phones == []
            assert ledger.reopen_undelivered(campaign, [ids[0], "no-such-id"]) == [phones[0]]

    def test_unsettled_lists_accepted_messages_without_a_final_state(self, url: str, campaign: str) -> None:
        """No receipt or only `sending`: unsettled; submitted after the cut-off: not yet."""
        ids = unique_ids(3)
        phones = [str(85291000000 + i) for i in range(3)]
        accept(url, campaign, dict(zip(phones, ids, strict=True)))
        with ReceiptStore(url) as store:
            store.record([r(ids[0], D), r(ids[1], S)])
            later = datetime.now(UTC) + timedelta(minutes=1)
            assert [(u.message_id, u.delivery_status) for u in store.unsettled(campaign, later)] == [
                (ids[1], "sending"),
                (ids[2], None),
            ]
            assert store.unsettled(campaign, datetime.now(UTC) - timedelta(hours=1)) == []


# --- the receiver over real sockets -------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path, no_proxy: None) -> Iterator[ReceiverServer]:  # noqa: ANN001
    with ReceiverServer(f"sqlite:///{tmp_path / 'ledger.db'}") as server:
        yield server


def post(server: ReceiverServer, body: object | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        server.url, content=content, headers={"content-type": "application/json"}, trust_env=False
    )


class TestReceiver:
    def test_both_spellings_are_stored_and_answered_code_0(self, receiver: ReceiverServer) -> None:
        """A camelCase push and a snake_case push: HTTP 200 `{"code": 0}` and both stored."""
        first = post(receiver, [camel("501", "1", "DELIVERED"), camel("502", "2", "ABSENT_SUBSCRIBER")])
        second = post(receiver, [snake("503", "6", "EXPIRED"), snake("501", "1", "DELIVERED")])
        assert first.status_code == second.status_code == 200
        assert first.json()["code"] == 0 and isinstance(first.json()["msg"], str)
        states = {mid: receiver.store.get(mid)["delivery_status"] for mid in ("501", "502", "503")}  # type: ignore[index]
        assert states == {"501": "delivered", "502": "undelivered", "503": "expired"}
        health = httpx.get(receiver.url + "health", trust_env=False).json()
        assert (health["posts"], health["new"], health["duplicates"], health["orphans"]) == (2, 3, 1, 4)

    def test_out_of_order_pushes_keep_the_final_state(self, receiver: ReceiverServer) -> None:
        """A final receipt, then a stale interim one and a conflicting final in a later push."""
        post(receiver, [camel("601", "1", "DELIVERED")])
        answer = post(receiver, [camel("601", "3"), camel("601", "2", "ABSENT_SUBSCRIBER")])
        assert answer.status_code == 200 and answer.json()["code"] == 0
        row = receiver.store.get("601")
        assert row is not None and (row["delivery_status"], row["stale"], row["conflicts"]) == (
            "delivered",
            1,
            1,
        )

    @pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b'"a string"', b"42"])
    def test_malformed_bodies_get_400(self, receiver: ReceiverServer, body: bytes) -> None:
        """Not JSON, or JSON that is neither an array nor an object: 400 with a numeric code."""
        answer = post(receiver, body)
        assert answer.status_code == 400 and answer.json()["code"] == 400

    def test_a_storage_failure_answers_500_so_that_alibaba_pushes_again(
        self, receiver: ReceiverServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The database fails: 500 and nothing stored; the same push later succeeds."""

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("database is locked")

        monkeypatch.setattr(receiver.store, "record", broken)
        assert post(receiver, [camel("701", "1")]).status_code == 500
        monkeypatch.undo()
        assert receiver.store.get("701") is None
        assert (
            post(receiver, [camel("701", "1")]).json()["code"] == 0 and receiver.store.get("701") is not None
        )


# --- the emulator pushing receipts --------------------------------------------------------------------------


def send_and_record(
    emulator: EmulatorServer, url: str, campaign: str, phones: Sequence[str]
) -> dict[str, str]:
    """Send one batch to the emulator and record it in the ledger, as the send task does; phone -> id."""
    with Ledger(url) as ledger, SmsClient(KEY, endpoint=emulator.url) as client:
        ledger.register(campaign, list(phones), ["HK"] * len(phones))
        ledger.mark_submitting(campaign, 1, list(phones))
        result = client.send_batch(phones, "Hello", task_id=task_id(campaign, 1))
        ledger.record_accepted(campaign, 1, result.accepted, {}, result.request_id)
    return {phone: str(mid) for phone, mid in result.accepted.items()}


QUIRKY = {
    "delay_seconds": 0.0,
    "duplicate_rate": 0.5,
    "interim_rate": 0.6,
    "reorder": True,
    "max_per_post": 7,
    "delivered_weight": 0.5,
    "failed_weight": 0.3,
    "expired_weight": 0.2,
}


class TestEmulatorPush:
    @pytest.mark.parametrize("spelling", ["camel", "snake"])
    def test_pushed_receipts_settle_every_message_as_the_emulator_decided(
        self, receiver: ReceiverServer, start_emulator: StartEmulator, spelling: str
    ) -> None:
        """Duplicates, late interim receipts, shuffled POSTs: the ledger ends in the decided states."""
        emulator = start_emulator(
            batch_calls_per_second=None,
            seed=7,
            receipt_callback_url=receiver.url,
            receipts=ReceiptSettings(spelling=spelling, **QUIRKY),
        )
        phones = [str(85291000000 + i) for i in range(60)]
        ids = send_and_record(emulator, receiver.ledger_url, "push", phones)
        assert emulator.state.receipts.drain(10)
        plans = emulator.state.receipts.plans()
        rows = receiver.store.delivery_rows("push")
        stored = dict(zip(rows["message_id"], rows["delivery_status"], strict=True))
        assert stored == {mid: WEBHOOK_STATE[plans[mid].outcome] for mid in ids.values()}
        assert {plans[mid].outcome for mid in ids.values()} == {"delivered", "failed", "expired"}
        posts = emulator.state.receipts.posted()
        keys = {key for post in posts for item in post for key in item}
        assert ("MessageId" in keys) == (spelling == "camel") and ("message_id" in keys) == (
            spelling == "snake"
        )
        assert max(len(p) for p in posts) <= 7
        per_message = Counter(
            item.get("MessageId") or item.get("message_id") for post in posts for item in post
        )
        assert max(per_message.values()) >= 2  # duplicates and interim receipts were pushed...
        totals = receiver.receiver.totals
        assert totals.duplicates > 0 and totals.stale > 0 and totals.orphans == 0  # ...and told apart
        failed = [receiver.store.get(mid) for mid in ids.values() if plans[mid].outcome == "failed"]
        assert all(row and row["error_code"] == plans[row["message_id"]].error_code for row in failed)

    def test_query_message_agrees_with_the_pushed_outcome(
        self, receiver: ReceiverServer, start_emulator: StartEmulator
    ) -> None:
        """Before the outcome is due QueryMessage says 3 (sending) and nothing is pushed; then both agree."""
        clock = FakeEpochClock()
        emulator = start_emulator(
            batch_calls_per_second=None,
            seed=3,
            clock=clock,
            receipt_callback_url=receiver.url,
            receipts=ReceiptSettings(delay_seconds=60, delivered_weight=1, failed_weight=1, expired_weight=1),
        )
        ids = send_and_record(
            emulator, receiver.ledger_url, "query", [str(85291000000 + i) for i in range(12)]
        )
        with SmsClient(KEY, endpoint=emulator.url) as client:
            assert {client.query(mid).status for mid in ids.values()} == {"3"}
            assert emulator.state.receipts.posted() == []
            clock.advance(61)
            assert emulator.state.receipts.drain(10)
            pushed = {item["MessageId"]: item for post in emulator.state.receipts.posted() for item in post}
            for mid in ids.values():
                answer = client.query(mid)
                assert (answer.status, answer.error_code) == (pushed[mid]["Status"], pushed[mid]["ErrorCode"])
        assert {item["Status"] for item in pushed.values()} == {"1", "2", "6"}

    def test_a_refused_push_is_retried(
        self, receiver: ReceiverServer, start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The receiver answers 500 once: the emulator pushes the same receipts again and they are stored."""
        real = receiver.store.record
        calls = {"n": 0}

        def flaky(*args: object, **kwargs: object):  # noqa: ANN202
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("database is locked")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(receiver.store, "record", flaky)
        emulator = start_emulator(
            batch_calls_per_second=None,
            receipt_callback_url=receiver.url,
            receipts=ReceiptSettings(delay_seconds=0, retry_seconds=0.05),
        )
        ids = send_and_record(emulator, receiver.ledger_url, "retry", ["85291000001"])
        assert emulator.state.receipts.drain(10)
        assert emulator.state.receipts.stats.refused_posts == 1 and emulator.state.receipts.stats.posts == 1
        assert receiver.store.get(ids["85291000001"]) is not None
