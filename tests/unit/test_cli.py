"""The `globe-sms` command: exit statuses, dry run, and the summary it prints
(in-process, real Prefect server).

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from globe_sms.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


def test_bad_campaign_file_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign_id: NOT OK\nsource: {path: x.csv}\ntemplate: hi\n")
    result = runner.invoke(app, ["send", str(bad)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "campaign_id" in result.output


def test_missing_source_file_exits_2(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("campaign_id: c1\nsource: {path: nowhere.csv}\ntemplate: hi\n")
    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no such file" in result.output


def test_a_crash_never_prints_local_variables() -> None:
    """Typer's pretty tracebacks show locals by default, and a campaign's locals hold its ledger URL and
    credentials: both apps turn that off (a `typer.Typer` attribute, read by Typer when a command raises)."""
    from globe_sms.cli import app
    from globe_sms.cli_receipts import receipts_app

    assert app.pretty_exceptions_show_locals is False
    assert receipts_app.pretty_exceptions_show_locals is False


def test_ctrl_c_while_the_file_is_checked_exits_130_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C before any flow run exists (reading or preflighting the file): no traceback, no Typer
    "Aborted!", the interrupt status, and nothing sent."""
    from globe_sms.campaign import Campaign
    from globe_sms.cli import EXIT_INTERRUPTED

    def interrupted(*args: object, **kwargs: object) -> Campaign:
        raise KeyboardInterrupt

    monkeypatch.setattr(Campaign, "from_yaml", interrupted)
    file = tmp_path / "c.yaml"
    file.write_text("campaign_id: c1\nsource: {path: r.csv}\ntemplate: hi\n")
    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert "nothing was sent" in result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output
