"""`FrequencyCap`: at most N messages per number in a rolling window, across every campaign of the ledger.

```yaml
frequency_cap:
  max_messages: 1        # at most this many messages per number ...
  per: 24h               # ... in this rolling window (hours or days: 24h, 7d)
  message_types: [MKT]   # which earlier messages count (default: all)
```

A number already sent `max_messages` messages (accepted, unknown or in flight: an unknown one may have been
delivered) by other campaigns of the same ledger database within `per` before the plan is made is not sent by
this campaign: its row becomes `skipped` with error code `frequency_cap`, final for the campaign
(`globe_sms.ledger.caps` counts; `tasks/limits.py` applies it).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from globe_sms.strict_model import StrictModel

FREQUENCY_CAP_REASON = "frequency_cap"
"""The error code of a row a frequency cap skipped."""
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([hd])$")


class FrequencyCap(StrictModel):
    """At most `max_messages` messages per number in any rolling `per` window, counted across campaigns."""

    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(
        ge=1, le=1000, description="At most this many messages per number in the window, this one included."
    )
    per: str = Field(
        pattern=_WINDOW.pattern,
        description="The rolling window: hours or days, e.g. 24h or 7d (at most 9999).",
    )
    message_types: list[Literal["NOTIFY", "MKT"]] = Field(
        default_factory=list,
        description="Which earlier messages count: NOTIFY, MKT (empty: all). Rows sent before globe-sms "
        "recorded message types count whatever this says.",
    )

    @field_validator("message_types")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @property
    def window(self) -> timedelta:
        """`per` as a duration."""
        match = _WINDOW.match(self.per)
        assert match is not None  # the pattern checked it
        amount, unit = int(match[1]), match[2]
        return timedelta(hours=amount) if unit == "h" else timedelta(days=amount)

    def describe(self) -> str:
        """`1 per 24h (MKT)`."""
        kinds = ", ".join(self.message_types) or "all types"
        return f"{self.max_messages} per {self.per} ({kinds})"
