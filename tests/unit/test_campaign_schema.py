"""The Campaign's JSON schema: the run form of the Prefect UI, and what the server checks a deployment run's
parameters against when it creates the run (`enforce_parameter_schema`).

`tests/fixtures/schema/campaign.json` pins the schema: moving a model between modules must not change a
field, a description, a default or a bound of the form. A deliberate change of the form updates the fixture in
the same commit (`python tests/unit/test_campaign_schema.py` writes it).

The other tests hold the schema to the model: a campaign the model takes, the server takes (never stricter),
and a value the model refuses for a rule JSON schema can say, the server refuses too, checked with the very
function and schema the server uses (`prefect.utilities.schema_tools.validate` on the flow's parameter
schema). What JSON schema cannot say (a time zone that exists, a fallback that is one of the keys, the
template's syntax) is refused when the run starts (tests/integration/test_ui_form.py).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate
from pydantic import ValidationError

from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.clock import clock_at
from tasks.campaign_input import refusal

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "schema" / "campaign.json"
# The deployment's campaign, as the form shows it and a user changes it.
DEPLOYED: dict[str, Any] = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"][
    0
]["parameters"]["campaign"]
PARAMETERS = parameter_schema(send_campaign.fn).model_dump_for_openapi()
POSTGRES = {"kind": "postgres", "query": "SELECT phone FROM r", "connection": {"env": "RECIPIENTS_DB_URL"}}
REAL_ENDPOINT = {"endpoint": "https://dysmsapi.ap-southeast-1.aliyuncs.com"}


def test_the_campaign_form_is_unchanged() -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    actual = json.loads(json.dumps(Campaign.model_json_schema(), sort_keys=True))
    assert actual == expected
    assert "ValidationRules" in actual["$defs"]  # a moved model


def server_errors(campaign: dict[str, Any]) -> list[str]:
    """What the server says of a run with this campaign: its schema errors, [] when it creates the run."""
    return [error.message for error in validate({"campaign": campaign}, PARAMETERS)]


def model_refuses(campaign: dict[str, Any]) -> bool:
    try:
        Campaign.model_validate(campaign)
    except ValidationError:
        return True
    return False


def changed(**fields: Any) -> dict[str, Any]:
    """The deployment's campaign with some fields replaced whole."""
    return {**json.loads(json.dumps(DEPLOYED)), **fields}


ACCEPTED = {
    "the deployment's campaign": changed(),
    "the string shorthand of a template": changed(template="Hi {first_name}"),
    "a plain text with options": changed(template={"text": "Hi {first_name|there}", "on_missing": "default"}),
    "a plain text with select_by and fallback null": changed(
        template={"text": "Hi", "select_by": None, "fallback": None}
    ),
    "per-language texts without a fallback": changed(template={"text": {"en": "Hi"}, "select_by": "lang"}),
    "a file source without kind, by extension": changed(source={"path": "exports/*.parquet"}),
    "an NDJSON file without kind, extension in capitals": changed(source={"path": "r.JSONL"}),
    "a file of another extension without kind (csv)": changed(source={"path": "r.txt", "separator": "\t"}),
    "a postgres source": changed(source=POSTGRES),
    "a postgres source without kind": changed(source={k: v for k, v in POSTGRES.items() if k != "kind"}),
    "an http source without kind": changed(source={"url": "https://crm.example.com/r"}),
    "an http source on loopback, paged": changed(
        source={
            "kind": "http",
            "url": "http://127.0.0.1:8080/r",
            "pagination": {"type": "page", "size_param": "n", "size": 100},
        }
    ),
    "an https source with a token in a secret": changed(
        source={
            "kind": "http",
            "url": "https://crm.example.com/api?list=a",
            "auth": {"token": {"block": "crm-token"}},
        }
    ),
    "an 11-character sender ID with letters": changed(sender_id="GlobeSMS123"),
    "a 15-digit sender ID": changed(sender_id="123456789012345"),
    "no sender ID with the emulator": changed(sender_id=None),
    "a real endpoint with a sender ID": changed(gateway=REAL_ENDPOINT),
    "a bare host as the endpoint": changed(gateway={"endpoint": "dysmsapi.aliyuncs.com"}),
    "a region's host (empty endpoint)": changed(gateway={"endpoint": "", "region": "ap-southeast-1"}),
    "a budget with a price table": changed(budget=10.0),
    "a send window (HH:MM, and with seconds)": changed(send_window={"start": "09:00", "end": "20:30:00"}),
    "explicit nulls for optional fields": changed(
        validity_period=None,
        data_dir=None,
        gateway={"region": None, "account": None, "credentials_block": None, "rate_limit_name": None},
        validation={"default_region": None, "suppression_file": None, "suppression": None},
        source={**POSTGRES, "connection": {"env": "DB_URL", "block": None}},
        send_window={"start": "09:00", "end": "20:00", "timezone_column": None},
    ),
    "no budget and no price table": changed(budget=None, price_table=None),
    "OTP through the single lane": changed(message_type="OTP", send_via="single"),
    "both lanes": changed(send_via="both"),
    "an opt-out list from postgres": changed(validation={"suppression": POSTGRES, "allow_countries": ["HK"]}),
}

