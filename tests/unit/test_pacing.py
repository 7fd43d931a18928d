"""Unit tests for the pacer (injected clock, sleep and acquire), plus one against the real Prefect limit.

The achieved rate of a whole campaign is measured at the gateway by bench/bench_rate.py, not in a timed test.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_pacing.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from globe_sms.pacing import Pacer, RateLimitTimeout
from tests.clocks import FakeMonotonic


class TestPacer:
    def test_first_call_does_not_wait_and_later_calls_keep_the_interval(self) -> None:
        """Without a write-ahead the call leaves when `wait()` returns: one interval plus margin apart, the
        limit's round trip hidden in the wait (asked for that much ahead), not added to the spacing."""
        fake = FakeMonotonic()
        grants: list[float] = []
        departures: list[float] = []

        def acquire(name: str) -> None:
            fake.now += 0.008  # the limit's round trip
            grants.append(fake.now)

        pacer = Pacer(
            1.0, limit_name="sms", margin_seconds=0.005, acquire=acquire, clock=fake.clock, sleep=fake.sleep
        )
        for _ in range(4):
            pacer.wait()
            departures.append(fake.now)
            fake.now += 0.050  # the send itself, then the next batch's preparation
        gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
        assert all(gap == pytest.approx(1.005) for gap in gaps)
        # asked ahead by the round trip and 2 ms, so each grant came before its departure time
        assert all(grant < departure for grant, departure in zip(grants[1:], departures[1:], strict=True))
        assert pacer.stats.grants == 4

    def test_work_slower_than_the_interval_causes_no_extra_wait(self) -> None:
        """When preparing a batch took longer than the interval, the pacer does not sleep at all."""
        fake = FakeMonotonic()
        pacer = Pacer(2.0, limit_name=None, acquire=lambda name: None, clock=fake.clock, sleep=fake.sleep)
        pacer.wait()
        fake.now += 0.9
        pacer.wait()
        assert fake.sleeps == []

    def test_local_only_pacing_never_calls_the_limit(self) -> None:
        """Without a limit name (plain scripts), only local spacing applies."""
        called: list[str] = []
        pacer = Pacer(10.0, limit_name=None, acquire=called.append)
        pacer.wait()
        pacer.wait()
        assert called == []

    def test_rate_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            Pacer(0, limit_name=None)


def test_a_call_that_opened_the_connection_times_the_next_from_its_answer() -> None:
    """A slow first call (TLS handshake) cannot squeeze the second call under one interval at the gateway."""
    fake = FakeMonotonic()
    pacer = Pacer(1.0, limit_name=None, margin_seconds=0.0, acquire=lambda name: None, clock=fake.clock,
                  sleep=fake.sleep)
    pacer.wait()
    fake.now += 0.400  # connect + TLS + answer
    pacer.call_answered(opened_connection=True)
    answered = fake.now
    pacer.wait()
    assert fake.now == pytest.approx(answered + 1.0)


def test_a_call_that_opened_the_connection_times_the_next_from_when_its_request_left() -> None:
    """With httpcore's trace the pacer hears when the request had left (`call_sent`), after the connection
    and TLS handshake: the gateway got it a one-way trip later, as it gets every call, so the next call is
    an interval after that moment, not after the answer (which cost every run a round trip, 16 ms for a
    batch of 1,000 against the emulator)."""
    fake = FakeMonotonic()
    pacer = Pacer(1.0, limit_name=None, margin_seconds=0.0, acquire=lambda name: None, clock=fake.clock,
                  sleep=fake.sleep)
    pacer.wait()
    assert pacer.departing()
    fake.now += 0.300  # connect + TLS handshake + writing the body
    pacer.call_sent()
    sent = fake.now
    fake.now += 0.100  # the answer
    pacer.call_answered(opened_connection=True)
    pacer.wait()
    assert pacer.departing()
    assert fake.now == pytest.approx(sent + 1.0)
    # a call on the open connection that the trace heard of moves nothing: timed from its departure
    departed = fake.now
    fake.now += 0.002
    pacer.call_sent()
    fake.now += 0.100
    pacer.call_answered(opened_connection=False)
    pacer.wait()
    assert pacer.departing()
    assert fake.now == pytest.approx(departed + 1.0)


