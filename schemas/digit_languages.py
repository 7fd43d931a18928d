"""Decide, once per region, which phonenumbers patterns can change a mobile verdict.

phonenumbers calls a number mobile when it matches the mobile description, the general description, and
none of eight other types (premium rate, toll free, ...). Running all those regexes on every row triples
the cost of strict validation, yet for most regions the general description provably contains every mobile
number and no other type shares a single number with the mobile ranges.

The metadata patterns are finite languages over the ten digits (literals, classes, alternation, bounded
repetition), so both questions are decidable exactly: compile each pattern to an automaton and search the
product automaton for a witness string. `tasks/mobile_rules.py` then runs only the regexes a witness exists
for. The answer is exact, not a heuristic: a skipped regex cannot change any verdict.
"""

from __future__ import annotations

import re._parser as sre  # the stdlib parser behind `re`; metadata patterns are Python regexes
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import cast

_DIGITS = "0123456789"
_ALL = frozenset(range(10))


@dataclass
class _Nfa:
    """A Thompson automaton over the digits: labelled edges carry a set of digits, the rest are epsilon."""

    edges: list[list[tuple[frozenset[int], int]]] = field(default_factory=list)
    eps: list[list[int]] = field(default_factory=list)

    def state(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1


def _digit_set(items: Iterable[tuple[object, object]]) -> frozenset[int]:
    """The digits an `IN` class matches (only ASCII digits matter: inputs are normalised)."""
    out: set[int] = set()
    negate = False
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            ch = chr(arg)  # type: ignore[arg-type]
            if ch in _DIGITS:
                out.add(int(ch))
        elif name == "RANGE":
            lo, hi = cast(tuple[int, int], arg)
            out.update(int(c) for c in _DIGITS if lo <= ord(c) <= hi)
        elif name == "CATEGORY" and str(arg) == "CATEGORY_DIGIT":
            out.update(_ALL)
        elif name == "NEGATE":
            negate = True
        else:
            raise ValueError(f"unsupported class item {name}")
    return frozenset(_ALL - out) if negate else frozenset(out)


def _build(nfa: _Nfa, tree: Iterable[tuple[object, object]]) -> tuple[int, int]:
    """Thompson construction for a parsed pattern; returns (start, end) states."""
    start = current = nfa.state()
    for op, arg in tree:
        name = str(op)
        if name == "LITERAL":
            nxt = nfa.state()
            ch = chr(arg)  # type: ignore[arg-type]
            nfa.edges[current].append((frozenset({int(ch)}) if ch in _DIGITS else frozenset(), nxt))
            current = nxt
        elif name == "IN":
            nxt = nfa.state()
            nfa.edges[current].append((_digit_set(arg), nxt))  # type: ignore[arg-type]
            current = nxt
        elif name == "BRANCH":
            nxt = nfa.state()
            for branch in arg[1]:  # type: ignore[index]
                s, e = _build(nfa, branch)
                nfa.eps[current].append(s)
                nfa.eps[e].append(nxt)
            current = nxt
        elif name == "SUBPATTERN":
            s, e = _build(nfa, arg[3])  # type: ignore[index]
            nfa.eps[current].append(s)
            current = e
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = cast(tuple[int, int, Iterable[tuple[object, object]]], arg)
            if high is sre.MAXREPEAT or high > 64:
                raise ValueError("unbounded repetition")
            for i in range(high):
                s, e = _build(nfa, sub)
                nfa.eps[current].append(s)
                if i >= low:  # optional copy: may be skipped
                    nfa.eps[current].append(e)
                current = e
        else:
            raise ValueError(f"unsupported regex construct {name}")
    return start, current


class _Dfa:
    """Lazy subset construction over an `_Nfa`."""

    def __init__(self, pattern: str) -> None:
        self.nfa = _Nfa()
        start, self.accept = _build(self.nfa, sre.parse(pattern))
        self.start = self._closure({start})
        self._steps: dict[tuple[frozenset[int], int], frozenset[int]] = {}

    def _closure(self, states: Iterable[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for nxt in self.nfa.eps[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)

    def step(self, states: frozenset[int], digit: int) -> frozenset[int]:
        key = (states, digit)
        if key not in self._steps:
            moved = {nxt for s in states for digits, nxt in self.nfa.edges[s] if digit in digits}
            self._steps[key] = self._closure(moved) if moved else frozenset()
        return self._steps[key]

    def accepts(self, states: frozenset[int]) -> bool:
        return self.accept in states


@cache
def _dfa(pattern: str) -> _Dfa:
    return _Dfa(pattern)


def _witness(
    first: tuple[str, frozenset[int]], second: tuple[str, frozenset[int]], *, second_matches: bool
) -> bool:
    """Is there a digit string in `first` (pattern, lengths) that is (or, if not second_matches, is not) in
    `second`? Breadth-first over the product automaton, one level per digit."""
    a, b = _dfa(first[0]), _dfa(second[0])
    max_len = max(first[1])
    level = {(a.start, b.start)}
    for depth in range(max_len + 1):
        for sa, sb in level:
            if depth in first[1] and a.accepts(sa):
                in_second = depth in second[1] and b.accepts(sb)
                if in_second == second_matches:
                    return True
        if depth == max_len:
            break
        nxt = set()
        for sa, sb in level:
            for digit in range(10):
                na = a.step(sa, digit)
                if na:
                    nxt.add((na, b.step(sb, digit) if sb else sb))
        level = nxt
        if not level:
            break
    return False


def contains(outer: tuple[str, tuple[int, ...]], inner: tuple[str, tuple[int, ...]]) -> bool:
    """Does every string of `inner` (pattern, possible lengths) also belong to `outer`? Exact."""
    return not _witness(
        (inner[0], frozenset(inner[1])), (outer[0], frozenset(outer[1])), second_matches=False
    )


def overlaps(left: tuple[str, tuple[int, ...]], right: tuple[str, tuple[int, ...]]) -> bool:
    """Do two (pattern, possible lengths) descriptions share at least one string? Exact."""
    return _witness((left[0], frozenset(left[1])), (right[0], frozenset(right[1])), second_matches=True)


__all__ = ["contains", "overlaps"]
