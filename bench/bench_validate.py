"""Benchmark: validate a 1M-row recipient list and split off the rejects, against row-by-row phonenumbers.

Usage:
    uv run python bench/bench_validate.py [--rows 1000000] [--runs 3] [--oracle-rows 50000] [--lenient]

The synthetic list follows `reference/validation-notes.md` ("Scope and conditions"): numbers from 54 regions
built on phonenumbers' mobile example numbers with random trailing digits, mixed as 78% clean E.164, 5% with
spaces and dashes, 4% `00` prefix, 2% stray blanks, 2% national format, 1.5% Excel scientific notation, 3%
`+86`, 2% one digit too many or too few, 1% junk and 1% null, plus name/code/opt-in columns.

The data is generated in a child process and handed over as Parquet, so the peak RSS reported
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is reading the list plus validating it, not generating it.
Figures go to `bench/README-validate.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phonenumbers  # noqa: E402
import polars as pl  # noqa: E402

REGIONS = (
    "HK MO TW SG MY TH VN PH ID JP KR IN PK BD LK AE SA QA KW IL TR GB IE FR DE IT ES PT NL BE CH AT SE NO "
    "DK FI PL CZ RO GR RU KZ UA US CA MX BR AR CL CO AU NZ ZA NG"
).split()
assert len(REGIONS) == 54


def _examples() -> pl.DataFrame:
    """One mobile example number per region (cc, nsn), from the installed metadata."""
    rows: list[dict[str, object]] = []
    for region in REGIONS:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert example is not None and metadata is not None
        rows.append(
            {
                "k": len(rows),
                "cc": str(example.country_code),
                "nsn": phonenumbers.national_significant_number(example),
                "national_prefix": metadata.national_prefix or "",
            }
        )
    return pl.DataFrame(rows)


def _rand(i: pl.Expr, seed: int, modulo: int) -> pl.Expr:
    return (i.hash(seed) % modulo).cast(pl.Int64)


def generate(rows: int, seed: int = 7) -> pl.DataFrame:
    """The synthetic recipient list (vectorised, deterministic for a seed)."""
    examples = _examples()
    i = pl.int_range(0, rows, dtype=pl.Int64)
    base = pl.select(i.alias("id"), _rand(i, seed, len(REGIONS)).alias("k")).join(
        examples, on="k", how="left", maintain_order="left"
    )
    tail = (pl.col("id").hash(seed + 1) % 1_000_000).cast(pl.String).str.zfill(6)
    # Keep the example's leading digits (its mobile range), randomise up to the last 6.
    random_digits = pl.min_horizontal(pl.lit(6), pl.col("nsn").str.len_chars() - 3)
    keep = pl.col("nsn").str.len_chars() - random_digits
    nsn = pl.col("nsn").str.slice(0, keep) + tail.str.slice(6 - random_digits)
    mix = _rand(pl.col("id"), seed + 2, 10_000)
    full = pl.col("cc") + nsn
    e164 = pl.lit("+") + full
    spaced = pl.format("+{} {}-{}", pl.col("cc"), nsn.str.slice(0, 3), nsn.str.slice(3))
    cn = pl.lit("+86 13") + tail + pl.lit("123")
    wrong_len = (
        pl.when(mix % 2 == 0).then(e164 + pl.lit("7")).otherwise(e164.str.slice(0, e164.str.len_chars() - 1))
    )
    phone = (
        pl.when(mix < 7800).then(e164)
        .when(mix < 8300).then(spaced)
        .when(mix < 8700).then(pl.lit("00") + pl.col("cc") + nsn)
        .when(mix < 8900).then(pl.lit("  ") + e164 + pl.lit(" "))
        .when(mix < 9100).then(pl.col("national_prefix") + nsn)
        .when(mix < 9250).then(pl.format("{}.{}E+{}", full.str.slice(0, 1), full.str.slice(1, 5), full.str.len_chars() - 1))  # noqa: E501
        .when(mix < 9550).then(cn)
        .when(mix < 9750).then(wrong_len)
        .when(mix < 9850).then(pl.lit("call me ") + tail)
        .otherwise(None)
    )  # fmt: skip
    return base.select(
        pl.col("id"),
        phone.alias("phone"),
        pl.when(_rand(pl.col("id"), seed + 3, 20) == 0).then(None)
        .otherwise(pl.lit("Name") + tail.str.slice(0, 3)).alias("first_name"),
        (pl.lit("L") + tail.str.slice(2, 4)).alias("last_name"),
        tail.alias("code"),
        (_rand(pl.col("id"), seed + 4, 10) > 0).alias("opt_in"),
    )  # fmt: skip


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _oracle_rate(phones: list[str | None]) -> float:
    """Rows/s of the row-by-row phonenumbers check (parse + is_valid_number + number_type)."""
    mobile = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
    start = time.perf_counter()
    ok = 0
    for raw in phones:
        try:
            number = phonenumbers.parse(raw or "", None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in mobile:
            ok += number.country_code != 86
    return len(phones) / (time.perf_counter() - start)


def run(path: Path, runs: int, oracle_rows: int, strict: bool) -> dict[str, object]:
    """Validate the list `runs` times in this process and time it."""
    from globe_sms.validation_rules import ValidationRules
    from tasks.validate import validate_recipients

    frame = pl.read_parquet(path)
    load_before = os.getloadavg()[0]
    rules = ValidationRules(strict_mobile=strict)
    validate_recipients(frame.head(1000), "phone", rules)  # build the metadata tables outside the timing
    times, cpu_times = [], []
    result = None
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = validate_recipients(frame, "phone", rules)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    assert result is not None
    median = statistics.median(times)
    sample = frame.get_column("phone").head(oracle_rows).to_list()
    oracle = _oracle_rate(sample)
    return {
        "rows": frame.height,
        "strict_mobile": strict,
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "rows_per_s": round(frame.height / median),
        "best_rows_per_s": round(frame.height / min(times)),
        # CPU seconds of the process (all cores) per run: the cost of the work, whatever else runs.
        "cpu_s": [round(t, 3) for t in cpu_times],
        "peak_rss_mb": round(_peak_rss_mb()),
        "valid": result.valid.height,
        "rejects": result.rejects.height,
        "duplicates": result.duplicates,
        "reasons": result.reasons,
        "phonenumbers_rows": len(sample),
        "phonenumbers_rows_per_s": round(oracle),
        "speedup_vs_phonenumbers": round(frame.height / median / oracle, 1),
        "polars": pl.__version__,
        "phonenumbers": phonenumbers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # Other processes on the machine skew wall-clock figures: record the 1-minute load around the runs.
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    """Generate the list in a child process, then validate and report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--oracle-rows", type=int, default=50_000)
    parser.add_argument("--lenient", action="store_true", help="length rules only (strict_mobile=False)")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.rows).write_parquet(args.generate)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipients.parquet"
        subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--generate", str(path)], check=True
        )
        report = run(path, args.runs, args.oracle_rows, strict=not args.lenient)
    print(json.dumps(report, indent=2))  # noqa: T201 - a benchmark script reports on stdout


if __name__ == "__main__":
    main()
