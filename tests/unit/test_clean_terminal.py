"""A clean terminal (globe_sms/cli_run_log.py): `globe-sms send` run as a user runs it, in a subprocess with
no PREFECT_API_URL, so that Prefect starts its temporary server, prints no traceback; a failing run prints
one error line with the path of a log file that holds the traceback.

The subprocesses get a fresh PREFECT_HOME and none of the PREFECT_* settings tests/conftest.py sets for the
test session (analytics off among them): what they print is what a user's first `globe-sms send` prints.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_clean_terminal.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from globe_sms.cli_run_log import WithoutTraceback, log_file, quiet_temporary_server

GLOBE_SMS = Path(sys.executable).with_name("globe-sms")  # the console script `uv run globe-sms` runs

pytestmark = pytest.mark.timeout(240)


def send(campaign: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`globe-sms send CAMPAIGN` in the campaign's folder; stdout and stderr together, as a terminal shows."""
    return subprocess.run(
        [str(GLOBE_SMS), "send", str(campaign)], cwd=campaign.parent, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=200,
    )


def test_a_users_own_analytics_setting_wins() -> None:
    """Telemetry is turned off only where the user has not chosen."""
    env: dict[str, str] = {}
    quiet_temporary_server(env)
    assert env == {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    quiet_temporary_server(env)
    assert env == {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}


def test_the_terminal_loses_the_traceback_and_the_file_keeps_it() -> None:
    """One record, two handlers: the console formatter drops the traceback without taking it from the file."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "it failed", None, sys.exc_info())
    terminal = WithoutTraceback(logging.Formatter("%(message)s")).format(record)
    file = logging.Formatter("%(message)s").format(record)
    assert terminal == "it failed"
    assert "Traceback" in file and "ValueError: boom" in file
    assert WithoutTraceback(logging.Formatter("%(message)s")).format(record) == "it failed"  # exc_text cached


def test_log_files_never_overwrite_each_other(tmp_path: Path) -> None:
    """Two runs in the same second get two files; an odd campaign id makes a plain file name."""
    first = log_file(tmp_path, "a/b c")
    first.parent.mkdir(parents=True)
    first.write_text("x")
    second = log_file(tmp_path, "a/b c")
    assert first != second and first.name.startswith("send-a_b_c-") and second.name.endswith("-2.log")
