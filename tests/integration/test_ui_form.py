"""The send-campaign deployment's run form ("Run" > "Custom run") in a real browser, as a user fills it.

A real Prefect server with its UI, the deployments of prefect.yaml and a process worker
(tests/browser_fixtures.py); Debian's Chromium driven by Playwright. Prefect 3.9 ships two UIs and both are
reachable:

* V2 (React), where the server sends a user by default (`/` redirects to `/v2/`): the form at
  `/v2/deployments/deployment/<id>/run`;
* V1 (Vue, prefect-ui-library), the "Switch to V1 UI" choice and every link without `/v2` (e.g. the "View
  at" line of a flow run's log), the form at `/deployments/deployment/<id>/run`: the one issue #15 describes.

Issue #15 point 1, "a form people can fill": the source is a choice of kinds with their fields, the template
shows the deployment's per-language texts, no test-only parameter is offered, descriptions render as written,
and what the flow refuses the server refuses when the run is created (and "Validate parameters" says so).
The screenshots of docs/img/ (run-form.png: V2, run-form-v1.png: V1) are refreshed with
`GLOBE_SMS_UPDATE_SCREENSHOTS=1 uv run pytest tests/integration/test_ui_form.py`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from prefect.states import Scheduled

from globe_sms.ledger import Ledger
from tests.browser_fixtures import ROOT, PrefectUI, poll

# One worker runs both browser modules, one after the other: two Prefect servers with their UI, workers and
# Chromium at once made a SQLite server answer 503 and a click's request fail.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(600), pytest.mark.xdist_group("browser")]

IMAGES = ROOT / "docs" / "img"
V1, V2 = "v1", "v2"
DEFAULT_EN_TEXT = "Hi {first_name|there}, welcome to Globe! Your code is {code}."
SOURCE_KINDS = ["CSV file", "Parquet file", "NDJSON file", "PostgreSQL query", "HTTP JSON API"]
TEMPLATE_SHAPES = ["Text only", "Plain text", "Per-language texts"]


@dataclass
class RunForm:
    """The "Custom run" form of a deployment in one of the two UIs, read the way a user reads it."""

    page: Page
    version: str

    def property(self, label: str) -> Locator:
        """The block of the form field labelled `label` (with or without " (Optional)"): label, description,
        choices and inputs."""
        names = f"normalize-space()='{label}' or normalize-space()='{label} (Optional)'"
        if self.version == V1:
            xpath = (
                "//div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')]"
                "[./div[contains(@class, 'p-label__header')]"
                f"//span[contains(@class, 'schema-form-property__label')][{names}]]"
            )
        else:
            xpath = (
                f"//label[{names}]"
                "/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' group ')][1]"
            )
        return self.page.locator(f"xpath={xpath}").first

    def has(self, label: str) -> bool:
        return self.property(label).count() > 0

    def choices(self, label: str) -> tuple[list[str], str | None]:
        """The choices a union field offers (tabs in V2, a button group in V1) and the selected one."""
        block = self.property(label)
        if self.version == V1:
            buttons = block.locator("xpath=./div[contains(@class, 'p-label__body')]/div[contains(@class, "
                                    "'p-button-group')]/button")
        else:
            buttons = block.locator("xpath=./fieldset/div[@data-slot='tabs']/div[@role='tablist']/button")
        names = [name.strip() for name in buttons.all_inner_texts()]
        selected = [
            name for name, button in zip(names, buttons.all(), strict=True)
            if button.get_attribute("aria-selected") == "true"
        ]
        return names, (selected[0] if selected else None)

    def choose(self, label: str, choice: str) -> None:
        """Pick one choice of a union field, and wait until the form shows it picked."""
        block = self.property(label)
        if self.version == V1:
            button = block.locator("xpath=./div[contains(@class, 'p-label__body')]/div[contains(@class, "
                                   "'p-button-group')]/button").filter(has_text=re.compile(f"^{choice}$"))
        else:
            button = block.get_by_role("tab", name=choice, exact=True).first
        button.click()
        expect(button).to_have_attribute("aria-selected", "true")

    def description(self, label: str) -> str:
        """The description as displayed (rendered text, not the source)."""
        block = self.property(label)
        if self.version == V1:
            return block.locator("xpath=./div[contains(@class, 'p-label__header')]"
                                 "/div[contains(@class, 'p-label__description')]").inner_text()
        return block.locator("xpath=./div[1]//p").first.inner_text()

    def shown_text(self, label: str) -> str:
        """Everything a user can read in the field: its text and the values of its inputs."""
        block = self.property(label)
        values = block.locator("textarea, input").evaluate_all("elements => elements.map(e => e.value)")
        return "\n".join([block.inner_text(), *values])

    def fill(self, label: str, value: str) -> None:
        """Type `value` into the field, and check that the form kept it."""
        field = self.property(label).locator("textarea, input").first
        field.fill(value)
        expect(field).to_have_value(value)

    def is_json_box(self, label: str) -> bool:
        """Whether the field is a raw JSON editor rather than fields."""
        block = self.property(label)
        editor = ".schema-form-property-kind-json" if self.version == V1 else ".cm-editor"
        try:  # the editor renders after the field's label: wait for it rather than count at once
            block.locator(editor).first.wait_for(state="attached", timeout=10_000)
        except PlaywrightTimeout:
            return False
        return True


@pytest.fixture(scope="module")
def send_campaign(prefect_ui: PrefectUI) -> dict[str, Any]:
    """The send-campaign deployment as prefect.yaml applied it."""
    return prefect_ui.deployment("send-campaign", "send-campaign")


def open_form(page: Page, ui: PrefectUI, deployment: dict[str, Any], version: str) -> RunForm:
    """The deployment's "Custom run" form, once its Campaign fields have rendered."""
    prefix = "/v2" if version == V2 else ""
    page.goto(f"{ui.url}{prefix}/deployments/deployment/{deployment['id']}/run")
    form = RunForm(page, version)
    campaign_id = form.property("Campaign Id").locator("textarea, input").first
    # The form renders, then fills in the deployment's values: wait for them before reading or typing.
    expect(campaign_id).to_have_value(deployment["parameters"]["campaign"]["campaign_id"], timeout=60_000)
    return form


