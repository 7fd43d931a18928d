"""The `Campaign` model: the flow's parameter, the form in the Prefect UI, and the YAML file, all in one.

Bad values are refused with messages that name the field (`sender_id: ...`). No secret ever lives here:
credentials come from the environment or from a Prefect Secret block named by `gateway.credentials_block`.

A scheduled deployment sends a new campaign at every occurrence: its `campaign_id` may hold a `{date}`
placeholder (the run's scheduled date in UTC) or `{date:Area/City}` (in that time zone), which the flow
resolves from the flow run's scheduled start (`Campaign.for_run`), e.g. `weekly-news-{date:Asia/Singapore}`
-> `weekly-news-2026-05-04`. A UI retry keeps the run's scheduled start, so it keeps the campaign id too.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from globe_sms import paths
from globe_sms.batch_timing import BatchTiming
from globe_sms.campaign_yaml import DuplicateKeyError, YamlDocument
from globe_sms.form_schema import extend_schema, ignore_case
from globe_sms.frequency import FrequencyCap
from globe_sms.ids import task_id
from globe_sms.ledger.url import LedgerLocation, check_plain_url, hide_password
from globe_sms.send_window import SendWindow
from globe_sms.sources import SecretRef, Source
from globe_sms.strict_model import StrictModel
from globe_sms.template import MessageTemplate, template_form_schema
from globe_sms.validation_rules import ValidationRules

EMULATOR = "emulator"
# Every field of a campaign that holds a file path (a glob too), as attribute names from the campaign down:
# `Campaign.resolve_paths` makes these absolute. A field that holds a path goes here, and nowhere else.
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("source", "path"),  # file sources only; the others have no `path`
    ("price_table",),
    ("validation", "suppression_file"),
    ("validation", "suppression", "path"),  # an opt-out list read from a file source
    ("data_dir",),
)
_SENDER_ID = re.compile(r"^[A-Za-z0-9]+$")
# The sender ID's rules as one JSON-schema pattern, for the form and the server (`enforce_parameter_schema`):
# 1-11 letters and digits with at least one letter, or 1-15 digits. JSON schema patterns are searches (each
# alternative is anchored) read by Python's `re` on the server; pydantic's regex engine has no lookahead, so
# the model checks with `_sender_id_rules` instead.
SENDER_ID_PATTERN = r"^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$|^[0-9]{1,15}$"
# An endpoint with a scheme: https, or http to loopback only (`alibaba_sms.endpoints.resolve_endpoint`).
_SCHEMED_ENDPOINT = (
    "^(?:" + ignore_case("https://")
    + "|" + ignore_case("http://") + "(?:" + ignore_case("localhost") + "|127(?:\\.[0-9]{1,3}){3}|\\[::1\\])"
    + "(?::[0-9]*)?(?:[/?#]|$))"
)
# `{date}` or `{date:Area/City}` in a campaign id; the resolved id is plain `[a-z0-9-]`.
_DATE_PLACEHOLDER = re.compile(r"\{date(?::(?P<zone>[A-Za-z0-9_+/-]+))?\}")
CAMPAIGN_ID_PATTERN = r"^(?:[a-z0-9-]|\{date(?::[A-Za-z0-9_+/-]+)?\})+$"
_RESOLVED_ID = re.compile(r"^[a-z0-9-]+$")
_DATE_LENGTH = len("2026-05-04")


def _zone(name: str | None) -> tzinfo:
    """The time zone of a `{date:...}` placeholder (UTC when none is named)."""
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} in a {{date:...}} placeholder (e.g. Asia/Singapore)"
        ) from None


def resolve_campaign_id(campaign_id: str, scheduled: datetime) -> str:
    """Replace every `{date}` / `{date:Area/City}` in `campaign_id` with `scheduled`'s date, `YYYY-MM-DD`.

    Args:
        campaign_id: an id, possibly with placeholders.
        scheduled: the flow run's scheduled start (an aware datetime; a naive one is taken as UTC).

    Raises:
        ValueError: an unknown time zone, or a resolved id over 100 characters.
    """
    moment = scheduled if scheduled.tzinfo is not None else scheduled.replace(tzinfo=UTC)

    def date_in_zone(match: re.Match[str]) -> str:
        return moment.astimezone(_zone(match["zone"])).date().isoformat()

    resolved = _DATE_PLACEHOLDER.sub(date_in_zone, campaign_id)
    if len(resolved) > 100 or not _RESOLVED_ID.match(resolved):
        raise ValueError(f"campaign id {resolved!r} is not 1-100 lowercase letters, digits and dashes")
    return resolved


class CampaignFileError(ValueError):
    """A campaign file or value that cannot be used; the message names every bad field."""

    @classmethod
    def from_validation(
        cls, error: ValidationError, origin: str, document: YamlDocument | None = None
    ) -> CampaignFileError:
        """One error naming every bad field; with the file's `document`, also its line, and a hint where
        YAML read unquoted text as a number, boolean or date (then the other members of a union, which
        would only say the same value is not a mapping either, are left out)."""
        found = []
        for item in error.errors():
            loc = item["loc"]
            node = document.node_at(loc) if document is not None else None
            text_wanted = document is not None and item["type"] == "string_type"
            hint = document.hint(loc, item.get("input")) if document is not None and text_wanted else None
            found.append((item, node, hint))
        hinted = {id(node) for _, node, hint in found if hint and node is not None}
        lines = []
        for item, node, hint in found:
            if node is not None and id(node) in hinted and not hint:
                continue
            where = ".".join(str(part) for part in item["loc"]) or "(campaign)"
            line = f" (line {node.start_mark.line + 1})" if node is not None else ""
            lines.append(f"  {where}: {item['msg']}" + (f"; {hint}" if hint else "") + line)
        return cls(f"{origin} is not a valid campaign:\n" + "\n".join(lines))


class GatewaySettings(StrictModel):
    """Where and how fast to send."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(
        default=EMULATOR,
        json_schema_extra={"if": {"pattern": "://"}, "then": {"pattern": _SCHEMED_ENDPOINT}},
        description="'emulator' starts the embedded emulator; otherwise an https URL, or empty for the "
        "region's host.",
    )
    region: str | None = Field(
        default=None, description="Region id, e.g. ap-southeast-1, when no endpoint is given."
    )
    signature_version: Literal["v3", "v1"] = Field(
        default="v3", description="ACS3-HMAC-SHA256 (v3) or HMAC-SHA1 (v1)."
    )
    calls_per_second: float = Field(
        default=1.0,
        gt=0,
        le=50,
        description="BatchSendMessageToGlobe calls per second allowed for the account.",
    )
    single_calls_per_second: float = Field(
        default=2000.0,
        gt=0,
        le=10000,
        description="SendMessageToGlobe calls per second allowed for the account (the single lane); shared "
        "by every campaign of the account, like the batch rate, through its own limit `<limit>-single`.",
    )
    single_concurrency: int = Field(
        default=200,
        ge=1,
        le=2000,
        description="Most SendMessageToGlobe calls in flight at once (the single lane's connections).",
    )
    credentials_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the AccessKey; else "
        "ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET.",
    )
    account: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="The Alibaba Cloud account the AccessKey belongs to (its UID, or any stable alias). "
        "Alibaba counts the call rate per account, so every campaign naming the same account shares one "
        "rate limit, `globe-sms-account-<account>`, whichever AccessKey it uses. Unset: one limit per "
        "AccessKeyId.",
    )
    rate_limit_name: str | None = Field(
        default=None,
        pattern=r"^[^/%&<>]+$",
        description="Prefect global concurrency limit shared by every run of the account; wins over "
        "`account` (default: from `account`, else per AccessKeyId).",
    )
    pacing_margin_ms: float = Field(
        default=10.0,
        ge=0,
        le=500,
        description="Extra spacing between batch calls, in ms: room for their arrival at the gateway to vary "
        "(the pacer widens it by itself after a throttled call).",
    )
    read_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="Read timeout of one call.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per batch on transient errors.")
    rate_limit_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Longest wait for the account's rate-limit slot; then the batch fails, unsent and still "
        "pending.",
    )
    emulator_receipts: bool = Field(
        default=False,
        description="With the endpoint 'emulator': it pushes delivery receipts (mostly delivered, some "
        "failed or expired, with duplicates and reordering) to a receiver that stores them in the "
        "campaign's ledger.",
    )
    daily_limit: int | None = Field(
        default=None,
        ge=1,
        description="At most this many messages per day from the account, across every campaign and lane "
        "in the ledger (Alibaba pauses an account at its daily threshold). A run sends up to what is left "
        "and leaves the rest pending until the next day; unset: no daily limit.",
    )
    monthly_limit: int | None = Field(
        default=None,
        ge=1,
        description="The same per calendar month; unset: no monthly limit.",
    )
    limit_time_zone: str = Field(
        default="UTC",
        description="The time zone whose midnight starts the day and the month of `daily_limit` and "
        "`monthly_limit` (Area/City, e.g. Asia/Singapore, as Alibaba counts).",
    )
    run_lease_seconds: float = Field(
        default=1200.0,
        ge=30,
        le=86400,
        description="How long a run's hold on its campaign lasts unless renewed (at every batch attempt); a "
        "crashed run's hold expires after it. Must exceed the longest wait between two batch attempts.",
    )

    @field_validator("endpoint")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        if value == EMULATOR or not value:
            return value
        # Here, not at the top: the API package loads httpx (half a second), which reading a campaign file
        # with the emulator or a region's host does not need.
        from alibaba_sms.endpoints import resolve_endpoint

        try:
            resolve_endpoint(value)
        except ValueError as exc:  # a scheme other than https, plain http to another host, no host
            raise ValueError(str(exc)) from None
        except Exception:  # noqa: BLE001 - httpx.InvalidURL and friends: not a URL at all
            raise ValueError("is not a URL: give https://host, or 'emulator'") from None
        return value

    @field_validator("limit_time_zone")
    @classmethod
    def _limit_zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. UTC, Asia/Singapore)") from None
        return value

    @property
    def is_emulator(self) -> bool:
        return self.endpoint == EMULATOR

    @property
    def batch_timing(self) -> BatchTiming:
        """The timeouts of a call and the retries of a batch, as the send task and the client use them."""
        return BatchTiming(max_attempts=self.max_attempts, read_timeout_seconds=self.read_timeout_seconds)

    @property
    def longest_lease_gap_seconds(self) -> float:
        """The longest a run goes without renewing its lease: a batch attempt's call, the retry back-off, and
        the next attempt's wait for the rate-limit slot (the lease is renewed right before each call)."""
        timing = self.batch_timing
        longest_wait = timing.longest_retry_delay_seconds + self.rate_limit_timeout_seconds
        return timing.longest_call_seconds + longest_wait

    @model_validator(mode="after")
    def _lease_outlasts_a_batch_attempt(self) -> GatewaySettings:
        gap = self.longest_lease_gap_seconds
        if self.run_lease_seconds <= gap:
            raise ValueError(
                f"run_lease_seconds ({self.run_lease_seconds:g}) must exceed {gap:g}, the longest a run "
                "can go without renewing its lease with these settings (rate_limit_timeout_seconds, plus "
                "one call's connect and read timeouts, plus the longest retry back-off for max_attempts); "
                "raise it"
            )
        return self


