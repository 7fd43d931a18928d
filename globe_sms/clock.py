"""The one UTC clock of globe-sms, and the stopped clocks tests and what-if runs inject in its place.

Everything that needs "now" takes a `Clock` argument defaulting to `utc_now`, so no test depends on the real
time of day and no code patches `datetime`. (`alibaba_sms.signing` keeps its own `utc_now`: the client
package imports nothing of globe-sms.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current moment (aware, UTC)."""


def utc_now() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def fixed_clock(moment: datetime) -> Clock:
    """A clock stopped at `moment` (a naive one is taken as UTC)."""
    at = as_utc(moment)
    return lambda: at


def clock_at(moment: datetime | str | None) -> Clock:
    """The real clock, or one stopped at `moment` (a flow's `window_checked_at`: tests, what-if dry runs).

    An ISO 8601 string is read as the moment: the send-campaign flow takes its parameters as a deployment
    run stored them (it validates its campaign itself, `tasks.campaign_input`), so there it is still text.
    """
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return utc_now if moment is None else fixed_clock(moment)