REFUSED = {
    "sender_id": [
        ("not letters and digits", changed(sender_id="Globe_SMS!")),
        ("letters, over 11", changed(sender_id="GlobeSMS1234")),
        ("all digits, over 15", changed(sender_id="1234567890123456")),
        ("empty", changed(sender_id="")),
        ("none with a real endpoint", changed(gateway=REAL_ENDPOINT, sender_id=None)),
    ],
    "template": [
        ("a plain text with select_by", changed(template={"text": "Hi {first_name}", "select_by": "lang"})),
        ("a plain text with a fallback", changed(template={"text": "Hi", "fallback": "en"})),
        ("per-language texts without select_by", changed(template={"text": {"en": "Hi"}})),
        ("no texts", changed(template={"text": {}, "select_by": "lang"})),
        ("a blank shorthand", changed(template="  ")),
        ("a blank text", changed(template={"text": " \n"})),
        (
            "a blank text of a language",
            changed(template={"text": {"en": "Hi", "zh": " "}, "select_by": "lang"}),
        ),
        ("an unknown option", changed(template={"text": "Hi", "max_segment": 3})),
        ("too many segments", changed(template={"text": "Hi", "max_segments": 256})),
    ],
    "source": [
        ("an Excel file without kind", changed(source={"path": "r.xlsx"})),
        ("a blank query", changed(source={**POSTGRES, "query": "  "})),
        ("a path and a query without kind", changed(source={"path": "r.csv", "query": "SELECT 1"})),
        ("a secret in both places", changed(source={**POSTGRES, "connection": {"env": "A", "block": "b"}})),
        ("a secret nowhere", changed(source={**POSTGRES, "connection": {}})),
        ("a literal secret", changed(source={**POSTGRES, "connection": "postgresql://u:p@h/db"})),
        ("plain http to another host", changed(source={"kind": "http", "url": "http://crm.example.com/r"})),
        ("user info in the URL", changed(source={"kind": "http", "url": "https://u:p@crm.example.com/r"})),
        (
            "a page size without its parameter",
            changed(
                source={
                    "kind": "http",
                    "url": "https://a.example/r",
                    "pagination": {"type": "page", "size": 5},
                }
            ),
        ),
    ],
    "gateway": [
        ("plain http to another host", changed(gateway={"endpoint": "http://sms.example.com"})),
        ("another scheme", changed(gateway={"endpoint": "ftp://sms.example.com"})),
        ("calls per second out of range", changed(gateway={"calls_per_second": 0})),
    ],
    "price_table": [("a budget without one", changed(budget=5.0, price_table=None))],
    "send_via": [
        ("OTP through the batch lane", changed(message_type="OTP", send_via="batch")),
        ("OTP with the default lane (batch)", changed(message_type="OTP")),
        ("OTP through both lanes", changed(message_type="OTP", send_via="both")),
    ],
    "send_window": [
        ("a time with an offset", changed(send_window={"start": "09:00+08:00", "end": "20:00"})),
        ("not a time", changed(send_window={"start": "9am", "end": "20:00"})),
    ],
    "validation": [
        ("mainland China allowed", changed(validation={"allow_countries": ["HK", "cn"]})),
        ("a share over 1", changed(validation={"max_reject_share": 1.5})),
    ],
}


def refused_cases() -> Iterator[Any]:
    for field, cases in REFUSED.items():
        for name, campaign in cases:
            yield pytest.param(field, campaign, id=f"{field}: {name}")


