"""Benchmark: reading recipients from every source kind, and a 10M-row dry run in bounded memory.

Usage:
    uv run python bench/bench_sources.py sources [--rows 1000000]    # rows/s and peak RSS per source kind
    uv run python bench/bench_sources.py dry-run [--rows 10000000]   # the whole campaign, --dry-run
    uv run python bench/bench_sources.py all                         # both, as in bench/README-sources.md

`sources` writes the same synthetic list as CSV, Parquet and NDJSON, loads it into a PostgreSQL table
(127.0.0.1:5432, trust auth, database `test`; dropped afterwards) and serves it from a local JSON API
(Starlette under uvicorn, 1,000 records a page with next links), then reads each one in a fresh process with
`tasks.sources.iter_source_batches` (chunks of 500,000 rows), so every peak RSS is that reader's alone.

`dry-run` writes a `--rows` CSV (in a temporary folder, deleted afterwards) and runs
`globe-sms send <campaign> --dry-run` on it in a fresh process: the send_campaign flow with its Prefect
tasks, streaming the source through validation and rendering into the Parquet spool, de-duplicating across
chunks, pricing, previewing and planning every batch. It reports wall time, rows/s and the process's peak
RSS (`ru_maxrss`; the temporary Prefect server runs in its own process and is not counted).

The synthetic list: 13 regions (the welcome example's), about 90% clean E.164 numbers, 4% reformatted
(spaces, dashes, `00`), 2% mainland China, 1% spreadsheet damage, 1% letters, 1% empty, 1% repeats of an
earlier row (most in another chunk), 2% without a first name (the template's default fills in); zh
templates for HK/MO/TW. The machine is shared: the table carries the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import phonenumbers
import polars as pl
from phonenumbers import PhoneNumberType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGIONS = ["HK", "MO", "TW", "SG", "MY", "TH", "ID", "PH", "VN", "GB", "DE", "AU", "AE"]
ZH = {"HK", "MO", "TW"}
FIRST_NAMES = [
    "Ada",
    "Wing",
    "Mei",
    "Arjun",
    "Siti",
    "Nok",
    "Budi",
    "Maria",
    "Linh",
    "Oliver",
    "Lena",
    "Jack",
    "Omar",
]
SERIAL_DIGITS = 6
REPEAT_BACK = 13 * 46_135  # 599,755
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PAGE_SIZE = 1_000
CAMPAIGN = """\
campaign_id: bench-sources-{rows}
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
price_table: {prices}
ledger: sqlite:///{folder}/ledger.db
validation:
  max_reject_share: 0.2
"""


# ------------------------------------------------------------------------------------------------------------
# The synthetic list
# ------------------------------------------------------------------------------------------------------------


def _prefixes() -> pl.DataFrame:
    """Per region: `+<cc><national number minus its last SERIAL_DIGITS digits>` of an example mobile."""
    rows = []
    for region in REGIONS:
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        national = str(example.national_number)
        rows.append(
            {
                "region_no": len(rows),
                "prefix": f"+{example.country_code}{national[:-SERIAL_DIGITS]}",
                "lang": "zh" if region in ZH else "en",
            }
        )
    return pl.DataFrame(rows, schema={"region_no": pl.Int64, "prefix": pl.String, "lang": pl.String})


def recipients(rows: int) -> pl.LazyFrame:
    """`rows` synthetic recipients (phone, first_name, code, lang): distinct numbers but planted repeats."""
    i = pl.int_range(0, rows, dtype=pl.Int64).alias("i")
    regions = len(REGIONS)
    frame = (
        pl.LazyFrame()
        .select(i)
        .with_columns(
            (pl.col("i") % regions).alias("region_no"),
            (pl.col("i") // regions).alias("serial"),
            (pl.col("i") % 100).alias("kind"),
        )
        .join(_prefixes().lazy(), on="region_no", how="left", maintain_order="left")
    )
    clean = pl.col("prefix") + pl.col("serial").cast(pl.String).str.zfill(SERIAL_DIGITS)
    kind = pl.col("kind")
    phone = (
        pl.when(kind < 2)
        .then(pl.format("+86138{}", pl.col("i").cast(pl.String).str.zfill(8)))
        .when(kind == 2)
        .then(pl.lit("4.47911E+11"))
        .when(kind == 3)
        .then(pl.lit("call me"))
        .when(kind == 4)
        .then(pl.lit(""))
        .when(kind < 7)
        .then(clean.str.slice(0, 4) + " " + clean.str.slice(4, 3) + "-" + clean.str.slice(7))
        .when(kind < 9)
        .then(pl.lit("00") + clean.str.slice(1))
        .otherwise(clean)
    )
    # A repeat of row i - REPEAT_BACK's clean number: a multiple of 13 back (same region) whose row is of a
    # clean kind (REPEAT_BACK % 100 == 55, so kind 5 looks back at kind 50), and more than a 500,000-row
    # chunk back, so every repeat crosses chunks.
    back = REPEAT_BACK
    repeat = pl.col("prefix") + (pl.col("serial") - back // 13).cast(pl.String).str.zfill(SERIAL_DIGITS)
    phone = pl.when((kind == 5) & (pl.col("i") >= back)).then(repeat).otherwise(phone)
    names = pl.lit(FIRST_NAMES).list.get(pl.col("i") % len(FIRST_NAMES))
    return frame.select(
        phone.alias("phone"),
        pl.when(pl.col("i") % 50 == 7).then(None).otherwise(names).alias("first_name"),
        (pl.col("i") * 7919 % 900_000 + 100_000).cast(pl.String).alias("code"),
        "lang",
    )


def write_list(rows: int, folder: Path, kinds: tuple[str, ...]) -> dict[str, Path]:
    """The list as files of the given kinds (csv, parquet, ndjson) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    lazy = recipients(rows)
    for kind in kinds:
        path = folder / f"recipients.{'csv' if kind == 'csv' else kind}"
        if kind == "csv":
            lazy.sink_csv(path)
        elif kind == "parquet":
            lazy.sink_parquet(path)
        else:
            lazy.sink_ndjson(path)
        out[kind] = path
    return out


