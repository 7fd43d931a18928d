"""The streaming pipeline: source chunks -> validate -> render -> Parquet spool, in bounded memory.

A campaign's recipients are read in chunks (`tasks.sources.iter_source_batches`); each chunk is numbered on
from the previous one (`source_row` keeps increasing), validated (`validate_recipients`) and rendered
(`render_messages`), and its results are appended to Parquet files in a spool folder under the campaign's
data folder. Only one chunk is in memory at a time, so a 10M-row list validates and renders in well under
2 GB. A small list is the same path with one chunk. `write_spool` does this for any chunks; the
`spool-campaign` task (`spool_campaign`) does it for a campaign's source, in a folder of its own.

    <data folder>/spool/<campaign>-<token>/
        owner.json                        the run it belongs to, and its heartbeat (tasks/spool_owner.py)
        messages/part-00000.parquet ...   rendered messages in source order (all that render returns)
        rejects/part-00000.parquet ...    rejected rows: original values, source_row, reasons, reason_text
        keys/part-00000.parquet ...       (_key, source_row) of every row validation passed: dedupe's input
        plan/part-00000.parquet ...       (phone, message) of the rows this run sends (tasks/plan.py)

Validation de-duplicates within a chunk. Across chunks, `_repeats` finds every row whose number first passed
validation on an earlier row, with polars' streaming engine (a group-by on the Int64 key for each number's
first row, then a join; in hash partitions of 2M keys, so memory stays flat); `_dedupe` takes those rows
out of the message parts and rejects them as `duplicate of row N`. First occurrence wins, as in one frame,
and the messages are the same whatever the chunk size. One difference is by design: a row rejected for
another reason (mainland, suppressed) whose number was in an earlier chunk does not get `duplicate` added to
its reasons, since only rows that could be sent are compared across chunks. Counts by reason are summed
chunk by chunk; the reject-share check runs on the totals.

The flow deletes the spool when the run ends (`Spool.remove`): it holds phone numbers. A run that was killed
cannot; the next run of any campaign with the same data folder removes its spool, and never a live run's
(`tasks/spool_owner.py`). The data folder is the campaign's `data_folder` (`globe_sms/paths.py`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, State

from globe_sms.campaign import Campaign
from globe_sms.spreadsheets import neutralise_for_spreadsheets
from globe_sms.template import MessageTemplate
from globe_sms.validation_rules import TooManyRejects, ValidationRules
from tasks.cost import CostEstimate
from tasks.preview import SAMPLE_SIZE, Preview, build_preview
from tasks.reasons import DUPLICATE
from tasks.render import render_messages
from tasks.report import ARTIFACT_TABLE_ROWS
from tasks.segments import count_culprits
from tasks.sources import DEFAULT_BATCH_ROWS, SourceError, describe_source, iter_source_batches
from tasks.spool_owner import claim_spool, release_spool, sweep_abandoned_spools
from tasks.stop import StoppedBeforeSending, interruptible
from tasks.validate import load_opt_outs, validate_recipients

CHUNK_ROWS_ENV = "GLOBE_SMS_CHUNK_ROWS"
PARTS = "part-*.parquet"
COMPRESSION: Final = "lz4"  # the spool lives for one run: fast beats small
MESSAGE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "phone": pl.String,
    "country": pl.String,
    "dialing_code": pl.String,
    "source_row": pl.Int64,
    "message": pl.String,
    "encoding": pl.String,
    "segments": pl.Int64,
    "chars": pl.Int64,
    "ucs2_chars": pl.String,
}
"""The columns every message part has (besides the source's own), and an empty spool's schema."""
DEDUPE_PARTITION_ROWS = 2_000_000
DEDUPE_SEED = 20261125
REJECT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "source_row": pl.Int64,
    "reasons": pl.List(pl.String),
    "reason_text": pl.String,
}
REPORT_REJECTS_LIMIT = 100_000
"""Up to this many rejects publish_report gets all (its artifact says "first 200 of N"); past it, 200."""


@dataclass(frozen=True)
class ChunkStats:
    """What one chunk did, for progress logs."""

    chunk: int
    rows: int
    first_row: int
    valid: int
    rejected: int


@dataclass(frozen=True)
class Spool:
    """A campaign's validated and rendered recipients on disk, with the counts of the whole list.

    Attributes:
        folder: the spool folder (see the module docstring for its layout).
        source_rows: rows read from the source.
        valid: messages ready to send (after cross-chunk de-duplication).
        rejected: rejected rows (validation, rendering and cross-chunk duplicates).
        invalid: rows rejected by validation for a data reason (not duplicate or suppressed only).
        rejected_by_reason: rejected rows per reason code (`missing_value:x` counts as `missing_value`).
        ucs2_culprits: character -> messages it forces into UCS-2, most frequent first.
        chunks: how many chunks were read.
        opt_outs_ignored: opt-out entries that could not be read, skipped under
            `validation.suppression_unreadable: ignore`.
    """

    folder: Path
    source_rows: int = 0
    valid: int = 0
    rejected: int = 0
    invalid: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    ucs2_culprits: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    opt_outs_ignored: int = 0

    @property
    def messages_dir(self) -> Path:
        return self.folder / "messages"

    @property
    def rejects_dir(self) -> Path:
        return self.folder / "rejects"

    def message_parts(self) -> list[Path]:
        """The message parts in source order."""
        return sorted(self.messages_dir.glob(PARTS))

    def scan_messages(self) -> pl.LazyFrame:
        """Every message, in source order."""
        parts = self.message_parts()
        if not parts:
            return pl.LazyFrame(schema=MESSAGE_SCHEMA)
        return pl.concat([pl.scan_parquet(part) for part in parts], how="diagonal_relaxed")

    def scan_rejects(self) -> pl.LazyFrame:
        """Every rejected row, by source row."""
        parts = sorted(self.rejects_dir.glob(PARTS))
        if not parts:
            return pl.LazyFrame(schema=REJECT_SCHEMA)
        return pl.concat([pl.scan_parquet(part) for part in parts], how="diagonal_relaxed").sort("source_row")

    def rejects_head(self, rows: int) -> pl.DataFrame:
        """The first `rows` rejected rows by source row (for the report's table)."""
        return self.scan_rejects().head(rows).collect()

    def report_rejects(self) -> pl.DataFrame:
        """The rejects for `tasks.report.publish_report`: all of them, or the first `ARTIFACT_TABLE_ROWS` of a
        list with more than `REPORT_REJECTS_LIMIT` (the artifact shows only those; the CSV has every row)."""
        if self.rejected > REPORT_REJECTS_LIMIT:
            return self.rejects_head(ARTIFACT_TABLE_ROWS)
        return self.scan_rejects().collect()

    def write_rejects_csv(self, path: Path) -> Path | None:
        """Write every rejected row (lists joined with `; `) as CSV, streaming; None when there is none.

        Cells and headers are neutralised for spreadsheets (`globe_sms.spreadsheets`): people open it in one.
        """
        if self.rejected == 0:
            return None
        scan = self.scan_rejects()
        lists = [name for name, dtype in scan.collect_schema().items() if isinstance(dtype, pl.List)]
        path.parent.mkdir(parents=True, exist_ok=True)
        joined = scan.with_columns(pl.col(name).list.join("; ") for name in lists)
        neutralise_for_spreadsheets(joined).sink_csv(path)  # no cell becomes a live formula
        return path

    def preview(self, cost: CostEstimate | None, *, batches: int, calls_per_second: float) -> Preview:
        """The pre-send preview of the spool: counts from one aggregation, samples from its first rows."""
        head = self.scan_messages().head(SAMPLE_SIZE).collect()
        preview = build_preview(
            head, self.ucs2_culprits, cost, batches=batches, calls_per_second=calls_per_second
        )
        by_shape = self.scan_messages().group_by("encoding", "segments").len().collect()
        encodings = by_shape.group_by("encoding").agg(pl.col("len").sum()).sort("encoding")
        distribution = by_shape.group_by("segments").agg(pl.col("len").sum()).sort("segments")
        return preview.model_copy(
            update={
                "messages": int(by_shape["len"].sum()),
                "encodings": {str(k): int(v) for k, v in encodings.iter_rows()},
                "segments": int((by_shape["segments"] * by_shape["len"]).sum() or 0),
                "segment_distribution": {int(k): int(v) for k, v in distribution.iter_rows()},
            }
        )

    def remove(self) -> None:
        """Delete the spool folder (it holds phone numbers), and `spool/` above it once it is empty."""
        release_spool(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another run's spool is still there
            self.folder.parent.rmdir()


def rejects_file(data_folder: Path, campaign_id: str) -> Path:
    """Where a run writes its rejects: `<data folder>/<campaign>-rejects.csv`."""
    return data_folder / f"{campaign_id}-rejects.csv"


def new_spool_folder(data_folder: Path, campaign_id: str) -> Path:
    """A fresh folder `<data folder>/spool/<campaign>-<token>` (not created yet)."""
    return data_folder / "spool" / f"{campaign_id}-{uuid.uuid4().hex[:12]}"


def reason_counts(rejects: pl.DataFrame) -> Counter[str]:
    """Rejected rows per reason code; `missing_value:first_name` counts as `missing_value`."""
    if rejects.height == 0:
        return Counter()
    reasons = rejects.select(pl.col("reasons").explode().str.split(":").list.first().alias("reason"))
    counts = reasons.group_by("reason").len()
    return Counter(dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True)))


def _write(frame: pl.DataFrame, folder: Path, index: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / f"part-{index:05d}.parquet", compression=COMPRESSION)


def _numbered(chunk: pl.DataFrame, first_row: int) -> pl.DataFrame:
    """`chunk` with `source_row` numbered from `first_row` (1-based over the whole source)."""
    if "source_row" in chunk.columns:
        raise SourceError(
            "source: a column is named 'source_row', which globe-sms uses to number the rows; rename it"
        )
    rows = pl.int_range(first_row, first_row + chunk.height, dtype=pl.Int64, eager=True)
    return chunk.with_columns(rows.alias("source_row"))


def write_spool(
    chunks: Iterable[pl.DataFrame],
    folder: Path,
    *,
    phone_column: str,
    template: MessageTemplate | str,
    rules: ValidationRules | None = None,
    on_chunk: Callable[[ChunkStats], None] | None = None,
) -> Spool:
    """Validate and render `chunks` one at a time into a spool at `folder`, de-duplicate across chunks, and
    check the reject share on the totals. When anything fails, the folder is deleted; either way the chunks'
    source is closed (a generator holding a database connection or an HTTP client lets go of it).

    Args:
        chunks: all-text frames in source order (from `iter_source_batches`).
        folder: where to write the spool (created if absent, e.g. by `claim_spool`; must not hold a
            spool already).
        phone_column: the phone column.
        template: the message template.
        rules: validation rules (the opt-out lists are read once, before the first chunk, not per chunk).
        on_chunk: called after each chunk, e.g. to log progress.

    Returns:
        The `Spool`, with the whole list's counts.

    Raises:
        FileExistsError: `folder` holds a spool already (it is left alone).
        RecipientSchemaError, TemplateError: from validation and rendering of the first chunk.
        SourceError: from the source, part-way or at the start.
        SuppressionError: an opt-out list is missing, unreadable, or has entries that are not numbers (under
            `suppression_unreadable: error`); raised before the source is read.
        TooManyRejects: more of the list is invalid than `rules.max_reject_share` allows.
    """
    rules = rules if rules is not None else ValidationRules()
    try:
        if any((folder / name).exists() for name in ("messages", "rejects", "keys")):
            raise FileExistsError(f"{folder} holds a spool already")
        try:
            spool = _fill_spool(chunks, folder, phone_column, template, rules, on_chunk)
            check_reject_share(spool, rules)
        except BaseException:
            Spool(folder).remove()
            raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return spool


def _fill_spool(
    chunks: Iterable[pl.DataFrame],
    folder: Path,
    phone_column: str,
    template: MessageTemplate | str,
    rules: ValidationRules,
    on_chunk: Callable[[ChunkStats], None] | None,
) -> Spool:
    """Validate, render and write the chunks, then de-duplicate across them (`write_spool` without checks)."""
    opt_outs = load_opt_outs(rules)  # before the source: an unusable opt-out list stops the run at once
    rules = rules.model_copy(update={"suppression_file": None, "suppression": None})
    folder.mkdir(parents=True, exist_ok=True)
    spool = Spool(folder)
    reasons: Counter[str] = Counter()
    culprits: Counter[str] = Counter()
    next_row, valid, rejected, invalid, count = 1, 0, 0, 0, 0
    for index, raw in enumerate(chunks):
        if raw.height == 0:
            continue
        chunk = _numbered(raw, next_row)
        validation = validate_recipients(chunk, phone_column, rules, opt_outs)
        rendered = render_messages(validation.valid, template)
        frames = [frame for frame in (validation.rejects, rendered.rejects) if frame.height]
        rejects = pl.concat(frames, how="diagonal_relaxed") if frames else validation.rejects
        if rendered.messages.height:
            _write(rendered.messages, spool.messages_dir, index)
        if rejects.height:
            _write(rejects, spool.rejects_dir, index)
        keys = validation.valid.select(pl.col("phone").cast(pl.Int64).alias("_key"), "source_row")
        _write(keys, folder / "keys", index)
        reasons.update(reason_counts(rejects))
        culprits.update(rendered.ucs2_culprits)
        valid += rendered.messages.height
        rejected += rejects.height
        invalid += validation.invalid
        count += 1
        if on_chunk is not None:
            on_chunk(ChunkStats(count, chunk.height, next_row, rendered.messages.height, rejects.height))
        next_row += chunk.height
    spool = Spool(folder, next_row - 1, valid, rejected, invalid, dict(reasons), {}, count)
    if count > 1:
        dedupe = _dedupe(spool)
        if dedupe is not None:
            removed = dedupe.removed
            if removed.height:
                culprits.subtract(count_culprits(removed))
                message_only = [
                    c for c in MESSAGE_SCHEMA if c not in ("phone", "country", "dialing_code", "source_row")
                ]
                _write(removed.drop(message_only), spool.rejects_dir, count)  # after the chunks' parts
            reasons.subtract(reason_counts(dedupe.relabelled))
            reasons[DUPLICATE] += removed.height + dedupe.relabelled.height
            spool = replace(spool, valid=valid - removed.height, rejected=rejected + removed.height)
    ordered = sorted(
        ((char, n) for char, n in culprits.items() if n > 0), key=lambda item: (-item[1], item[0])
    )
    return replace(
        spool,
        rejected_by_reason={k: v for k, v in reasons.items() if v},
        ucs2_culprits=dict(ordered),
        opt_outs_ignored=opt_outs.ignored if opt_outs is not None else 0,
    )


def _repeats(spool: Spool) -> pl.DataFrame:
    """`source_row`, `_first_row` of every validation-passed row whose number first passed on an earlier row.

    The keys are split into hash partitions of about `DEDUPE_PARTITION_ROWS` rows, each its own streaming
    query over the key parts (a group-by for the first row of each number, then a join), so the hash tables
    never hold more than one partition: memory stays flat as the list grows.
    """
    keys = pl.scan_parquet(spool.folder / "keys" / PARTS)
    total = keys.select(pl.len()).collect().item()
    partitions = max(1, -(-total // DEDUPE_PARTITION_ROWS))
    found = []
    for partition in range(partitions):
        mine = (
            keys.filter(pl.col("_key").hash(seed=DEDUPE_SEED) % partitions == partition)
            if partitions > 1
            else keys
        )
        firsts = mine.group_by("_key").agg(pl.col("source_row").min().alias("_first_row"))
        found.append(
            mine.join(firsts, on="_key")
            .filter(pl.col("source_row") != pl.col("_first_row"))
            .select("source_row", "_first_row")
            .collect(engine="streaming")
        )
    return pl.concat(found).sort("source_row")


def _split_parts(
    parts: list[Path], repeats: pl.DataFrame
) -> Iterator[tuple[Path, pl.DataFrame, pl.DataFrame]]:
    """For each part with repeated rows: the part, its other rows, and its repeated rows with `_first_row`."""
    for part in parts:
        frame = pl.read_parquet(part)
        low, high = frame.select(
            pl.col("source_row").min().alias("low"), pl.col("source_row").max().alias("high")
        ).row(0)
        hits = repeats.filter(pl.col("source_row").is_between(low, high))
        if hits.height == 0:
            continue
        repeated = frame.join(hits, on="source_row", how="inner", maintain_order="left")
        if repeated.height:
            yield part, frame.join(hits, on="source_row", how="anti", maintain_order="left"), repeated


def _as_duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit([DUPLICATE], dtype=pl.List(pl.String)).alias("reasons"),
        pl.format("duplicate of row {}", pl.col("_first_row")).alias("reason_text"),
    ).drop("_first_row")


@dataclass(frozen=True)
class _Dedupe:
    removed: pl.DataFrame  # message rows taken out of the spool, as duplicate rejects (message columns kept)
    relabelled: pl.DataFrame  # reject rows that are duplicates too: their reasons before relabelling


def _dedupe(spool: Spool) -> _Dedupe | None:
    """Take later repeats of a number out of the message parts and reject them as duplicates (None: none).

    The first row that passes validation wins, as within one frame: a later row rendering rejected (a missing
    value) is relabelled `duplicate of row N` too, as one frame would have it.
    """
    repeats = _repeats(spool)
    if repeats.height == 0:
        return None
    removed = []
    for part, kept, repeated in _split_parts(spool.message_parts(), repeats):
        if kept.height:
            kept.write_parquet(part, compression=COMPRESSION)
        else:
            part.unlink()
        removed.append(_as_duplicates(repeated))
    relabelled = []
    for part, kept, repeated in _split_parts(sorted(spool.rejects_dir.glob(PARTS)), repeats):
        relabelled.append(repeated.select("reasons"))
        pl.concat([kept, _as_duplicates(repeated)]).sort("source_row").write_parquet(
            part, compression=COMPRESSION
        )
    if not removed and not relabelled:
        return None
    empty_reasons = pl.DataFrame(schema={"reasons": pl.List(pl.String)})
    return _Dedupe(
        pl.concat(removed) if removed else pl.DataFrame(schema={**MESSAGE_SCHEMA, **REJECT_SCHEMA}),
        pl.concat(relabelled) if relabelled else empty_reasons,
    )


def check_reject_share(spool: Spool, rules: ValidationRules) -> None:
    """Fail before sending when too much of the list is invalid (duplicates and suppressed rows do not count).

    Raises:
        TooManyRejects: `invalid / source_rows` exceeds `rules.max_reject_share`.
    """
    share = spool.invalid / spool.source_rows if spool.source_rows else 0.0
    if share > rules.max_reject_share:
        raise TooManyRejects(
            f"{share:.2%} of the recipients are invalid ({spool.invalid} of {spool.source_rows} rows), "
            f"above max_reject_share {rules.max_reject_share:.2%}; nothing was sent"
        )


def chunk_rows(environ: Mapping[str, str] | None = None) -> int:
    """Rows per chunk: `GLOBE_SMS_CHUNK_ROWS` if set, else `DEFAULT_BATCH_ROWS`.

    Raises:
        ValueError: the variable is not a positive integer.
    """
    raw = (os.environ if environ is None else environ).get(CHUNK_ROWS_ENV, "").strip()
    if not raw:
        return DEFAULT_BATCH_ROWS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CHUNK_ROWS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


@task(name="spool-campaign", cache_policy=NO_CACHE)
def spool_campaign(campaign: Campaign, batch_rows: int | None = None) -> Spool | State:
    """Read, validate and render the campaign's recipients, chunk by chunk, into a spool.

    Args:
        campaign: a `globe_sms.campaign.Campaign`.
        batch_rows: rows per chunk; default `chunk_rows()` (`GLOBE_SMS_CHUNK_ROWS`, else 500,000). The
            peak memory grows with it (see bench/README-sources.md).

    Returns:
        The spool under the campaign's data folder; the caller removes it when the run ends. Spools that
        killed runs left in that folder are removed first (never a live run's: `tasks/spool_owner.py`).
        A Cancelled state (the task run's final state; call with `return_state=True` to see it) when a stop
        request came while the recipients were read: nothing is left behind, nothing was registered.

    Raises:
        SourceError: the source cannot be read (nothing is sent).
        SuppressionError: an opt-out list cannot be used (nothing is sent).
        RecipientSchemaError, TemplateError: the list or the template cannot be used.
        TooManyRejects: more of the list is invalid than `validation.max_reject_share` allows.
    """
    logger = get_run_logger()
    batch_rows = batch_rows if batch_rows is not None else chunk_rows()
    source = campaign.source
    logger.info("reading recipients from %s in chunks of %s rows", describe_source(source), f"{batch_rows:,}")

    def log(stats: ChunkStats) -> None:
        logger.info(
            "chunk %s: rows %s-%s, %s valid, %s rejected",
            stats.chunk,
            f"{stats.first_row:,}",
            f"{stats.first_row + stats.rows - 1:,}",
            f"{stats.valid:,}",
            f"{stats.rejected:,}",
        )

    folder = new_spool_folder(campaign.data_folder, campaign.campaign_id)
    removed = sweep_abandoned_spools(folder.parent)
    if removed:
        logger.info("removed %s spool(s) left by runs that crashed: %s", len(removed), ", ".join(removed))
    # Reading sends nothing, and a spool cut short is removed: a stop request (Ctrl-C, the worker's SIGTERM
    # for a Cancel) ends it at once instead of after the whole list, however slow the source.
    try:
        with interruptible("reading the recipients", "reading the recipients"):
            chunks = iter_source_batches(source, batch_rows)
            claim_spool(folder)  # write_spool removes it if spooling fails
            spool = write_spool(
                chunks,
                folder,
                phone_column=source.phone_column,
                template=campaign.template,
                rules=campaign.validation,
                on_chunk=log,
            )
    except StoppedBeforeSending as stopped:
        Spool(folder).remove()  # if the stop came between the claim and the spool's own clean-up
        logger.warning("%s: nothing was sent", stopped)
        return Cancelled(message=str(stopped))
    if spool.opt_outs_ignored:
        logger.warning(
            "%s opt-out entries could not be read as numbers and were ignored "
            "(validation.suppression_unreadable: ignore)",
            f"{spool.opt_outs_ignored:,}",
        )
    return spool
