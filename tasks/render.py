"""Message templates compiled to polars expressions, with a null policy and per-recipient template selection.

A template (`globe_sms.template.MessageTemplate`, which also describes the placeholder syntax and the null
policy), such as ``"Hi {first_name|there}, your code is {code}"``, is parsed once, checked against the
frame's columns (an unknown placeholder is a `TemplateError` naming it), and compiled into one `pl.concat_str`
expression. Rendering, template selection (``when(lang == "en").then(...)``), encoding and segment counting
then run as one vectorised polars query over the whole frame: no Python runs per row.

Reject reasons (codes in `rejects.reasons`, sentences in `rejects.reason_text`):

- ``missing_value:<column>``: "missing value for <column>" (one per missing column; also a null `select_by`
  value without a fallback);
- ``no_template:<value>``: the `select_by` value has no template and there is no fallback;
- ``too_many_segments``: longer than ``max_segments``.

Errors: `compile_template` and `render_messages` raise `globe_sms.template.TemplateError` for a placeholder or
`select_by` column the frame does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from globe_sms.template import MessageTemplate, TemplateError, parse_template
from tasks.segments import (
    TextStats,
    astral_count,
    count_culprits,
    culprits_expr,
    dedupe_chars,
    encoding_and_segments,
    extension_count,
    has_special,
    non_gsm_chars,
    non_gsm_class,
    smart_replace_expr,
    smart_replace_text,
)

__all__ = [
    "MISSING_VALUE",
    "NO_TEMPLATE",
    "TOO_MANY_SEGMENTS",
    "CompiledTemplate",
    "RenderResult",
    "compile_template",
    "render_messages",
]

MISSING_VALUE, NO_TEMPLATE, TOO_MANY_SEGMENTS = "missing_value", "no_template", "too_many_segments"


# ------------------------------------------------------------------------------------------------------------
# Compilation
# ------------------------------------------------------------------------------------------------------------


def _value_column(name: str) -> str:
    return f"__render_value_{name}"


def _stat_column(name: str, stat: str) -> str:
    return f"__render_{stat}_{name}"


_STATS = ("length", "extension", "astral", "ucs2_chars")
_STRUCT = "__render_special"


def _prepare_values(frame: pl.DataFrame, names: Sequence[str], smart: bool) -> pl.DataFrame:
    """Add, per placeholder, its value (stripped text, null when missing) and that value's `TextStats`.

    Most values hold only basic GSM characters: their stats are their length and zeros. The others (a name
    with an accent, a CJK name, an emoji, a `~`) are analysed once per distinct value and joined back, so a
    campaign of a million Chinese names extracts UCS-2 culprits for a few thousand strings, not a million.
    """
    values = []
    for name in names:
        value = pl.col(name).cast(pl.String)
        if smart:
            # Every character it replaces is outside the basic table: leave the plain values alone.
            value = pl.coalesce(smart_replace_expr(pl.when(has_special(value)).then(value)), value)
        value = value.str.strip_chars()
        values.append(pl.when(value.str.len_bytes() > 0).then(value).alias(_value_column(name)))
    prepared = frame.lazy().with_columns(values).collect()

    lazy = prepared.lazy()
    for name in names:
        column = _value_column(name)
        value = pl.col(column)
        length, extension, astral, culprits = (_stat_column(name, stat) for stat in _STATS)
        special = prepared.lazy().select(value).filter(has_special(value)).unique().collect()
        # A missing value's stats are never read (its default's are, or the row is rejected): 0 and "" do.
        if special.height:
            # A lookup by value; replace_strict into a struct costs a third of an order-keeping join.
            stats = special.select(
                pl.struct(
                    extension_count(value).alias(extension),
                    astral_count(value).alias(astral),
                    culprits_expr(value).alias(culprits),
                )
            ).to_series()
            looked_up = value.replace_strict(special.get_column(column), stats, default=None)
            lazy = (
                lazy.with_columns(looked_up.alias(_STRUCT))
                .unnest(_STRUCT)
                .with_columns(pl.col(extension, astral).fill_null(0), pl.col(culprits).fill_null(""))
            )
        else:
            lazy = lazy.with_columns(
                pl.lit(0, dtype=pl.Int64).alias(extension),
                pl.lit(0, dtype=pl.Int64).alias(astral),
                pl.lit("", dtype=pl.String).alias(culprits),
            )
        lazy = lazy.with_columns(value.str.len_chars().cast(pl.Int64).alias(length))
    return lazy.collect()


def _as_list(reasons: Sequence[pl.Expr]) -> pl.Expr:
    if not reasons:
        return pl.lit([], dtype=pl.List(pl.String))
    return pl.concat_list(reasons).list.drop_nulls()


@dataclass(frozen=True)
class _Compiled:
    """One template's expressions; selection builds one when/then chain per field."""

    message: pl.Expr  # null exactly when a required value is missing
    reasons: pl.Expr  # list[str] of `missing_value:<column>`
    length: pl.Expr  # TextStats of the message, summed over the pieces
    extension: pl.Expr
    astral: pl.Expr
    ucs2_chars: pl.Expr  # may repeat a character where `may_repeat`
    may_repeat: pl.Expr


