"""tests/alone.py: under xdist an `alone` test runs with no test beside it; shared tests run together."""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

from tests.alone import turn


def worker_config() -> Any:
    """What `turn` reads of an xdist worker's config (`workerinput`), for a run of its own."""
    return SimpleNamespace(workerinput={"workerid": "gw0", "testrunuid": uuid.uuid4().hex})


def run_in_thread(config: Any, alone: bool, log: list[str], name: str, hold: float) -> threading.Thread:
    def body() -> None:
        with turn(config, alone=alone):
            log.append(f"{name} in")
            time.sleep(hold)
            log.append(f"{name} out")

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def test_shared_tests_overlap_and_an_alone_test_waits_for_them_then_runs_by_itself() -> None:
    config, log = worker_config(), []
    first = run_in_thread(config, False, log, "a", 0.3)
    second = run_in_thread(config, False, log, "b", 0.3)
    time.sleep(0.1)
    assert log[:2] == ["a in", "b in"] or log[:2] == ["b in", "a in"], "two shared tests run together"
    lone = run_in_thread(config, True, log, "alone", 0.3)
    time.sleep(0.05)
    late = run_in_thread(config, False, log, "late", 0.0)  # arrives while the alone test waits: goes after it
    for thread in (first, second, lone, late):
        thread.join(5)
    assert log.index("alone in") > max(log.index("a out"), log.index("b out"))
    assert log.index("alone out") == log.index("alone in") + 1, log
    assert log.index("late in") > log.index("alone out"), "the alone test was not overtaken"


def test_without_xdist_nothing_is_locked() -> None:
    log: list[str] = []
    plain = SimpleNamespace()  # no `workerinput`: not an xdist worker
    threads = [run_in_thread(plain, True, log, name, 0.2) for name in ("x", "y")]
    time.sleep(0.1)
    assert sorted(log) == ["x in", "y in"]
    for thread in threads:
        thread.join(5)