class Campaign(StrictModel):
    """One SMS campaign: who gets what, from whom, and how it is sent."""

    # `_consistent`'s rules, in the schema too (as `dependentSchemas`, which the UIs do not show as choices).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=extend_schema(
            dependentSchemas={
                "gateway": {  # a real endpoint needs a sender ID
                    "if": {
                        "properties": {"gateway": {"required": ["endpoint"], "properties": {
                            "endpoint": {"not": {"const": EMULATOR}}
                        }}}
                    },
                    "then": {"required": ["sender_id"], "properties": {"sender_id": {"type": "string"}}},
                },
                "budget": {  # a budget needs a price table
                    "if": {"properties": {"budget": {"type": "number"}}},
                    "then": {"required": ["price_table"], "properties": {"price_table": {"type": "string"}}},
                },
                "message_type": {  # OTP goes through SendMessageToGlobe only
                    "if": {"properties": {"message_type": {"const": "OTP"}}},
                    "then": {"required": ["send_via"], "properties": {"send_via": {"const": "single"}}},
                },
            }
        ),
    )

    campaign_id: str = Field(
        pattern=CAMPAIGN_ID_PATTERN,
        min_length=1,
        max_length=100,
        description="Lowercase letters, digits and dashes; within one campaign id no number is messaged "
        "twice. `{date}` (UTC) or `{date:Area/City}` is replaced by the run's scheduled date, e.g. "
        "`weekly-{date:Asia/Singapore}`.",
    )
    source: Source = Field(
        description="Where the recipients come from: `kind` csv, parquet, ndjson, postgres or http (unset: "
        "from the file's extension, else csv)."
    )
    template: Annotated[MessageTemplate, WithJsonSchema(template_form_schema())] = Field(
        title="Template",  # a field holding a model has no title of its own: the form's label
        description="The message: one text with `{column}` placeholders, or texts per language picked by a "
        "column."
    )
    message_type: Literal["NOTIFY", "MKT", "OTP"] = Field(
        default="NOTIFY",
        description="NOTIFY, MKT (marketing) or OTP (one-time passwords: with `send_via: single` only).",
    )
    send_via: Literal["batch", "single", "both"] = Field(
        default="batch",
        description="batch: BatchSendMessageToGlobe, up to 1,000 numbers per call at the account's batch "
        "rate; single: one SendMessageToGlobe call per recipient, concurrently, at the account's single-call "
        "rate (for time-sensitive messages); both: the two lanes at once over one queue, finishing together.",
    )
    sender_id: str | None = Field(
        default=None,
        json_schema_extra={"pattern": SENDER_ID_PATTERN},
        description="Approved sender ID: letters and digits; at most 11 if it has a letter, 15 if all "
        "digits.",
    )
    validity_period: int | None = Field(
        default=None, ge=1, le=14400, description="Seconds a message may wait before it is dropped uncharged."
    )
    batch_size: int = Field(
        default=1000, ge=1, le=1000, description="Numbers per BatchSendMessageToGlobe call."
    )
    single_chunk_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="Recipients per chunk of the single lane: one task run, one ledger transaction before "
        "its calls and one after.",
    )
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings,
        title="Gateway",
        description="Endpoint, signature and rate.",
    )
    ledger: LedgerLocation | None = Field(
        default=None,
        union_mode="left_to_right",
        description="SQLAlchemy URL of the send ledger (SQLite or PostgreSQL) without a password, or where "
        "the whole URL is kept: {env: NAME} (an environment variable) or {block: NAME} (a Prefect Secret "
        "block). A password in the URL is refused: it would be stored and shown as a flow parameter. A "
        "relative SQLite file (`sqlite:///ledger.db`) is beside the campaign file, or, for a campaign "
        "without a file (UI, deployment), in the flow run's working directory. Unset: "
        "`sqlite:///<default data folder>/ledger.db`, the default data folder being $GLOBE_SMS_DATA_DIR, "
        "else "
        "$XDG_DATA_HOME/globe-sms, else ~/.local/share/globe-sms.",
    )
    data_dir: str | None = Field(
        default=None,
        min_length=1,
        description="Folder for the rejects file and the run's spool; relative paths resolve like the "
        "others. Unset: the folder of a SQLite ledger file, else the default data folder.",
    )
    validation: ValidationRules = Field(
        default_factory=ValidationRules,
        title="Validation", description="Recipient validation rules."
    )
    price_table: str | None = Field(
        default=None,
        description="CSV of per-country prices per segment; a relative path resolves against the campaign "
        "file's folder (no file: the flow run's working directory).",
    )
    budget: float | None = Field(
        default=None, ge=0, description="Stop before sending if the estimated cost exceeds it."
    )
    dry_run: bool = Field(default=False, description="Validate, render and plan, but send nothing.")
    resend_unknown: bool = Field(
        default=False,
        description="Resend recipients whose outcome is unknown (they may receive the message twice).",
    )
    retry_failed_codes: list[str] = Field(
        default_factory=list,
        description="Also resend rows that failed with these codes (e.g. AMOUNT_NOT_ENOUGH after a top-up).",
    )
    frequency_cap: FrequencyCap | None = Field(
        default=None,
        description="At most `max_messages` messages per number `per` 24h / 7d, counted across every "
        "campaign of the ledger (`message_types`: which count). Capped numbers are skipped for good by "
        "this campaign.",
    )
    send_window: SendWindow | None = Field(
        default=None,
        title="Send Window",
        description="Quiet hours: send only between `start` and `end` in each recipient's local time (in "
        "every zone their number may be in). Recipients outside it stay pending for a later run.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_ledger_password(cls, data: Any) -> Any:
        # Before anything else: pydantic quotes a refused value in its errors, which reach logs and the UI.
        if isinstance(data, dict) and isinstance(data.get("ledger"), str):
            return {**data, "ledger": hide_password(data["ledger"])}
        return data

    @field_validator("ledger", mode="before")
    @classmethod
    def _ledger_url_without_password(cls, value: Any) -> Any:
        if value is None:
            return None  # the default ledger
        if isinstance(value, str):
            return check_plain_url(value, "the URL")
        if isinstance(value, dict):
            try:
                return SecretRef.model_validate(value)
            except ValidationError as exc:
                problems = "; ".join(
                    " ".join([*(str(part) for part in item["loc"][:1]), item["msg"]]) for item in exc.errors()
                )
                raise ValueError(f"give {{env: NAME}} or {{block: NAME}}: {problems}") from None
        if isinstance(value, SecretRef):
            return value
        raise ValueError(
            "give a URL without a password, or {env: NAME} or {block: NAME} naming where the URL is kept"
        )

    @field_validator("template", mode="before")
    @classmethod
    def _template_shorthand(cls, value: Any) -> Any:
        # A number or date (`template: 12345`) is wrapped too, so that its error says to quote it.
        return {"text": value} if isinstance(value, str | int | float | date) else value

    @field_validator("campaign_id")
    @classmethod
    def _date_zones_exist(cls, value: str) -> str:
        for match in _DATE_PLACEHOLDER.finditer(value):
            _zone(match["zone"])
        resolved_length = len(_DATE_PLACEHOLDER.sub("-" * _DATE_LENGTH, value))
        if resolved_length > 100:
            raise ValueError(
                f"resolves to {resolved_length} characters once each {{date}} is replaced by a "
                f"{_DATE_LENGTH}-character date; a campaign id has at most 100"
            )
        return value

    @field_validator("sender_id")
    @classmethod
    def _sender_id_rules(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _SENDER_ID.match(value):
            raise ValueError("must contain only letters and digits")
        limit = 15 if value.isdigit() else 11
        if len(value) > limit:
            kind = "an all-digit" if value.isdigit() else "a sender ID with letters"
            raise ValueError(f"{kind} is at most {limit} characters, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        if not self.gateway.is_emulator and not self.sender_id:
            raise ValueError("sender_id is required when sending through a real endpoint")
        if self.budget is not None and self.price_table is None:
            raise ValueError("budget needs a price_table to be checked against")
        if self.message_type == "OTP" and self.send_via != "single":
            raise ValueError(
                "message_type OTP needs send_via: single (BatchSendMessageToGlobe takes NOTIFY and MKT only, "
                f"so one-time passwords cannot go through the batch lane; send_via is {self.send_via!r})"
            )
        return self

    @property
    def is_template(self) -> bool:
        """Whether `campaign_id` still holds a `{date}` placeholder."""
        return bool(_DATE_PLACEHOLDER.search(self.campaign_id))

    def for_run(self, scheduled: datetime) -> Campaign:
        """This campaign with `{date}` placeholders replaced by `scheduled`'s date (itself if there are none).

        Raises:
            ValueError: the resolved id is longer than 100 characters.
        """
        if not self.is_template:
            return self
        return self.model_copy(update={"campaign_id": resolve_campaign_id(self.campaign_id, scheduled)})

    def task_id(self, batch_no: int) -> str:
        """The TaskId sent to Alibaba, echoed in delivery receipts: campaign id and batch number."""
        return task_id(self.campaign_id, batch_no)

    @property
    def ledger_location(self) -> LedgerLocation:
        """The send ledger: `ledger` (a URL, or the secret holding it, resolved only where the ledger is
        opened), or the default ledger (`globe_sms.paths.default_ledger_url`)."""
        return self.ledger if self.ledger is not None else paths.default_ledger_url()

    @property
    def data_folder(self) -> Path:
        """Where the rejects file and the spool go: `data_dir`, else beside a SQLite ledger file, else the
        default data folder (see `globe_sms.paths`). A ledger kept in a secret is not read for this."""
        location = self.ledger_location
        return paths.data_folder(location if isinstance(location, str) else None, self.data_dir)

    def resolve_paths(self, base: Path) -> Campaign:
        """This campaign with every relative path made absolute against `base` (absolute ones unchanged).

        The paths are the fields in `PATH_FIELDS` and the file of a SQLite `ledger` URL (in-memory and
        server URLs stay as they are). Resolving twice changes nothing.

        Args:
            base: the campaign file's folder, or for a campaign without a file the flow run's working
                directory.
        """
        campaign = paths.with_paths_resolved(self, PATH_FIELDS, base)
        if isinstance(campaign.ledger, str):  # a URL kept in a secret is used as it is
            ledger = paths.resolve_ledger_file(campaign.ledger, base)
            if ledger != campaign.ledger:
                campaign = campaign.model_copy(update={"ledger": ledger})
        return campaign

    @classmethod
    def from_yaml(cls, path: str | Path) -> Campaign:
        """Load a campaign file; relative paths resolve against the file's folder (`resolve_paths`).

        Raises:
            CampaignFileError: the file is missing, not YAML, or has bad values (every bad field is named).
        """
        file = Path(path)
        try:
            document = YamlDocument.load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CampaignFileError(f"cannot read campaign file {file}: {exc.strerror}") from None
        except DuplicateKeyError as exc:
            raise CampaignFileError(f"{file}, {exc}") from None
        except yaml.YAMLError as exc:
            raise CampaignFileError(f"{file} is not valid YAML: {exc}") from None
        data = document.data
        if not isinstance(data, dict):
            raise CampaignFileError(f"{file} must hold a mapping of campaign fields")
        return cls.parse(data, origin=str(file), document=document).resolve_paths(file.absolute().parent)

    @classmethod
    def parse(
        cls, data: dict[str, Any], origin: str = "campaign", document: YamlDocument | None = None
    ) -> Campaign:
        """Validate a mapping, turning pydantic's errors into one `CampaignFileError`.

        Args:
            data: the campaign's fields.
            origin: what to call it in the message (the file's path).
            document: the YAML it was read from, to give each error its line and quoting hints.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CampaignFileError.from_validation(exc, origin, document) from None
