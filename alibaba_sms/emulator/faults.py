"""Fault injection for the gateway emulator: random faults under a seed, and a scripted queue.

Faults apply to BatchSendMessageToGlobe calls that passed signature verification and flow control (the
per-key rate limit), and in the same way to SendMessageToGlobe calls, from a script and a random stream of
their own (`script(..., single=True)`; random draws only with `FaultConfig.single_calls`); latency applies to
every signed API call. Two sources decide a batch call's fault:

1. The script, consumed first, one entry per batch call, for exact test scenarios::

       state.faults.script(["throttle", "ok", "500", "drop_after_accept", "timeout_after_accept:2.5",
                            "503", "business:AMOUNT_NOT_ENOUGH"])

2. Otherwise the random rates of `FaultConfig`, drawn from a `random.Random(seed)` owned by the emulator,
   so that the same seed and the same sequence of calls give the same sequence of faults.

What each fault does (the outcome a client has to cope with):

| entry | answer | messages recorded? | what the client must conclude |
|---|---|---|---|
| `ok` | normal processing | as usual | - |
| `throttle` | HTTP 400 `Throttling.User` | no | retryable |
| `500` | HTTP 500 `InternalError` | **no** | ambiguous: a real 500 may come after processing |
| `503` | HTTP 503 plain text `Service Unavailable` | no | retryable |
| `business:CODE` | HTTP 200, `ResponseCode` = CODE | no | per the code |
| `drop_after_accept` | accepted and journaled, then the connection drops mid-body | **yes** | ambiguous |
| `timeout_after_accept:S` | accepted and journaled, answered after S s | **yes** | ambiguous if timed out |
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["ok", "throttle", "500", "503", "drop_after_accept", "timeout_after_accept", "business"]

_PLAIN_KINDS = ("ok", "throttle", "500", "503", "drop_after_accept")


class FaultConfig(BaseModel):
    """Random fault rates (each a probability per batch call) and latency for every API call."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    error_500_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Chance of HTTP 500 InternalError."
    )
    spurious_throttle_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Chance of Throttling.User although the rate limit was respected.",
    )
    latency_seconds: float = Field(
        default=0.0, ge=0.0, description="Delay added before answering any API call."
    )
    latency_jitter_seconds: float = Field(
        default=0.0, ge=0.0, description="Extra uniform random delay, 0..jitter."
    )
    drop_after_accept_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Chance of accepting a batch, then dropping the connection."
    )
    single_calls: bool = Field(
        default=False,
        description="Draw the random faults for SendMessageToGlobe calls too (from a stream of their own).",
    )


@dataclass(frozen=True)
class Fault:
    """One decided fault: its kind, plus the delay (`timeout_after_accept`) or code (`business`)."""

    kind: FaultKind
    seconds: float = 0.0
    code: str = ""

    @property
    def accepts(self) -> bool:
        """Whether the batch is processed (and its messages recorded) under this fault."""
        return self.kind in ("ok", "drop_after_accept", "timeout_after_accept")

    def label(self) -> str:
        """The script spelling of this fault, for the journal."""
        if self.kind == "timeout_after_accept":
            return f"timeout_after_accept:{self.seconds:g}"
        if self.kind == "business":
            return f"business:{self.code}"
        return self.kind


OK = Fault("ok")


def parse_fault(entry: str) -> Fault:
    """Read one script entry (`"500"`, `"timeout_after_accept:2.5"`, `"business:AMOUNT_NOT_ENOUGH"`, ...).

    Raises:
        ValueError: an entry outside the vocabulary.
    """
    text = str(entry).strip()
    if text in _PLAIN_KINDS:
        return Fault(text)  # type: ignore[arg-type]
    name, sep, argument = text.partition(":")
    if sep and name == "timeout_after_accept":
        try:
            seconds = float(argument)
        except ValueError:
            raise ValueError(f"timeout_after_accept needs seconds, got {argument!r}") from None
        if seconds < 0:
            raise ValueError("timeout_after_accept seconds must not be negative")
        return Fault("timeout_after_accept", seconds=seconds)
    if sep and name == "business" and argument.strip():
        return Fault("business", code=argument.strip())
    raise ValueError(
        f"unknown fault {text!r}; expected one of {', '.join(_PLAIN_KINDS)}, "
        "timeout_after_accept:<seconds>, business:<CODE>"
    )