def _compile_one(text: str, template: MessageTemplate) -> _Compiled:
    """Compile one template into its message, its reasons and the message's `TextStats`.

    The stats are summed over the pieces instead of scanning each message: a literal's are known at compile
    time, a value's come from its own short string. The culprits concatenated in template order are the
    message's culprits in order of first appearance (a literal's exclude those of earlier literals), unless a
    value repeats a character of another piece: only the rows where that may happen (two values with culprits,
    or a value sharing one with the literals) are de-duplicated per row.
    """
    smart = template.smart_replace
    parts: list[pl.Expr] = []
    reasons: dict[str, pl.Expr] = {}
    pieces: list[TextStats] = []
    value_culprits: list[pl.Expr] = []
    literal_culprits = ""
    for piece in parse_template(text):
        if isinstance(piece, str):
            literal = smart_replace_text(piece) if smart else piece
            parts.append(pl.lit(literal))
            stats = TextStats.of_literal(literal)
            new = "".join(c for c in non_gsm_chars(literal) if c not in literal_culprits)
            literal_culprits += new
            pieces.append(dataclasses.replace(stats, ucs2_chars=pl.lit(new)))
            continue
        value = pl.col(_value_column(piece.name))
        stats = TextStats(*(pl.col(_stat_column(piece.name, stat)) for stat in _STATS))
        if template.on_missing == "default" and piece.default is not None:
            default = smart_replace_text(piece.default) if smart else piece.default
            parts.append(value.fill_null(pl.lit(default)))
            fallback = TextStats.of_literal(default)
            stats = TextStats(
                *(
                    pl.when(value.is_null()).then(getattr(fallback, stat)).otherwise(getattr(stats, stat))
                    for stat in _STATS
                )
            )
        else:
            parts.append(value)  # concat_str propagates the null: the whole message is null
            reasons.setdefault(
                piece.name, pl.when(value.is_null()).then(pl.lit(f"{MISSING_VALUE}:{piece.name}"))
            )
        pieces.append(stats)
        value_culprits.append(stats.ucs2_chars)

    ucs2_chars = pl.concat_str([p.ucs2_chars for p in pieces]) if pieces else pl.lit("")
    overlaps: list[pl.Expr] = []
    if len(value_culprits) >= 2:
        overlaps.append(
            pl.sum_horizontal([(c.str.len_bytes() > 0).cast(pl.Int32) for c in value_culprits]) >= 2
        )
    if literal_culprits and value_culprits:
        shared = non_gsm_class(literal_culprits)
        overlaps.extend(c.str.contains(shared) for c in value_culprits)
    return _Compiled(
        message=pl.concat_str(parts),
        reasons=_as_list(list(reasons.values())),
        length=pl.sum_horizontal([p.length for p in pieces]),
        extension=pl.sum_horizontal([p.extension for p in pieces]),
        astral=pl.sum_horizontal([p.astral for p in pieces]),
        ucs2_chars=ucs2_chars,
        may_repeat=pl.any_horizontal(overlaps) if overlaps else pl.lit(False),
    )


