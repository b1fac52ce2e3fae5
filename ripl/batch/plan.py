"""The plan: what a batch needs from one compiled policy set, built once and
kept with it (`plan_for`). Names get codes, compared attributes cell specs,
declared scopes a table of (type, action) pairs they leave out, and the
buckets of the compiled tree bit-mask tables, built as batches first meet
them. A policy set whose rule ids repeat has no plan (`usable` is False)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import attrs
import numpy as np
import numpy.typing as npt

from ripl import ir
from ripl.batch.cells import _FLIP, _NEGATE, CellSpec, _cell_constant, _cell_kind
from ripl.batch.columns import BoolArray, IntArray, Vocabulary
from ripl.compile import CompiledPolicy

log = logging.getLogger(__name__)
EFFECTS = ("allow", "restrict", "step_up", "deny")
DENY = ir.EFFECT_ORDER["deny"]
RESTRICT = ir.EFFECT_ORDER["restrict"]
MAX_DENSE_BUCKETS = 1 << 22
"""Dispatch codes up to this many are looked up in one array, else in a dict."""


@attrs.frozen
class Derived:
    """A test with no cell form, evaluated by a `Frame` over the batch's rows
    of one principal type and resource type: as a condition ("truth") or for
    whether it evaluates at all ("ok": an obligation read from the request)."""

    expr: ir.Expr
    principal_type: str
    resource_type: str
    mode: str


def _is_root_attr(expr: ir.Expr) -> bool:
    return isinstance(expr, ir.GetAttr) and isinstance(expr.obj, ir.RequestRoot)


def _attr_test(expr: ir.Expr) -> tuple[str, str, str, Any] | None:
    """`root.name op constant`, either way round, as (root, name, op, value)."""
    if not isinstance(expr, ir.Compare):
        return None
    left, right, op = expr.left, expr.right, expr.op
    if isinstance(left, ir.Const) and _is_root_attr(right):
        left, right, op = right, left, _FLIP[op]
    if isinstance(left, ir.GetAttr) and isinstance(left.obj, ir.RequestRoot):
        if isinstance(right, ir.Const):
            return left.obj.name, left.name, op, right.value
    return None


def _conjuncts(expr: ir.Expr | None) -> list[ir.Expr]:
    """The operands of a condition's top-level `and`s. `not` over a comparison
    becomes the opposite comparison: both are error exactly when an operand
    is, or when the operands cannot be compared."""
    if expr is None:
        return []
    if isinstance(expr, ir.And):
        return [part for operand in expr.operands for part in _conjuncts(operand)]
    if isinstance(expr, ir.Not):
        inner = expr.operand
        if isinstance(inner, ir.Not):
            return _conjuncts(inner.operand)
        if isinstance(inner, ir.Compare):
            return [attrs.evolve(inner, op=_NEGATE[inner.op])]
    return [expr]


TABLE_WORDS = 4096
"""The most entries one bucket's table for one attribute may take; buckets
with bigger tables are evaluated test by test."""
MAX_LANES = 8
"""Buckets of up to 32 * MAX_LANES rules get tables."""


@attrs.frozen
class Part:
    """One bucket: its slots (rules in id order, with effect ranks), its
    tests (column, first cell, cell count, negated, slot), and, when small
    enough, its tables: per column read, for each cell (error first) and
    each lane of 32 slots, the slots the value does not make false (low 32
    bits: "clear") and does not make error (high 32 bits: "sound")."""

    slot_rule: npt.NDArray[np.int32]
    slot_rank: npt.NDArray[np.int8]
    atoms: npt.NDArray[np.int64]  # per test: column, first, width, negated, slot
    lanes: int  # 0: no tables
    columns: tuple[int, ...]
    tables: tuple[npt.NDArray[np.uint64], ...]
    ranks: npt.NDArray[np.uint32]  # MAX_LANES lanes per effect rank
    breaks: tuple[IntArray | None, ...] = ()
    """Per column: None when the table has an entry per cell, else the
    cells where the bucket's own intervals start (its tests cannot tell
    apart two cells of one interval), the table having one per interval."""


@attrs.frozen
class BucketArrays:
    """Every bucket built so far, flat. Bucket b has slots
    `slot_start[b]:+slot_count[b]` and tests `atom_start[b]:+atom_count[b]`;
    with tables (`lanes[b]` > 0), its columns `table_start[b]:+table_count[b]`
    each read column `table_column` and start at `table_offset` in `tables`
    (`lanes[b]` entries per cell)."""

    slot_start: IntArray
    slot_count: IntArray
    atom_start: IntArray
    atom_count: IntArray
    slot_rule: npt.NDArray[np.int32]
    slot_rank: npt.NDArray[np.int8]
    atom_column: IntArray
    atom_first: npt.NDArray[np.int32]
    atom_width: npt.NDArray[np.uint32]
    atom_negated: BoolArray
    atom_slot: IntArray
    lanes: IntArray
    table_start: IntArray
    table_count: IntArray
    table_column: IntArray
    table_offset: IntArray
    table_mapped: BoolArray  # the table has an entry per interval, not per cell
    break_start: IntArray  # per table: its first break in `break_key`
    break_key: IntArray  # every mapped table's breaks as (table << 32) + cell
    tables: npt.NDArray[np.uint64]
    ranks: npt.NDArray[np.uint32]  # bucket, rank, lane
    narrow: npt.NDArray[np.uint32]  # rank, bucket (lane 0; for one-lane buckets)
    strict: npt.NDArray[np.uint32]  # lane 0's deny, step_up and restrict slots
    whole: npt.NDArray[np.uint64]  # one lane's slots, as clear and as sound


_Atom: TypeAlias = tuple[int, int, int, bool]
"""(column, first cell, cell count, negated)."""


class Plan:
    """What a batch needs from one compiled policy set, built once and kept
    with it: codes for names, the cell specs of compared attributes, and the
    buckets as arrays (built as batches first meet them)."""

    def __init__(self, compiled: CompiledPolicy) -> None:
        policy = compiled.policy
        schema = policy.schema
        self.compiled = compiled
        self.schema = schema
        self.types = tuple(sorted(schema.entities))
        self.type_code = {name: i for i, name in enumerate(self.types)}
        kinds = {None: 0, "human": 1, "agent": 2}
        self.kind = np.array(
            [kinds.get(schema.entities[t].kind, 3) for t in self.types] + [0],
            dtype=np.int8,
        )  # 0 not an identity, 1 human, 2 agent, 3 other; the last: unknown
        size = len(self.types)
        self.owners = np.zeros((size + 1, size + 1), dtype=bool)
        for owned, name in enumerate(self.types):
            for owner in schema.entities[name].owners:
                if owner in self.type_code:
                    self.owners[owned, self.type_code[owner]] = True
        self.actions = tuple(sorted(schema.actions))
        self.action_code = {name: i for i, name in enumerate(self.actions)}
        self.groups = tuple(sorted(schema.groups | schema.actions))
        self.group_code = {name: i for i, name in enumerate(self.groups)}
        self.action_group = np.array(
            [self.group_code[a] for a in self.actions], dtype=np.int64
        )
        self.beyond = _beyond_declared(schema, self.types, self.actions)
        self.action_names = Vocabulary(self.actions)
        self.type_names = Vocabulary(self.types)
        self.group_names = Vocabulary(self.groups)
        ids = sorted(rule.id for rule in policy.rules)
        self.usable = len(set(ids)) == len(ids)
        self.rule_ids = tuple(ids)
        self.rule_index = {rule_id: i for i, rule_id in enumerate(ids)}
        self.columns: list[CellSpec | Derived] = []
        self._column_ids: dict[Any, int] = {}
        self._scan_constants(policy)
        self._lock = threading.Lock()
        self._parts: list[Part] = []
        self._arrays = _empty_buckets()
        self._codes: dict[int, int] = {}
        dense = len(self.actions) * size * size
        self._dense = (
            np.full(max(dense, 1), -1, dtype=np.int64)
            if dense <= MAX_DENSE_BUCKETS
            else None
        )
        self._action_tests: dict[frozenset[str], BoolArray] = {}
        self._declares: dict[int, BoolArray] = {}
        self._covers: BoolArray | None = None

    # ---- attributes and their constants

    def _declared(self, root: str, name: str, rule: ir.Rule) -> list[ir.Type]:
        schema = self.schema
        if root == "context":
            spec = schema.context.get(name)
            return [] if spec is None else [spec.type]
        if root == "principal":
            types = rule.principal_types
        else:
            types = rule.resource_types
        found = []
        for typ in sorted(types) if types is not None else self.types:
            definition = schema.entities.get(typ)
            spec = None if definition is None else definition.attrs.get(name)
            if spec is not None:
                found.append(spec.type)
        return found

    def _scan_constants(self, policy: ir.PolicySet) -> None:
        """Every constant any rule compares an attribute with, per attribute
        and declared type, so that cells never change once made."""
        found: dict[tuple[str, str, ir.Type], set[Any]] = {}
        for rule in policy.rules:
            for part in _conjuncts(rule.condition):
                test = _attr_test(part)
                if test is None:
                    continue
                root, name, op, const = test
                for typ in self._declared(root, name, rule):
                    kind = _cell_kind(typ)
                    if kind is None:
                        continue
                    value = _cell_constant(kind, typ, op, const)
                    if value is not None:
                        found.setdefault((root, name, typ), set()).add(value)
        for key, values in sorted(found.items(), key=lambda item: repr(item[0])):
            self._add_spec(key, values)

    def _add_spec(self, key: tuple[str, str, ir.Type], values: Iterable[Any]) -> int:
        root, name, typ = key
        kind = _cell_kind(typ)
        assert kind is not None
        spec = CellSpec(root, name, typ, kind, tuple(sorted(set(values))))
        self._column_ids[key] = len(self.columns)
        self.columns.append(spec)
        return len(self.columns) - 1

    def _spec(self, root: str, name: str, ptype: str, rtype: str) -> int | None:
        schema = self.schema
        if root == "context":
            declared = schema.context.get(name)
        else:
            owner = ptype if root == "principal" else rtype
            declared = schema.entities[owner].attrs.get(name)
        if declared is None or _cell_kind(declared.type) is None:
            return None
        key = (root, name, declared.type)
        found = self._column_ids.get(key)
        return found if found is not None else self._add_spec(key, ())

    def _derived(self, expr: ir.Expr, ptype: str, rtype: str, mode: str) -> int:
        key = Derived(expr, ptype, rtype, mode)
        found = self._column_ids.get(key)
        if found is None:
            found = self._column_ids[key] = len(self.columns)
            self.columns.append(key)
        return found

    # ---- buckets

    def bucket_ids(self, codes: IntArray) -> tuple[IntArray, BucketArrays]:
        """The bucket of each dispatch code (building those not seen yet)."""
        dense = self._dense
        if dense is not None:
            ids = dense[codes]
            if (ids < 0).any():
                self._build(np.unique(codes[ids < 0]).tolist())
                ids = dense[codes]
            return ids, self._arrays
        unique, inverse = np.unique(codes, return_inverse=True)
        keys = unique.tolist()
        if any(k not in self._codes for k in keys):
            self._build([k for k in keys if k not in self._codes])
        table = np.array([self._codes[k] for k in keys], dtype=np.int64)
        return table[inverse.reshape(-1)], self._arrays

    def _build(self, codes: Sequence[int]) -> None:
        with self._lock:
            size = len(self.types)
            added: list[tuple[int, int]] = []
            for code in codes:
                if self._bucket_of(code) >= 0:
                    continue
                action = self.actions[code // (size * size)]
                ptype = self.types[code // size % size]
                rtype = self.types[code % size]
                self._parts.append(self._bucket_part(action, ptype, rtype))
                added.append((code, len(self._parts) - 1))
            if not added:
                return
            self._arrays = _bucket_arrays(self._parts)
            for code, bucket in added:  # only now: readers see built arrays
                if self._dense is not None:
                    self._dense[code] = bucket
                else:
                    self._codes[code] = bucket
            log.debug("batch plan: %d buckets", len(self._parts))

    def _bucket_of(self, code: int) -> int:
        if self._dense is not None:
            return int(self._dense[code])
        return self._codes.get(code, -1)

    def _bucket_part(self, action: str, ptype: str, rtype: str) -> Part:
        slots = []
        bucket = self.compiled.bucket((action, ptype, rtype))
        for rule in bucket.rules:
            found = self._rule_atoms(rule, action, ptype, rtype)
            if found is not None:
                rank = ir.EFFECT_ORDER[rule.effect]
                slots.append((self.rule_index[rule.id], rank, found))
        slots.sort(key=lambda slot: slot[0])
        atoms = np.array(
            [(*atom, i) for i, (_, _, found) in enumerate(slots) for atom in found],
            dtype=np.int64,
        ).reshape(-1, 5)
        ranks = np.zeros((4, MAX_LANES), dtype=np.uint32)
        for i, (_, rank, _) in enumerate(slots):
            if i < 32 * MAX_LANES:
                ranks[rank, i // 32] |= np.uint32(1 << (i % 32))
        part = Part(
            np.array([s[0] for s in slots], dtype=np.int32),
            np.array([s[1] for s in slots], dtype=np.int8),
            atoms,
            0,
            (),
            (),
            ranks,
        )
        return self._with_tables(part)

    def _cell_count(self, column: int) -> int:
        spec = self.columns[column]
        return 2 * len(spec.constants) + 1 if isinstance(spec, CellSpec) else 2

    def _with_tables(self, part: Part) -> Part:
        """`part` with its tables, when they are small enough."""
        slots = len(part.slot_rule)
        lanes = max(1, -(-slots // 32))
        atoms = part.atoms
        columns = np.unique(atoms[:, 0]).tolist()
        if lanes > MAX_LANES:
            return part
        full = np.zeros(lanes, dtype=np.uint64)
        for i in range(slots):
            full[i // 32] |= np.uint64(1 << (i % 32))
        tables, breaks = [], []
        for column in columns:
            mine = atoms[atoms[:, 0] == column]
            count = self._cell_count(column)
            cells = np.arange(count, dtype=np.int64)
            found: IntArray | None = None
            if (count + 1) * lanes > TABLE_WORDS:  # one entry per interval
                edges = np.concatenate([[0], mine[:, 1], mine[:, 1] + mine[:, 2]])
                cells = found = np.unique(edges[edges < count])
                if (len(cells) + 1) * lanes > TABLE_WORDS:
                    return part
            breaks.append(found)
            start = (cells[None, :] - mine[:, 1:2]).astype(np.uint32)
            width = mine[:, 2:3].astype(np.uint32)
            hits = (start < width) != mine[:, 3:4].astype(bool)
            bits = np.zeros((len(mine), lanes), dtype=np.uint64)
            slot = mine[:, 4]
            bits[np.arange(len(mine)), slot // 32] = np.left_shift(
                np.uint64(1), (slot % 32).astype(np.uint64)
            )
            zero = np.uint64(0)
            failing = np.bitwise_or.reduce(
                np.where(~hits[:, :, None], bits[:, None, :], zero), axis=0
            )
            tested = np.bitwise_or.reduce(bits, axis=0)
            clear = np.empty((len(cells) + 1, lanes), dtype=np.uint64)
            clear[0] = full
            clear[1:] = full & ~failing
            sound = np.empty((len(cells) + 1, lanes), dtype=np.uint64)
            sound[:] = full
            sound[0] = full & ~tested
            tables.append((clear | (sound << np.uint64(32))).ravel())
        return attrs.evolve(
            part,
            lanes=lanes,
            columns=tuple(columns),
            tables=tuple(tables),
            breaks=tuple(breaks),
        )

    def _rule_atoms(
        self, rule: ir.Rule, action: str, ptype: str, rtype: str
    ) -> list[_Atom] | None:
        """A rule's tests in one bucket, or None when it cannot match there
        (a target test folded to false: `false and x` is false, whatever x)."""
        atoms = []
        for part in _conjuncts(rule.condition):
            folded = _fold(part, action, ptype, rtype)
            if folded is False:
                return None
            if folded is None:
                atoms.append(self._atom(part, ptype, rtype))
        for use in rule.obligations:
            for arg in use.args:
                if not isinstance(arg, ir.Const):
                    atoms.append(self._evaluates(arg, ptype, rtype))
        return atoms

    def _atom(self, expr: ir.Expr, ptype: str, rtype: str) -> _Atom:
        test = _attr_test(expr)
        if test is not None:
            root, name, op, const = test
            column = self._spec(root, name, ptype, rtype)
            if column is not None:
                spec = self.columns[column]
                assert isinstance(spec, CellSpec)
                value = _cell_constant(spec.kind, spec.type, op, const)
                cells = None if value is None else spec.test(op, value)
                if cells is not None:
                    return column, *cells
        return self._derived(expr, ptype, rtype, "truth"), 1, 1, False

    def _evaluates(self, expr: ir.Expr, ptype: str, rtype: str) -> _Atom:
        """A test that holds wherever `expr` is not error."""
        if isinstance(expr, ir.GetAttr) and isinstance(expr.obj, ir.RequestRoot):
            column = self._spec(expr.obj.name, expr.name, ptype, rtype)
            if column is not None:
                spec = self.columns[column]
                assert isinstance(spec, CellSpec)
                return column, 0, 2 * len(spec.constants) + 1, False
        return self._derived(expr, ptype, rtype, "ok"), 0, 2, False

    # ---- names

    def declares(self, spec: CellSpec) -> BoolArray:
        """Per type code (and one past them): does the type declare the
        attribute with the spec's type."""
        found = self._declares.get(id(spec))
        if found is None:
            entities = self.schema.entities
            flags = []
            for name in self.types:
                declared = entities[name].attrs.get(spec.name)
                flags.append(declared is not None and declared.type == spec.type)
            found = self._declares[id(spec)] = np.array(flags + [False])
        return found

    def action_test(self, actions: frozenset[str]) -> BoolArray:
        """Per action code: does `action in actions` hold."""
        found = self._action_tests.get(actions)
        if found is None:
            found = np.array(
                [
                    any(a == b or a.startswith(b + ".") for b in actions)
                    for a in self.actions
                ],
                dtype=bool,
            )
            self._action_tests[actions] = found
        return found

    def covers(self) -> BoolArray:
        """`covers[s, g]`: scope s covers the group or action g."""
        found = self._covers
        if found is None:
            groups = self.groups
            found = np.zeros((len(groups), len(groups)), dtype=bool)
            for i, scope in enumerate(groups):
                for j, name in enumerate(groups):
                    found[i, j] = name == scope or name.startswith(scope + ".")
            self._covers = found
        return found


