"""A clean terminal for `globe-sms send`: a quiet temporary Prefect server, and tracebacks in a log file.

Without `PREFECT_API_URL`, Prefect runs the flow against a temporary server it starts in a subprocess. That
server's telemetry service phones Prefect at start-up: offline it logs `Failed to send telemetry`, and on a
busy SQLite database it prints a `database is locked` traceback. `temporary_server_settings` turns telemetry
off (`PREFECT_SERVER_ANALYTICS_ENABLED=false`, Prefect's public setting) unless the user set it, and gives a
first start (a new database: migrations) 120 s instead of 20 on a busy machine. Everything the CLI uses (rate
limits, artifacts, events, logs) stays on; Prefect already leaves the UI out of its temporary server. Nothing
changes with a real server (`PREFECT_API_URL`), which reads its own settings.

`run_log` keeps the whole log of one run, tracebacks included, in a file under the campaign's data folder
(`<data folder>/logs/send-<campaign>-<UTC time>.log`), and for the run's duration shows log records on the
terminal without their tracebacks: an error is one line there, and the CLI prints where its details are.

    with temporary_server_settings(), run_log(campaign.data_folder, campaign.campaign_id) as log:
        ...
        log.record(exc)                           # the CLI's own view of a failure, traceback in the file
        console.print(f"failed: {exc} (details: {log.path})")
"""

from __future__ import annotations

import logging
import os
import tempfile
import traceback
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Prefect's own settings (https://docs.prefect.io/v3/api-ref/settings-ref), set only if the user has not.
TEMPORARY_SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the telemetry service: network calls, DB writes at start
}
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_SECONDS = 120  # Prefect's 20 s is too short for a first start (migrations) on a busy machine
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s - %(message)s"


def quiet_temporary_server(environ: MutableMapping[str, str] | None = None) -> None:
    """Turn off what Prefect's temporary server does not need for a CLI run (telemetry), unless set.

    Prefect starts its temporary server as a subprocess with this process's environment, so setting the
    variables here, before the first flow run, is enough; a user's own value (environment or profile) wins.
    """
    env = os.environ if environ is None else environ
    for name, value in TEMPORARY_SERVER_SETTINGS.items():
        env.setdefault(name, value)


@contextmanager
def temporary_server_settings() -> Iterator[None]:
    """`quiet_temporary_server`, and a start-up timeout long enough for a first start, for the block.

    The timeout is read by this process when it starts the server, from Prefect's settings context, so it is
    raised with `prefect.settings.temporary_settings` (unless the environment sets it).
    """
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    quiet_temporary_server()
    if STARTUP_TIMEOUT_ENV in os.environ:
        yield
        return
    timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), STARTUP_TIMEOUT_SECONDS)
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: timeout}):
        yield


class WithoutTraceback(logging.Formatter):
    """Format a record with another formatter, leaving out its traceback and stack (the file has them)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.exc_text or record.stack_info):
            return self.inner.format(record)
        bare = logging.makeLogRecord(record.__dict__)  # a copy: other handlers still get the traceback
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


@dataclass
class RunLog:
    """The log file of one run; `record` adds a failure with its traceback to it (not to the terminal)."""

    path: Path
    handler: logging.Handler

    def record(self, exc: BaseException, what: str = "globe-sms send failed") -> None:
        """Write `what` and the traceback of `exc` to the file."""
        lines = "".join(traceback.format_exception(exc)).rstrip()
        message = f"{what}\n{lines}"
        record = logging.LogRecord("globe_sms.cli", logging.ERROR, __file__, 0, message, None, None)
        self.handler.handle(record)


def log_file(folder: Path, name: str, now: datetime | None = None) -> Path:
    """`<folder>/logs/send-<name>-<YYYYmmddTHHMMSSZ>.log`; a second one in the same second gets `-2`, ..."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    base = folder / "logs" / f"send-{safe}-{stamp}"
    path, n = base.with_suffix(".log"), 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}.log")
    return path


def _console_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal: Prefect's console handler, on the root logger."""
    from prefect.logging.handlers import PrefectConsoleHandler  # importing prefect also configures logging

    return [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]


@contextmanager
def run_log(folder: Path, name: str) -> Iterator[RunLog]:
    """Log everything of the run (INFO and up, tracebacks included) to a new file; the terminal shows the
    same records without tracebacks. Both are put back as they were afterwards."""
    try:
        path = log_file(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:  # a data folder we cannot write to must not stop the run: the temp folder, then
        path = log_file(Path(tempfile.gettempdir()) / "globe-sms", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    consoles = {console: console.formatter for console in _console_handlers()}
    root = logging.getLogger()
    root.addHandler(handler)
    for console, formatter in consoles.items():
        console.setFormatter(WithoutTraceback(formatter))
    try:
        yield RunLog(path, handler)
    finally:
        for console, formatter in consoles.items():
            console.setFormatter(formatter)  # type: ignore[arg-type] - None is what it was
        root.removeHandler(handler)
        handler.close()