@dataclass(frozen=True)
class CompiledTemplate:
    """A template checked against a set of columns and compiled into polars expressions.

    `prepare` adds temporary columns to the frame (each placeholder's value and its stats); `message`,
    `reasons` and `stats` are then evaluated on the prepared frame, and the `temporary` columns dropped.
    `render_messages` does exactly this.

    Attributes:
        template: the source template.
        columns: the columns the template reads (placeholders, then `select_by`).
        message: the rendered message; null for a row the templating rejects.
        reasons: the templating reasons of each row (`list[str]`, empty for rows that render).
        stats: the message's `TextStats`, for `encoding_and_segments`.
        placeholders: the placeholder columns, in order of first use.
    """

    template: MessageTemplate
    columns: tuple[str, ...]
    message: pl.Expr
    reasons: pl.Expr
    stats: TextStats
    placeholders: tuple[str, ...]

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add the temporary columns the expressions read."""
        return _prepare_values(frame, self.placeholders, self.template.smart_replace)

    @property
    def temporary(self) -> tuple[str, ...]:
        """Names of the temporary columns `prepare` adds."""
        names = self.placeholders
        return tuple(_value_column(n) for n in names) + tuple(
            _stat_column(n, s) for n in names for s in _STATS
        )


def compile_template(template: MessageTemplate | str, columns: Sequence[str]) -> CompiledTemplate:
    """Check a template against `columns` and compile it into expressions (once per campaign).

    Args:
        template: the template (a plain string is accepted).
        columns: the columns of the frame it will render.

    Returns:
        The compiled template.

    Raises:
        TemplateError: a placeholder or the `select_by` column is not among `columns`; the message names it
            and lists the available columns.

    Example:
        >>> compile_template("Hi {frist_name}", ["phone", "first_name"])
        TemplateError: unknown placeholder {frist_name}; available columns: phone, first_name
    """
    template = MessageTemplate.model_validate(template)
    available = list(columns)
    listing = f"available columns: {', '.join(available) or '(none)'}"
    fields = template.placeholders()
    unknown = [name for name in fields if name not in available]
    if unknown:
        what = "placeholder" if len(unknown) == 1 else "placeholders"
        raise TemplateError(f"unknown {what} {', '.join('{' + n + '}' for n in unknown)}; {listing}")
    if template.select_by is not None and template.select_by not in available:
        raise TemplateError(f"unknown `select_by` column {template.select_by!r}; {listing}")

    compiled = {key: _compile_one(text, template) for key, text in template.templates().items()}
    if template.select_by is None:
        chosen = compiled[""]
    else:
        chosen = _select(template, compiled)
    stats = TextStats(
        length=chosen.length,
        extension=chosen.extension,
        astral=chosen.astral,
        ucs2_chars=dedupe_chars(chosen.ucs2_chars, where=chosen.may_repeat),
    )
    return CompiledTemplate(
        template, tuple(template.columns()), chosen.message, chosen.reasons, stats, tuple(fields)
    )


def _select(template: MessageTemplate, compiled: dict[str, _Compiled]) -> _Compiled:
    """One when/then chain per field, keyed on `select_by`: the row's template decides all of them."""
    assert template.select_by is not None
    key = pl.col(template.select_by).cast(pl.String)
    names = [field.name for field in dataclasses.fields(_Compiled)]
    chains: dict[str, Any] = dict.fromkeys(names, pl)
    for value, one in compiled.items():
        for name in names:
            chains[name] = chains[name].when(key == value).then(getattr(one, name))
    if template.fallback is not None:
        fallback = compiled[template.fallback]
        return _Compiled(**{name: chains[name].otherwise(getattr(fallback, name)) for name in names})
    no_template = (
        pl.when(key.is_null())
        .then(pl.lit(f"{MISSING_VALUE}:{template.select_by}"))
        .otherwise(pl.lit(f"{NO_TEMPLATE}:") + key)
    )
    otherwise = {name: pl.lit(None) for name in names}
    otherwise |= {
        "message": pl.lit(None, dtype=pl.String),
        "reasons": pl.concat_list(no_template),
        "ucs2_chars": pl.lit(None, dtype=pl.String),
        "may_repeat": pl.lit(False),
    }
    return _Compiled(**{name: chains[name].otherwise(otherwise[name]) for name in names})


