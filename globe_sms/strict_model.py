"""`StrictModel`: the base of a campaign's models, which never takes a boolean for a number.

pydantic's lax mode reads `true` as 1 for an int or float field, and YAML 1.1 reads `true`, `yes` and `on`
as booleans, so `batch_size: yes` would quietly send batches of one. Every model of a campaign derives from
`StrictModel`, which refuses a boolean wherever a field wants a number, and otherwise leaves pydantic's
conversions alone (YAML integers, JSON numbers from the Prefect UI, `2.0` for an int).

It is one model-level check rather than a `field_validator("*")`, which pydantic forbids on the `type` field
of a discriminated union (`PagePagination`); the errors still carry each field's location.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


def wants_a_number(annotation: Any) -> bool:
    """Whether a field of this type takes an int or a float (alone, or in a union without bool)."""
    if get_origin(annotation) is Annotated:
        return wants_a_number(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
        return bool not in members and any(wants_a_number(member) for member in members)
    return annotation in (int, float)


class StrictModel(BaseModel):
    """A pydantic model whose int and float fields refuse booleans (`batch_size: true` is an error)."""

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "bool_for_number",
                    "{value} is a boolean, not a number (YAML reads unquoted true/false, yes/no, on/off as "
                    "booleans); give a number",
                    {"value": str(data[key]).lower()},
                ),
                loc=(key,),
                input=data[key],
            )
            for name, field in cls.model_fields.items()
            for key in [field.alias or name]
            if isinstance(data.get(key), bool) and wants_a_number(field.annotation)
        ]
        if errors:
            # pydantic keeps the line errors of a ValidationError raised in a validator, each at its field.
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data
