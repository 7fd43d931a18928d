"""`globe-sms setup`: create on the Prefect server what the deployments in `prefect.yaml` need, idempotently.

`prefect.yaml` cannot declare these (see `docs/deployments.md`), so one command creates them, reading the
names from `prefect.yaml` itself so that the two never drift apart:

* every **work pool** a deployment names, as a `process` pool with Prefect's default job template;
* every **Secret block** a campaign names in `gateway.credentials_block`. A missing block is created from
  `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET` when both are set, else as a placeholder
  to fill in the UI. An existing block is never overwritten, and no secret is ever printed;
* the **account's global concurrency limit** (one slot, decaying at the account's rate), named as the flow
  names it (`globe_sms.gateway.limit_name_for`) and created by `globe_sms.pacing.ensure_global_limit`.

Running it again changes nothing that exists, except that a limit is set back to its campaign's rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from alibaba_sms.credentials import ACCESS_KEY_ID_ENV, ACCESS_KEY_SECRET_ENV, AccessKey, MissingCredentials
from globe_sms.campaign import GatewaySettings

PLACEHOLDER = "REPLACE_ME"
Outcome = Literal["created", "exists", "updated", "skipped"]


@dataclass(frozen=True)
class SetupStep:
    """What `setup` did about one object; `detail` never contains a secret."""

    kind: Literal["work pool", "secret block", "rate limit"]
    name: str
    outcome: Outcome
    detail: str = ""


@dataclass
class SetupTargets:
    """The names the deployments use: work pools, Secret blocks, and each campaign's gateway settings."""

    work_pools: list[str] = field(default_factory=list)
    secret_blocks: list[str] = field(default_factory=list)
    gateways: list[GatewaySettings] = field(default_factory=list)


def _campaigns(deployment: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The campaign parameters of a deployment and of its schedules (trigger templates are skipped)."""
    sources = [deployment.get("parameters")]
    sources += [schedule.get("parameters") for schedule in deployment.get("schedules") or []]
    for parameters in sources:
        if isinstance(parameters, Mapping) and isinstance(parameters.get("campaign"), Mapping):
            yield parameters["campaign"]


def targets_from_prefect_yaml(path: str | Path) -> SetupTargets:
    """Collect the work pools, Secret block names and gateways of every deployment in `prefect.yaml`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no `deployments` list.
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    deployments = data.get("deployments")
    if not isinstance(deployments, list):
        raise ValueError(f"{path} has no deployments list")
    targets = SetupTargets()
    for deployment in deployments:
        pool = (deployment.get("work_pool") or {}).get("name")
        if pool and pool not in targets.work_pools:
            targets.work_pools.append(pool)
        for campaign in _campaigns(deployment):
            gateway = GatewaySettings.model_validate(campaign.get("gateway") or {})
            if gateway not in targets.gateways:
                targets.gateways.append(gateway)
            block = gateway.credentials_block
            if block and block not in targets.secret_blocks:
                targets.secret_blocks.append(block)
    return targets


def ensure_work_pool(client: Any, name: str) -> SetupStep:
    """Create the process work pool `name` unless it exists (an existing pool is left as it is)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        pass
    else:
        note = "" if pool.type == "process" else f"type {pool.type!r}, not 'process': left unchanged"
        return SetupStep("work pool", name, "exists", note)
    template = ProcessWorker.get_default_base_job_template()
    try:
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
    except ObjectAlreadyExists:  # created meanwhile by another setup
        return SetupStep("work pool", name, "exists")
    return SetupStep("work pool", name, "created", "type process")


def _secret_value(environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The block's value from the environment, else a placeholder; and where it came from."""
    key_id, secret = environ.get(ACCESS_KEY_ID_ENV, ""), environ.get(ACCESS_KEY_SECRET_ENV, "")
    if key_id and secret:
        return {"access_key_id": key_id, "access_key_secret": secret}, f"from {ACCESS_KEY_ID_ENV}/_SECRET"
    placeholder = {"access_key_id": PLACEHOLDER, "access_key_secret": PLACEHOLDER}
    return placeholder, "placeholder: fill in the AccessKey (Blocks page), then run setup again"


def ensure_secret_block(client: Any, name: str, environ: Mapping[str, str]) -> SetupStep:
    """Create the Secret block `name` if absent; never overwrite one, never print its value."""
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_block_document_by_name(name, block_type_slug="secret", include_secrets=False)
    except ObjectNotFound:
        pass
    else:
        return SetupStep("secret block", name, "exists", "left unchanged")
    value, origin = _secret_value(environ)
    try:
        Secret(value=value).save(name, overwrite=False)
    except ValueError:  # created meanwhile: the block is someone else's now, keep it
        return SetupStep("secret block", name, "exists", "left unchanged")
    return SetupStep("secret block", name, "created", origin)


def _account_key(gateway: GatewaySettings, environ: Mapping[str, str]) -> AccessKey | None:
    """The AccessKey that names the account's limit, or None while only a placeholder is known."""
    from globe_sms.gateway import credentials_for

    if gateway.credentials_block and not gateway.is_emulator:
        try:
            key = credentials_for(gateway)
        except (MissingCredentials, ValueError, KeyError):
            return None
        return None if key.access_key_id == PLACEHOLDER else key
    if gateway.is_emulator:
        return credentials_for(gateway)
    try:
        return AccessKey.from_env(environ)
    except MissingCredentials:
        return None


def limit_name(gateway: GatewaySettings, environ: Mapping[str, str]) -> str | None:
    """The name the flow gives this gateway's limit, or None while the account's AccessKey is unknown."""
    from globe_sms.gateway import limit_name_for, named_limit

    named = named_limit(gateway)
    if named is not None:
        return named
    key = _account_key(gateway, environ)
    return None if key is None else limit_name_for(gateway, key)


def ensure_rate_limit(name: str, calls_per_second: float) -> SetupStep:
    """Create the account's one-slot limit at `calls_per_second`, or set an existing one back to it."""
    from globe_sms.pacing import ensure_global_limit

    outcome = ensure_global_limit(name, calls_per_second)
    return SetupStep("rate limit", name, outcome or "exists", f"{calls_per_second:g} call(s)/s")


def run_setup(targets: SetupTargets, environ: Mapping[str, str] | None = None) -> list[SetupStep]:
    """Create the work pools, then the Secret blocks, then the rate limits; return what was done.

    Raises:
        RuntimeError: no Prefect server is configured (`PREFECT_API_URL`): setup would only fill a
            throwaway ephemeral server.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    env = os.environ if environ is None else environ
    if not get_current_settings().api.url:
        raise RuntimeError(
            "PREFECT_API_URL is not set: point it at your Prefect server, e.g. http://127.0.0.1:4200/api"
        )
    steps: list[SetupStep] = []
    with get_client(sync_client=True) as client:
        steps += [ensure_work_pool(client, name) for name in targets.work_pools]
        steps += [ensure_secret_block(client, name, env) for name in targets.secret_blocks]
    done: set[str] = set()
    for gateway in targets.gateways:
        name = limit_name(gateway, env)
        if name is None:
            where = gateway.credentials_block or f"{ACCESS_KEY_ID_ENV}/_SECRET"
            steps.append(SetupStep(
                "rate limit", "(account)", "skipped",
                f"no AccessKey in {where} yet: the first run creates the limit, or run setup again",
            ))
        elif name not in done:
            done.add(name)
            steps.append(ensure_rate_limit(name, gateway.calls_per_second))
    return steps
