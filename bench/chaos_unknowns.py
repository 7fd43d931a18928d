"""The `unknown` rows of a chaos run by reason, split into delivered and not delivered.

Reads every scenario folder that `bench/chaos.py --workdir DIR` left behind: the ledger's `error_code` of each
`unknown` row, against the emulator's journal (one `message` line per number the gateway accepted).

    uv run python bench/chaos_unknowns.py DIR
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.check import journal_messages  # noqa: E402


def unknowns_by_reason(workdir: Path) -> Counter[tuple[str, bool]]:
    """(error code, delivered) -> rows, over every `seed-*` scenario folder of `workdir`."""
    out: Counter[tuple[str, bool]] = Counter()
    for folder in sorted(workdir.glob("seed-*")):
        campaign_id = json.loads((folder / "campaign.json").read_text())["campaign_id"]
        delivered = Counter(str(m["to"]) for m in journal_messages(folder / "journal.jsonl", campaign_id))
        with sqlite3.connect(folder / "ledger.db") as db:
            rows = db.execute(
                "SELECT phone, error_code FROM send_ledger WHERE campaign_id = ? AND status = 'unknown'",
                (campaign_id,),
            ).fetchall()
        for phone, code in rows:
            out[(code, bool(delivered.get(phone)))] += 1
    return out


def main() -> None:
    counts = unknowns_by_reason(Path(sys.argv[1]))
    print("| reason | delivered | not delivered |\n|---|---|---|")  # noqa: T201 - a benchmark's output
    for code in sorted({code for code, _ in counts}):
        print(f"| `{code}` | {counts[(code, True)]} | {counts[(code, False)]} |")  # noqa: T201


if __name__ == "__main__":
    main()