@pytest.mark.parametrize("campaign", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_the_model_takes_the_server_takes(campaign: dict[str, Any]) -> None:
    assert not model_refuses(campaign)
    assert server_errors(campaign) == []


@pytest.mark.parametrize(("field", "campaign"), list(refused_cases()))
def test_what_the_model_refuses_the_server_refuses(field: str, campaign: dict[str, Any]) -> None:
    """And the error is at the field (the UI shows it there): JSON schema errors carry their path."""
    assert model_refuses(campaign)
    errors = validate({"campaign": campaign}, PARAMETERS)
    assert errors, "the server would create this run"
    assert any(list(error.absolute_path)[:2] in (["campaign", field], ["campaign"]) for error in errors)


BEYOND_A_SCHEMA = [
    pytest.param(
        "campaign.template",
        changed(template={"text": {"en": "Hi"}, "select_by": "lang", "fallback": "fr"}),
        id="a fallback that is not a key",
    ),
    pytest.param("campaign.template", changed(template="Hi {first_name"), id="an unclosed placeholder"),
    pytest.param(
        "campaign.campaign_id",
        changed(campaign_id="news-{date:Mars/Olympus_Mons}"),
        id="an unknown time zone",
    ),
    pytest.param(
        "campaign.validation.default_region",
        changed(validation={"default_region": "ZZ"}),
        id="an unknown ISO region",
    ),
    pytest.param(
        "campaign.gateway", changed(gateway={"run_lease_seconds": 30}), id="a lease shorter than a call"
    ),
]


@pytest.mark.parametrize(("field", "campaign"), BEYOND_A_SCHEMA)
def test_what_no_schema_can_say_is_refused_in_one_line_naming_the_field(
    field: str, campaign: dict[str, Any]
) -> None:
    """The server creates the run; the flow refuses the campaign as it starts, in one line
    (`tasks.campaign_input.refusal`) that names the field."""
    assert server_errors(campaign) == []
    with pytest.raises(ValidationError) as refused:
        Campaign.model_validate(campaign)
    line = refusal(refused.value)
    assert line.startswith(f"campaign refused: {field}: ") and "\n" not in line
    assert "Value error" not in line


def without_required(node: Any) -> Any:
    return (
        {key: without_required(value) for key, value in node.items() if key != "required"}
        if isinstance(node, dict)
        else [without_required(value) for value in node]
        if isinstance(node, list)
        else node
    )


def test_the_deployments_of_prefect_yaml_fit_the_schema() -> None:
    """`prefect deploy` sends each deployment's parameters, which the server checks against the schema with
    plain `jsonschema` (no `required`, and unlike a run's check, no null for a typed optional field); a run
    of each is then checked as any run."""
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    campaigns = [
        d["parameters"]["campaign"] for d in deployments if isinstance(d["parameters"].get("campaign"), dict)
    ]
    assert len(campaigns) >= 2
    deploy_check = jsonschema.Draft202012Validator(without_required(PARAMETERS))
    for campaign in campaigns:
        assert [error.message for error in deploy_check.iter_errors({"campaign": campaign})] == []
        assert server_errors(campaign) == []


def test_the_flow_offers_only_the_campaign() -> None:
    """`window_checked_at` (a test knob) is a parameter of the flow but not of its form; a run created through
    the API may still set it, as text (the flow takes its parameters unvalidated), which the clock reads."""
    assert list(PARAMETERS["properties"]) == ["campaign"]
    assert "window_checked_at" in inspect.signature(send_campaign.fn).parameters
    assert clock_at("2026-11-02T18:00:00+08:00")() == datetime(2026, 11, 2, 10, tzinfo=UTC)


def test_unions_are_choices_labelled_by_what_they_hold() -> None:
    """`anyOf` (which both UIs show as tabs, labelled by each member's title), never `oneOf`."""
    definitions = PARAMETERS["definitions"]

    def titles(choices: list[dict[str, Any]]) -> list[str]:
        return [
            definitions[c["$ref"].rsplit("/", 1)[1]]["title"]
            if "$ref" in c
            else c.get("title", c.get("type"))
            for c in choices
        ]

    source = definitions["Campaign"]["properties"]["source"]
    assert titles(source["anyOf"]) == [
        "CSV file",
        "Parquet file",
        "NDJSON file",
        "PostgreSQL query",
        "HTTP JSON API",
    ]
    assert titles(definitions["ValidationRules"]["properties"]["suppression"]["anyOf"])[-1] == "null"
    # The template's choice is on the field itself, not behind a `$ref`: V1 shows a `$ref`'d `anyOf` as JSON.
    template = definitions["Campaign"]["properties"]["template"]
    assert titles(template["anyOf"]) == ["Text only", "Plain text", "Per-language texts"]
    assert "$ref" not in json.dumps(template)
    assert "oneOf" not in json.dumps(PARAMETERS)


def descriptions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from descriptions(value)
    elif isinstance(node, list):
        for value in node:
            yield from descriptions(value)


def test_descriptions_have_no_bare_angle_brackets() -> None:
    """The V1 UI renders descriptions as markdown, where `<account>` outside backticks is an HTML tag, and
    vanishes."""
    bare = [
        text for text in descriptions(PARAMETERS) if re.search(r"<[A-Za-z]", re.sub(r"`[^`]*`", "", text))
    ]
    assert bare == []


if __name__ == "__main__":
    FIXTURE.write_text(
        json.dumps(Campaign.model_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