# ------------------------------------------------------------------------------------------------------------
# Sources: PostgreSQL table, JSON API
# ------------------------------------------------------------------------------------------------------------


@contextmanager
def postgres_table(csv: Path) -> Iterator[str]:
    """The list copied into a fresh table; yields its name, drops it afterwards."""
    import psycopg

    table = f"bench_recipients_{os.getpid()}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (phone text, first_name text, code text, lang text)")
        with (
            conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            csv.open("rb") as f,
        ):
            while block := f.read(1 << 20):
                copy.write(block)
        conn.execute(f"ANALYZE {table}")
    try:
        yield table
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@contextmanager
def json_api(parquet: Path) -> Iterator[str]:
    """A local JSON API serving the list 1,000 records a page with next links; yields the first page's URL.

    Page bodies are encoded before serving, so the reader, not the server, is what is measured (the server
    still shares the machine's two cores with it).
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from alibaba_sms.emulator.server import uvicorn_config

    frame = pl.read_parquet(parquet)
    pages = []
    for n, page in enumerate(frame.iter_slices(PAGE_SIZE)):
        records = page.write_json()
        more = (n + 1) * PAGE_SIZE < frame.height
        next_link = f'"/recipients?page={n + 1}"' if more else "null"
        pages.append(f'{{"data":{records},"links":{{"next":{next_link}}}}}'.encode())
    del frame

    async def recipients(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer bench-token":
            return Response(status_code=401)
        return Response(pages[int(request.query_params.get("page", "0"))], media_type="application/json")

    app = Starlette(routes=[Route("/recipients", recipients)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", quiet=True))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/recipients"
    finally:
        server.should_exit = True
        thread.join(10)


# ------------------------------------------------------------------------------------------------------------
# Measuring in a fresh process
# ------------------------------------------------------------------------------------------------------------


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script's child mode in a fresh process; returns its JSON line."""
    done = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_read(spec: str) -> None:
    """Child mode: read a source (JSON) through `iter_source_batches`; print rows, seconds, peak RSS."""
    from pydantic import TypeAdapter

    from globe_sms.sources import Source
    from tasks.sources import iter_source_batches

    source = TypeAdapter(Source).validate_python(json.loads(spec))
    baseline = _peak_mb()
    started = time.perf_counter()
    rows = chunks = 0
    for chunk in iter_source_batches(source, batch_rows=500_000):
        assert all(dtype == pl.String for dtype in chunk.schema.values())
        rows += chunk.height
        chunks += 1
    seconds = time.perf_counter() - started
    print(  # noqa: T201 - the benchmark reports on stdout
        json.dumps(
            {
                "rows": rows,
                "chunks": chunks,
                "seconds": seconds,
                "peak_mb": _peak_mb(),
                "baseline_mb": baseline,
            }
        )
    )


def child_dry_run(campaign_file: str) -> None:
    """Child mode: what `globe-sms send <campaign> --dry-run` runs, in this process; print times and peak RSS.

    The flow is called as the CLI calls it (a temporary Prefect server is started for it); its summary gives
    the flow's own time, the wall time includes Prefect's start-up.
    """
    started = time.perf_counter()
    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign

    campaign = Campaign.from_yaml(campaign_file).model_copy(update={"dry_run": True})
    summary = send_campaign(campaign)
    seconds = time.perf_counter() - started
    print(  # noqa: T201 - the benchmark reports on stdout
        json.dumps(
            {
                "seconds": seconds,
                "flow_seconds": summary.elapsed_seconds,
                "peak_mb": _peak_mb(),
                "valid": summary.valid,
                "rejected": summary.rejected,
                "batches": summary.batches,
                "by_reason": summary.rejected_by_reason,
                "cost": summary.estimated_cost,
            }
        )
    )