@pytest.fixture(params=[V2, V1])
def form(request: pytest.FixtureRequest, ui_page: Page, prefect_ui: PrefectUI,
         send_campaign: dict[str, Any]) -> Iterator[RunForm]:
    """The run form in the UI a user lands on (V2) and in the one the run links open (V1)."""
    yield open_form(ui_page, prefect_ui, send_campaign, request.param)


def test_the_form_shows_the_campaign_with_the_deployments_values(form: RunForm, tmp_path: Path) -> None:
    """Campaign id, sender ID and batch size are fields holding the deployment's values. A screenshot of the
    top of the form is taken; with GLOBE_SMS_UPDATE_SCREENSHOTS=1 it replaces the one in docs/img/ (so that
    an ordinary test run leaves the checkout unchanged)."""
    assert "welcome-2026-11" in form.shown_text("Campaign Id")
    assert "GlobeSMS" in form.shown_text("Sender Id")
    assert "500" in form.shown_text("Batch Size")
    assert "Lowercase letters, digits and dashes" in form.description("Campaign Id")
    name = "run-form.png" if form.version == V2 else "run-form-v1.png"
    folder = IMAGES if os.environ.get("GLOBE_SMS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    form.page.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.parametrize("version", [V2, V1])
def test_the_source_is_a_choice_of_kinds_each_with_its_fields(
    version: str, ui_page: Page, prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """A choice of the five kinds, each labelled by what it reads, the deployment's (csv) selected, and its
    fields with their descriptions (not a raw JSON box)."""
    form = open_form(ui_page, prefect_ui, send_campaign, version)
    kinds, selected = form.choices("Source")
    assert (kinds, selected) == (SOURCE_KINDS, "CSV file")
    source = form.property("Source")
    assert "examples/welcome.csv" in "\n".join(
        source.locator("textarea, input").evaluate_all("elements => elements.map(e => e.value)")
    )
    assert "glob" in source.inner_text()  # the path's description: "A file, or a glob such as ..."


@pytest.mark.parametrize("version", [V2, V1])
def test_the_template_shows_the_deployments_per_language_texts(
    version: str, ui_page: Page, prefect_ui: PrefectUI, send_campaign: dict[str, Any], tmp_path: Path
) -> None:
    """The deployment's template is a mapping language -> text: the form offers the three shapes of a
    template with the per-language one selected, and shows those texts and the column picking one. A
    screenshot of it goes to docs/img/ with GLOBE_SMS_UPDATE_SCREENSHOTS=1."""
    form = open_form(ui_page, prefect_ui, send_campaign, version)
    assert form.choices("Template") == (TEMPLATE_SHAPES, "Per-language texts")
    # The texts are a JSON editor, which V2 loads after the rest of the form: wait for it.
    poll(lambda: DEFAULT_EN_TEXT in form.shown_text("Text"), timeout=30)
    assert "lang" in form.shown_text("Select By")
    form.property("Template").scroll_into_view_if_needed()
    name = "run-form-template.png" if version == V2 else "run-form-template-v1.png"
    folder = IMAGES if os.environ.get("GLOBE_SMS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    form.page.screenshot(path=str(folder / name))


@pytest.mark.parametrize("version", [V2, V1])
def test_no_test_only_parameter_is_offered(
    version: str, ui_page: Page, prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    form = open_form(ui_page, prefect_ui, send_campaign, version)
    assert not form.has("window_checked_at")


@pytest.mark.parametrize("version", [V2, V1])
def test_descriptions_render_as_written(
    version: str, ui_page: Page, prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """`<account>` in the account field's description stays on screen (V2 shows descriptions as plain text;
    V1 as markdown, where a bare `<account>` is an HTML tag and vanishes, while one in backticks stays)."""
    form = open_form(ui_page, prefect_ui, send_campaign, version)
    assert "globe-sms-account-<account>" in form.description("Account")


def flow_run_id_of(ui: PrefectUI, deployment_id: str, campaign_id: str) -> str:
    """The flow run the form created: the deployment's run with this campaign id."""
    def created() -> str | None:
        for run in ui.flow_runs(deployment_id):
            if run["parameters"].get("campaign", {}).get("campaign_id") == campaign_id:
                return str(run["id"])
        return None

    try:
        return str(poll(created, timeout=60))
    except AssertionError:
        runs = ui.flow_runs(deployment_id)
        ids = [run["parameters"].get("campaign", {}).get("campaign_id") for run in runs]
        raise AssertionError(f"no run of campaign {campaign_id!r}; the deployment's runs: {ids}") from None


def submit_and_wait(form: RunForm, ui: PrefectUI, deployment_id: str, campaign_id: str, folder: Path) -> None:
    """Press Submit until the run exists: the form leaves its /run page once the server has created it.

    Under load a click can land while the form is still re-rendering (the page's height changes as
    fields switch) and do nothing; a user clicks again, and so does this, but only while no run of the
    campaign exists, so that it never creates two.
    """
    submit = form.page.get_by_role("button", name="Submit", exact=True)
    for _ in range(3):
        submit.click()
        try:
            form.page.wait_for_url(lambda url: not url.rstrip("/").endswith("/run"), timeout=20_000)
            return
        except PlaywrightTimeout:
            if any(run["parameters"].get("campaign", {}).get("campaign_id") == campaign_id
                   for run in ui.flow_runs(deployment_id)):
                return
    form.page.screenshot(path=str(folder / "not-submitted.png"), full_page=True)
    raise AssertionError(f"Submit did not create the run (see {folder / 'not-submitted.png'})")


def test_a_changed_campaign_submitted_from_the_form_completes_on_the_worker(
    ui_page: Page, prefect_ui: PrefectUI, send_campaign: dict[str, Any], tmp_path: Path
) -> None:
    """In V2, as a user would: another campaign id, another CSV, a plain-text template (the "Plain text" shape
    of the template); Submit; the worker runs it to Completed, every recipient accepted in the ledger, the
    message being the plain text."""
    recipients = tmp_path / "few.csv"
    recipients.write_text("phone,first_name\n+6591234567,Ann\n+6591234568,Bob\n+6591234569,Cy\n")
    form = open_form(ui_page, prefect_ui, send_campaign, V2)
    form.fill("Campaign Id", "browser-form-plain")
    form.fill("Path", str(recipients))
    form.choose("Template", "Plain text")
    form.fill("Text", "Hi {first_name}, sent from the form.")
    submit_and_wait(form, prefect_ui, send_campaign["id"], "browser-form-plain", tmp_path)
    run_id = flow_run_id_of(prefect_ui, send_campaign["id"], "browser-form-plain")
    run = prefect_ui.wait_for_final_state(run_id)
    assert run["state_type"] == "COMPLETED", prefect_ui.stack.log("worker")
    campaign = run["parameters"]["campaign"]
    assert campaign["source"]["path"] == str(recipients)
    assert campaign["template"]["text"] == "Hi {first_name}, sent from the form."
    assert "select_by" not in campaign["template"]
    assert run["name"] == "browser-form-plain"  # renamed after the campaign when it started

    assert prefect_ui.data_dir is not None
    with Ledger(f"sqlite:///{prefect_ui.data_dir / 'ledger.db'}") as ledger:
        assert ledger.counts("browser-form-plain").get("accepted") == 3


def campaign_with(deployment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The deployment's campaign with some fields changed (`template` replaced whole)."""
    return {**json.loads(json.dumps(deployment["parameters"]["campaign"])), **changes}


def create_run(ui: PrefectUI, deployment: dict[str, Any], campaign: dict[str, Any]) -> int:
    """Create a run of the deployment as the UI's Submit does (scheduled far ahead, so that the worker never
    takes it, and deleted at once); the server's status code: 201 created, 409 refused by the schema."""
    answer = ui.api(
        "POST", f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"campaign": campaign},
              "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": "2099-01-01T00:00:00Z"}}},
    )
    if answer.status_code == 201:
        ui.api("DELETE", f"/flow_runs/{answer.json()['id']}")
    return answer.status_code


def validate_in_ui(ui: PrefectUI, deployment: dict[str, Any], campaign: dict[str, Any]) -> bool:
    """What the UI's "Validate parameters" answers (both UIs post the form to /ui/schemas/validate)."""
    answer = ui.api(
        "POST", "/ui/schemas/validate",
        json={"schema": deployment["parameter_openapi_schema"], "values": {"campaign": campaign}},
    )
    answer.raise_for_status()
    return bool(answer.json()["valid"])


def test_the_server_refuses_a_campaign_id_outside_its_pattern(
    prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """Today's schema already carries campaign_id's pattern: refused at creation and by Validate."""
    bad = campaign_with(send_campaign, campaign_id="Bad Id!")
    assert create_run(prefect_ui, send_campaign, bad) == 409
    assert not validate_in_ui(prefect_ui, send_campaign, bad)
    good = campaign_with(send_campaign, campaign_id="good-id")
    assert create_run(prefect_ui, send_campaign, good) == 201
    assert validate_in_ui(prefect_ui, send_campaign, good)


@pytest.mark.parametrize("sender_id", ["Globe_SMS!", "GlobeSMS12345", "1234567890123456"])
def test_the_server_refuses_a_bad_sender_id_when_the_run_is_created(
    sender_id: str, prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """Not letters and digits; letters and over 11; all digits and over 15: refused (409) and not valid."""
    bad = campaign_with(send_campaign, sender_id=sender_id)
    assert not validate_in_ui(prefect_ui, send_campaign, bad)
    assert create_run(prefect_ui, send_campaign, bad) == 409


def test_the_server_refuses_select_by_without_per_language_texts(
    prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """A plain text with the prefilled select_by: the flow refuses it, so the schema must too."""
    bad = campaign_with(send_campaign, template={"text": "Hi {first_name}", "select_by": "lang"})
    assert not validate_in_ui(prefect_ui, send_campaign, bad)
    assert create_run(prefect_ui, send_campaign, bad) == 409


def test_the_server_takes_the_string_shorthand_of_a_template(
    prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """`template: "Hi {name}"` works in a campaign file; a deployment run must take it too."""
    shorthand = campaign_with(send_campaign, template="Hi {first_name}")
    assert validate_in_ui(prefect_ui, send_campaign, shorthand)
    assert create_run(prefect_ui, send_campaign, shorthand) == 201


def refusal_by_client(ui: PrefectUI, deployment: dict[str, Any], campaign: dict[str, Any]) -> str:
    """What the server answers Prefect's own client (as `run_deployment` and `prefect deployment run` call
    it) when asked for a run of the deployment with this campaign; fails the test if the run is created."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import PrefectHTTPStatusError

    with SyncPrefectClient(ui.api_url) as client:
        try:
            run = client.create_flow_run_from_deployment(
                deployment["id"], parameters={"campaign": campaign},
                state=Scheduled(scheduled_time=datetime(2099, 1, 1, tzinfo=UTC)),
            )
        except PrefectHTTPStatusError as exc:
            assert exc.response.status_code == 409
            return str(exc.response.json()["detail"])
        client.delete_flow_run(run.id)
    raise AssertionError("the server created the run")


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("campaign.sender_id", {"sender_id": "Globe_SMS!"}),
        ("campaign.template.select_by", {"template": {"text": "Hi {first_name}", "select_by": "lang"}}),
    ],
    ids=["bad sender ID", "plain text with select_by"],
)
def test_the_client_is_told_which_field_the_server_refused(
    field: str, changes: dict[str, Any], prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    detail = refusal_by_client(prefect_ui, send_campaign, campaign_with(send_campaign, **changes))
    assert f"Validation failed for field '{field}'" in detail


def test_a_rule_no_schema_can_say_fails_the_run_at_its_start_in_one_line(
    prefect_ui: PrefectUI, send_campaign: dict[str, Any]
) -> None:
    """A fallback that is not one of the template's keys passes the schema (JSON schema cannot compare a
    value with keys): the server creates the run, and the worker fails it at once, named after its campaign,
    with one line naming the field (its state's message and its log); nothing was sent."""
    campaign = campaign_with(
        send_campaign, campaign_id="browser-form-fallback",
        template={"text": {"en": "Hi {first_name}"}, "select_by": "lang", "fallback": "fr"},
    )
    answer = prefect_ui.api(
        "POST", f"/deployments/{send_campaign['id']}/create_flow_run",
        json={"parameters": {"campaign": campaign}},
    )
    assert answer.status_code == 201, answer.text
    run = prefect_ui.wait_for_final_state(answer.json()["id"])
    assert run["state_type"] == "FAILED", prefect_ui.stack.log("worker")
    assert run["name"] == "browser-form-fallback"
    message = run["state"]["message"]
    assert message.startswith("campaign refused: campaign.template: ") and "fallback 'fr'" in message
    assert "\n" not in message
    query = {"logs": {"flow_run_id": {"any_": [run["id"]]}}}

    def run_logs() -> str | None:  # logs reach the server in batches: wait for the run's last line
        text = "\n".join(log["message"] for log in prefect_ui.api("POST", "/logs/filter", json=query).json())
        return text if message in text and "Finished in state" in text else None

    text = poll(run_logs, timeout=60)
    # Not Prefect's parameter validation (a pydantic dump under a random name), not an exception of the flow.
    # (Prefect 3.9.1's engine wrapper then logs "Engine execution exited with unexpected exception" and the
    # traceback of its own `FailedRun`, as for every failed deployment run: that is Prefect's, left alone.)
    noise = ("Validation of flow parameters failed", "Encountered exception during execution", "pydantic")
    assert not [line for line in noise if line in text], text
    assert prefect_ui.data_dir is not None
    with Ledger(f"sqlite:///{prefect_ui.data_dir / 'ledger.db'}") as ledger:
        assert not any(ledger.counts("browser-form-fallback").values())
