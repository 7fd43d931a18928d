"""The ledger's errors.

```
LedgerError
└── LedgerStateError   a transition named rows that were not in the expected state; nothing was changed
```
Bad arguments (a malformed number, a repeated number in one batch) raise the built-in `ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice

from globe_sms.masking import mask_number


class LedgerError(Exception):
    """Base class of the ledger's errors."""


class LedgerStateError(LedgerError):
    """A transition named rows that were not in the expected state; the transaction was rolled back.

    The message counts the offenders by reason and shows a few masked numbers, never whole ones.

    Attributes:
        campaign_id: the campaign.
        batch_no: the batch concerned, if any.
        offenders: number -> why it did not fit: its status (`"accepted"`, `"submitting in batch 3"`),
            `None` when the campaign has no such number, `"missing from the call"` for a batch row left out.
    """

    def __init__(
        self,
        message: str,
        *,
        campaign_id: str,
        batch_no: int | None = None,
        offenders: Mapping[str, str | None] | None = None,
    ) -> None:
        self.campaign_id = campaign_id
        self.batch_no = batch_no
        self.offenders: dict[str, str | None] = dict(offenders or {})
        if self.offenders:
            tally: dict[str, int] = {}
            for why in self.offenders.values():
                reason = why or "not registered"
                tally[reason] = tally.get(reason, 0) + 1
            detail = ", ".join(f"{count} {reason}" for reason, count in sorted(tally.items()))
            examples = ", ".join(mask_number(phone) for phone in islice(self.offenders, 5))
            message = f"{message} ({detail}; e.g. {examples})"
        super().__init__(message)
