"""SMS encoding (GSM-7 or UCS-2) and segment counting, vectorised over polars frames.

The rules (3GPP TS 23.038 / 23.040, and Alibaba's limits in `reference/alibaba-sms-api.md` §7):

- A message is **GSM-7** when every character is in the GSM 03.38 basic table or its extension table. The
  tables are read from the `gsm0338` codec at import time, never pasted: a pasted table is how a backtick ends
  up where `§` belongs. Extension characters (`\\f ^ { } \\ [ ~ ] | €`) cost 2 septets (ESC + char).
  `ESC` (0x1B) itself is not a character a message may contain, so it forces UCS-2 like any unmapped one.
- Otherwise the message is **UCS-2**, counted in UTF-16 code units: characters outside the BMP (most emoji)
  are a surrogate pair and count 2.
- One segment holds 160 septets (GSM-7) or 70 units (UCS-2); once concatenated, each part holds 153 or 67
  (the UDH takes 6 bytes). Parts are cut greedily and never inside an ESC pair or a surrogate pair, so a part
  can end one unit short and the count can exceed `ceil(units / 153)`. The vectorised count computes that
  lower bound and re-splits in Python only the rare rows where a double-width character can change the answer
  (multi-part rows within `parts - 1` units of a part boundary): see `_exact_segments`.
- An empty message is GSM-7, 0 units, 1 segment.
- The characters forcing UCS-2 (`ucs2_chars`) are listed per message, once each, in order of first appearance.

`encoding_and_segments` adds the columns to a frame (eager or lazy), scanning the message, or from `TextStats`
a caller assembled more cheaply (`render_messages` sums them over the template's pieces). `describe_text` and
`count_segments` are the scalar twins, for tests and the preview. `SMART_REPLACEMENTS` and the culprit report
(`count_culprits`, `culprit_table`) close the module.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TypeVar

import gsm0338  # noqa: F401  # registers the "gsm03.38" codec
import polars as pl

from schemas.segment_limits import SEGMENT_LIMITS, Encoding

__all__ = [
    "GSM_ALPHABET",
    "GSM_BASIC",
    "GSM_EXTENSION",
    "SEGMENT_COLUMNS",
    "SMART_REPLACEMENTS",
    "SegmentInfo",
    "TextStats",
    "count_culprits",
    "count_segments",
    "culprit_table",
    "describe_text",
    "encoding_and_segments",
    "non_gsm_chars",
    "smart_replace_expr",
    "smart_replace_text",
]

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

_CODEC = "gsm03.38"
_ESCAPE = 0x1B


def _decode_or_none(raw: bytes) -> str | None:
    try:
        text = raw.decode(_CODEC)
    except UnicodeDecodeError:
        return None
    return text if len(text) == 1 else None


def _basic_table() -> str:
    """The 127 characters of the default alphabet, read from the codec (0x1B is the escape, not a char)."""
    chars = (_decode_or_none(bytes([b])) for b in range(128) if b != _ESCAPE)
    return "".join(c for c in chars if c is not None)


def _extension_table() -> str:
    """The characters reachable through ESC + byte in the codec's single-shift (extension) table."""
    chars = (_decode_or_none(bytes([_ESCAPE, b])) for b in range(128) if b != _ESCAPE)
    return "".join(c for c in chars if c is not None)


GSM_BASIC: str = _basic_table()
GSM_EXTENSION: str = _extension_table()
GSM_ALPHABET: frozenset[str] = frozenset(GSM_BASIC + GSM_EXTENSION)
_EXTENSION_SET: frozenset[str] = frozenset(GSM_EXTENSION)

SEGMENT_COLUMNS: tuple[str, ...] = ("encoding", "segments", "chars", "ucs2_chars")


def _regex_class(chars: str) -> str:
    # \x{..} escapes keep every character literal inside a Rust-regex class (whichever are special there).
    return "".join(f"\\x{{{ord(c):X}}}" for c in sorted(set(chars)))