# ------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """What rendering produced.

    Attributes:
        messages: the input columns plus `message`, `encoding` ("GSM7"|"UCS2"), `segments` (Int64), `chars`
            (Int64: septets or UTF-16 units) and `ucs2_chars` (distinct characters forcing UCS-2, "" for
            GSM-7); input order kept. Valid for `schemas.messages.RenderedMessages`.
        rejects: the input columns of the rejected rows, `reasons` (`list[str]` of codes such as
            `missing_value:first_name`) and `reason_text` ("missing value for first_name", "; "-joined).
        ucs2_culprits: character -> number of messages (of `messages`) it forces into UCS-2, most frequent
            first; `tasks.segments.culprit_table(result.messages)` gives the table for a preview.
    """

    messages: pl.DataFrame
    rejects: pl.DataFrame
    ucs2_culprits: dict[str, int]


_OK, _REASONS = "__render_ok", "__render_reasons"


def _reason_text(template: MessageTemplate, max_segments: int) -> pl.Expr:
    """Reason code -> the sentence shown to people ("missing value for first_name")."""
    code = pl.element()
    missing, no_template = f"{MISSING_VALUE}:", f"{NO_TEMPLATE}:"
    return (
        pl.when(code.str.starts_with(missing))
        .then(pl.lit("missing value for ") + code.str.slice(len(missing)))
        .when(code.str.starts_with(no_template))
        .then(
            pl.lit(f"no template for {template.select_by} '") + code.str.slice(len(no_template)) + pl.lit("'")
        )
        .when(code == TOO_MANY_SEGMENTS)
        .then(pl.lit(f"message longer than max_segments={max_segments}"))
        .otherwise(code)
    )


def render_messages(frame: pl.DataFrame, template: MessageTemplate | str) -> RenderResult:
    """Render one message per row, count its segments, and split off the rows that cannot be sent.

    The template is compiled once; rendering, selection and counting are one polars query.

    Args:
        frame: recipients: `phone`, `country`, `source_row` and the data columns the template uses.
        template: the template (a plain string is accepted).

    Returns:
        A `RenderResult`. Every input row is in exactly one of `messages` and `rejects`.

    Raises:
        TemplateError: a placeholder or the `select_by` column is not a column of `frame`.

    Example:
        >>> template = MessageTemplate(text="Hi {first_name|there}", on_missing="default")
        >>> render_messages(recipients, template).messages.select("phone", "message", "encoding", "segments")
    """
    compiled = compile_template(template, frame.columns)
    max_segments = compiled.template.max_segments
    message = pl.col("message")
    rendered = (
        compiled.prepare(frame)
        .lazy()
        .with_columns(compiled.message.alias("message"))
        .pipe(encoding_and_segments, "message", stats=compiled.stats)
        .with_columns((message.is_not_null() & (pl.col("segments") <= max_segments)).alias(_OK))
        .collect()
    )
    accepted = rendered.filter(pl.col(_OK)).drop(_OK, *compiled.temporary)
    # The message is null exactly when the templating rejected the row; otherwise the row was too long.
    reasons = (
        pl.when(message.is_null()).then(compiled.reasons).otherwise(pl.concat_list(pl.lit(TOO_MANY_SEGMENTS)))
    )
    rejects = (
        rendered.lazy()
        .filter(~pl.col(_OK))
        .with_columns(reasons.alias(_REASONS))
        .select(
            *[c for c in frame.columns if c not in ("reasons", "reason_text")],
            pl.col(_REASONS).alias("reasons"),
            pl.col(_REASONS)
            .list.eval(_reason_text(compiled.template, max_segments))
            .list.join("; ")
            .alias("reason_text"),
        )
        .collect()
    )
    return RenderResult(accepted, rejects, count_culprits(accepted))
