"""Benchmark: exactly-once under chaos, the full form of tests/{unit,integration}/test_chaos.py, with figures.

Runs `--runs` seeded scenarios one after another against one real Prefect server (the test harness) and,
per scenario, its own emulator with fault injection and a journal file. In each scenario the campaign flow
runs in child processes that are SIGKILLed `--kills` times at seeded points, then rerun until the campaign is
done; the journal is then checked against the ledger (`tests/chaos/check.py`). Totals go to
`bench/results/chaos.json`, and the figures table in `bench/README-chaos.md` is rewritten between its markers.

    uv run python bench/chaos.py --runs 50 [--first-seed 1000] [--recipients 100] [--kills 3]
                                  [--fault-rate 0.06] [--mode fork|exec] [--workdir DIR]

Exit status 1 if any scenario broke an invariant (or did not finish).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="globe-sms-chaos-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The operational setting the README asks for: rate-limit leases survive a Prefect server restart.
os.environ.setdefault(
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem"
)

from tests.chaos.driver import NOT_FAULTS  # noqa: E402 - after the environment above

HERE = Path(__file__).resolve().parent
START, END = "<!-- chaos-figures:start -->", "<!-- chaos-figures:end -->"
SUMMED = (
    "child_runs", "kills", "stopped_runs", "crashed_runs", "batch_calls", "expected", "accepted",
    "failed", "unknown", "unknown_delivered", "unknown_not_delivered", "messages", "duplicates", "lost",
    "id_mismatches", "failed_but_delivered", "strays",
)


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the per-scenario figures."""
    out: dict[str, Any] = {"runs": len(results), "runs_ok": sum(r["ok"] for r in results)}
    for key in SUMMED:
        out[key] = sum(r[key] for r in results)
    faults: Counter[str] = Counter()
    kills: Counter[str] = Counter()
    for r in results:
        faults.update(r["faults"])
        kills.update(r["kills_by_kind"])
    out["faults"] = dict(sorted(faults.items()))
    out["faults_injected"] = sum(count for kind, count in faults.items() if kind not in NOT_FAULTS)
    out["kills_by_kind"] = dict(sorted(kills.items()))
    return out


