"""Checks before a campaign starts: what can be refused before a Prefect run exists is refused then.

`globe-sms send` calls `preflight(campaign)` after loading the file and before it starts the flow, so a
campaign that cannot run exits 2 and no flow run is created. The `send_campaign` flow calls it again first
thing, for runs started from the Prefect UI or a deployment, where no CLI came before.

The campaign model refuses what needs no outside world (types, patterns, URLs, a `{date}` id too long); the
checks here need it: the ledger's database answers, the source's files exist. Each check is a function of
the campaign that raises `PreflightError` with a message naming the field; add new ones to `CHECKS`. Every
check runs, and the error lists every problem found.
"""

from __future__ import annotations

from collections.abc import Callable

from globe_sms.campaign import Campaign
from globe_sms.ledger import LedgerError
from globe_sms.ledger.url import check_reachable
from globe_sms.sources import FILE_KINDS
from tasks.sources.errors import SourceError
from tasks.sources.files import source_files

LEDGER_CONNECT_SECONDS = 5.0


class PreflightError(ValueError):
    """A campaign that cannot start: the message names every field at fault. Nothing was sent or changed."""


def _named(field: str, message: str) -> str:
    """`message` prefixed with `field: ` unless it already starts with it."""
    return message if message.startswith(f"{field}:") else f"{field}: {message}"


def ledger_reachable(campaign: Campaign) -> None:
    """The ledger's URL (or the secret holding it) is usable and its database answers within 5 s.

    Raises:
        PreflightError: the secret is missing, the URL malformed, or the database unreachable (URL masked).
    """
    try:
        check_reachable(campaign.ledger, timeout_seconds=LEDGER_CONNECT_SECONDS)
    except LedgerError as exc:
        raise PreflightError(_named("ledger", str(exc))) from None


def source_files_exist(campaign: Campaign) -> None:
    """A file source's path names a file, or its glob matches at least one.

    Raises:
        PreflightError: no such file, or nothing matches (the resolved path is named).
    """
    if campaign.source.kind in FILE_KINDS:
        try:
            source_files(campaign.source)  # type: ignore[arg-type] - a file source, by its kind
        except SourceError as exc:
            raise PreflightError(_named("source.path", str(exc))) from None


CHECKS: list[Callable[[Campaign], None]] = [ledger_reachable, source_files_exist]
"""Every check `preflight` runs, in order."""


def preflight(campaign: Campaign) -> None:
    """Run every check in `CHECKS` on `campaign`.

    Raises:
        PreflightError: one or more checks failed; the message has one line per problem.
    """
    problems: list[str] = []
    for check in CHECKS:
        try:
            check(campaign)
        except PreflightError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise PreflightError(problems[0])
    if problems:
        raise PreflightError(
            f"campaign {campaign.campaign_id} cannot start:\n" + "\n".join(f"  {p}" for p in problems)
        )
