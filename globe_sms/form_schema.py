"""How a campaign's models describe themselves in JSON schema, which is the run form of the Prefect UI and
what the Prefect server checks a deployment run's parameters against (`enforce_parameter_schema`).

Pydantic's schema is right for pydantic, not always for the form and the server:

* A union is `oneOf`. The server then refuses a value that fits two members (a file source without `kind`
  fits csv, parquet and ndjson, since `kind` has a default in each), and the V1 UI shows a `oneOf` as a raw
  JSON box. `AnyOfUnion` turns it into `anyOf`, which both UIs show as a choice of tabs (labelled by each
  member's `title`), while pydantic still validates the union as it did (discriminated, or left to right).
* A rule written as a validator is not in the schema, so "Validate parameters" and the server let the value
  through and the run fails on the worker. Where JSON schema can say it, the model says it too, with
  `extend_schema` (a `json_schema_extra` that adds keywords) or a field's `json_schema_extra`. The server
  validates with Python's `jsonschema` (draft 2020-12, patterns with Python's `re`, as searches); a pattern
  that pydantic's own regex engine cannot compile (a lookahead) goes in `json_schema_extra` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = ["AnyOfUnion", "extend_schema", "ignore_case"]


class AnyOfUnion:
    """`Annotated[A | B, AnyOfUnion()]`: the union's schema is `anyOf` rather than `oneOf` (and carries no
    `discriminator`, which only goes with `oneOf`), a member that is itself a bare union spliced in;
    validation is unchanged."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
            schema.pop("discriminator", None)
        if "anyOf" in schema:  # `(A | B) | None`: one choice of A, B and None, not a choice within a choice
            schema["anyOf"] = [
                member
                for choice in schema["anyOf"]
                for member in (
                    choice.get("anyOf", choice.get("oneOf"))
                    if set(choice) in ({"anyOf"}, {"oneOf"})
                    else [choice]
                )
            ]
        return schema

    def __repr__(self) -> str:
        return "AnyOfUnion()"


def extend_schema(**keywords: Any) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra` that adds `keywords` to its schema; `required=[...]` is appended to the
    fields pydantic already requires."""

    def extend(schema: dict[str, Any]) -> None:
        for key, value in keywords.items():
            if key == "required":
                schema["required"] = [*schema.get("required", []), *value]
            else:
                schema[key] = value

    return extend


def ignore_case(suffix: str) -> str:
    """A regex matching `suffix` in any case without inline flags (`.csv` -> `\\.[cC][sS][vV]`), so that it
    reads the same in Python's `re` (the server) and in a browser's JavaScript."""
    return "".join(
        f"[{char.lower()}{char.upper()}]"
        if char.isalpha()
        else "\\" + char
        if char in ".+*?^$()[]{}|\\"
        else char
        for char in suffix
    )
