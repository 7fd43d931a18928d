"""Files meant for spreadsheets are inert (globe_sms/spreadsheets.py): unit tests of the neutraliser, a real
`globe-sms send` whose rejects file is checked cell by cell, and (where LibreOffice is installed) the rejects
file opened by a real spreadsheet with formula evaluation on. Masking is tested in
tests/unit/test_masking.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_spreadsheet_safety.py.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from globe_sms.cli import app
from globe_sms.spreadsheets import (
    FORMULA_STARTS,
)

runner = CliRunner()

HYPERLINK = '=HYPERLINK("http://x","y")'
ATTACKS = [HYPERLINK, "@SUM(1+1)", "-cmd|' /C calc'!A0", "+1+1", "\t=1+1", "\r=1+1"]
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def is_inert(cell: str) -> bool:
    """A CSV cell no spreadsheet reads as a formula: no formula start, or a plain number."""
    return not cell.startswith(FORMULA_STARTS) or PLAIN_NUMBER.fullmatch(cell) is not None


# --- a real campaign -------------------------------------------------------------------------------------

CAMPAIGN = """\
campaign_id: inert-rejects
source:
  path: people.csv
  phone_column: phone
template: "Hi {first_name}, {note}"
gateway:
  endpoint: emulator
  calls_per_second: 20
validation:
  max_reject_share: 1.0
data_dir: .data
"""


def write_campaign(folder: Path) -> Path:
    """A campaign whose list holds formula cells in the phone column, in other columns and in the header."""
    rows = [
        ["phone", "first_name", "note", "=cmd", "@SUM(1)"],
        ["+85261234567", "Ann", "hello", "a", "b"],
        ["+85261234568", "Bo", "hello", "a", "b"],
        *([attack, "Eve", attack, attack, "x"] for attack in ATTACKS),
        ["[/oops]", "[/oops]", "[/oops]", "[/oops]", "x"],
        ["+8613800138000", "Hu", "-2+3", "+1+1", "x"],  # mainland China: rejected, its phone a plain number
        ["+85261234567", "Dup", HYPERLINK, "@SUM(1+1)", "x"],  # duplicate of row 1
    ]
    with (folder / "people.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (folder / "campaign.yaml").write_text(CAMPAIGN)
    return folder / "campaign.yaml"


@pytest.fixture
def rejects_of_a_real_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> tuple[Path, str]:
    """Send the campaign through the embedded emulator with `globe-sms send`; its rejects file and output."""
    monkeypatch.chdir(tmp_path)
    campaign = write_campaign(tmp_path)
    result = runner.invoke(app, ["send", str(campaign)])
    assert result.exit_code == 0, result.output
    files = list(tmp_path.rglob("inert-rejects-rejects.csv"))
    assert len(files) == 1, result.output
    return files[0], result.output


def test_a_sent_campaign_writes_a_rejects_file_with_no_live_formula(
    rejects_of_a_real_send: tuple[Path, str],
) -> None:
    """Formula cells (phone, other columns, headers) come back with a `'`; phones that are numbers do not."""
    path, output = rejects_of_a_real_send
    assert "accepted" in output
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    header, body = rows[0], rows[1:]
    assert header[:5] == ["phone", "first_name", "note", "'=cmd", "'@SUM(1)"]
    live = [cell for row in rows for cell in row if not is_inert(cell)]
    assert live == []
    assert len(body) == len(ATTACKS) + 3  # the attacks, [/oops], mainland China, the duplicate
    by_phone = {row[0]: row for row in body}
    for attack in ATTACKS:
        row = by_phone["'" + attack]  # the cell as it was, behind a `'`
        assert row[2] == "'" + attack and row[3] == "'" + attack
    assert by_phone["[/oops]"][:4] == ["[/oops]", "[/oops]", "[/oops]", "[/oops]"]
    mainland = by_phone["+8613800138000"]  # readable: a number, not an injection
    assert mainland[2:4] == ["'-2+3", "'+1+1"]
    duplicate = by_phone["+85261234567"]
    assert duplicate[2:4] == ["'" + HYPERLINK, "'@SUM(1+1)"]


# --- a real spreadsheet ------------------------------------------------------------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
# CSV import options: comma, double quote, UTF-8, from line 1, ..., token 13 `true` = evaluate formulas (the
# way Excel opens a CSV; LibreOffice asks). See LibreOffice's "Filter Options for the CSV Filter".
CSV_FILTER = "CSV:44,34,76,1,,0,false,true,false,false,false,-1,true"


def open_in_libreoffice(csv_path: Path, workdir: Path) -> list[list[tuple[str | None, str | None, str]]]:
    """A CSV converted to a flat ODS sheet, formulas evaluated: (formula, value type, text) of each cell."""
    profile = workdir / "lo-profile"
    subprocess.run(
        [
            str(SOFFICE), "--headless", f"-env:UserInstallation={profile.as_uri()}",
            f"--infilter={CSV_FILTER}", "--convert-to", "fods", "--outdir", str(workdir), str(csv_path),
        ],
        check=True, capture_output=True, timeout=180,
    )
    tree = ET.parse(workdir / (csv_path.stem + ".fods"))
    return [
        [
            (
                cell.get(f"{{{TABLE}}}formula"),
                cell.get(f"{{{OFFICE}}}value-type"),
                "".join(cell.itertext()).strip(),
            )
            for cell in row.findall(f"{{{TABLE}}}table-cell")
        ]
        for row in tree.iter(f"{{{TABLE}}}table-row")
    ]


@pytest.mark.skipif(SOFFICE is None, reason="no LibreOffice (apt-get install libreoffice-calc-nogui)")
def test_libreoffice_finds_no_formula_in_the_rejects_file(
    rejects_of_a_real_send: tuple[Path, str], tmp_path: Path
) -> None:
    """Opened with formula evaluation on, the source list has live formulas and the rejects file none."""
    path, _ = rejects_of_a_real_send
    source = open_in_libreoffice(tmp_path / "people.csv", tmp_path / "source")
    assert any(formula for row in source for formula, _, _ in row)  # the check can see a formula
    sheet = open_in_libreoffice(path, tmp_path / "rejects")
    assert [cell for row in sheet for cell in row if cell[0]] == []
    phones = {row[0][2]: row[0][1] for row in sheet[1:]}
    assert phones["8613800138000"] == "float"  # `+8613800138000`: a number, every digit shown
    assert phones["'" + HYPERLINK] == "string"
