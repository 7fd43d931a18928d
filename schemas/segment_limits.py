"""How much text one SMS carries: the segment limits of the two encodings (3GPP TS 23.040).

A message that fits the single-part limit is one segment; a longer one is split into parts of the per-part
limit (the rest of each part holds the concatenation header). Counted in septets for GSM-7 and in UTF-16 code
units for UCS-2. `tasks.segments` counts segments with them; `schemas.messages` checks rendered messages
against them.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["SEGMENT_LIMITS", "Encoding"]

Encoding = Literal["GSM7", "UCS2"]

# (single-part limit, per-part limit when concatenated).
SEGMENT_LIMITS: dict[Encoding, tuple[int, int]] = {"GSM7": (160, 153), "UCS2": (70, 67)}