class RecordingPacer(Pacer):
    """A pacer whose slot restamps are recorded (on the fake clock) instead of sent to a Prefect server."""

    def __init__(self, *args: Any, clock: Any, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.restamped: list[float] = []

    def restamp_slot(self) -> None:
        self.restamped.append(self._clock())  # noqa: SLF001 - the fake clock it was given


def recording_pacer(fake: FakeMonotonic) -> RecordingPacer:
    return RecordingPacer(1.0, limit_name=None, acquire=lambda name: None, clock=fake.clock, sleep=fake.sleep)


def test_only_a_call_that_left_late_after_its_ask_restamps_the_slot_as_soon_as_it_has_left() -> None:
    """The ask of a grant is sent at `asked`; the call leaves 10 ms later (on time) or 30 ms later (the grant
    came back slowly): only the late one restamps, when its request has left (`call_sent`), not after its
    answer, which may come too late to stop the next holder."""
    fake = FakeMonotonic()
    pacer = recording_pacer(fake)
    assert pacer._late_after() == pytest.approx(0.015)  # noqa: SLF001 - 10 ms hold + 5 ms slack
    for late, expected in ((0.010, 0), (0.030, 1)):
        pacer._granted_ask = fake.now  # noqa: SLF001 - as `_ask` sets it when the slot is granted
        fake.now += late
        assert pacer.departing()
        fake.now += 0.002
        pacer.call_sent()
        sent = fake.now
        fake.now += 0.200  # the answer
        pacer.call_answered(opened_connection=True)
        assert len(pacer.restamped) == expected
    assert pacer.restamped == [sent]


def test_a_late_call_whose_departure_went_unheard_restamps_once_answered() -> None:
    fake = FakeMonotonic()
    pacer = recording_pacer(fake)
    pacer._granted_ask = fake.now  # noqa: SLF001 - as `_ask` sets it when the slot is granted
    fake.now += 0.050
    assert pacer.departing()
    fake.now += 0.100
    pacer.call_answered()  # a transport without httpcore's trace: no `call_sent`
    pacer.call_answered()
    assert pacer.restamped == [fake.now]


def test_a_call_held_up_half_a_spacing_after_its_grant_is_not_sent() -> None:
    """Its restamp might land after the slot freed and another process took it: `departing()` refuses."""
    fake = FakeMonotonic()
    pacer = recording_pacer(fake)
    pacer._granted_ask = fake.now  # noqa: SLF001 - as `_ask` sets it when the slot is granted
    fake.now += 0.501
    assert not pacer.departing()
    assert pacer.stats.stale_grants == 1
    pacer.call_answered()
    assert pacer.restamped == []


def test_departures_stay_an_interval_apart_whatever_the_commit_between_grant_and_request_takes() -> None:
    """The write-ahead commit varies (5 ms, then 40 ms, then 1 ms, 20 ms): departures never get closer than
    the interval, and once the pacer has seen a commit that long, it starts early enough to hide it."""
    fake = FakeMonotonic()

    def acquire(name: str) -> None:
        fake.now += 0.010

    pacer = Pacer(1.0, limit_name="sms", margin_seconds=0.0, acquire=acquire, clock=fake.clock,
                  sleep=fake.sleep)
    departures: list[float] = []
    for commit in (0.005, 0.040, 0.001, 0.020, 0.030):

        def write_ahead(commit: float = commit) -> None:
            fake.now += commit

        pacer.wait(write_ahead, undo=lambda: None)
        pacer.departing()
        departures.append(fake.now)
        fake.now += 0.030  # the request and its answer
    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-9
    # The 40 ms commit came unannounced: the write-ahead started 25 ms ahead (the 5 ms commit seen so far,
    # 10 ms for waking up, and the ask's lead: the 10 ms round trip and 3 ms, at most MAX_HOLD_SECONDS,
    # 10 ms), so that call left 25 ms late. After it, every commit and round trip was hidden in the wait:
    # exactly one interval.
    assert gaps[0] == pytest.approx(1.025)
    assert gaps[1:] == pytest.approx([1.0, 1.0, 1.0])


def test_an_attempt_that_ends_without_a_slot_undoes_its_write_ahead() -> None:
    """A timeout (or a stop request) after the write-ahead puts the rows back: nothing half-sent is left."""
    fake = FakeMonotonic()
    events: list[str] = []

    def acquire(name: str) -> None:
        raise RateLimitTimeout(name, 1.0)

    pacer = Pacer(1.0, limit_name="sms", acquire=acquire, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(RateLimitTimeout):
        pacer.wait(lambda: events.append("submitting"), undo=lambda: events.append("pending"))
    assert events == ["submitting", "pending"]
    assert pacer.stats.undone_write_aheads == 1


def test_a_throttled_call_widens_the_margin_and_calls_that_go_through_narrow_it_again() -> None:
    """Calls arriving at the gateway less evenly than the margin allows get throttled: the pacer spaces the
    next ones 10 ms wider per throttled call (at most 100 ms more), then 1 ms narrower per grant."""
    fake = FakeMonotonic()
    pacer = Pacer(1.0, limit_name=None, margin_seconds=0.01, clock=fake.clock, sleep=fake.sleep)
    for _ in range(15):
        pacer.throttled()
    assert pacer.interval == pytest.approx(1.0 + 0.01 + 0.1)
    departures = []
    for _ in range(3):
        pacer.wait()
        departures.append(fake.now)
    assert [b - a for a, b in zip(departures, departures[1:], strict=False)] == pytest.approx([1.109, 1.108])
    for _ in range(200):
        pacer.wait()
    assert pacer.interval == pytest.approx(1.01)
    assert pacer.stats.throttled == 15


@pytest.mark.parametrize("overslept", [0.0004, 0.0009, 0.0029])
def test_a_sleep_that_ends_slightly_late_does_not_add_up_from_call_to_call(overslept: float) -> None:
    """Every hold ends `overslept` late: up to 0.3 of the margin (3 ms), the next call is timed from the
    moment held for (the lateness stays within the margin and does not accumulate: 0.990 of the rate, not
    0.9896)."""
    fake = FakeMonotonic()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds + overslept)

    pacer = Pacer(1.0, limit_name="sms", margin_seconds=0.010, acquire=lambda name: None, clock=fake.clock,
                  sleep=sleep)
    departures: list[float] = []
    for _ in range(6):
        pacer.wait(lambda: None, undo=lambda: None)
        assert pacer.departing()
        departures.append(fake.now)
        fake.now += 0.030  # the request and its answer
    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert gaps[1:] == pytest.approx([1.010] * 4, abs=1e-6)


@pytest.mark.parametrize(
    ("margin", "late", "gaps"),
    [
        (0.010, 0.002, [1.008]),
        (0.010, 0.004, [1.007, 1.009]),
        (0.010, 0.020, [1.007] * 6 + [1.008]),
        (0.010, 0.500, [1.007] * 10),  # at most ten times 3 ms are made up
        (0.0, 0.0005, [1.0, 1.0]),
    ],
)
def test_a_late_call_is_caught_up_half_the_margin_at_a_time(
    margin: float, late: float, gaps: list[float]
) -> None:
    """A grant that comes `late` after the call's time (a loaded Prefect server): the next calls keep to their
    schedule, each gap shrinking by at most 0.3 of the margin until the lateness is made up (at most ten
    times), never below the spacing and 0.7 of the margin. Without a margin, never sooner than the spacing."""
    fake = FakeMonotonic()
    # asked 10 ms ahead (MAX_HOLD_SECONDS), granted in 7 ms (3 ms early); the second grant `late` after it
    round_trips = [0.007, 0.010 + late] + [0.007] * (len(gaps) + 1)

    def acquire(name: str) -> None:
        fake.now += round_trips.pop(0)

    pacer = Pacer(1.0, limit_name="sms", margin_seconds=margin, acquire=acquire, clock=fake.clock,
                  sleep=fake.sleep)
    departures = []
    for _ in range(3 + len(gaps)):
        pacer.wait(lambda: None, undo=lambda: None)
        assert pacer.departing()
        departures.append(fake.now)
        fake.now += 0.030  # the request and its answer
    spaced = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert spaced[0] == pytest.approx(1.0 + margin + late)
    assert spaced[1:] == pytest.approx(gaps + [1.0 + margin] * (len(spaced) - 1 - len(gaps)))


def test_no_catching_up_while_a_throttled_call_has_widened_the_margin() -> None:
    """After a throttled call the calls reach the gateway less evenly than the margin allowed: a late call's
    successor then keeps the whole (widened) interval after it."""
    fake = FakeMonotonic()
    round_trips = [0.007, 0.007, 0.030, 0.007]

    def acquire(name: str) -> None:
        fake.now += round_trips.pop(0)

    pacer = Pacer(1.0, limit_name="sms", margin_seconds=0.010, acquire=acquire, clock=fake.clock,
                  sleep=fake.sleep)
    departures = []
    for number in range(4):
        pacer.wait(lambda: None, undo=lambda: None)
        assert pacer.departing()
        departures.append(fake.now)
        fake.now += 0.030
        if number == 0:
            pacer.throttled()  # 10 ms wider, narrowing 1 ms per grant
    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert gaps[1] == pytest.approx(1.019 + 0.020)  # the third call's grant came 20 ms late
    assert gaps[2] == pytest.approx(1.018)  # the widened interval (1 ms narrower per grant), not 3 ms less
