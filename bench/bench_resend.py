"""Benchmark: a resend of 1M failed rows runs within the memory bound of a send of 1M rows.

Usage:
    uv run python bench/bench_resend.py [--rows 1000000] [--baseline DIR] [--json PATH]
    uv run python bench/bench_resend.py planner [--rows 1000000] [--baseline DIR]   # the resend planner alone

In a temporary folder (deleted afterwards) it writes a `--rows` CSV of distinct clean mobile numbers in 13
regions (the welcome example's; `bench/bench_sources.py` makes them), and serves the emulator in a process
of its own (`globe-sms emulator --rate 0 --port <free>`: its memory of every message sent is not counted).
Then, each in a fresh process whose peak RSS (`ru_maxrss`) is reported:

1. **send**: the `send_campaign` flow sends the whole list (batches of 1,000, 50 calls/s) and commits
   every outcome to a SQLite ledger;
2. every row of the campaign is set `failed` with `AMOUNT_NOT_ENOUGH` in the ledger (one UPDATE);
3. **resend**: the `resend_campaign` flow resends the failed rows with that code: the same spool, the
   rows reopened a chunk at a time into plan parts on disk, the same send loop;
4. with `--baseline DIR` (a checkout of an earlier globe-sms, e.g. `git archive main | tar -x -C DIR`),
   steps 2 and 3 again with that code, for comparison.

`planner` measures the resend planner alone, the part that differs from a send: `--rows` rendered messages
(Parquet parts of 500,000, as a spool holds them) and a ledger with every row `failed`; a fresh process
imports the code, records its RSS, runs the `plan-resend` task's function (reopening every row) and reads
every batch as the send loop would, and reports its peak RSS above the RSS after the imports. For
comparison, a fresh process plans the first send of the same messages (`register_and_plan`, into a new
ledger) the same way.

The temporary Prefect server of each flow run is a process of its own and is not counted either. The load
average (`/proc/loadavg`) is recorded before and after: the machine is shared, so times vary with it; peak
memory does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAMPAIGN_ID = "bench-resend"
FAILED_CODE = "AMOUNT_NOT_ENOUGH"
CAMPAIGN = """\
campaign_id: {campaign_id}
source: {{path: recipients.csv, phone_column: phone}}
template:
  select_by: lang
  fallback: en
  text:
    en: "Hi {{first_name|there}}, welcome to Globe! Your code is {{code}}."
    zh: "{{first_name|您好}}，歡迎加入 Globe！驗證碼：{{code}}"
  on_missing: default
sender_id: GlobeSMS
batch_size: 1000
gateway:
  endpoint: {endpoint}
  calls_per_second: 50
  rate_limit_name: bench-resend-{pid}
  pacing_margin_ms: 0
ledger: sqlite:///{folder}/ledger.db
data_dir: {folder}
validation:
  max_reject_share: 1.0
"""


def write_clean_list(rows: int, folder: Path) -> Path:
    """`rows` recipients with distinct, clean E.164 mobile numbers (13 regions), as `recipients.csv`."""
    from bench.bench_sources import FIRST_NAMES, SERIAL_DIGITS, _prefixes

    regions = _prefixes()
    i = pl.int_range(0, rows, dtype=pl.Int64).alias("i")
    lazy = (
        pl.LazyFrame()
        .select(i)
        .with_columns(
            (pl.col("i") % regions.height).alias("region_no"), (pl.col("i") // regions.height).alias("serial")
        )
        .join(regions.lazy(), on="region_no", how="left", maintain_order="left")
        .select(
            (pl.col("prefix") + pl.col("serial").cast(pl.String).str.zfill(SERIAL_DIGITS)).alias("phone"),
            pl.lit(FIRST_NAMES).list.get(pl.col("i") % len(FIRST_NAMES)).alias("first_name"),
            (pl.col("i") * 7919 % 900_000 + 100_000).cast(pl.String).alias("code"),
            "lang",
        )
    )
    path = folder / "recipients.csv"
    lazy.sink_csv(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator_process() -> Iterator[str]:
    """`globe-sms emulator` without flow control in a process of its own; yields its URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "globe_sms.cli", "emulator", "--rate", "0", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def _child(args: list[str], cwd: Path = ROOT) -> dict[str, Any]:
    """Run this script's child mode in a fresh process (code from `cwd`); returns its JSON line."""
    env = {
        **os.environ,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
        "PYTHONPATH": str(cwd),
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True, text=True, check=False, env=env, cwd=cwd,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(what: str, campaign_file: str) -> None:
    """Child mode: run the send or the resend flow in this process; print its counts, times and peak RSS."""
    sys.path.insert(0, os.getcwd())  # the code under test: this checkout, or --baseline's
    started = time.perf_counter()
    from globe_sms.campaign import Campaign

    campaign = Campaign.from_yaml(campaign_file)
    if what == "send":
        from flows.send_campaign import send_campaign

        summary = send_campaign(campaign)
    else:
        from flows.resend import resend_campaign

        summary = resend_campaign(campaign, statuses=["failed"], failed_codes=[FAILED_CODE])
    print(  # noqa: T201 - the benchmark reports on stdout
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "flow_seconds": summary.elapsed_seconds,
                "peak_mb": _peak_mb(),
                "valid": summary.valid,
                "planned": summary.planned,
                "batches": summary.batches,
                "accepted": summary.accepted,
                "code": str(Path.cwd()),
            }
        )
    )


