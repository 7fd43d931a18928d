"""Two campaigns at once on two process workers, as in production: real `prefect server start`, real workers.

Each scenario starts everything itself in its own process groups and temporary PREFECT_HOME, and stops it in
`finally`: a Prefect server on a free loopback port, `globe-sms setup`, `prefect deploy` of the
`send-campaign` deployment from prefect.yaml, and two `prefect worker start` processes (one flow run each).
Two campaigns of 15 batches go out through deployment runs to one emulator (no flow control of its own, so
that it records every call as it arrives). At the emulator:

* the account's calls are never closer than one second apart (at most one call in any rolling second);
* neither campaign starves: while both send, the longest gap between one campaign's batches is at most 3 s;
* every recipient got exactly one message.

The same again with the Prefect server and the ledger in PostgreSQL (127.0.0.1:5432, user postgres, throwaway
databases created and dropped here): the multi-machine setup.

First, the pieces that make the sharing fair (`globe_sms.pacing`: waiting room, polling, stepping aside,
hand-over margin), with fakes and against the session's Prefect test server. Other pacer unit tests:
tests/{unit,integration}/test_pacing.py; the deployments themselves: tests/integration/test_deployments.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_workers.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from globe_sms.pacing import (
    Pacer,
    PrefectWaitingRoom,
    RateLimitTimeout,
    ServerBusy,
    take_slot_fairly,
    unless_busy,
)
from tests.clocks import FakeMonotonic

pytestmark = pytest.mark.timeout(420)


class FakeRoom:
    """A waiting room that records who joined and left; `waiting` says whether others wait."""

    def __init__(self, waiting: bool = False, broken: bool = False) -> None:
        self.waiting, self.broken = waiting, broken
        self.events: list[str] = []

    def others_waiting(self) -> bool:
        if self.broken:
            raise RuntimeError("server busy")
        return self.waiting

    def join(self, client: Any) -> Any:
        self.events.append("join")
        if self.broken:
            raise RuntimeError("server busy")
        return "ticket"

    def renew(self, client: Any, ticket: Any) -> None:
        self.events.append("renew")

    def leave(self, client: Any, ticket: Any) -> None:
        self.events.append("leave")


class TestTakeSlotFairly:
    def test_a_denied_process_waits_in_the_room_and_watches_with_reads(self) -> None:
        """Denied: it joins the room once, reads when the slot frees, asks again then, then leaves."""
        fake, room = FakeMonotonic(start=1000.0), FakeRoom()
        answers, looks = iter([False, False, True]), iter([0.0, 0.3])
        tries: list[float] = []

        def try_take(name: str) -> bool:
            tries.append(fake.now)
            return next(answers)

        denials = take_slot_fairly(
            "sms", try_take, slot_wait=lambda name: next(looks), room=room, clock=fake.clock, sleep=fake.sleep
        )
        assert denials == 2 and len(tries) == 3
        assert room.events == ["join", "leave"]
        assert 0.3 in fake.sleeps  # the time the read computed (slot free + margin), before the last try
        assert all(0.04 <= s <= 0.06 for s in fake.sleeps if s != 0.3)  # ~50 ms polls

    def test_a_granted_first_try_never_enters_the_room(self) -> None:
        """No denial, no room, no poll."""
        fake, room = FakeMonotonic(start=1000.0), FakeRoom()
        assert take_slot_fairly("sms", lambda n: True, room=room, clock=fake.clock, sleep=fake.sleep) == 0
        assert room.events == [] and fake.sleeps == []

    def test_looking_first_waits_out_the_margin_before_the_first_try(self) -> None:
        """A slot that may come from another process is asked for only once the margin has passed."""
        fake = FakeMonotonic(start=1000.0)
        asked: list[float] = []
        take_slot_fairly(
            "sms", lambda n: asked.append(fake.now) or True, slot_wait=lambda n: 0.08, look_first=True,
            room=None, clock=fake.clock, sleep=fake.sleep,
        )
        assert asked == [pytest.approx(1000.08)]

    def test_no_slot_in_time_raises_and_leaves_the_room(self) -> None:
        """The wait is bounded: RateLimitTimeout, and the room is left."""
        fake, room = FakeMonotonic(start=1000.0), FakeRoom()
        with pytest.raises(RateLimitTimeout):
            take_slot_fairly(
                "sms", lambda n: False, slot_wait=lambda n: None, room=room, timeout_seconds=1.0,
                clock=fake.clock, sleep=fake.sleep,
            )
        assert room.events[0] == "join" and room.events[-1] == "leave"
        assert 1.0 <= fake.now - 1000.0 < 1.2

    def test_a_broken_room_never_fails_the_send(self) -> None:
        """Fairness is best effort: a room that errors is retried, and the slot is still taken."""
        fake, room = FakeMonotonic(start=1000.0), FakeRoom(broken=True)
        answers = iter([False, True])
        assert take_slot_fairly(
            "sms", lambda n: next(answers), slot_wait=lambda n: 0.0, room=room,
            clock=fake.clock, sleep=fake.sleep,
        ) == 1
        assert "join" in room.events and "leave" not in room.events


class TestPacerTakesTurns:
    @staticmethod
    def pacer(room: FakeRoom, fake: FakeMonotonic, denials: list[int]) -> tuple[Pacer, list[float]]:
        grants: list[float] = []

        def acquire(name: str) -> int:
            grants.append(fake.now)
            return denials.pop(0) if denials else 0

        pacer = Pacer(
            1.0, limit_name="sms", acquire=acquire, waiting_room=room, clock=fake.clock, sleep=fake.sleep
        )
        return pacer, grants

    def test_steps_aside_when_someone_else_waits(self) -> None:
        """With a waiter in the room the pacer asks yield_seconds later; alone it asks on time."""
        fake = FakeMonotonic(start=1000.0)
        alone, _ = self.pacer(FakeRoom(waiting=False), fake, [])
        departures = []
        for _ in range(2):
            alone.wait()
            departures.append(fake.now)
        assert departures[1] - departures[0] == pytest.approx(1.005) and alone.stats.yields == 0
        fake2 = FakeMonotonic(start=1000.0)
        polite, grants2 = self.pacer(FakeRoom(waiting=True), fake2, [0, 3, 3])
        polite.wait()
        polite.wait()
        # woke 13 ms ahead of its time (10 ms for waking, 3 ms before the ask; no round trip measured yet),
        # then stepped half a second aside
        assert grants2[1] - grants2[0] == pytest.approx(1.005 - 0.013 + 0.5) and polite.stats.yields == 2

    def test_stops_stepping_aside_for_nobody(self) -> None:
        """Five useless yields in a row (nobody took the slot) pause yielding for 30 s."""
        fake = FakeMonotonic(start=1000.0)
        pacer, _ = self.pacer(FakeRoom(waiting=True), fake, [])
        for _ in range(6):
            pacer.wait()
        assert pacer.stats.yields == 5
        fake.now += 31
        pacer.wait()
        assert pacer.stats.yields == 6

    def test_a_hand_over_is_told_apart_from_the_own_next_turn(self) -> None:
        """The first grant and one after a long pause may follow another process's; the next in line not."""
        fake = FakeMonotonic(start=1000.0)
        pacer, _ = self.pacer(FakeRoom(waiting=False), fake, [])
        pacer.wait()
        assert pacer.stats.handovers == 1
        pacer.wait()
        assert pacer.stats.handovers == 1
        fake.now += 5
        pacer.wait()
        assert pacer.stats.handovers == 2


