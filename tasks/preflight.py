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

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from globe_sms.campaign import Campaign
from globe_sms.ledger import LedgerError
from globe_sms.ledger.url import check_reachable
from globe_sms.paths import default_ledger_url, sqlite_file
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


LEGACY_LEDGER = Path(".data") / "ledger.db"
"""Where globe-sms kept its default ledger before it had a default data folder: relative to the current
directory, wherever a run started."""


def _has_campaign(ledger_file: Path, campaign_id: str) -> bool:
    """Whether the SQLite ledger file has rows of `campaign_id` (read only; False if it has no ledger)."""
    if not ledger_file.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{ledger_file.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT 1 FROM send_ledger WHERE campaign_id = ? LIMIT 1", (campaign_id,))
            return row.fetchone() is not None
    except sqlite3.DatabaseError:  # not a ledger (or no send_ledger table): nothing of this campaign
        return False


def not_in_a_forgotten_ledger(campaign: Campaign) -> None:
    """A campaign on the default ledger whose rows are still in the old default, `.data/ledger.db` in the
    current directory, would be sent again to every number: refuse until the user names or moves that ledger.

    Raises:
        PreflightError: the old ledger has rows of this campaign and the default ledger has none.
    """
    if campaign.ledger is not None:
        return
    legacy = Path.cwd() / LEGACY_LEDGER
    default = sqlite_file(default_ledger_url())
    if default is None or legacy.resolve() == default.resolve():
        return
    if _has_campaign(legacy, campaign.campaign_id) and not _has_campaign(default, campaign.campaign_id):
        raise PreflightError(
            f"ledger: campaign {campaign.campaign_id} has rows in {legacy}, where globe-sms kept its default "
            f"ledger before it had a data folder; the default ledger is now {default}. So that no number is "
            f"sent twice, name the old one in the campaign (`ledger: sqlite:///{legacy.resolve()}`) or "
            f"move it to {default} (docs/campaign-files.md)"
        )


def _opt_out_files(campaign: Campaign) -> None:
    check_suppression_files(campaign.validation)


def _source(campaign: Campaign) -> None:
    preflight_source(campaign.source)


CHECKS: list[Callable[[Campaign], None]] = [ledger_reachable, not_in_a_forgotten_ledger]
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
