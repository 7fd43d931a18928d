"""Unit tests of the single lane's parts (issue #16): the pacer's spending and throttling, the grant size, the
classification of each call's answer into a ledger outcome, the lanes' shared queue, and the lane plan.

The lane end to end (Prefect server, emulator, ledger) is in tests/integration/test_single_lane.py.
"""

from __future__ import annotations

import threading

import httpx
import polars as pl
import pytest

from alibaba_sms.errors import (
    BusinessRejected,
    ConnectionFailed,
    GatewayAuthenticationError,
    GatewayInternalError,
    GatewayThrottled,
    ResponseLost,
)
from alibaba_sms.models import NumberDetail, SendResult
from globe_sms.ledger import INTERRUPTED, Status
from globe_sms.single_lane import CallAnswer, stops_the_lane
from globe_sms.single_pacing import (
    BURST_SECONDS,
    MIN_RATE_FRACTION,
    THROTTLE_CUT,
    SingleLanePacer,
    grant_size,
    lane_rate,
    single_limit_name,
)
from tasks.preview import plan_lanes
from tasks.send_lanes import RecipientQueue
from tasks.send_single import NOT_SENT, outcome_of
from tests.clocks import FakeMonotonic


def pacer_with(clock: FakeMonotonic, granted: list[int] | None = None, **kwargs: object) -> SingleLanePacer:
    """A pacer whose slots come from a local function (recording each ask), on the fake clock."""
    asks = granted if granted is not None else []

    def take(slots: int) -> bool:
        asks.append(slots)
        return True

    return SingleLanePacer(
        2000,
        limit_name="test-single",
        take_slots=take,
        clock=clock.clock,
        sleep=clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


class TestRateAndGrants:
    def test_the_lane_runs_below_the_allowance_by_its_margin(self) -> None:
        assert lane_rate(2000) == pytest.approx(1940)
        assert lane_rate(2000, 0.0) == 2000

    def test_slots_are_asked_for_about_twenty_times_a_second(self) -> None:
        assert grant_size(1940) == 97
        assert grant_size(1940) * 20 >= 1940
        assert grant_size(10) == 1  # a slow account asks one slot at a time

    def test_the_single_limit_sits_beside_the_batch_limit(self) -> None:
        assert single_limit_name("globe-sms-account-acme") == "globe-sms-account-acme-single"


class TestSpending:
    def test_calls_start_only_with_granted_slots(self) -> None:
        clock = FakeMonotonic()
        pacer = pacer_with(clock)
        n, delay = pacer.take(10)
        assert n == 0 and delay > 0  # nothing granted yet: the refiller is asked for slots
        pacer._slots = 5  # noqa: SLF001 - as if the refiller had been granted five
        clock.sleep(1.0)
        n, _ = pacer.take(10)
        assert n == 5  # no more than granted, whatever the allowance

    def test_spending_is_smooth_not_a_burst_of_a_whole_grant(self) -> None:
        clock = FakeMonotonic()
        pacer = pacer_with(clock)
        pacer._slots = 10_000  # noqa: SLF001
        clock.sleep(5.0)
        started = 0
        for _ in range(200):  # one second in 5 ms ticks
            n, _ = pacer.take(1000)
            started += n
            clock.sleep(0.005)
        # about the lane's rate: at most 25 ms worth more in any second, never a grant's worth at once
        assert 0.9 * pacer.rate <= started <= pacer.rate * (1 + BURST_SECONDS) + 1

    def test_a_late_wake_up_catches_up_without_a_burst(self) -> None:
        """An event loop that wakes every 20 ms instead of 5 still spends at the rate."""
        clock = FakeMonotonic()
        pacer = pacer_with(clock)
        pacer._slots = 10_000  # noqa: SLF001
        started, biggest = 0, 0
        for _ in range(50):
            n, _ = pacer.take(1000)
            started, biggest = started + n, max(biggest, n)
            clock.sleep(0.02)
        assert started >= 0.95 * pacer.rate and biggest <= pacer.rate * BURST_SECONDS + 1

    def test_throttling_slows_the_lane_down_then_it_recovers(self) -> None:
        clock = FakeMonotonic()
        pacer = pacer_with(clock)
        pacer.throttled()
        assert pacer.current_rate == pytest.approx(pacer.rate * THROTTLE_CUT)
        pacer.throttled()  # within the same pause: counted, not cut again
        assert pacer.current_rate == pytest.approx(pacer.rate * THROTTLE_CUT)
        assert pacer.stats.throttled == 2 and pacer.stats.slowdowns == 1
        pacer._slots = 10_000  # noqa: SLF001
        n, delay = pacer.take(100)
        assert n == 0 and delay > 0  # paused for a moment after the throttling answer
        for _ in range(60):
            clock.sleep(0.5)
            pacer.take(1)
        assert pacer.current_rate == pytest.approx(pacer.rate)  # back to the full rate

    def test_a_storm_of_throttling_never_stops_the_lane_entirely(self) -> None:
        clock = FakeMonotonic()
        pacer = pacer_with(clock)
        for _ in range(50):
            pacer.throttled()
            clock.sleep(0.2)
        assert pacer.current_rate == pytest.approx(pacer.rate * MIN_RATE_FRACTION)

    def test_no_grant_within_the_timeout_raises(self) -> None:
        from globe_sms.pacing import RateLimitTimeout

        clock = FakeMonotonic()
        pacer = SingleLanePacer(
            2000,
            limit_name="x",
            take_slots=lambda n: False,
            timeout_seconds=2.0,
            clock=clock.clock,
            sleep=clock.sleep,
        )
        pacer.take(1)
        clock.sleep(2.5)
        with pytest.raises(RateLimitTimeout):
            pacer.take(1)

    def test_the_refiller_asks_for_a_grant_at_a_time_while_calls_wait(self) -> None:
        asks: list[int] = []
        pacer = SingleLanePacer(2000, limit_name="x", take_slots=lambda n: asks.append(n) or True)
        pacer.start()
        try:
            pacer.want(True)
            done = threading.Event()
            for _ in range(200):
                if pacer.take(1)[0]:
                    done.set()
                    break
                threading.Event().wait(0.01)
            assert done.is_set()
        finally:
            pacer.close()
        assert asks and set(asks) == {pacer.grant_slots}

    def test_a_refiller_error_reaches_the_callers(self) -> None:
        def take(slots: int) -> bool:
            raise RuntimeError("limit missing")

        pacer = SingleLanePacer(2000, limit_name="x", take_slots=take)
        pacer.start()
        try:
            pacer.want(True)
            with pytest.raises(RuntimeError, match="limit missing"):
                for _ in range(200):
                    pacer.take(1)
                    threading.Event().wait(0.01)
        finally:
            pacer.close()


OK = SendResult(
    request_id="r-1",
    response_code="OK",
    description="OK",
    message_id="m-1",
    to="85291000001",
    segments=2,
    number_detail=NumberDetail(country="Hongkong, China", region="HongKong", carrier="CMI"),
)


class TestOutcomes:
    """Each answer's ledger outcome: the table in tasks/send_single.py."""

    @pytest.mark.parametrize(
        ("answer", "status", "code"),
        [
            (CallAnswer("1", result=OK), Status.ACCEPTED, None),
            (
                CallAnswer("1", error=GatewayThrottled("t", code="Throttling.User")),
                Status.PENDING,
                "Throttling.User",
            ),
            (
                CallAnswer("1", error=ConnectionFailed("c", code="ConnectError")),
                Status.PENDING,
                "ConnectError",
            ),
            (
                CallAnswer("1", error=GatewayInternalError("500", code="InternalError")),
                Status.UNKNOWN,
                "InternalError",
            ),
            (CallAnswer("1", error=ResponseLost("lost", code="ReadTimeout")), Status.UNKNOWN, "ReadTimeout"),
            (
                CallAnswer("1", error=BusinessRejected("x", code="MOBILE_NUMBER_ILLEGAL")),
                Status.FAILED,
                "MOBILE_NUMBER_ILLEGAL",
            ),
            (
                CallAnswer("1", error=GatewayAuthenticationError("s", code="SignatureDoesNotMatch")),
                Status.PENDING,
                "SignatureDoesNotMatch",
            ),
            (CallAnswer("1", error=None, sent=False), Status.PENDING, NOT_SENT),
            (CallAnswer("1", error=KeyboardInterrupt()), Status.UNKNOWN, "KeyboardInterrupt"),
            (CallAnswer("1", error=None), Status.UNKNOWN, INTERRUPTED),
        ],
    )
    def test_each_answer_has_its_outcome(self, answer: CallAnswer, status: Status, code: str | None) -> None:
        outcome = outcome_of(answer)
        assert (outcome.status, outcome.error_code) == (status, code)

    def test_an_answer_records_its_id_segments_and_carrier(self) -> None:
        outcome = outcome_of(CallAnswer("85291000001", result=OK))
        assert (outcome.message_id, outcome.request_id, outcome.segments, outcome.carrier) == (
            "m-1",
            "r-1",
            2,
            "CMI",
        )

    def test_only_answers_about_every_call_stop_the_lane(self) -> None:
        assert stops_the_lane(BusinessRejected("x", code="AMOUNT_NOT_ENOUGH"))
        assert stops_the_lane(GatewayAuthenticationError("s", code="SignatureDoesNotMatch"))
        assert not stops_the_lane(BusinessRejected("x", code="MOBILE_NUMBER_ILLEGAL"))
        assert not stops_the_lane(BusinessRejected("x", code="NOT_SUPPORTED_COUNTRY"))
        assert not stops_the_lane(GatewayThrottled("t", code="Throttling.User"))
        assert not stops_the_lane(ResponseLost("lost", code="ReadTimeout"))


class TestRecipientQueue:
    def test_lanes_take_in_order_with_one_sequence_of_numbers(self) -> None:
        frame = pl.DataFrame({"phone": [str(i) for i in range(10)], "message": ["m"] * 10})
        queue = RecipientQueue([frame.head(4), frame.tail(6)], first_batch_no=7, recipients=10)
        first = queue.take(3)
        second = queue.take(5)
        assert first is not None and second is not None
        assert first[0] == 7 and first[1] == ("0", "1", "2")
        assert second[0] == 8 and second[1] == ("3", "4", "5", "6", "7")
        assert len(queue) == 2

    def test_recipients_given_back_are_taken_first(self) -> None:
        frame = pl.DataFrame({"phone": ["a", "b", "c"], "message": ["x", "y", "z"]})
        queue = RecipientQueue([frame], 1, 3)
        taken = queue.take(2)
        assert taken is not None
        queue.give_back([("b", "y")])
        again = queue.take(5)
        assert again is not None and again[1] == ("b", "c") and again[2] == ("y", "z")
        assert queue.take(1) is None and len(queue) == 0

    def test_threads_never_take_the_same_recipient(self) -> None:
        n = 5000
        frame = pl.DataFrame({"phone": [str(i) for i in range(n)], "message": ["m"] * n})
        queue = RecipientQueue([frame], 1, n)
        seen: list[str] = []
        numbers: list[int] = []
        lock = threading.Lock()

        def drain() -> None:
            while (taken := queue.take(7)) is not None:
                with lock:
                    seen.extend(taken[1])
                    numbers.append(taken[0])

        threads = [threading.Thread(target=drain) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seen, key=int) == [str(i) for i in range(n)]
        assert len(set(numbers)) == len(numbers)


class TestLanePlan:
    def test_single_sends_everyone_one_call_each_at_the_lane_rate(self) -> None:
        [lane] = plan_lanes(
            "single", 20_000, batch_size=1000, calls_per_second=1, single_calls_per_second=2000
        )
        assert (lane.lane, lane.recipients, lane.calls) == ("single", 20_000, 20_000)
        assert lane.eta_seconds == pytest.approx(20_000 / 1940)

    def test_both_split_by_rate_and_finish_together(self) -> None:
        lanes = plan_lanes(
            "both",
            30_000,
            batch_size=1000,
            calls_per_second=1,
            single_calls_per_second=2000,
            cost_total=300.0,
        )
        batch, single = lanes
        assert batch.recipients + single.recipients == 30_000
        # beside the batch lane the single lane keeps a 5 % margin: 1,900 calls/s
        assert batch.recipients == round(30_000 * 1000 / 2900)
        assert abs(batch.eta_seconds - single.eta_seconds) <= 1.0
        assert batch.cost + single.cost == pytest.approx(300.0)  # type: ignore[operator]
        assert single.cost == pytest.approx(300.0 * single.recipients / 30_000)

    def test_batch_is_todays_plan(self) -> None:
        [lane] = plan_lanes("batch", 2500, batch_size=1000, calls_per_second=1, single_calls_per_second=2000)
        assert (lane.calls, lane.eta_seconds) == (3, 2.0)


def test_the_lane_runs_on_uvloop_where_it_is_installed() -> None:
    from globe_sms.single_lane import new_event_loop

    loop = new_event_loop()
    try:
        uvloop = pytest.importorskip("uvloop")
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


class BusyThenGranting:
    """A Prefect client whose slot requests meet a busy server (503) `busy` times, then are granted."""

    def __init__(self, busy: int) -> None:
        self.busy, self.requests = busy, 0

    def increment_concurrency_slots(self, **kwargs: object) -> httpx.Response:
        from globe_sms.pacing import ServerBusy

        self.requests += 1
        request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment")
        if self.requests <= self.busy:
            raise ServerBusy(httpx.Response(503, request=request))
        return httpx.Response(200, json=[{"id": "x", "name": "n", "limit": 2}], request=request)


@pytest.mark.parametrize(("busy", "granted", "requests"), [(0, True, 1), (2, True, 3), (5, False, 3)])
def test_a_slot_request_that_meets_a_busy_server_is_asked_again_at_once(
    busy: int, granted: bool, requests: int
) -> None:
    """A 503 has already waited on the server: the lane asks again at once (three tries in all) rather than
    an eighth of a second later, when its reservoir may have run dry."""
    from globe_sms.single_pacing import prefect_take_slots

    client = BusyThenGranting(busy)
    assert prefect_take_slots(client, "n")(97) is granted
    assert client.requests == requests
