"""Benchmark: issue #16's figures in one run, as ratios against the batch-only ceiling.

Runs, one after another on this machine, each in processes of its own:

1. `bench_pace.py`: the batch lane alone (60,000 recipients, 60 calls) and two campaigns of one account at
   once (2 x 15,000), against the SQLite Prefect test harness;
2. `bench_single.py`: `send_via: single` (20,000) and `both` (30,000) end to end, ledger included, on a
   Prefect server over PostgreSQL (`--prefect-postgres`; `--prefect-sqlite` for the test harness), with the
   emulator run `--gateway-priority` nice levels ahead of the rest (root only; the real gateway does not share
   this machine's two cores, and an emulator the scheduler holds back stamps the calls that queued meanwhile
   as one burst);
3. `bench_single_client.py reconcile`: QueryMessage reconciliation of 20,000 messages.

and writes `bench/results/lanes.json` (each run's figures and the load average) and a Markdown table.
The batch-only ceiling is 1,000 recipients/s (one call of 1,000 numbers per second). Targets: batch alone
>= 0.99 of its allowed rate, the pair >= 0.97 together (neither waiting over 3 s), `single` >= 1,800/s,
`both` >= 2,500/s, reconciliation >= 270 queries/s; 0 throttled calls and 0 duplicates at the gateway.

    uv run python bench/bench_lanes.py [--runs 1] [--prefect-postgres URL | --prefect-sqlite]
        [--gateway-priority 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BATCH_ONLY_CEILING = 1000.0  # recipients/s: one BatchSendMessageToGlobe call of 1,000 numbers a second
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_script(args: list[str]) -> None:
    print(f"$ {' '.join(args)}", flush=True)  # noqa: T201 - a benchmark's output
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def pace_rows(pace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in pace:
        alone = r["run"] == "alone"
        rows.append(
            {
                "what": "batch lane alone" if alone else "two campaigns at once",
                "figure": r["rate_fraction"],
                "unit": "of the allowed rate",
                "target": 0.99 if alone else 0.97,
                "met": r["rate_fraction"] >= (0.99 if alone else 0.97)
                and (alone or max(r["longest_wait_s"].values()) <= 3.0)
                and r["max_calls_in_1s"] <= 1,
                "throttled": r["throttled"],
                "duplicates": r["duplicates"],
                "detail": f"mean gap {r.get('mean_gap_s')} s, closest {r['closest_calls_s']} s, "
                f"longest wait {max(r['longest_wait_s'].values())} s",
                "load": " ".join(r["loadavg"]),
            }
        )
    return rows


def lane_rows(lanes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in lanes:
        target = 1800.0 if r["send_via"] == "single" else 2500.0
        rows.append(
            {
                "what": f"`{r['send_via']}`, {r['recipients']:,}",
                "figure": r["recipients_per_s"],
                "unit": "recipients/s",
                "ratio_to_batch_only_ceiling": round(r["recipients_per_s"] / BATCH_ONLY_CEILING, 3),
                "target": target,
                "met": r["recipients_per_s"] >= target and r["accepted"] == r["recipients"],
                "throttled": r["gateway_throttled"],
                "duplicates": r["gateway_duplicates"],
                "detail": f"busiest second {r['gateway_max_single_calls_in_1s']} calls, CPU per call: client "
                f"{r['client_cpu_ms_per_call']} ms, emulator {r['emulator_cpu_ms_per_call']} ms",
                "load": " ".join(r["loadavg"]),
            }
        )
    return rows


def reconcile_row(report: dict[str, Any]) -> dict[str, Any]:
    fast = report["reconcile"]["async client, 64 in flight"]
    return {
        "what": f"reconciliation, {fast['candidates']:,}",
        "figure": fast["calls_per_s"],
        "unit": "QueryMessage calls/s",
        "target": 270.0,
        "met": fast["calls_per_s"] >= 270.0 and not fast["errors"],
        "throttled": report["reconcile"]["throttled_queries"],
        "duplicates": 0,
        "detail": f"{fast['queried']:,} queried, client {fast['client_cpu_ms_per_call']} ms CPU per call",
        "load": fast["load"],
    }


def table(runs: list[list[dict[str, Any]]]) -> str:
    lines = [
        "| run | measurement | result | target | throttled | duplicates | detail | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, rows in enumerate(runs, 1):
        for row in rows:
            ratio = row.get("ratio_to_batch_only_ceiling")
            result = f"{row['figure']:,} {row['unit']}" + (f" ({ratio}x)" if ratio else "")
            met = "met" if row["met"] and row["throttled"] == 0 and row["duplicates"] == 0 else "**not met**"
            lines.append(
                f"| {number} | {row['what']} | {result} | >= {row['target']:,} ({met}) | {row['throttled']} "
                f"| {row['duplicates']} | {row['detail']} | {row['load']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1)
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--prefect-postgres", default=DEFAULT_POSTGRES, metavar="ADMIN_URL")
    backend.add_argument("--prefect-sqlite", action="store_true", help="the lanes on the SQLite test harness")
    parser.add_argument(
        "--gateway-priority", type=int, default=10 if os.geteuid() == 0 else 0, metavar="N",
        help="run the emulator of the lanes' benchmark N nice levels ahead (default 10 as root, else 0)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "lanes.json")
    args = parser.parse_args()
    runs: list[list[dict[str, Any]]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="globe-sms-lanes-") as tmp:
        folder = Path(tmp)
        for _ in range(args.runs):
            pace, lanes, reconcile = folder / "pace.json", folder / "lanes.json", folder / "reconcile.json"
            run_script([str(BENCH / "bench_pace.py"), "--out", str(pace)])
            lane_args = [str(BENCH / "bench_single.py"), "--out", str(lanes)]
            if not args.prefect_sqlite:
                lane_args += ["--prefect-postgres", args.prefect_postgres]
            if args.gateway_priority:
                lane_args += ["--gateway-priority", str(args.gateway_priority)]
            run_script(lane_args)
            run_script([str(BENCH / "bench_single_client.py"), "reconcile", "--json", str(reconcile)])
            rows = pace_rows(json.loads(pace.read_text()))
            rows += lane_rows(json.loads(lanes.read_text()))
            rows.append(reconcile_row(json.loads(reconcile.read_text())))
            runs.append(rows)
            print(table(runs[-1:]), flush=True)  # noqa: T201
    report = {
        "machine": {"cpus": os.cpu_count(), "load_after": load()},
        "prefect_server": "sqlite test harness" if args.prefect_sqlite else "postgresql",
        "gateway_priority": args.gateway_priority,
        "minutes": round((time.time() - started) / 60, 1),
        "runs": runs,
        "all_met": all(
            row["met"] and row["throttled"] == 0 and row["duplicates"] == 0 for rows in runs for row in rows
        ),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(runs))  # noqa: T201
    print(f"all met: {report['all_met']}")  # noqa: T201


if __name__ == "__main__":
    main()
