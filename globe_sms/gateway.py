"""Open the way to the gateway for one run: credentials, client, pacer, and the embedded emulator if asked.

With the endpoint `emulator`, an emulator is started on a free loopback port for the duration of the run,
with its default test credentials, so that trying the project needs no account and no secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from alibaba_sms import AccessKey, SmsClient
from alibaba_sms.async_client import AsyncSmsClient
from alibaba_sms.credentials import ACCESS_KEY_ID_ENV, MissingCredentials
from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from globe_sms.batch_timing import BatchTiming
from globe_sms.campaign import GatewaySettings
from globe_sms.ledger import LedgerLocation
from globe_sms.pacing import Pacer, ensure_global_limit, shared_pacer
from globe_sms.secrets import read_secret_block

EMULATOR_KEY = AccessKey.of("testid", "testsecret")


@dataclass
class GatewaySession:
    """A client bound to one endpoint, and the pacer shared by every batch of the account."""

    client: SmsClient
    pacer: Pacer
    limit_name: str
    emulator: EmulatorServer | None = None


def credentials_for(settings: GatewaySettings) -> AccessKey:
    """The emulator's test key, a Prefect Secret block's key, or the environment's."""
    if settings.is_emulator:
        return EMULATOR_KEY
    if settings.credentials_block:
        return access_key_from_block(settings.credentials_block)
    return AccessKey.from_env()


def access_key_from_block(block_name: str, environ: Mapping[str, str] | None = None) -> AccessKey:
    """The AccessKey kept in the Prefect Secret block `block_name`.

    The block's value is `{"access_key_id": ..., "access_key_secret": ...}`. A plain-string block value is
    read as the secret, with the id taken from `ALIBABA_CLOUD_ACCESS_KEY_ID` (in `environ`, default
    `os.environ`).

    Raises:
        globe_sms.secrets.SecretNotFound: there is no such block.
        MissingCredentials: the block holds only the secret and the id variable is unset.
    """
    value = read_secret_block(block_name)
    if isinstance(value, Mapping):
        return AccessKey.of(str(value["access_key_id"]), str(value["access_key_secret"]))
    key_id = (os.environ if environ is None else environ).get(ACCESS_KEY_ID_ENV, "")
    if not key_id:
        raise MissingCredentials(
            f"Secret block {block_name!r} holds only a secret; set {ACCESS_KEY_ID_ENV} for the key id."
        )
    return AccessKey.of(key_id, str(value))


def limit_name_for(settings: GatewaySettings, credentials: AccessKey) -> str:
    """The Prefect global limit of the account: named explicitly, else by `account`, else by AccessKeyId.

    Alibaba counts BatchSendMessageToGlobe calls per account, and an account may have several AccessKeys:
    campaigns that name the same `account` share one limit whichever key they use. Without it the AccessKeyId
    stands in for the account, which is right as long as each account sends with one key.
    """
    named = named_limit(settings)
    if named is not None:
        return named
    return f"{_limit_prefix(settings)}-{credentials.access_key_id.lower()}"


def named_limit(settings: GatewaySettings) -> str | None:
    """The limit's name when the settings alone decide it (`rate_limit_name` or `account`), else None."""
    if settings.rate_limit_name:
        return settings.rate_limit_name
    if settings.account:
        return f"{_limit_prefix(settings)}-account-{settings.account.lower()}"
    return None


def _limit_prefix(settings: GatewaySettings) -> str:
    return "globe-sms-emulator" if settings.is_emulator else "globe-sms"


