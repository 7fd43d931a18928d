"""The standalone emulator's garbage collector: full passes once calls stop (alibaba_sms.emulator.idle_gc).

`gc.freeze` acts on this whole test process, so every test unfreezes at the end.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from alibaba_sms.emulator.idle_gc import IdleTimeCollector


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_busy_seconds_collect_young_objects_and_freeze_them_three_idle_seconds_collect_in_full_once() -> None:
    calls = [0]
    collector = IdleTimeCollector(lambda: calls[0])
    calls[0] = 1_900  # a busy second
    collector.look()
    assert (collector.young_collections, collector.full_collections) == (1, 0)
    assert gc.get_freeze_count() > 0, "what survived is frozen: a full pass will not walk it"
    collector.look()
    collector.look()
    assert collector.full_collections == 0, "two quiet seconds: one call a second may still be coming"
    collector.look()  # the third quiet second: one full pass
    assert (collector.young_collections, collector.full_collections) == (1, 1)
    collector.look()  # still idle: nothing more to do
    assert collector.full_collections == 1


def test_one_call_a_second_never_meets_a_full_pass() -> None:
    """The batch lane's pace: a call in every other look at worst never leaves three quiet looks in a row."""
    calls = [0]
    collector = IdleTimeCollector(lambda: calls[0])
    for second in range(20):
        if second % 2 == 0:
            calls[0] += 1
        collector.look()
    assert collector.full_collections == 0 and collector.young_collections == 10


def test_a_full_pass_frees_cyclic_garbage_that_was_frozen() -> None:
    """Freezing never leaks for good: an object frozen while alive, then left in a cycle, is freed by the
    next idle second's full pass."""
    import weakref

    class Node:
        pass

    calls = [0]
    collector = IdleTimeCollector(lambda: calls[0])
    node = Node()
    node.self = node  # a cycle: only the collector frees it
    alive = weakref.ref(node)
    calls[0] = 1
    collector.look()  # busy: the node survives and is frozen
    del node
    gc.collect()
    assert alive() is not None, "frozen: a normal collection does not reach it"
    for _ in range(3):
        collector.look()  # idle: unfreeze, collect in full
    assert alive() is None


def test_start_and_stop_leave_the_process_unfrozen() -> None:
    collector = IdleTimeCollector(lambda: 0, period=0.01).start()
    assert gc.get_freeze_count() > 0
    collector.stop()
    assert gc.get_freeze_count() == 0
