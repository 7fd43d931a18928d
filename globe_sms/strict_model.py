"""`StrictModel`: the base of a campaign's models, which never takes a boolean for a number.

pydantic's lax mode reads `true` as 1 for an int or float field, and YAML 1.1 reads `true`, `yes` and `on`
as booleans, so `batch_size: yes` would quietly send batches of one. Every model of a campaign derives from
`StrictModel`, which refuses a boolean wherever a field wants a number, and otherwise leaves pydantic's
conversions alone (YAML integers, JSON numbers from the Prefect UI, `2.0` for an int).

It is one model-level check rather than a `field_validator("*")`, which pydantic forbids on the `type` field
of a discriminated union (`PagePagination`); the errors still carry each field's location, and the other
fields' errors are reported with them.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError


def wants_a_number(annotation: Any) -> bool:
    """Whether a field of this type takes an int or a float (alone, or in a union without bool)."""
    if get_origin(annotation) is Annotated:
        return wants_a_number(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
        return bool not in members and any(wants_a_number(member) for member in members)
    return annotation in (int, float)


def _bool_errors(model: type[BaseModel], data: dict[Any, Any]) -> list[InitErrorDetails]:
    """An error for each field of `model` that wants a number and was given a boolean in `data`."""
    return [
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
        for name, field in model.model_fields.items()
        for key in [field.alias or name]
        if isinstance(data.get(key), bool) and wants_a_number(field.annotation)
    ]


def _as_raised(error: ErrorDetails) -> InitErrorDetails:
    """A validation error found by pydantic, to raise again as it was (type name, location and message)."""
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], error["msg"]), loc=error["loc"], input=error["input"]
    )


class StrictModel(BaseModel):
    """A pydantic model whose int and float fields refuse booleans (`batch_size: true` is an error)."""

    @model_validator(mode="wrap")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        refused = _bool_errors(cls, data) if isinstance(data, dict) else []
        if not refused:
            return handler(data)
        others: list[InitErrorDetails] = []
        try:
            handler(data)  # the other fields' errors, so that every bad field is named at once
        except ValidationError as exc:
            at = {error["loc"] for error in refused}
            others = [_as_raised(error) for error in exc.errors() if error["loc"] not in at]
        # pydantic keeps the line errors of a ValidationError raised in a validator, each at its location.
        raise ValidationError.from_exception_data(cls.__name__, refused + others)
