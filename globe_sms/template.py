"""A campaign's message template: the `MessageTemplate` model and its placeholder syntax.

What a template *is* (the campaign file's `template:`, the UI form's fields) and how its text is parsed;
`tasks.render` compiles it into polars expressions and renders the messages.

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

Errors:

    ValueError
     └── TemplateError   bad template syntax (wrapped in pydantic's ValidationError when building the model),
                         unknown placeholder or `select_by` column (from `tasks.render.compile_template`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from globe_sms.form_schema import extend_schema
from globe_sms.strict_model import StrictModel

__all__ = [
    "DEFAULT_MAX_SEGMENTS",
    "MessageTemplate",
    "PerLanguageTemplate",
    "Piece",
    "PlainTextTemplate",
    "Placeholder",
    "TemplateError",
    "parse_template",
    "template_form_schema",
]

DEFAULT_MAX_SEGMENTS = 10


class TemplateError(ValueError):
    """A template that cannot be compiled: bad syntax, an unknown placeholder or `select_by` column."""


# ------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------


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
            raise TemplateError(
                f"stray '}}' at position {i} in template {text!r}; write '}}}}' for a literal brace"
            )
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


# ------------------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------------------


# The fields shared by the model and the two shapes of its form (`PlainTextTemplate`, `PerLanguageTemplate`).
_SELECT_BY_HELP = "Column whose value picks the template (e.g. a language code column such as `lang`)."
_FALLBACK = Field(
    default=None,
    description=(
        "Key of the template used when the `select_by` value is null or has no template. "
        "Unset: such rows are rejected with `no_template:<value>` "
        "(or `missing_value:<select_by>` for a null value)."
    ),
)
_ON_MISSING = Field(
    default="reject",
    description=(
        "What a null, empty or blank placeholder value does: `reject` rejects the row with "
        "`missing_value:<column>` (placeholder defaults are ignored); `default` uses the placeholder's "
        "default and rejects only when the placeholder has none."
    ),
)
_SMART_REPLACE = Field(
    default=False,
    description=(
        "Replace typographic quotes, dashes, ellipsis and special spaces (in the template and values) "
        "by GSM-7 equivalents, so that one curly apostrophe does not turn a message into UCS-2."
    ),
)
_MAX_SEGMENTS = Field(
    default=DEFAULT_MAX_SEGMENTS,
    ge=1,
    le=255,
    description="Longest message allowed, in SMS segments; longer ones get `too_many_segments`.",
)
_PLACEHOLDERS = "Placeholders: `{column}`, `{column|default text}`; `{{` and `}}` are literal braces."
_NOT_BLANK = r"\S"  # at least one character that is not white space
# The string shorthand (`template: "Hi {name}"`), as the form's first choice.
_TEXT_ONLY = {
    "type": "string",
    "minLength": 1,
    "pattern": _NOT_BLANK,
    "title": "Text only",
    "description": f"The message, with the other settings at their defaults. {_PLACEHOLDERS}",
}


class MessageTemplate(StrictModel):
    """How each recipient's message is written. A plain string is accepted as ``{"text": that string}``.

    Its JSON schema (the run form in the Prefect UI, and what the server checks a run's parameters against)
    is a choice of three shapes, each refusing what the model refuses: a string (`_TEXT_ONLY`), a plain text
    with options (`PlainTextTemplate`), and texts per language picked by a column (`PerLanguageTemplate`), so
    that `select_by` without a mapping, or a mapping without `select_by`, is refused when a run is created.

    Example:
        >>> MessageTemplate.model_validate("Hi {first_name|there}")
        >>> MessageTemplate(text={"en": "Hi {first_name}", "zh": "你好 {first_name}"}, select_by="language",
        ...                 fallback="en")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | dict[str, str] = Field(
        description=(
            "The template, or templates keyed by a value of the `select_by` column (e.g. a language code). "
            + _PLACEHOLDERS
        ),
    )
    select_by: str | None = Field(
        default=None,
        description="Column whose value picks the template when `text` is a mapping; unset otherwise.",
    )
    fallback: str | None = _FALLBACK
    on_missing: Literal["reject", "default"] = _ON_MISSING
    smart_replace: bool = _SMART_REPLACE
    max_segments: int = _MAX_SEGMENTS

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return template_form_schema()

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
                raise ValueError(
                    "`text` is a mapping of templates, so `select_by` must name the column choosing one"
                )
            if self.fallback is not None and self.fallback not in self.text:
                raise ValueError(
                    f"fallback {self.fallback!r} is not one of the template keys {sorted(self.text)}"
                )
        else:
            if self.select_by is not None or self.fallback is not None:
                raise ValueError(
                    "`select_by` and `fallback` only apply when `text` is a mapping of templates"
                )
        for key, text in self.templates().items():
            if not text.strip():
                raise ValueError(f"template {key!r} is empty")
            parse_template(text)  # TemplateError is a ValueError: pydantic reports it as a validation error
        return self

    def templates(self) -> dict[str, str]:
        """The templates by key (a single template has the key ``""``)."""
        return dict(self.text) if isinstance(self.text, dict) else {"": self.text}

    def placeholders(self) -> list[str]:
        """Placeholder names in order of first use across all templates."""
        names: dict[str, None] = {}
        for text in self.templates().values():
            for piece in parse_template(text):
                if isinstance(piece, Placeholder):
                    names[piece.name] = None
        return list(names)

    def columns(self) -> list[str]:
        """Every column the template reads: its placeholders in order of first use, then `select_by`."""
        names = self.placeholders()
        if self.select_by is not None and self.select_by not in names:
            names.append(self.select_by)
        return names


# ------------------------------------------------------------------------------------------------------------
# The shapes of the form (JSON schema only; `MessageTemplate` validates)
# ------------------------------------------------------------------------------------------------------------


class PlainTextTemplate(BaseModel):
    """One text for every recipient."""

    # `select_by` and `fallback` may be given only as null, as the model allows; the form does not show them.
    model_config = ConfigDict(
        extra="forbid",
        title="Plain text",
        json_schema_extra=extend_schema(patternProperties={"^(?:select_by|fallback)$": {"type": "null"}}),
    )

    text: str = Field(
        min_length=1, pattern=_NOT_BLANK, description=f"The message for every recipient. {_PLACEHOLDERS}"
    )
    on_missing: Literal["reject", "default"] = _ON_MISSING
    smart_replace: bool = _SMART_REPLACE
    max_segments: int = _MAX_SEGMENTS


class PerLanguageTemplate(BaseModel):
    """Texts keyed by the value of a column, e.g. a language code."""

    model_config = ConfigDict(extra="forbid", title="Per-language texts")

    text: dict[str, Annotated[str, Field(min_length=1, pattern=_NOT_BLANK)]] = Field(
        min_length=1,
        description=f"The templates by value of the `select_by` column, e.g. `en` and `zh`. {_PLACEHOLDERS}",
    )
    select_by: str = Field(min_length=1, description=_SELECT_BY_HELP)
    fallback: str | None = _FALLBACK
    on_missing: Literal["reject", "default"] = _ON_MISSING
    smart_replace: bool = _SMART_REPLACE
    max_segments: int = _MAX_SEGMENTS


def template_form_schema() -> dict[str, Any]:
    """The JSON schema of a `MessageTemplate`: a choice (`anyOf`) of the string shorthand, a plain text and
    per-language texts, self-contained (no `$ref`).

    A field holding a template uses it inline, `Annotated[MessageTemplate, WithJsonSchema(...)]`, rather
    than as a `$ref` to a definition: the V1 UI shows a choice only when the `anyOf` is on the field itself
    (behind a `$ref` it falls back to a raw JSON box).
    """
    return {
        "title": "Message template",
        "description": "Plain text, or texts per language picked by a column.",
        "anyOf": [
            dict(_TEXT_ONLY),
            PlainTextTemplate.model_json_schema(),
            PerLanguageTemplate.model_json_schema(),
        ],
    }
