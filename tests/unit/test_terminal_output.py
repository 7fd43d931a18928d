"""The terminal shows data, never interprets it (globe_sms/terminal.py): `globe-sms send` and `globe-sms
receipts` print CSV cells, headers, sample messages, paths and error messages literally, `[/oops]` included,
and do not crash on them.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_terminal_output.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from globe_sms import cli, cli_receipts
from globe_sms.cli import app
from globe_sms.terminal import plain, problem

runner = CliRunner()

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


class TestPlainAndProblem:
    def test_markup_and_emoji_codes_print_as_text(self) -> None:
        """`plain` and `problem` give rich nothing to interpret; a trailing backslash stays one backslash."""
        console = Console(record=True, width=200)
        for value in [*MARKUP, "ends with \\"]:
            console.print(plain(value))
            console.print(problem("error:", f"column {value!r} is missing"))
        text = console.export_text()
        for value in [*MARKUP, "ends with \\"]:
            assert f"{value}\n" in text and f"error: column {value!r} is missing\n" in text

    def test_a_plain_string_would_have_crashed(self) -> None:
        """The failure these helpers prevent: rich reads `[/oops]` as a closing tag."""
        from rich.errors import MarkupError

        with pytest.raises(MarkupError):
            Console(record=True).print("column [/oops]")


def test_receipts_report_prints_a_markup_campaign_id_verbatim(tmp_path: Path) -> None:
    """`receipts report` of a campaign id full of markup: no crash, the id printed as given."""
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    result = runner.invoke(app, ["receipts", "report", "[/oops][bold]", "--ledger", ledger])
    assert result.exit_code == 0, result.output
    assert "[/oops][bold]" in result.output
