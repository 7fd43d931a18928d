"""Where a campaign's files live, tried the way users do it: the CLI from several working directories, a
campaign without a file, and the leftovers of a run that was killed (its spool, its `submitting` rows).

Real Prefect server, real emulator on loopback, real SQLite ledgers; the unit tests of the path rules are in
tests/{unit,integration}/test_paths.py.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import app
from globe_sms.ledger import Ledger, RunOwner
from globe_sms.paths import default_ledger_url
from tasks.spool_owner import OWNER_FILE, STALE_SECONDS, SpoolOwner
from tests.emulator_fixtures import FLOW_RATE, StartEmulator

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).parents[2]
VALID = [
    "+85291234567", "+85291234568", "+85366123456", "+886912345678", "+6591234567", "+6591234568",
    "+447911123456", "+4915123456789", "+61412345678", "+60123456789",
]
OPTED_OUT = "+66812345678"
INVALID = ["+8613800138000", "hello"]
runner = CliRunner()


def write_campaign(
    folder: Path, server: EmulatorServer, campaign_id: str, rate: float = FLOW_RATE, **fields: Any
) -> Path:
    """A campaign folder as a user keeps one: the YAML with its list, price table and opt-outs beside it,
    every path in the YAML relative."""
    (folder / "lists").mkdir(parents=True, exist_ok=True)
    with (folder / "lists" / "recipients.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([number, f"Name{i}"] for i, number in enumerate([*VALID, OPTED_OUT, *INVALID]))
    (folder / "prices.csv").write_text((ROOT / "examples" / "prices.csv").read_text())
    (folder / "opt-outs.txt").write_text(f"{OPTED_OUT}\n")
    data: dict[str, Any] = {
        "campaign_id": campaign_id,
        "source": {"path": "lists/recipients.csv"},
        "template": "Hi {first_name}, welcome!",
        "sender_id": "GlobeSMS",
        "batch_size": 4,
        "price_table": "prices.csv",
        "validation": {"max_reject_share": 0.5, "suppression_file": "opt-outs.txt"},
        "gateway": {
            "endpoint": server.url, "calls_per_second": rate, "rate_limit_name": f"t-{campaign_id}"
        },
        **fields,
    }
    file = folder / "campaign.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file


def digits(numbers: list[str]) -> set[str]:
    return {number.lstrip("+") for number in numbers}


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize(
    ("fields", "ledger_at", "rejects_at"),
    [
        pytest.param({}, "default", "default", id="default-ledger-and-data-folder"),
        pytest.param(
            {"ledger": "sqlite:///state/ledger.db", "data_dir": "out"}, "state/ledger.db", "out",
            id="relative-ledger-and-data-folder",
        ),
    ],
)
def test_one_campaign_file_run_from_two_directories_sends_each_number_once(
    fields: dict[str, Any],
    ledger_at: str,
    rejects_at: str,
    tmp_path: Path,
    gateway: EmulatorServer,
    globe_sms_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`globe-sms send ../campaigns/campaign.yaml` from one directory, then from another: the second run
    finds the same ledger (sends nothing), the same list, price table and opt-outs, and rewrites the same
    rejects file; neither working directory gets a file."""
    campaigns = tmp_path / "campaigns"
    file = write_campaign(campaigns, gateway, "two-dirs", **fields)
    first_dir, second_dir = tmp_path / "home" / "ana", tmp_path / "srv" / "cron" / "jobs"
    first_dir.mkdir(parents=True)
    second_dir.mkdir(parents=True)
    data = globe_sms_data_dir if rejects_at == "default" else campaigns / rejects_at
    rejects = data / "two-dirs-rejects.csv"

    monkeypatch.chdir(first_dir)
    first = runner.invoke(app, ["send", os.path.relpath(file, first_dir)])
    assert first.exit_code == 0, first.output
    assert dict(gateway.state.accepted_numbers()) == dict.fromkeys(digits(VALID), 1)  # opted-out: not sent
    assert rejects.is_file()
    first_rejects = rejects.read_text()
    assert "estimated cost" in first.output and "suppressed" in first.output
    calls = len(gateway.state.requests("BatchSendMessageToGlobe"))

    rejects.unlink()
    monkeypatch.chdir(second_dir)
    second = runner.invoke(app, ["send", os.path.relpath(file, second_dir)])
    assert second.exit_code == 0, second.output
    assert len(gateway.state.requests("BatchSendMessageToGlobe")) == calls  # nothing sent twice
    assert max(gateway.state.accepted_numbers().values()) == 1
    assert "estimated cost" in second.output and "suppressed" in second.output
    assert rejects.read_text() == first_rejects  # the same place, the same rows
    assert files_under(first_dir) == files_under(second_dir) == set()

    url = default_ledger_url() if ledger_at == "default" else f"sqlite:///{campaigns / ledger_at}"
    with Ledger(url) as ledger:
        assert ledger.counts("two-dirs")["accepted"] == sum(ledger.counts("two-dirs").values()) == len(VALID)
    assert not (data / "spool").exists()


