"""What `globe-sms send` refuses when the campaign file is loaded: exit 2, the field named, no flow run
created and nothing sent (the CLI in-process, against the real Prefect test server and the emulator). Unit
tests of the YAML loader, the strict numbers and the ledger URL rules follow.

The ledger's secret through a whole run is in tests/integration/test_ledger_secret.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_load_checks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from globe_sms.campaign import Campaign, CampaignFileError
from globe_sms.campaign_yaml import DuplicateKeyError, YamlDocument
from globe_sms.cli import EXIT_BAD_INPUT, app
from globe_sms.strict_model import StrictModel, wants_a_number

runner = CliRunner()


def flow_runs_named(name: str) -> list[Any]:
    """The flow runs of the Prefect test server whose name is `name` (a campaign id)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


def refused(file: Path, campaign_id: str, gateway: EmulatorServer) -> str:
    """Run `globe-sms send file`; assert exit 2, no flow run, nothing sent; return the output."""
    result = runner.invoke(app, ["send", str(file)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert flow_runs_named(campaign_id) == []
    assert not gateway.state.accepted_numbers()
    return " ".join(result.output.split())  # rich wraps long lines


class TestStrictYaml:
    """`YamlDocument`: duplicate keys refused, lines found, hints for unquoted text."""

    def test_a_repeated_key_names_both_lines(self) -> None:
        with pytest.raises(DuplicateKeyError) as caught:
            YamlDocument.load("a: 1\nb:\n  c: 2\n  c: 3\n")
        assert (caught.value.key, caught.value.first_line, caught.value.line) == ("c", 3, 4)

    def test_a_merge_key_may_be_overridden(self) -> None:
        document = YamlDocument.load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 5\n")
        assert document.data["other"] == {"x": 5, "y": 2}

    def test_quoted_values_get_no_hint(self) -> None:
        document = YamlDocument.load("sender_id: '12345'\nother: 12345\n")
        assert document.hint(("sender_id",), 12345) is None
        assert "quote it" in str(document.hint(("other",), 12345))

    def test_a_location_through_a_union_tag_is_found(self) -> None:
        document = YamlDocument.load("source:\n  kind: http\n  url: x\n")
        assert document.line(("source", "http", "url")) == 3

    def test_an_empty_file_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "c.yaml").write_text("")
        with pytest.raises(CampaignFileError, match="must hold a mapping"):
            Campaign.from_yaml(tmp_path / "c.yaml")

    def test_not_yaml_is_still_a_clear_error(self, tmp_path: Path) -> None:
        (tmp_path / "c.yaml").write_text("a: [1, 2\n")
        with pytest.raises(CampaignFileError, match="is not valid YAML"):
            Campaign.from_yaml(tmp_path / "c.yaml")


def _models(annotation: Any, seen: set[type]) -> None:
    """Every pydantic model class reachable from `annotation`, into `seen`."""
    for arg in get_args(annotation):
        _models(arg, seen)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        seen.add(annotation)
        for field in annotation.model_fields.values():
            _models(field.annotation, seen)


class TestStrictNumbers:
    """No boolean for a number, anywhere in the campaign."""

    def test_every_model_with_a_number_field_is_strict(self) -> None:
        """A model added later with an int or float field must derive from StrictModel too."""
        seen: set[type] = set()
        _models(Campaign, seen)
        with_numbers = {
            model for model in seen if any(wants_a_number(f.annotation) for f in model.model_fields.values())
        }
        assert len(with_numbers) >= 6  # Campaign, GatewaySettings, HttpSource, PagePagination, ...
        assert [m.__name__ for m in with_numbers if not issubclass(m, StrictModel)] == []

    def test_numbers_still_come_as_yaml_and_json_give_them(self) -> None:
        base = {"campaign_id": "c", "source": {"path": "x.csv"}, "template": "hi"}
        numbers = {"batch_size": 500, "budget": 10, "price_table": "p", "gateway": {"calls_per_second": 2}}
        campaign = Campaign.parse({**base, **numbers})
        assert (campaign.batch_size, campaign.budget, campaign.gateway.calls_per_second) == (500, 10.0, 2.0)
        assert Campaign.model_validate_json(campaign.model_dump_json()) == campaign

    def test_booleans_stay_booleans(self) -> None:
        campaign = Campaign.parse(
            {"campaign_id": "c", "source": {"path": "x.csv"}, "template": "hi", "dry_run": True}
        )
        assert campaign.dry_run is True

    def test_every_error_carries_its_field(self) -> None:
        with pytest.raises(CampaignFileError) as caught:
            Campaign.parse(
                {"campaign_id": "c", "source": {"path": "x.csv"}, "template": "hi", "batch_size": True,
                 "gateway": {"max_attempts": False}}
            )
        assert "batch_size: true is a boolean" in str(caught.value)
        assert "gateway.max_attempts: false is a boolean" in str(caught.value)
