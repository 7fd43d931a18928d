"""Reconciliation through `AsyncSmsClient` without a Prefect server: many queries in flight under the pacer,
throttled queries asked again, a refused key stopping the run. The flow itself (on the Prefect test server)
is in tests/integration/test_reconcile.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.async_client import AsyncSmsClient
from alibaba_sms.emulator import EmulatorServer
from alibaba_sms.emulator.receipts import ReceiptSettings
from alibaba_sms.errors import AuthenticationError
from globe_sms.ids import task_id
from globe_sms.ledger import Ledger
from globe_sms.receipts import ReceiptStore
from globe_sms.receipts.reconcile import QueryPacer, query_pacer, reconcile, run_coroutine
from tests.emulator_fixtures import KEY, StartEmulator

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it


def record(emulator: EmulatorServer, url: str, campaign: str, count: int) -> list[str]:
    """One batch sent and recorded in the ledger as the send task does; the message ids."""
    phones = [str(85291000000 + i) for i in range(count)]
    with Ledger(url) as ledger, SmsClient(KEY, endpoint=emulator.url) as client:
        ledger.register(campaign, phones, ["HK"] * count)
        ledger.mark_submitting(campaign, 1, phones)
        result = client.send_batch(phones, "Hello", task_id=task_id(campaign, 1))
        ledger.record_accepted(campaign, 1, result.accepted, {}, result.request_id)
    return [str(mid) for mid in result.accepted.values()]


def test_queries_in_flight_settle_everything_and_throttled_ones_are_asked_again(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:

    """40 overdue messages, the gateway allowing 20 queries per rolling second and answering after 50 ms:
    all 40 are settled in one pass (the throttled ones asked again a second later), none twice over."""
    emulator = start_emulator(
        batch_calls_per_second=None,
        query_calls_per_second=20,
        receipts=ReceiptSettings(simulate=True, delay_seconds=0, stuck_weight=0),
    )
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ids = record(emulator, url, "many", 40)
    emulator.state.faults.configure(latency_seconds=0.05)
    with ReceiptStore(url) as store:
        result = reconcile(
            store,
            AsyncSmsClient(KEY, endpoint=emulator.url),
            campaign_id="many",
            older_than=timedelta(0),
            pacer=query_pacer(1000),
            workers=40,
        )
    queries = emulator.state.requests("QueryMessage")
    answered = [r for r in queries if r.code == "OK"]
    assert result.candidates == result.queried == 40 and result.errors == {}
    assert sum(result.settled.values()) == 40 and len(answered) == 40
    assert len(queries) - len(answered) >= 20  # throttled at first, asked again
    with ReceiptStore(url) as store:
        assert store.unsettled("many", store.now(), None) == [] and ids


def test_a_refused_key_stops_the_queries_in_flight(start_emulator: StartEmulator, tmp_path: Path) -> None:
    """A wrong secret: the run raises `AuthenticationError` after the first answers, not after 50 queries."""
    emulator = start_emulator(batch_calls_per_second=None)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(emulator, url, "refused", 50)
    wrong = AsyncSmsClient(AccessKey.of("testid", "not-the-secret"), endpoint=emulator.url)
    with ReceiptStore(url) as store, pytest.raises(AuthenticationError):
        reconcile(store, wrong, campaign_id="refused", older_than=timedelta(0), workers=2)
    assert len(emulator.state.requests("QueryMessage")) <= 4


def test_async_pacer_reserves_slots_and_keeps_the_rolling_second() -> None:
    """Coroutines reserve consecutive slots (at 5/s, 0.2 s apart: none starts before its slot), and no 6
    start within 1 s plus the margin, even though slots 5 apart are exactly 1 s apart; run from inside a
    running loop, `run_coroutine` uses a thread of its own."""
    pacer = QueryPacer(5, window_margin=0.05)
    started: list[float] = []

    async def one() -> None:
        await pacer.wait_async()
        started.append(asyncio.get_running_loop().time())

    async def all_of_them() -> None:
        await asyncio.gather(*(one() for _ in range(8)))

    async def from_a_loop() -> None:
        run_coroutine(all_of_them())

    asyncio.run(from_a_loop())
    started.sort()
    assert len(started) == 8
    assert all(moment - started[0] >= k * 0.2 - 0.002 for k, moment in enumerate(started))
    assert all(started[k + 5] - started[k] >= 1.05 - 0.002 for k in range(3))


def test_a_throttled_query_widens_the_window_and_departures_narrow_it_again() -> None:
    """Arrivals bunched closer than departures get throttled: the pacer keeps its departures in a rolling
    window 50 ms wider per throttled query (at most half a second), 0.5 ms narrower per departure."""
    pacer = QueryPacer(1000, window_margin=0.05)
    for _ in range(20):
        pacer.throttled()
    assert pacer.window == pytest.approx(1.05 + 0.5) and pacer.throttles == 20

    async def depart(count: int) -> None:
        for _ in range(count):
            await pacer.wait_async()

    asyncio.run(depart(100))
    assert pacer.window == pytest.approx(1.05 + 0.5 - 100 * 0.0005)
    asyncio.run(depart(1000))
    assert pacer.window == pytest.approx(1.05)
