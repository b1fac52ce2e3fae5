"""Rules compared without the solver, where that is safe.

Input: a rule's condition. Output: its *atoms*, the top-level conjuncts that
compare one request attribute with a constant (`resource.amount <= 2498`,
`principal.team == "data"`, `resource.sensitivity >= restricted`). A rule
matches only where each of its atoms is true, and one request has one value
per attribute, so when the atoms two rules put on one attribute admit no
common value the rules never meet: `Boxes.may_meet` answers that for any
two rules, before the solver is asked.

A rule that is nothing but atoms on required attributes, besides its
target and top-level `action in` / `is` tests, is a `Box`. Attributes are
then independent of each other and of the types, so whether two boxes meet,
or one covers another, is decided per attribute, exactly as the solver
would decide it over the same encoding (integers unbounded, decimals in
units of the encoding's precision, labels by rank within their order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

import attrs

from ripl import ir
from ripl.analyze.encode import MAX_STRING
from ripl.analyze.regions import Dim, Finite, Space, Values, atom_values

Key = tuple[str, tuple[str, ...], str]
"""(request root, attribute path, kind): kind is `int`, `num`, `bool`,
`str` or `label:<order>`."""

Atom = tuple[str, "Fraction | bool | str"]
"""(operator, constant) with the attribute on the left."""

FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@attrs.frozen
class Reach:
    actions: frozenset[str]
    principals: frozenset[str]
    resources: frozenset[str]

    def overlaps(self, other: Reach) -> bool:
        return bool(
            self.actions & other.actions
            and self.principals & other.principals
            and self.resources & other.resources
        )

    def within(self, other: Reach) -> bool:
        return (
            self.actions <= other.actions
            and self.principals <= other.principals
            and self.resources <= other.resources
        )


class ReachIndex:
    """Which rules' reach overlaps a given reach, as bit sets over rule
    positions (one per action, principal type and resource type), so that
    finding them costs a few big-integer operations rather than a walk over
    every rule sharing an action. The order is the one a walk would give:
    by the first action (sorted) a rule shares, then by rule order."""

    def __init__(self, ids: Sequence[str], reach: Mapping[str, Reach]) -> None:
        self.ids = list(ids)
        self.position = {rule_id: i for i, rule_id in enumerate(self.ids)}
        tables: tuple[dict[str, list[int]], ...] = ({}, {}, {})
        for i, rule_id in enumerate(self.ids):
            found = reach[rule_id]
            for table, names in zip(
                tables, (found.actions, found.principals, found.resources), strict=True
            ):
                for name in names:
                    table.setdefault(name, []).append(i)
        size = len(self.ids)
        self.actions, self.principals, self.resources = (
            {name: _bits(positions, size) for name, positions in table.items()}
            for table in tables
        )
        self._unions: dict[tuple[int, frozenset[str]], int] = {}
        self._found: dict[Reach, list[str]] = {}

    def _union(self, which: int, names: frozenset[str]) -> int:
        key = (which, names)
        found = self._unions.get(key)
        if found is None:
            table = self.principals if which == 0 else self.resources
            found = 0
            for name in names:
                found |= table.get(name, 0)
            self._unions[key] = found
        return found

    def overlapping(self, reach: Reach, exclude: str | None = None) -> list[str]:
        """Many rules share a reach (one target written many times), so the
        answer is kept per reach."""
        found = self._found.get(reach)
        if found is None:
            found = self._found[reach] = self._overlapping(reach)
        return [rule_id for rule_id in found if rule_id != exclude]

    def _overlapping(self, reach: Reach) -> list[str]:
        candidates = self._union(0, reach.principals) & self._union(1, reach.resources)
        out: list[str] = []
        for action in sorted(reach.actions):
            if not candidates:
                break
            found = candidates & self.actions.get(action, 0)
            candidates ^= found
            while found:
                low = found & -found
                out.append(self.ids[low.bit_length() - 1])
                found ^= low
        return out


def _bits(positions: Sequence[int], size: int) -> int:
    buffer = bytearray(size // 8 + 1)
    for i in positions:
        buffer[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(buffer, "little")


def _path(expr: ir.Expr) -> tuple[str, tuple[str, ...]] | None:
    names: list[str] = []
    while isinstance(expr, ir.GetAttr):
        names.append(expr.name)
        expr = expr.obj
    if not names or not isinstance(expr, ir.RequestRoot):
        return None
    return expr.name, tuple(reversed(names))


def _kind(
    typ: ir.Type, value: object, unit: int
) -> tuple[str, Fraction | bool | str] | None:
    """The kind of an attribute and the constant in comparable form."""
    if isinstance(typ, ir.LabelType) and isinstance(value, ir.Label):
        if value.order != typ.order:
            return None
        return f"label:{typ.order}", Fraction(value.rank)
    if not isinstance(typ, ir.Prim):
        return None
    if typ.name == "bool" and isinstance(value, bool):
        return "bool", value
    if typ.name == "string" and isinstance(value, str) and len(value) <= MAX_STRING:
        return "str", value
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    if typ.name == "int":
        return "int", Fraction(value)
    if typ.name == "decimal":
        return "dec", Fraction(value) * unit
    return None


def _atom(expr: ir.Expr, unit: int) -> tuple[Key, Atom, ir.Type] | None:
    if not isinstance(expr, ir.Compare) or expr.op not in FLIP:
        return None
    op, left, right = expr.op, expr.left, expr.right
    if isinstance(left, ir.Const):
        op, left, right = FLIP[op], right, left
    if not isinstance(right, ir.Const):
        return None
    path = _path(left)
    if path is None:
        return None
    kind = _kind(left.type, right.value, unit)
    if kind is None:
        return None
    name, value = kind
    if name in ("bool", "str") and op not in ("==", "!="):
        return None
    return (path[0], path[1], name), (op, value), left.type


def conjuncts(expr: ir.Expr | None) -> list[ir.Expr]:
    if expr is None:
        return []
    if isinstance(expr, ir.And):
        return [c for op in expr.operands for c in conjuncts(op)]
    return [expr]


def _folded(expr: ir.Expr) -> bool:
    """Conjuncts the reach of a rule already accounts for exactly."""
    if isinstance(expr, ir.ActionIn):
        return True
    if isinstance(expr, ir.Is):
        return isinstance(expr.obj, ir.RequestRoot) and expr.obj.name in (
            "principal",
            "resource",
        )
    return (
        isinstance(expr, ir.Compare)
        and expr.op == "=="
        and isinstance(expr.left, ir.ActionValue)
        and isinstance(expr.right, ir.Const)
    )


NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


@lru_cache(maxsize=65536)
def feasible(kind: str, atoms: tuple[Atom, ...]) -> bool:
    """Some value of `kind` makes every atom true. Numbers are integers here
    (decimals are counted in units of the encoding's precision), as in the
    solver's encoding, so the answer is exact both ways."""
    if kind in ("bool", "str"):
        equal = {v for op, v in atoms if op == "=="}
        unequal = {v for op, v in atoms if op == "!="}
        if len(equal) > 1 or equal & unequal:
            return False
        return not (kind == "bool" and not equal and unequal >= {True, False})
    low: int | None = None
    high: int | None = None
    equal_values: set[Fraction] = set()
    unequal_values: set[Fraction] = set()
    for op, raw in atoms:
        value = _number(raw)
        if op == "==":
            equal_values.add(value)
        elif op == "!=":
            unequal_values.add(value)
        elif op in (">", ">="):
            bound = math.floor(value) + 1 if op == ">" else math.ceil(value)
            low = bound if low is None else max(low, bound)
        else:
            bound = math.ceil(value) - 1 if op == "<" else math.floor(value)
            high = bound if high is None else min(high, bound)
    if equal_values:
        if len(equal_values) > 1:
            return False
        (value,) = equal_values
        return (
            value.denominator == 1
            and (low is None or low <= value)
            and (high is None or value <= high)
            and value not in unequal_values
        )
    if low is not None and high is not None:
        if low > high:
            return False
        if high - low + 1 <= len(unequal_values):
            return any(Fraction(x) not in unequal_values for x in range(low, high + 1))
    return True


def _number(value: Fraction | bool | str) -> Fraction:
    assert isinstance(value, Fraction)
    return value


@attrs.frozen
class Box:
    """A rule whose match is exactly: action, principal type and resource
    type in the given sets, and every atom true, where each atom reads an
    attribute every admitted type declares as required. Two such rules can
    be compared without the solver."""

    actions: frozenset[str]
    principals: frozenset[str]
    resources: frozenset[str]
    atoms: Mapping[Key, tuple[Atom, ...]]


class Boxes:
    """The atoms of every rule, the boxes among them, and the tests on them."""

    def __init__(
        self,
        rules: Mapping[str, ir.Rule],
        reach: Mapping[str, Reach],
        schema: ir.Schema,
        unit: int,
    ) -> None:
        self.schema = schema
        self.unit = unit
        self.atoms: dict[str, dict[Key, tuple[Atom, ...]]] = {}
        self.boxes: dict[str, Box] = {}
        for rule_id, rule in rules.items():
            atoms, whole, types = self._atoms_of(rule)
            self.atoms[rule_id] = atoms
            if whole and self._required(reach[rule_id], types):
                r = reach[rule_id]
                self.boxes[rule_id] = Box(r.actions, r.principals, r.resources, atoms)

    def _atoms_of(
        self, rule: ir.Rule
    ) -> tuple[dict[Key, tuple[Atom, ...]], bool, dict[Key, ir.Type]]:
        found: dict[Key, list[Atom]] = {}
        types: dict[Key, ir.Type] = {}
        whole = all(
            isinstance(arg, ir.Const) for use in rule.obligations for arg in use.args
        )
        for part in conjuncts(rule.condition):
            atom = _atom(part, self.unit)
            if atom is None:
                whole = whole and _folded(part)
                continue
            key, value, typ = atom
            found.setdefault(key, []).append(value)
            types[key] = typ
        atoms = {k: tuple(sorted(v, key=repr)) for k, v in found.items()}
        return atoms, whole, types

    def _required(self, reach: Reach, types: Mapping[Key, ir.Type]) -> bool:
        for (root, path, _), typ in types.items():
            if len(path) != 1:
                return False
            if root == "context":
                records = [self.schema.context]
            else:
                names = reach.principals if root == "principal" else reach.resources
                entities = [self.schema.entities.get(n) for n in names]
                if any(e is None for e in entities):
                    return False
                records = [e.attrs for e in entities if e is not None]
            for record in records:
                spec = record.get(path[0])
                if spec is None or spec.optional or spec.type != typ:
                    return False
        return True

    def _bounded(self, key: Key, atoms: tuple[Atom, ...]) -> tuple[Atom, ...]:
        if not key[2].startswith("label:"):
            return atoms
        order = self.schema.labels[key[2][len("label:") :]]
        top = Fraction(len(order.labels) - 1)
        return (*atoms, (">=", Fraction(0)), ("<=", top))

    def region(
        self, rule_id: str, reach: Reach, slot: str, space: Space
    ) -> dict[Dim, Values] | None:
        """The requests a box rule matches, as a region of `space`, with the
        principal in `slot` (`p` for the principal itself, `root` for the
        root human it is evaluated as); None when the rule is not a box.
        `reach` is the rule's reach in that role."""
        box = self.boxes.get(rule_id)
        if box is None:
            return None
        # Attributes first: tests that walk a region's dimensions in order
        # (`Space.within`, `Space.meets`) fail soonest on them.
        parts: dict[Dim, list[Values]] = {}
        slots = {"principal": slot, "resource": "r", "context": "ctx"}
        for (root, path, kind), atoms in box.atoms.items():
            parts[("attr", slots[root], path, kind)] = [
                atom_values(kind, op, value) for op, value in atoms
            ]
        parts[("type", "r")] = [Finite(reach.resources)]
        parts[("type", slot)] = [Finite(reach.principals)]
        parts[("action",)] = [Finite(reach.actions)]
        return space.region(parts)

    def may_meet(self, a: str, b: str) -> bool:
        """False only when no request matches both (any two rules whose
        reach overlaps)."""
        mine, theirs = self.atoms[a], self.atoms[b]
        if len(theirs) < len(mine):
            mine, theirs = theirs, mine
        for key, atoms in mine.items():
            other = theirs.get(key)
            if other is not None and not feasible(
                key[2], self._bounded(key, atoms + other)
            ):
                return False
        return True

    def meet(self, a: str, b: str) -> bool | None:
        """Whether some request matches both boxes; None when either is not a
        box. The reach of the two must overlap (the caller's index says so)."""
        first, second = self.boxes.get(a), self.boxes.get(b)
        if first is None or second is None:
            return None
        for key in first.atoms.keys() | second.atoms.keys():
            atoms = first.atoms.get(key, ()) + second.atoms.get(key, ())
            if not feasible(key[2], self._bounded(key, atoms)):
                return False
        return True

    def covers(self, cover: str, rule: str) -> bool | None:
        """Whether box `cover` matches every request box `rule` matches, for
        a `rule` that matches some request; None when either is not a box."""
        inner, outer = self.boxes.get(rule), self.boxes.get(cover)
        if inner is None or outer is None:
            return None
        if not (
            inner.actions <= outer.actions
            and inner.principals <= outer.principals
            and inner.resources <= outer.resources
        ):
            return False
        for key, atoms in outer.atoms.items():
            mine = inner.atoms.get(key, ())
            for op, value in atoms:
                escape = self._bounded(key, (*mine, (NEGATE[op], value)))
                if feasible(key[2], escape):
                    return False
        return True
