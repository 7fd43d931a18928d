"""Limits across campaigns, in one run: a frequency cap, a daily limit, a rerun, and a retention purge.

    uv run python examples/guardrails_demo.py [FOLDER]

In FOLDER (default: a new temporary folder) it writes three recipient lists and runs, through the embedded
emulator and one SQLite ledger (FOLDER/ledger.db):

1. campaign A (MKT) to 100 numbers: 100 sent;
2. campaign B (MKT, `frequency_cap: {max_messages: 1, per: 24h, message_types: [MKT]}`) to 150 numbers, A's
   100 among them: the 50 others sent, A's 100 skipped (`skipped`, reason `frequency_cap`);
3. campaign C (`gateway.daily_limit: 200`) to 150 new numbers: A and B already used 150 of today's 200, so
   50 are sent and 100 stay pending, "deferred 100 until <midnight>";
4. C again, the same day: nothing more is sent;
5. `globe-sms ledger purge --older-than 0h` (a demo retention key): A's and B's numbers leave the ledger,
   replaced by a keyed hash; C is not finished (100 pending), so it keeps them;
6. campaign D (MKT, the same cap) to A's 100 numbers: all 100 skipped, the cap still sees the purged sends.

Each step prints its plan table (what every limit does to the run). Needs a Prefect API (a temporary one
starts by itself when none is configured).
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_KEY = "demo-retention-key-not-for-production"
CAP = {"max_messages": 1, "per": "24h", "message_types": ["MKT"]}


def write_list(path: Path, first: int, count: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([f"+{first + i}", f"Friend{i}"] for i in range(count))
    return path


def run_demo(folder: Path, endpoint: str = "emulator", show: Any = print) -> dict[str, Any]:  # noqa: T201
    """Run the six steps in `folder`; returns each step's summary (`CampaignSummary`, purge output)."""
    from typer.testing import CliRunner

    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign
    from globe_sms.cli import app

    folder.mkdir(parents=True, exist_ok=True)
    ledger = f"sqlite:///{folder / 'ledger.db'}"
    a_list = write_list(folder / "a.csv", 6_591_000_000, 100)
    b_list = folder / "b.csv"
    b_list.write_text(a_list.read_text() + "".join(f"+{6_592_000_000 + i},Other{i}\n" for i in range(50)))
    c_list = write_list(folder / "c.csv", 6_593_000_000, 150)

    def campaign(campaign_id: str, source: Path, **extra: Any) -> Campaign:
        gateway = {
            "endpoint": endpoint,
            "calls_per_second": 20.0,
            "account": "demo",
            **extra.pop("gateway", {}),
        }
        return Campaign.parse(
            {
                "campaign_id": campaign_id,
                "source": {"path": str(source)},
                "template": "Hi {first_name}, our spring sale starts today!",
                "message_type": "MKT",
                "sender_id": "GlobeSMS",
                "batch_size": 50,
                "ledger": ledger,
                "gateway": gateway,
                **extra,
            }
        )

    results: dict[str, Any] = {}

    def step(name: str, summary: Any) -> None:
        results[name] = summary
        show(
            f"\n== {name}: sent {summary.accepted}, skipped by the cap {summary.skipped_frequency_cap}, "
            f"{summary.volume_deferral_text or 'nothing deferred'}"
        )
        if summary.plan_table is not None:
            show(summary.plan_table.to_markdown())

    step("A", send_campaign(campaign("demo-a", a_list)))
    step("B", send_campaign(campaign("demo-b", b_list, frequency_cap=CAP)))
    c = campaign("demo-c", c_list, gateway={"daily_limit": 200})
    step("C", send_campaign(c))
    step("C again", send_campaign(c))
    os.environ.setdefault("GLOBE_SMS_RETENTION_KEY", DEMO_KEY)
    purged = CliRunner().invoke(app, ["ledger", "purge", ledger, "--older-than", "0h"])
    results["purge"] = purged.output
    show("\n== purge\n" + purged.output)
    step("D", send_campaign(campaign("demo-d", a_list, frequency_cap=CAP)))
    return results


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="globe-sms-guardrails-"))
    run_demo(where)
    print(f"\nledger and lists in {where}")  # noqa: T201
