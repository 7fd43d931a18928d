"""The `globe-sms` command: exit statuses, dry run, and the summary it prints
(in-process, real Prefect server).

Here: the part that needs servers or processes; the pure part is in tests/unit/test_cli.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from globe_sms.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"
runner = CliRunner()


@pytest.fixture
def example_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example campaign in a scratch folder, so its ledger and rejects file land there."""
    for name in ("welcome.yaml", "welcome.csv", "prices.csv"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "welcome.yaml"


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_of_the_example_sends_nothing_and_exits_0(example_copy: Path) -> None:
    result = runner.invoke(app, ["send", str(example_copy), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "2,600" in result.output
    assert "accepted" in result.output
    assert not (example_copy.parent / ".data" / "ledger.db").exists() or "0" in result.output


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_run_exits_1(example_copy: Path) -> None:
    """An unreachable real endpoint fails the run (exit 1) without sending; rows stay pending."""
    text = example_copy.read_text().replace("endpoint: emulator", "endpoint: http://127.0.0.1:9")
    example_copy.write_text(text.replace("calls_per_second: 1.0", "calls_per_second: 20"))
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "testid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret"}
    result = runner.invoke(app, ["send", str(example_copy)], env=env)
    assert result.exit_code == 1, result.output
    assert "ConnectError" in result.output or "not sent" in result.output
    assert "testsecret" not in result.output
