"""A clean terminal (globe_sms/cli_run_log.py): `globe-sms send` run as a user runs it, in a subprocess with
no PREFECT_API_URL, so that Prefect starts its temporary server, prints no traceback; a failing run prints
one error line with the path of a log file that holds the traceback.

The subprocesses get a fresh PREFECT_HOME and none of the PREFECT_* settings tests/conftest.py sets for the
test session (analytics off among them): what they print is what a user's first `globe-sms send` prints.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_clean_terminal.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GLOBE_SMS = Path(sys.executable).with_name("globe-sms")  # the console script `uv run globe-sms` runs

pytestmark = pytest.mark.timeout(240)


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no Prefect setting at all (no PREFECT_API_URL), a fresh Prefect home."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and k not in ("DO_NOT_TRACK",) and "PROXY" not in k.upper()
        and not k.startswith("ALIBABA_")
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        GLOBE_SMS_DATA_DIR=str(tmp_path / "data"),
        NO_PROXY="127.0.0.1,localhost",
        COLUMNS="100",
        **extra,
    )
    return env


def send(campaign: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`globe-sms send CAMPAIGN` in the campaign's folder; stdout and stderr together, as a terminal shows."""
    return subprocess.run(
        [str(GLOBE_SMS), "send", str(campaign)], cwd=campaign.parent, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=200,
    )


@pytest.fixture
def welcome(tmp_path: Path) -> Path:
    """examples/welcome.yaml with its list and price table, copied into a scratch folder."""
    folder = tmp_path / "campaign"
    folder.mkdir()
    for name in ("welcome.yaml", "welcome.csv", "prices.csv"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder / "welcome.yaml"


def test_a_normal_send_prints_no_traceback(welcome: Path, tmp_path: Path) -> None:
    """The example, sent through the embedded emulator on Prefect's temporary server: summary, no noise."""
    done = send(welcome, user_env(tmp_path))
    assert done.returncode == 0, done.stdout
    assert "Starting temporary server" in done.stdout  # really Prefect's temporary server
    assert "accepted" in done.stdout and "2,600" in done.stdout
    for noise in ("Traceback", "database is locked", "telemetry"):
        assert noise not in done.stdout, done.stdout
    logs = list((welcome.parent / ".data" / "logs").glob("send-welcome-2026-11-*.log"))
    assert len(logs) == 1 and "batch 6 of welcome-2026-11" in logs[0].read_text()  # the run's whole log


def test_a_failing_send_prints_one_line_and_the_path_of_its_details(welcome: Path, tmp_path: Path) -> None:
    """An unreachable endpoint: exit 1, one `failed:` line naming the log file; the traceback is in there."""
    unreachable = "endpoint: http://127.0.0.1:9\n  max_attempts: 1"
    text = welcome.read_text().replace("endpoint: emulator", unreachable)
    welcome.write_text(text.replace("emulator_receipts: true", "emulator_receipts: false"))
    key = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "testid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret"}
    env = user_env(tmp_path, **key)
    done = send(welcome, env)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stdout, done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, done.stdout
    found = re.search(r"\(details: (.+\.log)\)$", failed[0])
    assert found, failed[0]
    details = Path(found.group(1))
    assert details.parent == welcome.parent / ".data" / "logs"
    log = details.read_text()
    assert "Traceback (most recent call last)" in log and "globe-sms send failed" in log
    assert "testsecret" not in log + done.stdout
