"""Sources are bounded and honest (issue #13, points 5, 7 and 9): what a user gets wrong is refused clearly.

`globe-sms send` (typer's CliRunner, a real Prefect test server) on real files: a plain-http or credential-
carrying http source, a binary file read as CSV, an over-long, duplicate or header-only CSV all exit 2 with
a message, before any flow run exists. The http reader against the real recipients API of
tests/recipients_api.py: secret query parameters sent and masked in httpx's log, next links to another host
refused before a request, page bodies bounded, deeply nested JSON a `SourceHttpError`. The readers themselves
are tested in tests/{unit,integration}/test_sources.py; the receiver's limits in
tests/integration/test_receiver_limits.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_source_bounds.py.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from pydantic import TypeAdapter, ValidationError

from globe_sms.sources import CsvSource, NdjsonSource, ParquetSource, Source
from tasks.sources import SourceError, load_source
from tasks.sources.preflight import preflight_source

SOURCE = TypeAdapter(Source)


# ------------------------------------------------------------------------------------------------------------
# The models and the preflight, directly
# ------------------------------------------------------------------------------------------------------------


class TestKindFromExtension:
    @pytest.mark.parametrize(
        ("path", "model"),
        [
            ("a.csv", CsvSource),
            ("exports/*.parquet", ParquetSource),
            ("A.PARQUET", ParquetSource),
            ("a.ndjson", NdjsonSource),
            ("exports/2026-*.jsonl", NdjsonSource),
            ("a.txt", CsvSource),  # any other extension: CSV, as before kinds were inferred
            ("exports/*", CsvSource),
        ],
    )
    def test_the_extension_gives_the_kind(self, path: str, model: type) -> None:
        assert isinstance(SOURCE.validate_python({"path": path}), model)

    def test_an_explicit_kind_wins(self) -> None:
        assert isinstance(SOURCE.validate_python({"kind": "csv", "path": "odd.parquet"}), CsvSource)
        assert isinstance(SOURCE.validate_python({"kind": "ndjson", "path": "x.txt"}), NdjsonSource)

    @pytest.mark.parametrize("path", ["list.xlsx", "list.XLS", "list.csv.gz", "list.zip", "list.json"])
    def test_formats_that_are_never_csv_are_refused_without_kind(self, path: str) -> None:
        with pytest.raises(ValidationError, match="is not a CSV file by its extension"):
            SOURCE.validate_python({"path": path})


class TestPreflight:
    def test_a_good_file_passes_and_reads_only_its_start(self, tmp_path: Path) -> None:
        """A 2M-row CSV is checked from its header and first row: well under a second."""
        import time

        pl.DataFrame({"phone": [f"+659{i:07d}" for i in range(2_000_000)]}).write_csv(tmp_path / "big.csv")
        started = time.monotonic()
        preflight_source(CsvSource(path=str(tmp_path / "big.csv")))
        assert time.monotonic() - started < 1.0

    def test_header_and_blank_lines_only_is_nothing_to_send(self, tmp_path: Path) -> None:
        (tmp_path / "a.csv").write_text("phone,name\n\n\n")
        with pytest.raises(SourceError, match="no row with a value in its phone column 'phone': nothing to"):
            preflight_source(CsvSource(path=str(tmp_path / "a.csv")))

    def test_an_empty_parquet_or_ndjson_file_is_nothing_to_send(self, tmp_path: Path) -> None:
        pl.DataFrame(schema={"phone": pl.String}).write_parquet(tmp_path / "a.parquet")
        with pytest.raises(SourceError, match="has no rows: nothing to send"):
            preflight_source(ParquetSource(path=str(tmp_path / "a.parquet")))
        (tmp_path / "a.ndjson").write_text("")
        with pytest.raises(SourceError, match="is empty: nothing to send"):
            preflight_source(NdjsonSource(path=str(tmp_path / "a.ndjson")))

    def test_a_glob_with_one_header_only_file_among_others_passes(self, tmp_path: Path) -> None:
        (tmp_path / "a.csv").write_text("phone\n")
        (tmp_path / "b.csv").write_text("phone\n+6591234567\n")
        preflight_source(CsvSource(path=str(tmp_path / "*.csv")))

    def test_empty_trailing_header_cells_are_not_duplicates(self, tmp_path: Path) -> None:
        """Spreadsheets often export `phone,name,,`: blank names are not refused as repeats."""
        (tmp_path / "a.csv").write_text("phone,name,,\n+6591234567,Ann,,\n")
        preflight_source(CsvSource(path=str(tmp_path / "a.csv")))

    def test_a_non_utf8_header_names_the_byte_and_the_fix(self, tmp_path: Path) -> None:
        (tmp_path / "a.csv").write_bytes("téléphone\n+6591234567\n".encode("latin-1"))
        with pytest.raises(SourceError, match=r"not UTF-8 \(byte 0xe9 at offset 1\).*utf8-lossy"):
            preflight_source(CsvSource(path=str(tmp_path / "a.csv")))

    def test_a_long_header_is_read_when_the_limit_is_raised(self, tmp_path: Path) -> None:
        names = ["phone"] + [f"c{i}_" + "x" * 1000 for i in range(1_200)]  # a 1.2 MB header
        (tmp_path / "a.csv").write_text(",".join(names) + "\n" + "+6591234567" + "," * 1_200 + "\n")
        with pytest.raises(SourceError, match="longer than 1,048,576 bytes"):
            preflight_source(CsvSource(path=str(tmp_path / "a.csv")))
        preflight_source(CsvSource(path=str(tmp_path / "a.csv"), max_header_bytes=4 * 1024 * 1024))

    def test_the_reader_refuses_binary_ndjson_too(self, tmp_path: Path) -> None:
        (tmp_path / "a.ndjson").write_bytes(gzip.compress(b'{"phone": "+6591234567"}\n'))
        with pytest.raises(SourceError, match="does not look like a text NDJSON file"):
            load_source(NdjsonSource(path=str(tmp_path / "a.ndjson")))

    def test_an_http_source_is_left_to_its_reader(self) -> None:
        """No request is made by the preflight (the flow would fetch the page twice)."""
        preflight_source(SOURCE.validate_python({"kind": "http", "url": "http://127.0.0.1:9/nothing-here"}))
