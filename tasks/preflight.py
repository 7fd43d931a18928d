"""Checks before a campaign starts: what can be refused before a Prefect run exists is refused then.

`globe-sms send` calls `preflight(campaign)` after loading the file and before it starts the flow, so a
campaign that cannot run exits 2 and no flow run is created. The `send_campaign` flow calls it again first
thing, for runs started from the Prefect UI or a deployment, where no CLI came before.

The campaign model refuses what needs no outside world (types, patterns, URLs, a `{date}` id too long); the
checks here need it. First the opt-out files exist (`SuppressionFileMissing`, with the resolved path) and the
source's files are usable (`preflight_source`: present, text, a sound header, at least one recipient; a
`SourceError`); then every check in `CHECKS` (the ledger's database answers) runs, and one `PreflightError`
lists every problem they found. Each check is a function of the campaign that raises `PreflightError` with a
message naming the field; add new ones to `CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable

from globe_sms.campaign import Campaign
from globe_sms.ledger import LedgerError
from globe_sms.ledger.url import check_reachable
from tasks.sources.errors import SourceError
from tasks.sources.preflight import preflight_source
from tasks.suppression import SuppressionError, check_suppression_files

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
        check_reachable(campaign.ledger_location, timeout_seconds=LEDGER_CONNECT_SECONDS)
    except LedgerError as exc:
        raise PreflightError(_named("ledger", str(exc))) from None


def _opt_out_files(campaign: Campaign) -> None:
    check_suppression_files(campaign.validation)


def _source(campaign: Campaign) -> None:
    preflight_source(campaign.source)


CHECKS: list[Callable[[Campaign], None]] = [ledger_reachable]
"""Every check `preflight` runs, in order."""


def preflight(campaign: Campaign) -> None:
    """Check the opt-out files and the source, then run every check in `CHECKS` on `campaign`.

    Raises:
        SuppressionFileMissing: an opt-out file does not exist (its resolved path is named).
        SourceError: the source's files are missing, binary, have a bad header, or hold no recipient.
        PreflightError: one or more checks failed; the message has one line per problem (a single problem
            keeps its own type, one of these three).
    """
    found: list[Exception] = []
    for check in [_opt_out_files, _source, *CHECKS]:
        try:
            check(campaign)
        except (PreflightError, SuppressionError, SourceError) as exc:
            found.append(exc)
    if len(found) == 1:
        raise found[0]  # one problem keeps its own type (and so its exit status and message)
    problems = [str(exc) for exc in found]
    if problems:
        raise PreflightError(
            f"campaign {campaign.campaign_id} cannot start:\n" + "\n".join(f"  {p}" for p in problems)
        )
