"""Tests marked `alone` run with no other test beside them, also when pytest-xdist runs the suite in parallel.

`uv run pytest` runs three xdist workers (pyproject.toml: `-n 3 --dist loadgroup`; the browser modules
share one worker): most tests wait on servers, subprocesses and one-call-per-second pacing, so several at
once cut the suite's time on this 2-core machine. A few tests measure time itself: the gap between two
campaigns' calls at the gateway, a pacer's spacing, a timeout bound, a browser waiting for the UI. Beside
another test they would measure the other test's CPU use.
Those carry the `alone` marker (a module's `pytestmark`), and each test takes a lock around its setup, call
and teardown: an `alone` test exclusively, every other test shared. A turnstile lock in front keeps a waiting
`alone` test from being overtaken by a stream of shared ones. Without xdist (`-n 0`, `-p no:xdist`), nothing
runs beside anything and no lock is taken.

The locks are `fcntl.flock`s on two files named after xdist's `testrunuid`, in the temporary directory, so
that every worker of one run, and no other run, shares them.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def lock_paths(config: pytest.Config) -> tuple[Path, Path] | None:
    """The turnstile and the room lock of this xdist run, or None when not running under xdist."""
    workerinput = getattr(config, "workerinput", None)  # set by xdist on its workers (documented)
    if workerinput is None:
        return None
    run = workerinput["testrunuid"]
    folder = Path(tempfile.gettempdir())
    return folder / f"globe-sms-tests-{run}.turnstile", folder / f"globe-sms-tests-{run}.room"


@contextmanager
def held(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def turn(config: pytest.Config, *, alone: bool) -> Iterator[None]:
    """Hold the room for one test: exclusively when `alone`, shared otherwise."""
    paths = lock_paths(config)
    if paths is None:
        yield
        return
    turnstile, room = paths
    with room.open("a") as handle:
        with held(turnstile, fcntl.LOCK_EX):  # while an `alone` test waits here, no shared one gets in
            fcntl.flock(handle, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