class FaultInjector:
    """Decides the fault of each batch call and the latency of each API call; thread-safe.

    Args:
        config: the initial random fault rates and latency.
        seed: seeds the random draws; `None` draws from system entropy.
    """

    def __init__(self, config: FaultConfig | None = None, seed: int | None = None) -> None:
        self._initial = (config or FaultConfig()).model_copy()
        self._seed = seed
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._single_script: deque[Fault] = deque()
        self.reset()

    def reset(self) -> None:
        """Back to the initial configuration, an empty script and freshly seeded random draws."""
        with self._lock:
            self._config = self._initial.model_copy()
            self._script.clear()
            self._single_script.clear()
            # Separate streams: the batch fault sequence must not depend on how many other calls had latency,
            # nor on how many single calls were made.
            self._fault_rng = random.Random(self._seed)
            self._single_rng = random.Random(None if self._seed is None else f"single:{self._seed}")
            self._latency_rng = random.Random(None if self._seed is None else f"latency:{self._seed}")

    @property
    def config(self) -> FaultConfig:
        """A copy of the current random fault configuration."""
        with self._lock:
            return self._config.model_copy()

    def configure(self, **changes: Any) -> FaultConfig:
        """Change some `FaultConfig` fields (validated) and return the new configuration."""
        with self._lock:
            merged = {**self._config.model_dump(), **changes}
            self._config = FaultConfig.model_validate(merged)
            return self._config.model_copy()

    def script(self, entries: Iterable[str], *, replace: bool = False, single: bool = False) -> None:
        """Queue faults for the next batch calls (`single`: SendMessageToGlobe calls), one each, in order.

        Raises:
            ValueError: an entry outside the vocabulary (nothing is queued then).
        """
        faults = [parse_fault(entry) for entry in entries]
        with self._lock:
            queue = self._single_script if single else self._script
            if replace:
                queue.clear()
            queue.extend(faults)

    def pending(self, *, single: bool = False) -> list[str]:
        """The script entries not consumed yet (`single`: those for SendMessageToGlobe calls)."""
        with self._lock:
            return [fault.label() for fault in (self._single_script if single else self._script)]

    def next_batch_fault(self) -> Fault:
        """The fault for the next batch call: the script's head, else a random draw."""
        return self._next(self._script, self._fault_rng, always=True)

    def next_single_fault(self) -> Fault:
        """The fault for the next SendMessageToGlobe call: its script's head, else (with `single_calls`) a
        random draw from its own stream, else none."""
        return self._next(self._single_script, self._single_rng, always=False)

    def _next(self, script: deque[Fault], rng: random.Random, *, always: bool) -> Fault:
        if not script and not always and not self._config.single_calls:
            return OK  # the common case of the high-rate path: no lock, no draw
        with self._lock:
            if script:
                return script.popleft()
            config = self._config
            if not always and not config.single_calls:
                return OK
            # Always draw all three numbers, so one rate's setting does not shift the others' sequence.
            draws = (rng.random(), rng.random(), rng.random())
        if draws[0] < config.error_500_rate:
            return Fault("500")
        if draws[1] < config.spurious_throttle_rate:
            return Fault("throttle")
        if draws[2] < config.drop_after_accept_rate:
            return Fault("drop_after_accept")
        return OK

    def latency(self) -> float:
        """Seconds to wait before answering an API call (0 when no latency is configured)."""
        config = self._config
        if not config.latency_seconds and not config.latency_jitter_seconds:
            return 0.0
        with self._lock:
            config = self._config
            jitter = (
                self._latency_rng.uniform(0, config.latency_jitter_seconds)
                if config.latency_jitter_seconds
                else 0
            )
        return config.latency_seconds + jitter
