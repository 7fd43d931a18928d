"""Deferral: which recipients a run leaves for later because their send window is closed (quiet hours).

Planning hands each chunk of candidate rows, in send order, to a `WindowCheck`, which keeps the rows whose
window is open in all their zones (`globe_sms.send_window`) from now until their batch would leave, and
counts the others as deferred, with the earliest moment one of their windows opens. Deferred rows stay
`pending` in the ledger: nothing is written for them, and a later run plans them when their window is open.

The run's own duration counts: the k-th batch (from 0) of this run is sent about k / calls_per_second
seconds after planning. Row p (from 0, deferred rows included, so the estimate only errs late) is taken to
leave by `now + DEPARTURE_MARGIN + (p // batch_size) * PACE_SLACK / calls_per_second`; a row whose window
closes before then is deferred too. The margin and the slack cover the run's start, retries and
rate-limit waits.

Rows whose zones are unknown (none in phonenumbers' metadata and no usable `timezone_column`) are not
deferred: validation passes only numbers phonenumbers knows, and it has zones for each of their countries.
The per-row work is vectorised; Python runs once per distinct set of zones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from globe_sms.send_window import SendWindow, WindowSchedule
from tasks.time_zones import TIME_ZONES, with_time_zones, zone_names

DEPARTURE_MARGIN = timedelta(minutes=2)
PACE_SLACK = 1.5
_OPENS, _CLOSES, _REOPENS = "_opens_s", "_closes_s", "_reopens_s"


class WindowCheck:
    """Splits a run's candidate rows, chunk by chunk in send order, into sendable and deferred.

    Args:
        window: the campaign's send window.
        now: the moment of planning (aware, UTC).
        batch_size: recipients per call.
        calls_per_second: the account's rate.
    """

    def __init__(self, window: SendWindow, now: datetime, batch_size: int, calls_per_second: float) -> None:
        self.window = window
        self.now = now
        self.batch_size = batch_size
        self.seconds_per_batch = PACE_SLACK / calls_per_second
        self.position = 0
        self.deferred = 0
        self.next_opening: datetime | None = None
        self._schedules: dict[str, WindowSchedule] = {}

    @property
    def columns(self) -> tuple[str, ...]:
        """The message columns `sendable` needs besides `phone`: the window's `timezone_column`, if any."""
        column = self.window.timezone_column
        return (column,) if column else ()

    def sendable(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """The rows of `chunk` to send in this run; the others are counted as deferred.

        `chunk` needs `phone` (and the window's `timezone_column`, if it names one).
        """
        zoned = with_time_zones(chunk, "phone", self.window.timezone_column)
        first, self.position = self.position, self.position + chunk.height
        batch = (pl.int_range(first, self.position, dtype=pl.Int64) // self.batch_size).cast(pl.Float64)
        leaves = DEPARTURE_MARGIN.total_seconds() + batch * self.seconds_per_batch
        timed = zoned.join(self._schedule_frame(zoned), on=TIME_ZONES, how="left", maintain_order="left")
        open_now = (pl.col(_OPENS) <= 0) & (pl.col(_CLOSES) > leaves)
        timed = timed.with_columns(
            (pl.col(TIME_ZONES).is_null() | open_now.fill_null(False)).alias("_send"),
            pl.when(pl.col(_OPENS) > 0).then(pl.col(_OPENS)).otherwise(pl.col(_REOPENS)).alias("_reopens"),
        )
        later = timed.filter(~pl.col("_send"))
        if later.height:
            self.deferred += later.height
            soonest = later["_reopens"].min()
            if soonest is not None:
                opening = self.now + timedelta(seconds=float(soonest))  # type: ignore[arg-type]
                self.next_opening = opening if self.next_opening is None else min(self.next_opening, opening)
        return timed.filter(pl.col("_send")).select(chunk.columns)

    def _schedule_frame(self, zoned: pl.DataFrame) -> pl.DataFrame:
        """Per distinct set of zones: its opening, closing and reopening, in seconds after `now`."""
        keys = zoned[TIME_ZONES].drop_nulls().unique().to_list()
        for key in keys:
            if key not in self._schedules:
                self._schedules[key] = self.window.schedule(zone_names(key), self.now)
        rows = [(key, *map(self._seconds, vars(self._schedules[key]).values())) for key in keys]
        return pl.DataFrame(
            rows,
            schema={TIME_ZONES: pl.String, _OPENS: pl.Float64, _CLOSES: pl.Float64, _REOPENS: pl.Float64},
            orient="row",
        )

    def _seconds(self, moment: datetime | None) -> float | None:
        return None if moment is None else (moment - self.now).total_seconds()