_NON_GSM_RE = f"[^{_regex_class(GSM_BASIC + GSM_EXTENSION)}]"  # one character forcing UCS-2
_EXTENSION_RE = f"[{_regex_class(GSM_EXTENSION)}]"
_SPECIAL_RE = f"[^{_regex_class(GSM_BASIC)}]"  # one character costing more than one basic septet
_ASTRAL_RE = r"[\x{10000}-\x{10FFFF}]"


# ------------------------------------------------------------------------------------------------------------
# Scalar rules (tests, UI, and the exact re-split of ambiguous rows)
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentInfo:
    """Encoding and size of one message."""

    encoding: Encoding
    segments: int
    chars: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    ucs2_chars: str  # distinct characters forcing UCS-2, in order of appearance; "" for GSM-7


def non_gsm_chars(text: str) -> str:
    """The distinct characters of `text` that are not GSM 03.38, in order of first appearance."""
    return "".join(dict.fromkeys(c for c in text if c not in GSM_ALPHABET))


def _unit_widths(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM7":
        return [2 if c in _EXTENSION_SET else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _greedy_parts(widths: list[int], per_part: int) -> int:
    """Parts needed when each holds `per_part` units and a 2-unit character is never cut."""
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts += 1
            used = 0
        used += width
    return parts


def describe_text(text: str) -> SegmentInfo:
    """Encoding, segment count, size in encoding units and UCS-2 culprits of one message.

    Example:
        >>> describe_text("Price: 5€")
        SegmentInfo(encoding='GSM7', segments=1, chars=10, ucs2_chars='')
    """
    culprits = non_gsm_chars(text)
    encoding: Encoding = "UCS2" if culprits else "GSM7"
    widths = _unit_widths(text, encoding)
    units = sum(widths)
    single, multi = SEGMENT_LIMITS[encoding]
    segments = 1 if units <= single else _greedy_parts(widths, multi)
    return SegmentInfo(encoding, segments, units, culprits)


def count_segments(text: str) -> tuple[Encoding, int]:
    """`(encoding, segments)` for one message, by the same rules as the vectorised count."""
    info = describe_text(text)
    return info.encoding, info.segments


# ------------------------------------------------------------------------------------------------------------
# Vectorised rules
# ------------------------------------------------------------------------------------------------------------


def has_non_gsm(text: pl.Expr) -> pl.Expr:
    """True where the string contains a character outside GSM 03.38 (so the message must be UCS-2)."""
    return text.str.contains(_NON_GSM_RE)


def has_special(text: pl.Expr) -> pl.Expr:
    """True where the string has a character that is not in the GSM basic table (extension or non-GSM)."""
    return text.str.contains(_SPECIAL_RE)


def non_gsm_class(chars: str) -> str:
    """A regex character class matching any of `chars` (escaped for the Rust regex engine)."""
    return f"[{_regex_class(chars)}]"


def _dedupe_flagged(batch: pl.Series) -> pl.Series:
    """De-duplicate the characters of the flagged rows only, gathering them out and scattering them back."""
    fields = batch.struct
    text, flag = fields.field("text"), fields.field("flag").fill_null(False)
    if not flag.any():
        return text
    index = flag.arg_true()
    fixed = text.gather(index).str.split("").list.unique(maintain_order=True).list.join("")
    return text.scatter(index, fixed)


def dedupe_chars(text: pl.Expr, where: pl.Expr | None = None) -> pl.Expr:
    """Each string's distinct characters, in order of first appearance; only the rows `where` is true.

    Row-wise: gathering the flagged rows first keeps the list work proportional to them, which a
    `when(where).then(...)` cannot (polars evaluates the branch for every row).
    """
    flag = pl.lit(True) if where is None else where
    return pl.struct(text=text, flag=flag).map_batches(
        _dedupe_flagged, return_dtype=pl.String, is_elementwise=True
    )


def culprits_expr(text: pl.Expr) -> pl.Expr:
    """Distinct non-GSM characters of each string, in order of first appearance ("" when there are none).

    One regex pass plus a list per row: cheap on short values, heavy on long UCS-2 messages (a Chinese message
    yields ~30 list items), which is why `render_messages` assembles them from the template's pieces.
    """
    return text.str.extract_all(_NON_GSM_RE).list.unique(maintain_order=True).list.join("")


def extension_count(text: pl.Expr) -> pl.Expr:
    """Number of GSM extension characters (2 septets each in a GSM-7 message)."""
    return text.str.count_matches(_EXTENSION_RE).cast(pl.Int64)


def astral_count(text: pl.Expr) -> pl.Expr:
    """Number of characters outside the BMP (a surrogate pair, 2 units, in a UCS-2 message)."""
    return text.str.count_matches(_ASTRAL_RE).cast(pl.Int64)


@dataclass(frozen=True)
class TextStats:
    """What sizing a message needs, as expressions a caller can assemble without scanning the message.

    All four are additive over concatenation (`ucs2_chars` up to de-duplication), so the stats of a rendered
    template are sums over its pieces.

    Attributes:
        length: characters (code points).
        extension: GSM extension characters among them.
        astral: characters outside the BMP among them.
        ucs2_chars: distinct non-GSM characters, in order of first appearance; "" exactly when GSM-7.
    """

    length: pl.Expr
    extension: pl.Expr
    astral: pl.Expr
    ucs2_chars: pl.Expr

    @classmethod
    def of_literal(cls, text: str) -> TextStats:
        """Constant stats of a known string."""
        return cls(
            length=pl.lit(len(text), dtype=pl.Int64),
            extension=pl.lit(sum(c in _EXTENSION_SET for c in text), dtype=pl.Int64),
            astral=pl.lit(sum(ord(c) > 0xFFFF for c in text), dtype=pl.Int64),
            ucs2_chars=pl.lit(non_gsm_chars(text), dtype=pl.String),
        )


def _exact_segments(batch: pl.Series) -> pl.Series:
    """Replace the lower bound by the exact greedy count on the flagged rows only (usually none)."""
    fields = batch.struct
    bound = fields.field("bound")
    ambiguous = fields.field("ambiguous").fill_null(False)
    if not ambiguous.any():
        return bound
    index = ambiguous.arg_true()
    texts = fields.field("message").gather(index)
    exact = [count_segments(text)[1] for text in texts.to_list()]
    return bound.scatter(index, pl.Series(exact, dtype=bound.dtype))


_TMP = {n: f"__seg_{n}" for n in ("text", "gsm", "len", "dbl", "ucs2", "units", "lb", "amb")}


def _scan_message(frame: pl.LazyFrame, text: pl.Expr) -> pl.LazyFrame:
    """The temporary stats columns from the message itself; each regex scans only its own encoding's rows."""
    gsm = pl.col(_TMP["gsm"])
    return frame.with_columns(has_non_gsm(text).not_().alias(_TMP["gsm"])).with_columns(
        text.str.len_chars().cast(pl.Int64).alias(_TMP["len"]),
        pl.coalesce(extension_count(pl.when(gsm).then(text)), astral_count(pl.when(~gsm).then(text))).alias(
            _TMP["dbl"]
        ),
        pl.when(gsm).then(pl.lit("")).otherwise(culprits_expr(pl.when(~gsm).then(text))).alias(_TMP["ucs2"]),
    )


def _use_stats(frame: pl.LazyFrame, text: pl.Expr, stats: TextStats) -> pl.LazyFrame:
    """The temporary stats columns from caller-assembled stats (nulls where the message is null)."""
    present = text.is_not_null()
    frame = frame.with_columns(pl.when(present).then(stats.ucs2_chars).alias(_TMP["ucs2"]))
    gsm = pl.col(_TMP["ucs2"]).str.len_bytes() == 0
    return frame.with_columns(gsm.alias(_TMP["gsm"])).with_columns(
        pl.when(present).then(stats.length).alias(_TMP["len"]),
        pl.when(present)
        .then(pl.when(pl.col(_TMP["gsm"])).then(stats.extension).otherwise(stats.astral))
        .alias(_TMP["dbl"]),
    )


def encoding_and_segments(
    frame: FrameT,
    message: pl.Expr | str = "message",
    *,
    prefix: str = "",
    stats: TextStats | None = None,
) -> FrameT:
    """Add `encoding`, `segments`, `chars` and `ucs2_chars` columns for a message column, vectorised.

    Counting runs as a few staged `with_columns`: polars does not reliably share regex sub-expressions between
    output columns, so intermediate results are materialised once as temporary columns. Only multi-part rows
    whose count a 2-unit character could change are re-split in Python (`_exact_segments`): none for
    single-segment messages, a handful in a typical campaign. That step is row-wise, so the streaming engine
    still spreads the work over the cores.

    Args:
        frame: a DataFrame or LazyFrame; the same kind is returned (a LazyFrame stays lazy).
        message: the message column name, or an expression producing the message text.
        prefix: prepended to the names of the added columns.
        stats: the message's `TextStats` when the caller can assemble them without scanning the message (see
            `render_messages`); by default they are computed from the message.

    Returns:
        `frame` plus `encoding` ("GSM7"|"UCS2"), `segments` (Int64), `chars` (Int64, septets or UTF-16 units)
        and `ucs2_chars` (String: distinct characters forcing UCS-2 in order of appearance, "" for GSM-7).
        A null message gives nulls in all four.

    Example:
        >>> encoding_and_segments(pl.DataFrame({"message": ["Hi €", "It’s 😀"]}))
        # encoding GSM7/UCS2, segments 1/1, chars 5/7, ucs2_chars ""/"’😀"
    """
    text = pl.col(_TMP["text"])
    gsm, units, bound = pl.col(_TMP["gsm"]), pl.col(_TMP["units"]), pl.col(_TMP["lb"])
    single = pl.when(gsm).then(pl.lit(SEGMENT_LIMITS["GSM7"][0])).otherwise(pl.lit(SEGMENT_LIMITS["UCS2"][0]))
    multi = pl.when(gsm).then(pl.lit(SEGMENT_LIMITS["GSM7"][1])).otherwise(pl.lit(SEGMENT_LIMITS["UCS2"][1]))
    lf = frame.lazy().with_columns(
        (pl.col(message) if isinstance(message, str) else message).alias(_TMP["text"])
    )
    lf = _scan_message(lf, text) if stats is None else _use_stats(lf, text, stats)
    lf = (
        lf.with_columns((pl.col(_TMP["len"]) + pl.col(_TMP["dbl"])).alias(_TMP["units"]))
        .with_columns(
            pl.when(units <= single)
            .then(pl.lit(1, dtype=pl.Int64))
            .otherwise((units + multi - 1) // multi)
            .alias(_TMP["lb"])
        )
        .with_columns(
            ((pl.col(_TMP["dbl"]) > 0) & (units > single) & (units + bound - 1 > bound * multi)).alias(
                _TMP["amb"]
            )
        )
        .with_columns(
            pl.when(gsm).then(pl.lit("GSM7")).when(~gsm).then(pl.lit("UCS2")).alias(prefix + "encoding"),
            pl.struct(message=text, bound=bound, ambiguous=pl.col(_TMP["amb"]))
            .map_batches(_exact_segments, return_dtype=pl.Int64, is_elementwise=True)
            .alias(prefix + "segments"),
            units.alias(prefix + "chars"),
            pl.col(_TMP["ucs2"]).alias(prefix + "ucs2_chars"),
        )
        .drop(_TMP.values())
    )
    return lf if isinstance(frame, pl.LazyFrame) else lf.collect()


# ------------------------------------------------------------------------------------------------------------
# Smart replacement and the UCS-2 culprit report
# ------------------------------------------------------------------------------------------------------------

# Typographic characters that force UCS-2, mapped to GSM-7 look-alikes (every target is in the basic table).
# Letters are never transliterated: `ë` -> `e` changes a name, so it stays and is reported as a culprit.
SMART_REPLACEMENTS: dict[str, str] = {
    "\u2018": "'",  # ‘ left single quotation mark
    "\u2019": "'",  # ’ right single quotation mark / apostrophe
    "\u201a": "'",  # ‚ single low-9 quotation mark
    "\u201b": "'",  # ‛ single high-reversed-9 quotation mark
    "\u2032": "'",  # ′ prime
    "\u00b4": "'",  # ´ acute accent used as an apostrophe
    "`": "'",  # backtick: ASCII, but not in GSM 03.38
    "\u201c": '"',  # “ left double quotation mark
    "\u201d": '"',  # ” right double quotation mark
    "\u201e": '"',  # „ double low-9 quotation mark
    "\u201f": '"',  # ‟ double high-reversed-9 quotation mark
    "\u2033": '"',  # ″ double prime
    "\u00ab": '"',  # « left-pointing double angle quotation mark
    "\u00bb": '"',  # » right-pointing double angle quotation mark
    "\u2010": "-",  # ‐ hyphen
    "\u2011": "-",  # ‑ non-breaking hyphen
    "\u2012": "-",  # ‒ figure dash
    "\u2013": "-",  # – en dash
    "\u2014": "-",  # — em dash
    "\u2015": "-",  # ― horizontal bar
    "\u2212": "-",  # − minus sign
    "\u2026": "...",  # … horizontal ellipsis
    "\u00a0": " ",  # no-break space
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\u2007": " ",  # figure space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u202f": " ",  # narrow no-break space
    "\u200b": "",  # zero-width space
    "\ufeff": "",  # zero-width no-break space (BOM)
}
_SMART_TABLE = str.maketrans(SMART_REPLACEMENTS)


def smart_replace_text(text: str) -> str:
    """Apply `SMART_REPLACEMENTS` to one string (templates are replaced once, at compile time)."""
    return text.translate(_SMART_TABLE)


def smart_replace_expr(text: pl.Expr) -> pl.Expr:
    """Apply `SMART_REPLACEMENTS` to a string expression (one Aho-Corasick pass)."""
    return text.str.replace_many(SMART_REPLACEMENTS)


def _per_char(messages: pl.DataFrame) -> pl.LazyFrame:
    """char -> messages, only_culprit; grouped by culprit string first (few distinct ones per campaign)."""
    return (
        messages.lazy()
        .filter(pl.col("ucs2_chars").str.len_bytes() > 0)
        .group_by("ucs2_chars")
        .len("count")
        .with_columns(
            pl.col("ucs2_chars").str.len_chars().alias("n"), pl.col("ucs2_chars").str.split("").alias("char")
        )
        .explode("char")
        .group_by("char")
        .agg(
            pl.col("count").sum().cast(pl.Int64).alias("messages"),
            pl.col("count").filter(pl.col("n") == 1).sum().cast(pl.Int64).alias("only_culprit"),
        )
        .sort(["messages", "char"], descending=[True, False])
    )


def count_culprits(messages: pl.DataFrame) -> dict[str, int]:
    """Character -> number of messages it forces into UCS-2, most frequent first (needs `ucs2_chars`)."""
    counts = _per_char(messages).collect()
    return dict(zip(counts["char"].to_list(), counts["messages"].to_list(), strict=True))


def culprit_table(messages: pl.DataFrame, limit: int | None = 20) -> pl.DataFrame:
    """The UCS-2 culprits as a table for the preview, one row per character, most frequent first.

    Args:
        messages: frame with a `ucs2_chars` column (as added by `encoding_and_segments`).
        limit: keep the first `limit` characters; None keeps all.

    Returns:
        `char`, `codepoint` ("U+2019"), `name` (Unicode name), `messages` (messages it forces into UCS-2) and
        `only_culprit` (of those, how many have no other culprit: replacing this one character would make
        them GSM-7).
    """
    per_char = _per_char(messages).collect()
    if limit is not None:
        per_char = per_char.head(limit)
    chars = per_char["char"].to_list()
    return per_char.select(
        "char",
        pl.Series("codepoint", [f"U+{ord(c):04X}" for c in chars], dtype=pl.String),
        pl.Series("name", [unicodedata.name(c, "?") for c in chars], dtype=pl.String),
        "messages",
        "only_culprit",
    )