def test_a_campaign_without_a_file_resolves_against_the_working_directory_at_flow_start(
    tmp_path: Path, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign built in Python (as the UI form and a deployment's parameters are) with relative paths:
    they are read in the flow run's working directory (a deployment's is $GLOBE_SMS_HOME)."""
    home = tmp_path / "globe-sms-home"
    write_campaign(home, gateway, "no-file")
    campaign = Campaign.parse(
        {
            **yaml.safe_load((home / "campaign.yaml").read_text()),
            "ledger": "sqlite:///state/ledger.db",
            "data_dir": ".data",
        }
    )
    assert campaign.source.path == "lists/recipients.csv"  # type: ignore[union-attr]
    monkeypatch.chdir(home)
    summary = send_campaign(campaign)
    assert summary.accepted == len(VALID) and summary.rejected_by_reason.get("suppressed") == 1
    assert summary.estimated_cost is not None
    assert summary.rejects_file == str(home / ".data" / "no-file-rejects.csv")
    with Ledger(f"sqlite:///{home / 'state' / 'ledger.db'}") as ledger:
        assert ledger.counts("no-file")["accepted"] == len(VALID)

    monkeypatch.chdir(tmp_path)  # elsewhere, the same relative campaign means other files: it says which
    with pytest.raises(Exception, match=re.escape(str(tmp_path / "opt-outs.txt"))):
        send_campaign(campaign)


# --- the leftovers of a killed run -------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield child
    child.kill()
    child.wait()


def plant_spool(root: Path, name: str, owner: SpoolOwner | None, age_seconds: float = 0.0) -> Path:
    """A spool as a run leaves it: an owner file (or none) and a part holding phone numbers."""
    folder = root / name
    (folder / "messages").mkdir(parents=True)
    part = folder / "messages" / "part-00000.parquet"
    part.write_text(json.dumps(VALID))
    if owner is not None:
        owner.write(folder)
    when = time.time() - age_seconds
    for path in (part, folder / "messages", folder, *([folder / OWNER_FILE] if owner else [])):
        os.utime(path, (when, when))
    return folder


def test_a_run_removes_the_spools_of_crashed_runs_and_keeps_live_ones(
    tmp_path: Path, gateway: EmulatorServer, live_process: subprocess.Popen[bytes]
) -> None:
    """Spools on a shared data folder: a dead process's on this machine and a silent one from another
    machine are removed by the next run of another campaign; a live process's and a recent one from another
    machine are kept."""
    file = write_campaign(tmp_path / "c", gateway, "sweeper", data_dir=str(tmp_path / "shared"))
    root = tmp_path / "shared" / "spool"
    here = SpoolOwner.this_process()
    crashed = plant_spool(root, "crashed-1", SpoolOwner("me", dead_pid(), here.pid_scope, "t"))
    silent = plant_spool(root, "other-machine-1", SpoolOwner("far", 7, "boot/ns", "t"), STALE_SECONDS + 60)
    legacy = plant_spool(root, "before-owner-files-1", None, STALE_SECONDS + 60)
    live = plant_spool(root, "live-1", SpoolOwner("me", live_process.pid, here.pid_scope, "t"))
    busy_far = plant_spool(root, "other-machine-2", SpoolOwner("far", 7, "boot/ns", "t"), 60)
    # A live process whose heartbeat is old is still alive here: its spool stays.
    old_but_live = plant_spool(
        root, "live-2", SpoolOwner("me", live_process.pid, here.pid_scope, "t"), 60
    )

    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == 0, result.output
    assert not crashed.exists() and not silent.exists() and not legacy.exists()
    assert live.exists() and busy_far.exists() and old_but_live.exists()
    assert sorted(p.name for p in root.iterdir()) == ["live-1", "live-2", "other-machine-2"]


def test_a_killed_runs_spool_is_removed_by_the_next_run_of_another_campaign(
    tmp_path: Path, start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    """SIGKILL a `globe-sms send` mid-campaign: its spool (phone numbers) stays behind until another campaign
    runs on the same data folder; then the killed campaign's rerun sends the rest, none twice."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    slow = start_emulator(batch_calls_per_second=2.0)
    shared = tmp_path / "shared"
    killed_file = write_campaign(
        tmp_path / "killed", slow, "killed", rate=2.0, data_dir=str(shared), batch_size=1
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    child = subprocess.Popen(
        [sys.executable, "-m", "globe_sms.cli", "send", str(killed_file)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(slow.state.requests("BatchSendMessageToGlobe")) < 2:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never sent"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    left = list((shared / "spool").iterdir())
    assert len(left) == 1 and SpoolOwner.read(left[0]) is not None
    assert SpoolOwner.read(left[0]).pid == child.pid  # type: ignore[union-attr]

    other = write_campaign(tmp_path / "other", slow, "other", data_dir=str(shared))
    assert runner.invoke(app, ["send", str(other), "--dry-run"]).exit_code == 0
    assert not (shared / "spool").exists()

    sent_before = set(slow.state.accepted_numbers())
    rerun = runner.invoke(app, ["send", str(killed_file)])
    assert rerun.exit_code == 0, rerun.output
    numbers = slow.state.accepted_numbers()
    with Ledger(default_ledger_url()) as ledger:  # a batch killed in flight is unknown: not sent again
        unknown = set(ledger.rows("killed", statuses=["unknown"])["phone"].to_list())
    assert set(numbers) | unknown == digits(VALID) and max(numbers.values()) == 1
    assert sent_before < set(numbers)


def test_the_summary_counts_what_a_crashed_run_left_unknown(
    tmp_path: Path, gateway: EmulatorServer
) -> None:
    """A run crashed (on another machine, its lease expired) with a batch in flight: the next run says how
    many rows it turned unknown, and the ledger's unknown total for the campaign; a later run says the total
    again, but no longer counts them as its own."""
    file = write_campaign(tmp_path, gateway, "crashed", ledger="sqlite:///ledger.db")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    phones = sorted(digits(VALID))
    other = RunOwner("other-run", "flow run 'other-run' on host far, pid 7", 7, "boot/ns")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with Ledger(ledger_url, clock=lambda: hour_ago) as crashed:
        crashed.acquire_run_lease("crashed", other, 600)
        crashed.register("crashed", phones)
        crashed.mark_submitting("crashed", 1, phones[:3])

    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    assert "left unknown by an interrupted run 3" in lines
    assert "unknown in the ledger (all runs) 3" in lines
    assert len(gateway.state.accepted_numbers()) == len(VALID) - 3

    again = runner.invoke(app, ["send", str(file)])
    lines = [" ".join(line.replace("│", " ").split()) for line in again.output.splitlines()]
    assert "unknown in the ledger (all runs) 3" in lines
    assert not any(line.startswith("left unknown by an interrupted run") for line in lines)


def test_a_campaign_still_in_the_old_default_ledger_is_refused_until_it_is_named(
    tmp_path: Path, gateway: EmulatorServer, globe_sms_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the data folder, the default ledger was `.data/ledger.db` in the current directory. A user who
    upgrades and reruns a half-sent campaign from that directory must not send it all again: exit 2, nothing
    sent, until the campaign names the old ledger (then it resumes from it) or the file is moved."""
    file = write_campaign(tmp_path / "campaigns", gateway, "upgraded")
    work = tmp_path / "work"
    with Ledger.open(f"sqlite:///{work / '.data' / 'ledger.db'}") as old:
        old.register("upgraded", sorted(digits(VALID))[:3])  # what the old version had planned or sent
    monkeypatch.chdir(work)

    refused = runner.invoke(app, ["send", str(file)])
    assert refused.exit_code == 2, refused.output
    message = refused.output.replace("\n", "")  # rich folds long lines, paths included
    assert "upgraded has rows in" in message and str(work / ".data" / "ledger.db") in message
    assert str(globe_sms_data_dir / "ledger.db") in message
    assert not gateway.state.requests("BatchSendMessageToGlobe")

    other = write_campaign(tmp_path / "others", gateway, "brand-new")  # not in the old ledger: not refused
    assert runner.invoke(app, ["send", str(other), "--dry-run"]).exit_code == 0

    named = yaml.safe_load(file.read_text()) | {"ledger": f"sqlite:///{work / '.data' / 'ledger.db'}"}
    file.write_text(yaml.safe_dump(named, sort_keys=False))
    assert runner.invoke(app, ["send", str(file), "--dry-run"]).exit_code == 0
