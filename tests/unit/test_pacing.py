"""Unit tests for the pacer (injected clock, sleep and acquire), plus one against the real Prefect limit.

The achieved rate of a whole campaign is measured at the gateway by bench/bench_rate.py, not in a timed test.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_pacing.py.
"""

from __future__ import annotations

import pytest

from globe_sms.pacing import Pacer
from tests.clocks import FakeMonotonic


class TestPacer:
    def test_first_call_does_not_wait_and_later_calls_keep_the_interval(self) -> None:
        """Grants are spaced one interval plus margin apart, measured from the previous grant's return."""
        fake = FakeMonotonic()
        grants: list[float] = []

        def acquire(name: str) -> None:
            fake.now += 0.008  # the limit's round trip
            grants.append(fake.now)

        pacer = Pacer(
            1.0, limit_name="sms", margin_seconds=0.005, acquire=acquire, clock=fake.clock, sleep=fake.sleep
        )
        for _ in range(4):
            pacer.wait()
            fake.now += 0.050  # the send itself, then the next batch's preparation
        gaps = [b - a for a, b in zip(grants, grants[1:], strict=False)]
        assert fake.sleeps[0] == pytest.approx(1.005 - 0.050)
        assert all(gap == pytest.approx(1.005 + 0.008) for gap in gaps)
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
    pacer.connection_opened()
    answered = fake.now
    pacer.wait()
    assert fake.now == pytest.approx(answered + 1.0)


def test_departures_stay_an_interval_apart_whatever_the_commit_between_grant_and_request_takes() -> None:
    """The ledger commit after the grant varies (5 ms, then 40 ms, then 1 ms): departures never get closer."""
    fake = FakeMonotonic()
    pacer = Pacer(1.0, limit_name=None, margin_seconds=0.0, acquire=lambda name: None, clock=fake.clock,
                  sleep=fake.sleep)
    departures: list[float] = []
    for commit in (0.005, 0.040, 0.001, 0.020):
        pacer.wait()
        fake.now += commit
        pacer.departing()
        departures.append(fake.now)
        fake.now += 0.030  # the request and its answer
    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-9
    # Timed from the grant instead, the 40 ms commit followed by a 1 ms one would give 0.961 s.
    assert max(gaps) == pytest.approx(1.040)
