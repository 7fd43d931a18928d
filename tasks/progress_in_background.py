"""A Prefect progress artifact updated from a thread of its own, so that a busy Prefect server never holds up
the next batch.

Prefect's client retries a 503 (on a SQLite server: "database is locked") after sleeping 2 s, then 4 s...
(`globe_sms.pacing.raise_when_busy` explains why no setting avoids it). Updated inline between two batches,
one busy answer costs the campaign two seconds of its one-call-per-second pace, and a second campaign waiting
for the account's slot sees the first one take several turns in a row. Here the batch loop only records the
latest figure; a daemon thread sends it, skipping figures that a newer one replaced (the artifact shows the
latest anyway), and `close()` sends the last one before the run's summary is published.
"""

from __future__ import annotations

import contextvars
import logging
import threading

logger = logging.getLogger(__name__)


class ProgressInBackground:
    """Updates the progress artifact `artifact_id` with the latest `set()` value, off the caller's thread.

    Args:
        artifact_id: from `prefect.artifacts.create_progress_artifact`.
        close_timeout: how long `close()` waits for the last update.
    """

    def __init__(self, artifact_id: object, close_timeout: float = 10.0) -> None:
        self.artifact_id = artifact_id
        self.close_timeout = close_timeout
        self._latest: float | None = None
        self._sent: float | None = None
        self._closing = False
        self._wake = threading.Condition()
        context = contextvars.copy_context()  # Prefect's settings and client context travel with it
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="progress-artifact", daemon=True
        )
        self._thread.start()

    def set(self, percent: float) -> None:
        """Record the latest progress (0-100); returns at once."""
        with self._wake:
            self._latest = percent
            self._wake.notify()

    def _run(self) -> None:
        from prefect.artifacts import update_progress_artifact

        while True:
            with self._wake:
                while self._latest == self._sent and not self._closing:
                    self._wake.wait()
                if self._latest == self._sent and self._closing:
                    return
                value = self._latest
            try:
                update_progress_artifact(self.artifact_id, value)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - progress is a courtesy; the summary tells the outcome
                logger.debug("progress artifact %s not updated: %s", self.artifact_id, exc)
            with self._wake:
                self._sent = value

    @property
    def running(self) -> bool:
        """Whether the updating thread is still alive (False once `close()` returned in time)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Send the latest value (waiting at most `close_timeout`) and stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(self.close_timeout)

    def __enter__(self) -> ProgressInBackground:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
