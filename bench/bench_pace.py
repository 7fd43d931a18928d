"""Benchmark: the batch lane's pace at the gateway, one campaign alone and two of one account at once.

One real Prefect server (the test harness), the emulator in a process of its own (`globe-sms emulator`: one
BatchSendMessageToGlobe call per rolling second per AccessKey, throttling above it), each campaign in a
process of its own running the real flow (`send_campaign`) with a SQLite ledger of its own, both on the same
account (one AccessKey, one Prefect rate limit). Figures come from the emulator's journal, stamped when its
flow control decides on a call:

1. **alone**: one campaign of `--alone` recipients (default 60,000: 60 calls of 1,000);
2. **two at once**: two campaigns of `--pair` recipients each (default 15,000), started together.

For each: the fraction of the allowed rate achieved at the gateway ((calls - 1) / span / rate, over the calls
of both campaigns for the pair), the closest two calls, the most calls in any rolling second, throttled calls,
duplicate numbers and, for the pair, each campaign's longest wait between two of its own calls. Targets
(issue #16): alone >= 0.99, the pair >= 0.97 together, never two calls in one rolling second, neither campaign
waiting more than 3 s.

    uv run python bench/bench_pace.py [--alone 60000] [--pair 15000] [--runs 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="globe-sms-bench-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def journal(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/journal", timeout=60) as response:
        return json.loads(response.read())


def start_emulator(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from globe_sms.cli import app; app()", "emulator", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the emulator did not start")


def make_recipients(count: int, first: int, path: Path) -> None:
    """`count` distinct valid Singapore mobiles from `first` on (campaigns of one run never share one)."""
    import polars as pl

    phones = [f"+6591{i:06d}" for i in range(first, first + count)]
    pl.DataFrame({"phone": phones, "first_name": ["Ada"] * count}).write_csv(path)


def campaign_main(name: str, count: int, first: int, port: int, folder: Path) -> None:
    """A child process: one campaign, sent to the end (the flow run of `send_campaign`)."""
    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign

    if os.environ.get("BENCH_PACE_LOG"):  # the pacer's debug lines, to see where a late call lost its time
        import logging

        handler = logging.FileHandler(f"{os.environ['BENCH_PACE_LOG']}.{name}")
        handler.setFormatter(logging.Formatter("%(created).4f %(threadName)s %(message)s"))
        pacing_logger = logging.getLogger("globe_sms.pacing")
        pacing_logger.addHandler(handler)
        pacing_logger.setLevel(logging.DEBUG)
        pacing_logger.propagate = False  # not through the console handler, whose rich output takes ms
    source = folder / f"{name}.csv"
    make_recipients(count, first, source)
    campaign = Campaign.parse(
        {
            "campaign_id": name,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, the water supply is back at 18:00",
            "sender_id": "GlobeSMS",
            "ledger": f"sqlite:///{folder / (name + '.db')}",
            "gateway": {"endpoint": f"http://127.0.0.1:{port}", "rate_limit_name": "bench-pace-account"},
        }
    )
    summary = send_campaign(campaign)
    print(json.dumps({"campaign": name, "accepted": summary.accepted, "error": summary.error}), flush=True)  # noqa: T201


def start_campaign(name: str, count: int, first: int, port: int, folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "campaign", name, str(count), str(first), str(port), str(folder)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def figures(requests: list[dict], messages: list[dict], names: list[str]) -> dict:
    calls = [r for r in requests if r["action"] == "BatchSendMessageToGlobe" and r["status"] == 200]
    times = sorted(r["time"] for r in calls)
    throttled = [r for r in requests if str(r.get("code") or "").startswith("Throttling")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    own: dict[str, list[float]] = {name: [] for name in names}
    for r in calls:
        for name in names:
            if name in (r.get("task_id") or ""):
                own[name].append(r["time"])
    waits = {
        name: round(max((b - a for a, b in zip(sorted(t), sorted(t)[1:], strict=False)), default=0.0), 3)
        for name, t in own.items()
    }
    throttled_after = []  # how long after the previous admitted call each throttled call arrived
    for r in throttled:
        before = [t for t in times if t < r["time"]]
        throttled_after.append(round(r["time"] - before[-1], 4) if before else None)
    counts = Counter(m["to"] for m in messages)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "calls": len(times),
        "calls_per_campaign": {name: len(t) for name, t in own.items()},
        "rate_fraction": round((len(times) - 1) / span, 4) if span else 0.0,
        "closest_calls_s": round(min(gaps), 4) if gaps else None,
        "mean_gap_s": round(span / len(gaps), 5) if gaps else None,
        "longest_gaps_s": [round(g, 4) for g in sorted(gaps)[-5:]],
        "longest_gaps_after_call": [  # which call each of the three longest gaps followed (1 = the first)
            i + 1 for _, i in sorted(zip(gaps, range(len(gaps)), strict=True))[-3:]
        ],
        "longest_gaps_at": [round(b, 4) for g, b in sorted(zip(gaps, times[1:], strict=False))[-3:]],
        "gap_percentiles_s": {
            p: round(sorted(gaps)[min(len(gaps) - 1, int(p / 100 * len(gaps)))], 4) for p in (10, 50, 90)
        }
        if gaps
        else {},
        "max_calls_in_1s": max(
            (bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0
        ),
        "longest_wait_s": waits,
        "throttled": len(throttled),
        "throttled_after_s": throttled_after,
        "duplicates": sum(1 for n in counts.values() if n > 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def run(label: str, campaigns: list[tuple[str, int, int]], port: int, folder: Path) -> dict:
    before = journal(port)
    seen_requests, seen_messages = len(before["requests"]), len(before["messages"])
    procs = [start_campaign(name, count, first, port, folder) for name, count, first in campaigns]
    outputs = [proc.communicate()[0] for proc in procs]
    after = journal(port)
    result = {
        "run": label,
        **figures(
            after["requests"][seen_requests:], after["messages"][seen_messages:], [c[0] for c in campaigns]
        ),
    }
    result["campaigns"] = [
        json.loads(out.strip().splitlines()[-1]) if out.strip() else None for out in outputs
    ]
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "campaign":
        name, count, first, port, folder = sys.argv[2:7]
        campaign_main(name, int(count), int(first), int(port), Path(folder))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alone", type=int, default=60_000)
    parser.add_argument("--pair", type=int, default=15_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pace.json")
    args = parser.parse_args()
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"] = "testid"
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "testsecret"

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    port = free_port()
    emulator = start_emulator(port)
    results = []
    first = 0
    try:
        with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
            os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the children use the same server
            folder = Path(tmp)
            stamp = int(time.time())
            for i in range(args.runs):
                if args.alone:
                    results.append(run("alone", [(f"alone{i}-{stamp}", args.alone, first)], port, folder))
                    first += args.alone
                    print(json.dumps(results[-1]), flush=True)  # noqa: T201 - a benchmark's output
                if args.pair:
                    pair = [
                        (f"pair-a{i}-{stamp}", args.pair, first),
                        (f"pair-b{i}-{stamp}", args.pair, first + args.pair),
                    ]
                    first += 2 * args.pair
                    results.append(run("two at once", pair, port, folder))
                    print(json.dumps(results[-1]), flush=True)  # noqa: T201
    finally:
        emulator.terminate()
        emulator.wait(10)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
