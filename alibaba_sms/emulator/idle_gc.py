"""Full garbage collections while the emulator is idle, not while it counts calls.

The emulator keeps every request and message in its journal. After about 50,000 calls a full (generation 2)
collection walked all of them and held the process up for 32-46 ms (measured in `bench/bench_single.py`).
The calls that queued meanwhile were then stamped together, and the rolling-second limit counted them as a
burst: once, 2,001 calls in one second from a lane paced to 1,900, one of them throttled. A real gateway does
not stop to collect its garbage, so the emulator should not either.

So a thread looks once a second. While calls come in, it collects the young generations and freezes what
survived them (`gc.freeze`: mostly the journal, which a full pass would only walk again). Once three seconds
pass without a call, it unfreezes everything, collects in full (which frees any cyclic garbage among the
frozen objects), and freezes again. (One quiet second was not enough: with one batch call a second, the full
pass then often met the next call, stamped it late, and the call after it, on time, came less than a second
later: throttled.) Only the standalone emulator (`globe-sms emulator`, `serve_forever`) does this: it owns
its process. `gc.freeze` acts on the whole process, so an emulator inside a test process leaves the
collector alone.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

PERIOD_SECONDS = 1.0
IDLE_LOOKS = 3  # looks in a row without a call before a full collection


class IdleTimeCollector:
    """Runs the process's full garbage collections once `activity()` has not moved for `IDLE_LOOKS` looks.

    Args:
        activity: a counter that moves with the work (the emulator's answered calls).
        period: how often to look, in seconds.
    """

    def __init__(self, activity: Callable[[], int], period: float = PERIOD_SECONDS) -> None:
        self._activity = activity
        self._period = period
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = activity()
        self._quiet = 0  # looks in a row without a call
        self._busy_since_full = False
        self.full_collections = 0
        self.young_collections = 0

    def start(self) -> IdleTimeCollector:
        gc.collect()
        gc.freeze()
        self._thread = threading.Thread(target=self._run, name="emulator-idle-gc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)
        gc.unfreeze()

    def look(self) -> None:
        """One look: young generations while calls come in; in full once, after `IDLE_LOOKS` quiet looks."""
        now = self._activity()
        if now != self._last:
            self._last, self._quiet, self._busy_since_full = now, 0, True
            gc.collect(1)
            gc.freeze()
            self.young_collections += 1
            return
        self._quiet += 1
        if self._busy_since_full and self._quiet >= IDLE_LOOKS:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.full_collections += 1
            self._busy_since_full = False

    def _run(self) -> None:
        while not self._stopped.wait(self._period):
            self.look()
