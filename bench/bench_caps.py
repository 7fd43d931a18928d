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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def backend(postgres: str | None, tmp: str) -> Iterator[str]:
    """The ledger URL: a SQLite file in `tmp`, or a throwaway schema of the PostgreSQL database (dropped)."""
    if not postgres:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(postgres)
    schema = f"bench_caps_{uuid.uuid4().hex[:8]}"
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def fill_postgres(url: str, rows: int, now: datetime) -> dict[str, float]:
    """The same rows on PostgreSQL (`generate_series`), indexes dropped during the insert, then built."""
    from globe_sms.ledger.backends import make_engine

    engine = make_engine(url)
    t0 = now - timedelta(days=10)
    with engine.begin() as conn:
        indexes = conn.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'send_ledger' "
            "AND schemaname = current_schema() AND indexname NOT IN ('send_ledger_pkey')"
        ).all()
        constraint = "uq_send_ledger_campaign_phone"
        conn.exec_driver_sql(f"ALTER TABLE send_ledger DROP CONSTRAINT {constraint}")
        for name, _ in indexes:
            if name != constraint:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"""
            INSERT INTO send_ledger (campaign_id, phone, country, status, batch_no, message_id, attempts,
                                     created_at, updated_at, submitted_at, message_type)
            SELECT 'history-' || (i / {PER_CAMPAIGN}), ({FIRST} + (i * 7919) %% {POPULATION})::text, 'SG',
                   CASE WHEN i %% 20 = 0 THEN 'failed' WHEN i %% 20 = 1 THEN 'unknown' ELSE 'accepted' END,
                   (i %% {PER_CAMPAIGN}) / 1000 + 1, 'm' || i, 1, ts, ts, ts,
                   CASE WHEN (i / {PER_CAMPAIGN}) %% 2 = 0 THEN 'MKT' ELSE 'NOTIFY' END
            FROM (SELECT i, TIMESTAMPTZ '{t0.isoformat()}' + ((i * 13) %% 864000) * INTERVAL '1 second' AS ts
                  FROM generate_series(0, {rows - 1}::bigint) AS i) AS g
            """
        )
    inserted = time.perf_counter() - start
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE send_ledger ADD CONSTRAINT {constraint} UNIQUE (campaign_id, phone)"
        )
        for name, sql in indexes:
            if name != constraint:
                conn.exec_driver_sql(sql)
        conn.exec_driver_sql("ANALYZE send_ledger")
    engine.dispose()
    return {"insert_seconds": inserted, "index_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--postgres", metavar="URL", help="run on PostgreSQL at URL (a throwaway schema) instead of SQLite"
    )
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
    with tempfile.TemporaryDirectory(prefix="bench-caps-") as tmp, backend(args.postgres, tmp) as url:
        Ledger.open(url).close()
        if args.postgres:
            result["backend"] = "postgresql"
            result.update(fill_postgres(url, args.rows, now))
        else:
            result["backend"] = "sqlite"
            path = Path(tmp) / "ledger.db"
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
                "ledger": url,
                "frequency_cap": {"max_messages": 1, "per": "7d", "message_types": ["MKT"]},
            }
        )
        with Ledger.open(url) as ledger:
            start = time.perf_counter()
            for i in range(0, len(phones), 50_000):
                ledger.register("bench-caps", phones[i : i + 50_000], message_type="MKT")
            result["register_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            skipped = limits.cap_pending(ledger, campaign)
            result["cap_seconds"] = time.perf_counter() - start
            result["skipped"] = skipped
            start = time.perf_counter()
            sent_counts(ledger, "x", phones[:20_000], now - timedelta(days=7), ["MKT"])
            result["count_20k_seconds"] = time.perf_counter() - start
            query = count_query(
                "postgresql" if args.postgres else "sqlite",
                phones[:3],
                counted("x", now - timedelta(days=7), ["MKT"]),
            )
            with ledger._engine.connect() as conn:
                compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
                if args.postgres:
                    explained = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).all()
                    result["query_plan"] = [row[0] for row in explained]
                else:
                    params = [compiled.params[k] for k in compiled.positiontup or ()]
                    params = [
                        v.replace(tzinfo=None).isoformat(" ") if isinstance(v, datetime) else str(v)
                        for v in params
                    ]
                    explained = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(params)).all()
                    result["query_plan"] = [row[-1] for row in explained]
    result["cap_over_register"] = result["cap_seconds"] / result["register_seconds"]
    result["loadavg_after"] = loadavg()
    text = json.dumps(result, indent=2)
    print(text)  # noqa: T201 - the benchmark's report
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