def prepare_planner(rows: int, folder: Path) -> None:
    """`rows` rendered messages as Parquet parts in `folder/messages`, and a ledger with every row failed."""
    from globe_sms.ledger import Ledger

    messages = folder / "messages"
    messages.mkdir()
    text = "Hi there, welcome to Globe! Your code is "
    for part, start in enumerate(range(0, rows, 500_000)):
        n = min(500_000, rows - start)
        pl.DataFrame(
            {
                "phone": [f"6591{i:07d}" for i in range(start, start + n)],
                "country": "SG",
                "message": [f"{text}{i:06d}." for i in range(start, start + n)],
            }
        ).write_parquet(messages / f"part-{part:05d}.parquet")
    with Ledger(f"sqlite:///{folder / 'ledger.db'}") as ledger:
        for start in range(0, rows, 50_000):
            phones = [f"6591{i:07d}" for i in range(start, min(rows, start + 50_000))]
            ledger.register(CAMPAIGN_ID, phones, ["SG"] * len(phones))


def child_planner(folder: str, send: bool = False) -> None:
    """Child mode: plan a resend of every failed row with the code in the working directory (`send`: plan
    the first send of every message, into a new ledger, instead)."""
    sys.path.insert(0, os.getcwd())
    from globe_sms.campaign import Campaign
    from globe_sms.ledger import Ledger

    root = Path(folder)
    campaign = Campaign.parse(
        {
            "campaign_id": CAMPAIGN_ID,
            "source": {"path": "unused.csv"},
            "template": "Hi",
            "batch_size": 1000,
            "ledger": f"sqlite:///{root / ('ledger-send.db' if send else 'ledger.db')}",
        }
    )
    try:
        from tasks.plan import plan_resend, register_and_plan

        def plan(ledger: Ledger) -> Any:
            if send:
                return register_and_plan(ledger, campaign, root / "messages", root / "plan-send")
            return plan_resend.fn(ledger, campaign, root / "messages", ["failed"], [], root / "plan")
    except ImportError:  # an earlier globe-sms: the planner was in the flow's module
        from flows.resend import plan_resend as old_plan_resend

        def plan(ledger: Ledger) -> Any:
            return old_plan_resend.fn(ledger, campaign, root / "messages", ["failed"], [])

    after_imports = _rss_mb()
    started = time.perf_counter()
    with Ledger(campaign.ledger) as ledger:
        result = plan(ledger)
        batches = recipients = 0
        for batch in result.batches:
            batches += 1
            recipients += len(batch)
    print(  # noqa: T201 - the benchmark reports on stdout
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "after_imports_mb": after_imports,
                "peak_mb": _peak_mb(),
                "planner_mb": _peak_mb() - after_imports,
                "reopened": result.reopened,
                "registered": result.registered,
                "batches": batches,
                "recipients": recipients,
                "code": str(Path.cwd()),
            }
        )
    )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_planner(rows: int, baseline: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "loadavg_before": _load()}
    with tempfile.TemporaryDirectory(prefix="bench-resend-planner-") as tmp:
        folder = Path(tmp)
        prepare_planner(rows, folder)
        out["send_planner"] = _child(["_planner_send", str(folder)])
        for name, code in (("planner", ROOT), ("baseline_planner", baseline)):
            if code is None:
                continue
            out[f"{name}_failed_rows"] = fail_every_row(folder / "ledger.db")
            out[name] = _child(["_planner", str(folder)], cwd=code.resolve())
            out[f"loadavg_after_{name}"] = _load()
    return out


def fail_every_row(ledger: Path) -> int:
    """Set every row of the campaign `failed` with `FAILED_CODE` (as an empty balance would); how many."""
    with sqlite3.connect(ledger) as conn:
        moved = conn.execute(
            "UPDATE send_ledger SET status = 'failed', error_code = ? WHERE campaign_id = ?",
            (FAILED_CODE, CAMPAIGN_ID),
        ).rowcount
    return int(moved)


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def bench(rows: int, baseline: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}",
        "rows": rows,
        "loadavg_before": _load(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-resend-") as tmp, emulator_process() as url:
        folder = Path(tmp)
        write_clean_list(rows, folder)
        campaign = folder / "campaign.yaml"
        campaign.write_text(
            CAMPAIGN.format(campaign_id=CAMPAIGN_ID, endpoint=url, pid=os.getpid(), folder=folder)
        )
        out["send"] = _child(["_send", str(campaign)])
        out["loadavg_after_send"] = _load()
        out["failed_rows"] = fail_every_row(folder / "ledger.db")
        out["resend"] = _child(["_resend", str(campaign)])
        out["loadavg_after_resend"] = _load()
        if baseline is not None:
            out["baseline_failed_rows"] = fail_every_row(folder / "ledger.db")
            out["baseline_resend"] = _child(["_resend", str(campaign)], cwd=baseline.resolve())
            out["loadavg_after_baseline"] = _load()
    out["resend_within_send_bound"] = out["resend"]["peak_mb"] <= out["send"]["peak_mb"] * 1.05
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="bench",
        choices=["bench", "planner", "_send", "_resend", "_planner", "_planner_send"],
    )
    parser.add_argument("arg", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="also resend with the code in this folder"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/resend[-planner-<rows>].json"
    )
    args = parser.parse_args()
    if args.what.startswith("_planner"):
        return child_planner(args.arg, send=args.what == "_planner_send")
    if args.what.startswith("_"):
        return child(args.what[1:], args.arg)
    results = ROOT / "bench" / "results"
    if args.what == "planner":
        out = bench_planner(args.rows, args.baseline)
        args.json = args.json or results / f"resend-planner-{args.rows // 1_000_000}m.json"
    else:
        out = bench(args.rows, args.baseline)
        args.json = args.json or results / "resend.json"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))  # noqa: T201 - the benchmark reports on stdout


if __name__ == "__main__":
    main()
