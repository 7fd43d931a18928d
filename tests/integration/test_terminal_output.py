"""The terminal shows data, never interprets it (globe_sms/terminal.py): `globe-sms send` and `globe-sms
receipts` print CSV cells, headers, sample messages, paths and error messages literally, `[/oops]` included,
and do not crash on them.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_terminal_output.py.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from globe_sms import cli, cli_receipts
from globe_sms.cli import EXIT_BAD_INPUT, app

runner = CliRunner()

CAMPAIGN = """\
campaign_id: inert-terminal
source:
  path: people.csv
  phone_column: phone
template: "Hi {first_name}"
gateway:
  endpoint: emulator
  calls_per_second: 20
validation:
  max_reject_share: 1.0
"""

MARKUP = ["[bold]x[/bold]", "[/oops]", "[red]r", ":thumbs_up: [link=http://x]y[/link]"]


@pytest.fixture(autouse=True)
def wide_consoles() -> Iterator[None]:
    """Wide enough that no cell is wrapped, so the literal text can be looked for in the output."""
    consoles = (cli.console, cli_receipts.console)
    for console in consoles:
        console.width = 400
    yield
    for console in consoles:
        console.width = None  # type: ignore[assignment] - back to detecting the terminal's width


def campaign_in(folder: Path, *, header: list[str] | None = None, template: str = "Hi {first_name}") -> Path:
    """A campaign in `folder`; its list has markup in cells (and in a header unless `header` is given).

    (No `[` in any path: a path with `[...]` in it is read as a glob, by globe-sms and by polars.)
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        header or ["phone", "first_name", "[/oops]"],
        *([f"+8526123456{n}", name, "[/oops]"] for n, name in enumerate(MARKUP)),
        ["[/oops]", "Bo", "x"],  # rejected: letters
    ]
    with (folder / "people.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (folder / "campaign.yaml").write_text(CAMPAIGN.replace('"Hi {first_name}"', f'"{template}"'))
    return folder / "campaign.yaml"


@pytest.mark.usefixtures("prefect_server")
class TestSendPrintsData:
    def test_dry_run_shows_sample_messages_verbatim(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Sample messages rendered from cells full of markup print literally: no emoji, no link, no crash."""
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(app, ["send", str(campaign_in(tmp_path / "c")), "--dry-run"])
        assert result.exit_code == 0, result.output
        for value in MARKUP:
            assert f"Hi {value}" in result.output
        assert "rejected: letters" in result.output

    def test_a_normal_send_with_markup_in_cells_and_header_ends_well(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real send of the same list through the emulator: every valid row accepted, summary printed."""
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(app, ["send", str(campaign_in(tmp_path / "c"))])
        assert result.exit_code == 0, result.output
        summary = {
            line.strip("│ ").split("│")[0].strip(): line.strip("│ ").split("│")[-1].strip()
            for line in result.output.splitlines()
            if line.count("│") == 3
        }
        assert summary["accepted"] == str(len(MARKUP)) and summary["rejected"] == "1", result.output
        assert "MarkupError" not in result.output

    def test_an_error_quoting_a_markup_header_is_printed_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A template placeholder that is not a column: exit 2, the columns `[/oops]` and `[bold]b` listed."""
        monkeypatch.chdir(tmp_path)
        header = ["phone", "first_name", "[/oops]", "[bold]b"]
        campaign = campaign_in(tmp_path / "c", header=header, template="Hi {nope}")
        result = runner.invoke(app, ["send", str(campaign), "--dry-run"])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "nope" in result.output and "[/oops]" in result.output and "[bold]b" in result.output

    def test_a_missing_phone_column_named_in_markup_is_printed_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The source error lists the header's columns, `[/oops]` among them, and exits 2."""
        monkeypatch.chdir(tmp_path)
        campaign = campaign_in(tmp_path / "c", header=["[/oops]", "first_name", "[bold]b"])
        result = runner.invoke(app, ["send", str(campaign), "--dry-run"])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "[/oops]" in result.output and "[bold]b" in result.output
