"""The Campaign JSON schema, which Prefect renders as the flow's form in the UI, stays as it was.

`tests/fixtures/schema/campaign.json` is the schema as it stood before the models moved down (issue #14):
moving a model between modules must not change a field, a description, a default or a bound of the form.
A deliberate change of the form updates the fixture in the same commit (`python
tests/unit/test_campaign_schema.py`
writes it).
"""

from __future__ import annotations

import json
from pathlib import Path

from globe_sms.campaign import Campaign

FIXTURE = Path(__file__).parents[1] / "fixtures" / "schema" / "campaign.json"


def test_the_campaign_form_is_unchanged() -> None:
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    actual = json.loads(json.dumps(Campaign.model_json_schema(), sort_keys=True))
    assert actual == expected
    assert "MessageTemplate" in actual["$defs"] and "ValidationRules" in actual["$defs"]  # the moved models


if __name__ == "__main__":
    FIXTURE.write_text(
        json.dumps(Campaign.model_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