@contextmanager
def open_gateway(
    settings: GatewaySettings, *, use_prefect_limit: bool = True, ledger_url: LedgerLocation | None = None
) -> Iterator[GatewaySession]:
    """Yield a ready session; the emulator, if any, stops when the block exits.

    With `settings.emulator_receipts` and a `ledger_url`, the embedded emulator pushes delivery receipts to an
    embedded receiver that stores them in that ledger; on exit it waits for the last ones to arrive.
    """
    credentials = credentials_for(settings)
    limit_name = limit_name_for(settings, credentials)
    if use_prefect_limit:
        ensure_global_limit(limit_name, settings.calls_per_second)
    pacer = shared_pacer(
        settings.calls_per_second,
        limit_name=limit_name if use_prefect_limit else None,
        margin_seconds=settings.pacing_margin_ms / 1000,
        timeout_seconds=settings.rate_limit_timeout_seconds,
    )
    emulator = None
    with_receipts = None
    try:
        endpoint = settings.endpoint
        if settings.is_emulator and settings.emulator_receipts and ledger_url:
            from globe_sms.receipts.receiver import EmulatorWithReceipts

            config = EmulatorConfig(
                batch_calls_per_second=settings.calls_per_second,
                single_calls_per_second=settings.single_calls_per_second,
            )
            with_receipts = EmulatorWithReceipts(config, ledger_url)
            emulator = with_receipts.start()
            endpoint = emulator.url
        elif settings.is_emulator:
            emulator = EmulatorServer(EmulatorConfig(
                batch_calls_per_second=settings.calls_per_second,
                single_calls_per_second=settings.single_calls_per_second,
            ))
            emulator.start()
            endpoint = emulator.url
        with build_client(settings, credentials, endpoint=endpoint) as client:
            yield GatewaySession(client, pacer, limit_name, emulator)
    finally:
        if with_receipts is not None:
            with_receipts.stop()
        elif emulator is not None:
            emulator.stop()


def build_client(
    settings: GatewaySettings, credentials: AccessKey | None = None, *, endpoint: str | None = None
) -> SmsClient:
    """A client for the account, with the gateway's timeouts; every call to the API goes through one.

    Args:
        settings: the gateway settings (endpoint, region, signature version, timeouts).
        credentials: the key to sign with; None: `credentials_for(settings)`.
        endpoint: overrides `settings.endpoint` (the embedded emulator's URL).
    """
    return SmsClient(
        credentials if credentials is not None else credentials_for(settings),
        endpoint=(endpoint or settings.endpoint) or None,
        region=settings.region,
        signature_version=settings.signature_version,
        timeout=_timeout(settings.batch_timing),
    )


def build_async_client(
    settings: GatewaySettings,
    credentials: AccessKey | None = None,
    *,
    endpoint: str | None = None,
    max_connections: int | None = None,
) -> AsyncSmsClient:
    """The asyncio client for the high-rate calls (SendMessageToGlobe, QueryMessage), with the gateway's
    timeouts; arguments as for `build_client`, plus the connection pool's size (default: the client's)."""
    options = {} if max_connections is None else {"max_connections": max_connections}
    return AsyncSmsClient(
        credentials if credentials is not None else credentials_for(settings),
        endpoint=(endpoint or settings.endpoint) or None,
        region=settings.region,
        signature_version=settings.signature_version,
        timeout=_timeout(settings.batch_timing),
        **options,
    )


def query_client(settings: GatewaySettings, *, max_connections: int | None = None) -> AsyncSmsClient:
    """The asyncio client reconciliation queries with, after a run; the embedded emulator is refused (it
    forgets its messages). Not opened yet: it opens in the event loop that first uses it.

    Raises:
        ValueError: the endpoint is `emulator`.
    """
    if settings.is_emulator:
        raise ValueError(
            "the embedded emulator lives only as long as one send run, so it cannot be queried later; "
            "with `gateway.emulator_receipts` its receipts are stored during the run, or point "
            "`gateway.endpoint` at a running `globe-sms emulator`"
        )
    return build_async_client(settings, max_connections=max_connections)


def _timeout(timing: BatchTiming):  # noqa: ANN202 - httpx.Timeout
    import httpx

    return httpx.Timeout(timing.read_timeout_seconds, connect=timing.connect_timeout_seconds)
