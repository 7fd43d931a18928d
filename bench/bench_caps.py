"""Benchmark: a frequency cap on a 1M-recipient plan against a 10M-row ledger (SQLite).

Usage:
    uv run python bench/bench_caps.py [--rows 10000000] [--candidates 1000000] [--json PATH]

In a temporary folder (deleted afterwards) it creates a ledger at the head revision and fills `send_ledger`
with `--rows` rows of earlier campaigns (100,000 rows each; numbers drawn from a population of 5M Singapore
mobiles, so a number appears in about `rows / 5M` campaigns; sent over the last 10 days; 90% accepted, 5%
unknown, 5% failed; half MKT, half NOTIFY). The rows go in with the indexes dropped and the indexes are built
afterwards (timed apart: that is what the ledger's indexes cost at this size). Then, in this process:

1. **baseline: register** `--candidates` numbers (half of them in the population, half new) as a new
   campaign's `pending` rows (`Ledger.register`, 50,000 at a time): what a campaign's first run does anyway;
2. **cap**: `tasks.limits.cap_pending` with `frequency_cap: {max_messages: 1, per: 7d, message_types: [MKT]}`:
   reads the campaign's pending numbers, counts each one's MKT messages of the last 7 days in other campaigns
   (`globe_sms.ledger.caps.sent_counts`, through `ix_send_ledger_phone_submitted`), and skips the capped ones.

The figure is the ratio cap / register, both measured in this run. `EXPLAIN QUERY PLAN` of the count query
is recorded to show that it probes the index per number rather than scanning the ledger. The load average
(`/proc/loadavg`) is recorded before and after: the machine is shared, so times vary with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POPULATION = 5_000_000
PER_CAMPAIGN = 100_000
FIRST = 6_580_000_000  # Singapore mobiles 8xxxxxxx
NEW = 6_590_000_000  # Singapore mobiles 9xxxxxxx, in no earlier campaign


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def fill(path: Path, rows: int, now: datetime) -> dict[str, float]:
    """`rows` earlier sends, inserted with the indexes dropped, then the indexes built again."""
    db = sqlite3.connect(path)
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'index' AND tbl_name = 'send_ledger' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    start = time.perf_counter()
    ten_days = 10 * 86400
    t0 = (now - timedelta(days=10)).replace(tzinfo=None)
    # One statement: a recursive counter; i -> campaign i / PER_CAMPAIGN, number (i * 7919) % POPULATION (a
    # bijection over POPULATION consecutive i, so a campaign never has a number twice).
    db.execute(
        f"""
        INSERT INTO send_ledger (campaign_id, phone, country, status, batch_no, message_id, attempts,
                                 created_at, updated_at, submitted_at, message_type)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {rows}),
        t(i, ts) AS (
            SELECT i, strftime('%Y-%m-%d %H:%M:%f', '{t0:%Y-%m-%d %H:%M:%S}',
                               '+' || ((i * 13) % {ten_days}) || ' seconds')
            FROM n
        )
        SELECT 'history-' || (i / {PER_CAMPAIGN}),
               CAST({FIRST} + (i * 7919) % {POPULATION} AS TEXT),
               'SG',
               CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 20 = 1 THEN 'unknown' ELSE 'accepted' END,
               (i % {PER_CAMPAIGN}) / 1000 + 1,
               'm' || i,
               1,
               ts, ts, ts,
               CASE WHEN (i / {PER_CAMPAIGN}) % 2 = 0 THEN 'MKT' ELSE 'NOTIFY' END
        FROM t
        """
    )
    db.commit()
    inserted = time.perf_counter() - start
    start = time.perf_counter()
    for _, sql in indexes:
        db.execute(sql)
    db.commit()
    db.execute("ANALYZE")
    db.commit()
    indexed = time.perf_counter() - start
    db.close()
    return {"insert_seconds": inserted, "index_seconds": indexed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from globe_sms.campaign import Campaign
    from globe_sms.ledger import Ledger
    from globe_sms.ledger.caps import count_query, counted, sent_counts
    from tasks import limits

    result: dict[str, Any] = {
        "rows": args.rows,
        "candidates": args.candidates,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg(),
    }
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-caps-") as tmp:
        path = Path(tmp) / "ledger.db"
        Ledger.open(f"sqlite:///{path}").close()
        result.update(fill(path, args.rows, now))
        result["ledger_bytes"] = path.stat().st_size
        half = args.candidates // 2
        phones = [str(FIRST + 2 * j) for j in range(half)] + [
            str(NEW + j) for j in range(args.candidates - half)
        ]
        campaign = Campaign.parse(
            {
                "campaign_id": "bench-caps",
                "source": {"path": "unused.csv"},
                "template": "Hi",
                "message_type": "MKT",
                "ledger": f"sqlite:///{path}",
                "frequency_cap": {"max_messages": 1, "per": "7d", "message_types": ["MKT"]},
            }
        )
        with Ledger.open(f"sqlite:///{path}") as ledger:
            start = time.perf_counter()
            for i in range(0, len(phones), 50_000):
                ledger.register("bench-caps", phones[i : i + 50_000])
            result["register_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            limits.record_message_type(ledger, campaign)
            result["stamp_type_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            skipped = limits.cap_pending(ledger, campaign)
            result["cap_seconds"] = time.perf_counter() - start
            result["skipped"] = skipped
            start = time.perf_counter()
            sent_counts(ledger, "x", phones[:20_000], now - timedelta(days=7), ["MKT"])
            result["count_20k_seconds"] = time.perf_counter() - start
            query = count_query("sqlite", phones[:3], counted("x", now - timedelta(days=7), ["MKT"]))
            with ledger._engine.connect() as conn:
                compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
                params = [compiled.params[k] for k in compiled.positiontup or ()]
                params = [
                    v.replace(tzinfo=None).isoformat(" ") if isinstance(v, datetime) else str(v)
                    for v in params
                ]
                explained = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(params)).all()
            plan = [row[-1] for row in explained]
        result["query_plan"] = plan
    result["cap_over_register"] = result["cap_seconds"] / result["register_seconds"]
    result["loadavg_after"] = loadavg()
    text = json.dumps(result, indent=2)
    print(text)  # noqa: T201 - the benchmark's report
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