class BusyThenFine:
    """A Prefect client whose waiting-room calls answer 503 (`ServerBusy`) `busy` times, then succeed."""

    def __init__(self, busy: int) -> None:
        self.busy, self.calls = busy, 0

    def _maybe_busy(self) -> None:
        import httpx

        self.calls += 1
        if self.calls <= self.busy:
            request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment-with-lease")
            raise ServerBusy(httpx.Response(503, request=request))

    def increment_concurrency_slots_with_lease(self, **kwargs: Any) -> Any:
        import httpx

        self._maybe_busy()
        return httpx.Response(200, json={"lease_id": "7f1c4f4e-1a40-4a8e-9c55-3f7b6f1e2d10"})

    def read_global_concurrency_limit_by_name(self, name: str) -> Any:
        from types import SimpleNamespace

        self._maybe_busy()
        return SimpleNamespace(active_slots=1)


class TestABusyServer:
    def test_a_join_refused_as_busy_is_tried_again_until_it_holds(self) -> None:
        """A SQLite Prefect server answers 503 to a write that meets another: the waiter joins anyway, a few
        tries later, so that the slot's holder sees it and steps aside."""
        client = BusyThenFine(busy=3)
        ticket = PrefectWaitingRoom("sms").join(client)
        assert str(ticket) == "7f1c4f4e-1a40-4a8e-9c55-3f7b6f1e2d10" and client.calls == 4

    def test_a_look_gets_three_tries_then_counts_as_nobody_waiting(self) -> None:
        room = PrefectWaitingRoom("sms", client=lambda: BusyThenFine(busy=2))
        assert room.others_waiting()
        with pytest.raises(ServerBusy):
            PrefectWaitingRoom("sms", client=lambda: BusyThenFine(busy=3)).others_waiting()

    def test_unless_busy_gives_up_after_its_attempts_and_lets_other_errors_through(self) -> None:
        pauses: list[float] = []
        client = BusyThenFine(busy=10)
        with pytest.raises(ServerBusy):
            unless_busy(
                lambda: client.read_global_concurrency_limit_by_name("x"), attempts=4, pause=0.01,
                sleep=pauses.append,
            )
        assert client.calls == 4 and len(pauses) == 3 and all(0.005 <= p <= 0.015 for p in pauses)
        with pytest.raises(ValueError):
            unless_busy(lambda: int("x"), sleep=pauses.append)
        assert len(pauses) == 3, "no retry of anything but a busy server"