def figures_markdown(total: dict[str, Any], conditions: dict[str, Any]) -> str:
    """The README's figures table."""
    faults = ", ".join(
        f"{kind} {count}" for kind, count in total["faults"].items() if kind not in NOT_FAULTS
    )
    kills = ", ".join(f"{kind} {count}" for kind, count in total["kills_by_kind"].items())
    rows = [
        ("scenarios (campaigns) run / passing every check", f"{total['runs']} / {total['runs_ok']}"),
        ("flow processes started", total["child_runs"]),
        ("SIGKILLs mid-campaign", f"{total['kills']} ({kills})"),
        ("SIGKILLs while the gateway held a batch it had accepted", total["faults"].get("in_flight_hold", 0)),
        ("runs stopped early (a business error, or retries used up), then rerun", total["stopped_runs"]),
        ("faults injected by the gateway", f"{total['faults_injected']} ({faults})"),
        ("calls refused by the gateway's own rate check (retried)",
         total["faults"].get("flow_control_throttle", 0)),
        (
            "BatchSendMessageToGlobe calls" if conditions.get("send_via", "batch") == "batch"
            else "calls (SendMessageToGlobe and, with both lanes, BatchSendMessageToGlobe)",
            total["batch_calls"],
        ),
        ("valid recipients", total["expected"]),
        ("accepted (one message each, MessageId matching the journal)", total["accepted"]),
        ("failed, with a reason", total["failed"]),
        ("unknown: delivered / not delivered",
         f"{total['unknown_delivered']} / {total['unknown_not_delivered']}"),
        ("**duplicates** (a number accepted twice)", f"**{total['duplicates']}**"),
        ("**lost** (a valid recipient left without a final state)", f"**{total['lost']}**"),
        ("accepted rows whose MessageId or TaskId disagree with the journal", total["id_mismatches"]),
        ("flow processes that crashed (other than killed)", total["crashed_runs"]),
    ]
    lines = [
        f"Measured {conditions['date']} with `{conditions['command']}` ({conditions['seconds']:.0f} s; "
        f"{conditions['recipients']} valid recipients per campaign in batches of {conditions['batch_size']}, "
        f"{conditions['rate']:g} calls/s, {conditions['kills']} kills per campaign, random faults at "
        f"{conditions['fault_rate']:g} per call for each of HTTP 500, throttling and accept-then-drop, plus "
        f"latency, scripted business errors and slow accepts; children started by "
        f"{conditions['mode']}; send_via {conditions.get('send_via', 'batch')}; "
        f"prefect {conditions['prefect']}, Python {conditions['python']}, "
        f"{conditions['cpus']} CPUs).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines)


def write_readme_section(path: Path, markdown: str) -> None:
    """Replace the text between the figures markers (or append a marked block)."""
    block = f"{START}\n{markdown}\n{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50, help="scenarios (campaigns), one seed each")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=100, help="valid recipients per campaign")
    parser.add_argument("--fault-rate", type=float, default=0.06,
                        help="chance per call of each random fault: HTTP 500, throttling, accept-then-drop")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--rate", type=float, default=25.0, help="calls per second (gateway and campaign)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per campaign")
    parser.add_argument("--mode", choices=("fork", "exec"), default="fork",
                        help="children forked from a preloaded forkserver, or `python -m tests.chaos.runner`")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "chaos.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README-chaos.md")
    parser.add_argument("--workdir", type=Path, default=None, help="keep scenario folders here")
    parser.add_argument("--send-via", choices=("batch", "single", "both", "all"), default="batch",
                        help="the campaign's lane(s); `all` cycles batch, single, both over the runs")
    args = parser.parse_args()

    import prefect
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.chaos.driver import ExecLauncher, ForkLauncher, result_json, run_scenario
    from tests.chaos.scenario import ChaosSpec

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    root = args.workdir or Path(tempfile.mkdtemp(prefix="globe-sms-chaos-runs-"))
    with prefect_test_harness(server_startup_timeout=90):
        api_url = PREFECT_API_URL.value()
        launcher = ExecLauncher() if args.mode == "exec" else ForkLauncher()
        for i in range(args.runs):
            lanes = ("batch", "single", "both") if args.send_via == "all" else (args.send_via,)
            spec = ChaosSpec(
                seed=args.first_seed + i, recipients=args.recipients, batch_size=args.batch_size,
                rate=args.rate, kills=args.kills, error_500_rate=args.fault_rate,
                throttle_rate=args.fault_rate, drop_rate=args.fault_rate, send_via=lanes[i % len(lanes)],
            )
            result = run_scenario(spec, root / f"seed-{spec.seed}", api_url, launcher)
            row = result_json(result)
            results.append(row)
            print(json.dumps({k: row[k] for k in (  # noqa: T201 - a benchmark's progress
                "seed", "send_via", "ok", "child_runs", "kills", "faults", "accepted", "failed", "unknown",
                "duplicates", "lost", "seconds")}), flush=True)
    total = totals(results)
    conditions = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["uv run python bench/chaos.py", *sys.argv[1:]]),
        "seconds": time.monotonic() - started,
        "recipients": args.recipients,
        "batch_size": args.batch_size,
        "rate": args.rate,
        "kills": args.kills,
        "fault_rate": args.fault_rate,
        "mode": args.mode,
        "send_via": args.send_via,
        "prefect": prefect.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"conditions": conditions, "totals": total, "scenarios": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    write_readme_section(args.readme, figures_markdown(total, conditions))
    print(json.dumps(total, indent=2))  # noqa: T201 - a benchmark's output
    return 0 if total["runs_ok"] == total["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
