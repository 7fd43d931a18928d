"""In-process progress listeners: the CLI draws a progress bar from the events the flow announces.

A deployment run has no listener and the announcements cost nothing. Listeners never see raw numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class SendProgress:
    """Where a sending run stands.

    `batches_total`/`batches_done` count what `unit` names: `batches` for the batch lane, `recipients` for
    `send_via: single` and `both` (whose lanes take recipients from one queue, not planned batches); the
    terminal labels its bar with it."""

    campaign_id: str
    batches_total: int
    batches_done: int
    recipients_total: int
    recipients_done: int
    calls_per_second: float
    unit: str = "batches"


Listener = Callable[[SendProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def announce(progress: SendProgress) -> None:
    """Tell every listener; a failing listener never breaks a send."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(progress)
        except Exception:  # noqa: BLE001 - display problems must not stop a campaign
            pass


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Register `listener` for the duration of the block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