def _beyond_declared(
    schema: ir.Schema, types: Sequence[str], actions: Sequence[str]
) -> BoolArray | None:
    """`beyond[t, a]`: type code t declares scopes and they leave action code
    a out (the row past the types, for unknown types, is all False); None
    when no type declares scopes."""
    if not schema.ceilings:
        return None
    beyond = np.zeros((len(types) + 1, max(len(actions), 1)), dtype=bool)
    for code, name in enumerate(types):
        definition = schema.entities[name]
        if name in schema.ceilings:
            for at, action in enumerate(actions):
                beyond[code, at] = not definition.may_act(action)
    return beyond


def _fold(expr: ir.Expr, action: str, ptype: str, rtype: str) -> bool | None:
    """A test that one bucket decides alone, or None."""
    if isinstance(expr, ir.Const) and type(expr.value) is bool:
        return expr.value
    if isinstance(expr, ir.Is) and isinstance(expr.obj, ir.RequestRoot):
        if expr.obj.name == "principal":
            return ptype in expr.types
        if expr.obj.name == "resource":
            return rtype in expr.types
    if isinstance(expr, ir.ActionIn):
        return any(action == a or action.startswith(a + ".") for a in expr.actions)
    return None


def _empty_buckets() -> BucketArrays:
    return _bucket_arrays([])


