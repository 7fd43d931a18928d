"""The campaign a flow run was given, checked when the run starts.

The server checks a deployment run's campaign against the Campaign's JSON schema when the run is created
(`enforce_parameter_schema`), which holds every rule JSON schema can say (see `globe_sms.form_schema`). What
it cannot say (a `{date:Area/City}` zone that does not exist, a fallback that is not one of the template keys,
the template's syntax, an unknown ISO region, a run lease shorter than a batch attempt) is found here, at the
start of the run: the send-campaign flow does not let Prefect validate its parameters
(`validate_parameters=False`), whose failure is a multi-line dump under the run's random name, but checks the
campaign itself and fails the run with one line naming each bad field, after the run has been named after
its campaign (`tasks.run_names.campaign_run_name` reads the raw parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger
from prefect.states import Failed, State
from pydantic import ValidationError

from globe_sms.campaign import Campaign

__all__ = ["campaign_of_run", "refusal"]


def refusal(error: ValidationError) -> str:
    """One line naming every bad field of a campaign: `campaign refused: campaign.sender_id: ...; ...`.

    The values given are never quoted (a refused value could be a secret or a phone number).
    """
    problems = []
    for item in error.errors():
        where = ".".join(["campaign", *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ").replace("\n", " ")
        problems.append(f"{where}: {message}")
    return "campaign refused: " + "; ".join(problems)


def campaign_of_run(value: Campaign | Mapping[str, Any] | Any) -> Campaign | State:
    """The run's campaign, validated; or, when the model refuses it, a Failed state whose message is the
    one line of `refusal` (also logged), for the flow to return: the run fails with no traceback.

    Args:
        value: the `campaign` parameter: a Campaign (the CLI, tests), or the mapping a deployment run holds.
    """
    if isinstance(value, Campaign):
        return value
    try:
        return Campaign.model_validate(dict(value) if isinstance(value, Mapping) else value)
    except ValidationError as exc:
        message = refusal(exc)
    get_run_logger().error(message)
    return Failed(message=message)