# ------------------------------------------------------------------------------------------------------------
# The two benchmarks
# ------------------------------------------------------------------------------------------------------------


def bench_sources(rows: int) -> list[dict[str, Any]]:
    """Rows/s and peak RSS of each reader on the same `rows`-row list."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        files = write_list(rows, Path(tmp), ("csv", "parquet", "ndjson"))
        for kind, path in files.items():
            result = _child(["_read", json.dumps({"kind": kind, "path": str(path)})])
            results.append({"source": f"{kind} ({path.stat().st_size / 1e6:,.0f} MB)", **result})
        with postgres_table(files["csv"]) as table:
            spec = {
                "kind": "postgres",
                "query": f"SELECT phone, first_name, code, lang FROM {table}",
                "connection": {"env": "BENCH_PG_URL"},
            }
            result = _child(["_read", json.dumps(spec)], env={"BENCH_PG_URL": PG_URL})
            results.append({"source": "postgres (ADBC record batches)", **result})
        with json_api(files["parquet"]) as url:
            spec = {
                "kind": "http",
                "url": url,
                "records_path": "/data",
                "pagination": {"type": "next_link", "next_pointer": "/links/next"},
                "auth": {"token": {"env": "BENCH_TOKEN"}},
            }
            result = _child(["_read", json.dumps(spec)], env={"BENCH_TOKEN": "bench-token"})
            results.append({"source": f"http (pages of {PAGE_SIZE:,}, next links)", **result})
    for result in results:
        result["rows_per_s"] = result["rows"] / result["seconds"]
    return results


def bench_dry_run(rows: int) -> dict[str, Any]:
    """The whole campaign as a dry run on a `rows`-row CSV: seconds, rows/s, peak RSS, and its summary."""
    with tempfile.TemporaryDirectory(prefix="bench-dry-run-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        write_list(rows, folder, ("csv",))
        generated = time.perf_counter() - started
        campaign = folder / "campaign.yaml"
        campaign.write_text(
            CAMPAIGN.format(rows=rows, prices=ROOT / "examples" / "prices.csv", folder=folder)
        )
        result = _child(["_dry-run", str(campaign)])
        rejects = folder / f"bench-sources-{rows}-rejects.csv"
        result["rejects_rows"] = (
            pl.scan_csv(rejects).select(pl.len()).collect().item() if rejects.exists() else 0
        )
        result["spool_left"] = (
            sorted(p.name for p in (folder / "spool").glob("*")) if (folder / "spool").exists() else []
        )
    result.update(rows=rows, rows_per_s=rows / result["flow_seconds"], generate_seconds=generated)
    return result


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["sources", "dry-run", "all", "_read", "_dry-run"])
    parser.add_argument("arg", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.what == "_read":
        return child_read(args.arg)
    if args.what == "_dry-run":
        return child_dry_run(args.arg)
    out: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, polars {pl.__version__}",
        "load_before": _load(),
    }
    lines: list[str] = []
    if args.what in ("sources", "all"):
        rows = args.rows if args.what == "sources" and args.rows else 1_000_000
        out["sources"] = bench_sources(rows)
        lines += [f"### Readers, {rows:,} rows, chunks of 500,000", ""]
        lines += ["| source | rows/s | seconds | peak RSS |", "|---|---:|---:|---:|"]
        for r in out["sources"]:
            rate = f"{r['rows_per_s'] / 1e6:.2f} M"
            lines.append(f"| {r['source']} | {rate} | {r['seconds']:.2f} | {r['peak_mb']:,.0f} MB |")
    if args.what in ("dry-run", "all"):
        rows = args.rows if args.what == "dry-run" and args.rows else 10_000_000
        r = out["dry_run"] = bench_dry_run(rows)
        lines += ["", f"### `globe-sms send --dry-run`, {rows:,} rows (CSV)", ""]
        lines += [
            "| rows | flow run | rows/s | wall incl. Prefect start | peak RSS | valid | rejected | batches |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {rows:,} | {r['flow_seconds']:.1f} s | {r['rows_per_s'] / 1e3:,.0f} k | {r['seconds']:.1f} s "
            f"| {r['peak_mb']:,.0f} MB | {r['valid']:,} | {r['rejected']:,} | {r['batches']:,} |",
            "",
            f"rejects file rows: {r['rejects_rows']:,}; spool folders left: {r['spool_left'] or 'none'}",
            f"rejected by reason: {r['by_reason']}; estimated cost {r['cost']}",
        ]
    out["load_after"] = _load()
    lines += ["", f"load average before: {out['load_before']}; after: {out['load_after']}"]
    print("\n".join(lines))  # noqa: T201 - the benchmark reports on stdout
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