def _bucket_arrays(parts: Sequence[Part]) -> BucketArrays:
    slot_count = np.array([len(p.slot_rule) for p in parts], dtype=np.int64)
    atom_count = np.array([len(p.atoms) for p in parts], dtype=np.int64)
    table_count = np.array([len(p.columns) for p in parts], dtype=np.int64)
    atoms = np.concatenate([p.atoms for p in parts] + [np.zeros((0, 5), np.int64)])
    tables = [t for p in parts for t in p.tables]
    sizes = np.array([len(t) for t in tables], dtype=np.int64)
    breaks = [b for p in parts for b in (p.breaks or (None,) * len(p.columns))]
    mapped = np.array([b is not None for b in breaks], dtype=bool)
    counts = np.array([0 if b is None else len(b) for b in breaks], dtype=np.int64)
    keys = [(i << 32) + b for i, b in enumerate(breaks) if b is not None] + [
        np.zeros(0, dtype=np.int64)
    ]
    ranks = np.stack([p.ranks for p in parts] + [np.zeros((4, MAX_LANES), np.uint32)])
    return BucketArrays(
        slot_start=np.cumsum(slot_count) - slot_count,
        slot_count=slot_count,
        atom_start=np.cumsum(atom_count) - atom_count,
        atom_count=atom_count,
        slot_rule=np.concatenate([p.slot_rule for p in parts] + [_NO_INT32]),
        slot_rank=np.concatenate([p.slot_rank for p in parts] + [_NO_INT8]),
        atom_column=atoms[:, 0].copy(),
        atom_first=atoms[:, 1].astype(np.int32),
        atom_width=atoms[:, 2].astype(np.uint32),
        atom_negated=atoms[:, 3].astype(bool),
        atom_slot=atoms[:, 4].copy(),
        lanes=np.array([p.lanes for p in parts], dtype=np.int64),
        table_start=np.cumsum(table_count) - table_count,
        table_count=table_count,
        table_column=np.array([c for p in parts for c in p.columns], dtype=np.int64),
        table_offset=np.cumsum(sizes) - sizes,
        table_mapped=mapped,
        break_start=np.cumsum(counts) - counts,
        break_key=np.concatenate(keys),
        tables=np.concatenate(tables + [_NO_WORDS]),
        ranks=ranks,
        narrow=np.ascontiguousarray(ranks[:, :, 0].T),
        strict=ranks[:, 1, 0] | ranks[:, 2, 0] | ranks[:, 3, 0],
        whole=_doubled(np.bitwise_or.reduce(ranks[:, :, 0], axis=1)),
    )


def _doubled(lane: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    wide = lane.astype(np.uint64)
    out: npt.NDArray[np.uint64] = wide | (wide << np.uint64(32))
    return out


_NO_INT32 = np.zeros(0, dtype=np.int32)
_NO_INT8 = np.zeros(0, dtype=np.int8)
_NO_WORDS = np.zeros(0, dtype=np.uint64)
_PLANS: weakref.WeakKeyDictionary[CompiledPolicy, Plan] = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()


def plan_for(compiled: CompiledPolicy) -> Plan:
    """The plan kept with a compiled policy set (built on first use)."""
    found = _PLANS.get(compiled)
    if found is None:
        with _PLANS_LOCK:
            found = _PLANS.get(compiled)
            if found is None:
                found = _PLANS[compiled] = Plan(compiled)
    return found
