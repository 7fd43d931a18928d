"""Message templates compiled to polars expressions, with a null policy and per-recipient template selection.

A template such as ``"Hi {first_name|there}, your code is {code}"`` is parsed once, checked against the frame's
columns (an unknown placeholder is a `TemplateError` naming it), and compiled into one `pl.concat_str`
expression. Rendering, template selection (``when(lang == "en").then(...)``), encoding and segment counting
then run as one vectorised polars query over the whole frame: no Python runs per row.

Placeholder syntax:

- ``{column}``: the value of `column` as text, stripped of surrounding whitespace.
- ``{column|default text}``: with a default for a missing value (used when ``on_missing="default"``). The
  default may not be blank (that would leave a gap) and may not contain braces.
- ``{{`` and ``}}``: literal braces.

Null policy (``MessageTemplate.on_missing``): a value that is null, empty or blank is *missing*. With
``"reject"`` (the default) the row is rejected with ``missing_value:<column>`` even if the placeholder has a
default; with ``"default"`` the placeholder's default is used, and only a placeholder without one rejects the
row. So a message never reads "Hi null" and never has an empty gap: templates may not be blank, and every
placeholder is a non-blank value or a non-blank default.

Reject reasons (codes in `rejects.reasons`, sentences in `rejects.reason_text`):

- ``missing_value:<column>``: "missing value for <column>" (one per missing column; also a null `select_by`
  value without a fallback);
- ``no_template:<value>``: the `select_by` value has no template and there is no fallback;
- ``too_many_segments``: longer than ``max_segments``.

Errors:

    ValueError
     └── TemplateError   bad template syntax (wrapped in pydantic's ValidationError when building the model),
                         unknown placeholder or `select_by` column (from `compile_template`)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.segments import count_culprits, encoding_and_segments, smart_replace_expr, smart_replace_text

__all__ = [
    "MISSING_VALUE",
    "NO_TEMPLATE",
    "TOO_MANY_SEGMENTS",
    "CompiledTemplate",
    "MessageTemplate",
    "Placeholder",
    "RenderResult",
    "TemplateError",
    "compile_template",
    "parse_template",
    "render_messages",
]

DEFAULT_MAX_SEGMENTS = 10
MISSING_VALUE, NO_TEMPLATE, TOO_MANY_SEGMENTS = "missing_value", "no_template", "too_many_segments"


class TemplateError(ValueError):
    """A template that cannot be compiled: bad syntax, an unknown placeholder or `select_by` column."""


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """One ``{name}`` or ``{name|default}`` in a template."""

    name: str
    default: str | None = None


Piece = str | Placeholder


def parse_template(text: str) -> tuple[Piece, ...]:
    """Split a template into literal strings and `Placeholder`s.

    Raises:
        TemplateError: on an unclosed ``{``, a stray ``}``, an empty placeholder name, a brace inside a
            placeholder, or an empty default.

    Example:
        >>> parse_template("Hi {first_name|there}! {{x}}")
        ('Hi ', Placeholder(name='first_name', default='there'), '! {x}')
    """
    pieces: list[Piece] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif char == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif char == "}":
            raise TemplateError(f"stray '}}' at position {i} in template {text!r}; write '}}}}' for a literal brace")
        elif char == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise TemplateError(f"unclosed '{{' at position {i} in template {text!r}")
            body = text[i + 1 : end]
            if "{" in body:
                raise TemplateError(f"'{{' inside placeholder {{{body}}} in template {text!r}")
            name, bar, default = body.partition("|")
            name = name.strip()
            if not name:
                raise TemplateError(f"empty placeholder name at position {i} in template {text!r}")
            if bar and not default.strip():
                raise TemplateError(
                    f"placeholder {{{body}}} has a blank default, which would leave a gap; "
                    f"drop the '|' to reject rows missing {name!r}"
                )
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(Placeholder(name, default if bar else None))
            i = end + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


class MessageTemplate(BaseModel):
    """How each recipient's message is written. A plain string is accepted as ``{"text": that string}``.

    Example:
        >>> MessageTemplate.model_validate("Hi {first_name|there}")
        >>> MessageTemplate(text={"en": "Hi {first_name}", "zh": "你好 {first_name}"}, select_by="language",
        ...                 fallback="en")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | dict[str, str] = Field(
        description=(
            "The template, or templates keyed by a value of the `select_by` column (e.g. a language code). "
            "Placeholders: `{column}`, `{column|default text}`; `{{` and `}}` are literal braces."
        ),
    )
    select_by: str | None = Field(
        default=None,
        description="Column whose value picks the template when `text` is a mapping; must be unset otherwise.",
    )
    fallback: str | None = Field(
        default=None,
        description=(
            "Key of the template used when the `select_by` value is null or has no template. "
            "Unset: such rows are rejected with `no_template:<value>` (or `missing_value:<select_by>` for null)."
        ),
    )
    on_missing: Literal["reject", "default"] = Field(
        default="reject",
        description=(
            "What a null, empty or blank placeholder value does: `reject` rejects the row with "
            "`missing_value:<column>` (placeholder defaults are ignored); `default` uses the placeholder's "
            "default and rejects only when the placeholder has none."
        ),
    )
    smart_replace: bool = Field(
        default=False,
        description=(
            "Replace typographic quotes, dashes, ellipsis and special spaces (in the template and the values) "
            "by GSM-7 equivalents, so that one curly apostrophe does not turn a message into UCS-2."
        ),
    )
    max_segments: int = Field(
        default=DEFAULT_MAX_SEGMENTS,
        ge=1,
        le=255,
        description="Longest message allowed, in SMS segments; longer ones are rejected with `too_many_segments`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_plain_string(cls, data: Any) -> Any:
        """A bare string is a single template."""
        if isinstance(data, str):
            return {"text": data}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> MessageTemplate:
        """Templates parse; selection options fit the shape of `text`."""
        if isinstance(self.text, dict):
            if not self.text:
                raise ValueError("`text` mapping is empty: give at least one template")
            if self.select_by is None:
                raise ValueError("`text` is a mapping of templates, so `select_by` must name the column choosing one")
            if self.fallback is not None and self.fallback not in self.text:
                raise ValueError(f"fallback {self.fallback!r} is not one of the template keys {sorted(self.text)}")
        else:
            if self.select_by is not None or self.fallback is not None:
                raise ValueError("`select_by` and `fallback` only apply when `text` is a mapping of templates")
        for key, text in self.templates().items():
            if not text.strip():
                raise ValueError(f"template {key!r} is empty")
            parse_template(text)  # TemplateError is a ValueError: pydantic reports it as a validation error
        return self

    def templates(self) -> dict[str, str]:
        """The templates by key (a single template has the key ``""``)."""
        return dict(self.text) if isinstance(self.text, dict) else {"": self.text}

    def columns(self) -> list[str]:
        """Every column the template reads: its placeholders in order of first use, then `select_by`."""
        names = _template_fields(self)
        if self.select_by is not None and self.select_by not in names:
            names.append(self.select_by)
        return names


# --------------------------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------------------------


def _template_fields(template: MessageTemplate) -> list[str]:
    """Placeholder names in order of first use across all templates."""
    names: dict[str, None] = {}
    for text in template.templates().values():
        for piece in parse_template(text):
            if isinstance(piece, Placeholder):
                names[piece.name] = None
    return list(names)


def _value_column(name: str) -> str:
    return f"__render_value_{name}"


def _prepared_value(name: str, smart: bool) -> pl.Expr:
    """The placeholder's value as stripped text; empty and blank become null, so null means missing."""
    value = pl.col(name).cast(pl.String)
    if smart:
        value = smart_replace_expr(value)
    value = value.str.strip_chars()
    return pl.when(value.str.len_bytes() > 0).then(value).alias(_value_column(name))


def _as_list(reasons: Sequence[pl.Expr]) -> pl.Expr:
    if not reasons:
        return pl.lit([], dtype=pl.List(pl.String))
    return pl.concat_list(reasons).list.drop_nulls()


def _compile_one(text: str, template: MessageTemplate) -> tuple[pl.Expr, pl.Expr]:
    """(message, reasons) for one template; the message is null exactly when a required value is missing."""
    parts: list[pl.Expr] = []
    reasons: dict[str, pl.Expr] = {}
    smart = template.smart_replace
    for piece in parse_template(text):
        if isinstance(piece, str):
            parts.append(pl.lit(smart_replace_text(piece) if smart else piece))
            continue
        value = pl.col(_value_column(piece.name))
        if template.on_missing == "default" and piece.default is not None:
            parts.append(value.fill_null(pl.lit(smart_replace_text(piece.default) if smart else piece.default)))
        else:
            parts.append(value)  # concat_str propagates the null: the whole message is null
            reasons.setdefault(piece.name, pl.when(value.is_null()).then(pl.lit(f"{MISSING_VALUE}:{piece.name}")))
    return pl.concat_str(parts), _as_list(list(reasons.values()))


@dataclass(frozen=True)
class CompiledTemplate:
    """A template checked against a set of columns and compiled into polars expressions.

    Apply `prepare` (one `with_columns`), then `message` and `reasons`; `render_messages` does this.

    Attributes:
        template: the source template.
        columns: the columns the template reads (placeholders, then `select_by`).
        prepare: expressions adding one temporary column per placeholder: its value, stripped, null if missing.
        message: the rendered message; null for a row the templating rejects.
        reasons: the templating reasons of each row (`list[str]`, empty for rows that render).
        temporary: the names of the temporary columns, to drop afterwards.
    """

    template: MessageTemplate
    columns: tuple[str, ...]
    prepare: tuple[pl.Expr, ...]
    message: pl.Expr
    reasons: pl.Expr
    temporary: tuple[str, ...]


def compile_template(template: MessageTemplate | str, columns: Sequence[str]) -> CompiledTemplate:
    """Check a template against `columns` and compile it into expressions (once per campaign).

    Args:
        template: the template (a plain string is accepted).
        columns: the columns of the frame it will render.

    Returns:
        The compiled template.

    Raises:
        TemplateError: a placeholder or the `select_by` column is not among `columns`; the message names it and
            lists the available columns.

    Example:
        >>> compile_template("Hi {frist_name}", ["phone", "first_name"])
        TemplateError: unknown placeholder {frist_name}; available columns: phone, first_name
    """
    template = MessageTemplate.model_validate(template)
    available = list(columns)
    listing = f"available columns: {', '.join(available) or '(none)'}"
    fields = _template_fields(template)
    unknown = [name for name in fields if name not in available]
    if unknown:
        what = "placeholder" if len(unknown) == 1 else "placeholders"
        raise TemplateError(f"unknown {what} {', '.join('{' + n + '}' for n in unknown)}; {listing}")
    if template.select_by is not None and template.select_by not in available:
        raise TemplateError(f"unknown `select_by` column {template.select_by!r}; {listing}")

    prepare = tuple(_prepared_value(name, template.smart_replace) for name in fields)
    temporary = tuple(_value_column(name) for name in fields)
    compiled = {key: _compile_one(text, template) for key, text in template.templates().items()}
    if template.select_by is None:
        message, reasons = compiled[""]
        return CompiledTemplate(template, tuple(template.columns()), prepare, message, reasons, temporary)

    key = pl.col(template.select_by).cast(pl.String)
    message_chain: Any = pl
    reason_chain: Any = pl
    for value, (one_message, one_reasons) in compiled.items():
        message_chain = message_chain.when(key == value).then(one_message)
        reason_chain = reason_chain.when(key == value).then(one_reasons)
    if template.fallback is not None:
        fallback_message, fallback_reasons = compiled[template.fallback]
        message = message_chain.otherwise(fallback_message)
        reasons = reason_chain.otherwise(fallback_reasons)
    else:
        message = message_chain.otherwise(pl.lit(None, dtype=pl.String))
        no_template = (
            pl.when(key.is_null())
            .then(pl.lit(f"{MISSING_VALUE}:{template.select_by}"))
            .otherwise(pl.lit(f"{NO_TEMPLATE}:") + key)
        )
        reasons = reason_chain.otherwise(pl.concat_list(no_template))
    return CompiledTemplate(template, tuple(template.columns()), prepare, message, reasons, temporary)


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """What rendering produced.

    Attributes:
        messages: the input columns plus `message`, `encoding` ("GSM7"|"UCS2"), `segments` (Int64), `chars`
            (Int64: septets or UTF-16 units) and `ucs2_chars` (distinct characters forcing UCS-2, "" for GSM-7);
            input order kept. Valid for `schemas.messages.RenderedMessages`.
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
        .then(pl.lit(f"no template for {template.select_by} '") + code.str.slice(len(no_template)) + pl.lit("'"))
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
        frame.lazy()
        .with_columns(*compiled.prepare)
        .with_columns(compiled.message.alias("message"))
        .pipe(encoding_and_segments, "message")
        .with_columns((message.is_not_null() & (pl.col("segments") <= max_segments)).alias(_OK))
        .collect()
    )
    accepted = rendered.filter(pl.col(_OK)).drop(_OK, *compiled.temporary)
    # The message is null exactly when the templating rejected the row; otherwise the row was too long.
    reasons = pl.when(message.is_null()).then(compiled.reasons).otherwise(pl.concat_list(pl.lit(TOO_MANY_SEGMENTS)))
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
