"""Sets of requests that are products of per-dimension sets, and whether one
lies inside a union of others, decided without the solver.

Input: *regions*, each a mapping from a dimension (the action, the type in a
slot, one attribute a rule compares with constants) to the values it
admits there; a dimension a region does not name admits everything.
Output: `uncovered(region, others)`, a part of `region` that no other
region reaches, or None when the others cover it.

A rule made only of comparisons with constants (a box, see `boxes.py`)
matches exactly such a product, in the encoding's own domain: integers
unbounded, decimals counted in units of the encoding's precision, labels by
rank, strings unbounded. So every question the analyzer asks about boxes
alone (does a rule match anything, does its condition always hold, is it
covered by stronger rules, does its root human get less) is a covering
question here, with the solver's answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import attrs

Dim = tuple[str | tuple[str, ...], ...]
"""("action",), ("type", slot), or ("attr", slot, path, kind)."""

Bound = int | None
Intervals = tuple[tuple[Bound, Bound], ...]
"""Disjoint, sorted, non-adjacent closed integer intervals; None is
unbounded."""

BUDGET = 20_000
"""Pieces one covering question may split into before it gives up (and the
solver is asked instead)."""


class BudgetError(Exception):
    """A covering question split into more pieces than `BUDGET`."""


# ---- sets of values --------------------------------------------------------------


@attrs.frozen
class Finite:
    """Values drawn from a known finite universe (actions, types, booleans)."""

    values: frozenset[object]

    def __and__(self, other: Values) -> Finite:
        assert isinstance(other, Finite)
        return Finite(self.values & other.values)

    def __sub__(self, other: Values) -> Finite:
        assert isinstance(other, Finite)
        return Finite(self.values - other.values)

    def __bool__(self) -> bool:
        return bool(self.values)

    def meets(self, other: Values) -> bool:
        assert isinstance(other, Finite)
        return not self.values.isdisjoint(other.values)

    def within(self, other: Values) -> bool:
        assert isinstance(other, Finite)
        return self.values <= other.values


@attrs.frozen
class Ints:
    """A set of integers as intervals."""

    intervals: Intervals

    def __and__(self, other: Values) -> Ints:
        assert isinstance(other, Ints)
        out: list[tuple[Bound, Bound]] = []
        for lo1, hi1 in self.intervals:
            for lo2, hi2 in other.intervals:
                lo = lo2 if lo1 is None else lo1 if lo2 is None else max(lo1, lo2)
                hi = hi2 if hi1 is None else hi1 if hi2 is None else min(hi1, hi2)
                if lo is None or hi is None or lo <= hi:
                    out.append((lo, hi))
        return Ints(_normal(out))

    def __sub__(self, other: Values) -> Ints:
        assert isinstance(other, Ints)
        return self & other.complement()

    def complement(self) -> Ints:
        out: list[tuple[Bound, Bound]] = []
        start: Bound = None
        first = True
        for lo, hi in self.intervals:
            if lo is not None:
                out.append((None if first else start, lo - 1))
            first = False
            if hi is None:
                return Ints(tuple(out))
            start = hi + 1
        out.append((None if first else start, None))
        return Ints(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def meets(self, other: Values) -> bool:
        assert isinstance(other, Ints)
        for lo1, hi1 in self.intervals:
            for lo2, hi2 in other.intervals:
                if (lo1 is None or hi2 is None or lo1 <= hi2) and (
                    lo2 is None or hi1 is None or lo2 <= hi1
                ):
                    return True
        return False

    def within(self, other: Values) -> bool:
        assert isinstance(other, Ints)
        for lo, hi in self.intervals:
            if not any(
                (olo is None or (lo is not None and olo <= lo))
                and (ohi is None or (hi is not None and hi <= ohi))
                for olo, ohi in other.intervals
            ):
                return False
        return True


def _normal(items: Iterable[tuple[Bound, Bound]]) -> Intervals:
    ordered = sorted(items, key=lambda i: -math.inf if i[0] is None else i[0])
    out: list[tuple[Bound, Bound]] = []
    for lo, hi in ordered:
        if out:
            last_lo, last_hi = out[-1]
            if last_hi is None:
                continue
            if lo is None or lo <= last_hi + 1:
                merged_hi = None if hi is None else max(hi, last_hi)
                out[-1] = (last_lo, merged_hi)
                continue
        out.append((lo, hi))
    return tuple(out)


ALL_INTS = Ints(((None, None),))


@attrs.frozen
class Strings:
    """Exactly `values` (`positive`), or every string but them."""

    positive: bool
    values: frozenset[str]

    def __and__(self, other: Values) -> Strings:
        assert isinstance(other, Strings)
        if self.positive and other.positive:
            return Strings(True, self.values & other.values)
        if self.positive:
            return Strings(True, self.values - other.values)
        if other.positive:
            return Strings(True, other.values - self.values)
        return Strings(False, self.values | other.values)

    def __sub__(self, other: Values) -> Strings:
        assert isinstance(other, Strings)
        return self & Strings(not other.positive, other.values)

    def __bool__(self) -> bool:
        return not self.positive or bool(self.values)

    def meets(self, other: Values) -> bool:
        return bool(self & other)

    def within(self, other: Values) -> bool:
        return not self - other


ALL_STRINGS = Strings(False, frozenset())

Values = Finite | Ints | Strings


def atom_values(kind: str, op: str, value: Fraction | bool | str) -> Values:
    """The values of an attribute of `kind` that make `attribute op value`
    true, before the bounds of a label order are applied."""
    if kind == "bool":
        assert isinstance(value, bool)
        return Finite(frozenset({value} if op == "==" else {not value}))
    if kind == "str":
        assert isinstance(value, str)
        return Strings(op == "==", frozenset({value}))
    assert isinstance(value, Fraction)
    whole = value.denominator == 1
    point = int(value) if whole else 0
    if op == "==":
        return Ints(((point, point),) if whole else ())
    if op == "!=":
        return Ints(((point, point),)).complement() if whole else ALL_INTS
    if op == "<":
        return Ints(((None, math.ceil(value) - 1),))
    if op == "<=":
        return Ints(((None, math.floor(value)),))
    if op == ">":
        return Ints(((math.floor(value) + 1, None),))
    return Ints(((math.ceil(value), None),))


def pick(values: Values) -> object:
    """One member of a non-empty set, the same one every time: the first
    name, the integer nearest zero, the first string allowed."""
    if isinstance(values, Finite):
        return min(values.values, key=repr)
    if isinstance(values, Ints):
        best: int | None = None
        for lo, hi in values.intervals:
            if (lo is None or lo <= 0) and (hi is None or hi >= 0):
                return 0
            edge = lo if lo is not None and lo > 0 else hi
            assert edge is not None
            if best is None or abs(edge) < abs(best):
                best = edge
        assert best is not None
        return best
    if values.positive:
        return min(values.values)
    candidate = ""
    while candidate in values.values:
        candidate += "a"
    return candidate


# ---- regions -------------------------------------------------------------------

Region = Mapping[Dim, Values]
EMPTY: Region = {("action",): Finite(frozenset())}


class Space:
    """The universe of every dimension: what a dimension a region leaves out
    admits."""

    def __init__(
        self, finite: Mapping[Dim, frozenset[object]], labels: Mapping[str, int]
    ) -> None:
        self.finite = finite
        self.labels = labels
        self._universes: dict[Dim, Values] = {}

    def universe(self, dim: Dim) -> Values:
        found = self._universes.get(dim)
        if found is None:
            found = self._universes[dim] = self._universe(dim)
        return found

    def _universe(self, dim: Dim) -> Values:
        finite = self.finite.get(dim)
        if finite is not None:
            return Finite(finite)
        kind = dim[-1]
        assert isinstance(kind, str)
        if kind == "bool":
            return Finite(frozenset({True, False}))
        if kind == "str":
            return ALL_STRINGS
        if kind.startswith("label:"):
            return Ints(((0, self.labels[kind[len("label:") :]] - 1),))
        return ALL_INTS

    def region(self, parts: Mapping[Dim, Iterable[Values]]) -> dict[Dim, Values]:
        """The region where every set given for a dimension holds (within
        the dimension's universe). An empty one is always `EMPTY`, so
        `meets` never needs to look for an empty dimension."""
        out: dict[Dim, Values] = {}
        for dim, sets in parts.items():
            values = self.universe(dim)
            for item in sets:
                values = values & item
            if not values:
                return dict(EMPTY)
            out[dim] = values
        return out

    def empty(self, region: Region) -> bool:
        return not all(region.values())

    def meet(self, a: Region, b: Region) -> dict[Dim, Values]:
        out = dict(a)
        for dim, values in b.items():
            mine = out.get(dim)
            out[dim] = values if mine is None else mine & values
        return out

    def meets(self, a: Region, b: Region) -> bool:
        """Some point lies in both (of two regions made by `region`, or
        non-empty ones)."""
        if len(b) < len(a):
            a, b = b, a
        for dim, values in a.items():
            other = b.get(dim)
            if other is not None and not values.meets(other):
                return False
        return True

    def within(self, a: Region, b: Region) -> bool:
        """Every point of `a` lies in `b` (for a non-empty `a`)."""
        for dim, values in b.items():
            mine = a.get(dim)
            if mine is None:
                mine = self.universe(dim)
            if not mine.within(values):
                return False
        return True

    def uncovered(
        self, region: Region, others: Sequence[Region], budget: int = BUDGET
    ) -> dict[Dim, Values] | None:
        """A non-empty part of `region` outside every one of `others`, or
        None when they cover it (or it is empty). Raises `BudgetError` past
        `budget` pieces."""
        if self.empty(region):
            return None
        others = [o for o in others if all(o.values())]
        stack: list[tuple[dict[Dim, Values], int]] = [(dict(region), 0)]
        pieces = 0
        while stack:
            piece, i = stack.pop()
            while i < len(others) and not self.meets(piece, others[i]):
                i += 1
            if i == len(others):
                return piece
            pieces += 1
            if pieces > budget:
                raise BudgetError
            rest = piece
            split: list[tuple[dict[Dim, Values], int]] = []
            for dim, values in others[i].items():
                mine = rest.get(dim)
                if mine is None:
                    mine = self.universe(dim)
                outside = mine - values
                if outside:
                    split.append(({**rest, dim: outside}, i + 1))
                rest = {**rest, dim: mine & values}
            # Depth first, first piece first: the answer does not depend on
            # how the stack happens to grow.
            stack.extend(reversed(split))
        return None
