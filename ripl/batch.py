"""Batch replay over columnar data: many requests, one numpy pass per predicate.

Input is a mapping of equal-length columns (numpy arrays or sequences), named
after the request contract: `principal.type`, `principal.id`,
`principal.attrs.NAME`, `action`, `resource.type`, `resource.id`,
`resource.attrs.NAME`, `context.NAME`; the principal's owner as
`owner.type`, `owner.id` and `owner.attrs.NAME` (the owner's entry in
`entities`; `owner.present`, a bool column, says whether that entry exists,
and defaults to yes wherever `owner.attrs.*` columns are given); and, as
object columns, `delegation` (a list of links or None),
`entities` (further entities) and `now`. A missing value is `None` in an
object column, NaN in a float column, or a masked entry of a masked array.

Rows are grouped by dispatch triple; within a group each rule's condition is
evaluated over all rows at once in three-valued form (a value array and an
error mask), for conditions built from comparisons of attributes with
constants or with each other, `and`, `or`, `not`, `has`, `is`, action tests
and the facts of an empty delegation chain. Numbers stay exact: integer
columns compare as integers, and a float that equals a decimal constant once
rounded is compared again exactly, as `Decimal(repr(x))`, which is how a
single request reads a float. Rows the vectorized path cannot take (a
delegation chain, an owner that is not a human, a bad request, arithmetic or
anything else without a vector form) are decided one by one with
`Engine.decide`, so every row agrees with `decide`.

The result holds effect codes (`ir.EFFECT_ORDER`: 0 allow … 3 deny) and,
per row, the ids of the rules that made the decision.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeAlias

import attrs
import numpy as np
import numpy.typing as npt

from ripl import ir
from ripl.compile import Bucket, CompiledPolicy
from ripl.decision import Decision


class Deciding(Protocol):
    """What a columnar batch needs from an engine (`ripl.Engine`)."""

    def snapshot(self) -> tuple[ir.PolicySet, Any]: ...

    def decide(self, request: Any) -> Decision: ...


log = logging.getLogger(__name__)

EFFECTS = ("allow", "restrict", "step_up", "deny")
DENY = ir.EFFECT_ORDER["deny"]
MAX_ID_LENGTH = 4096
MIN_GROUP = 8
"""Smaller groups are decided row by row: numpy's per-call cost dominates."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
Vec: TypeAlias = tuple[Any, BoolArray]
"""A value (array, or a scalar for all rows) and where it is error."""


@attrs.frozen
class ColumnResult:
    effects: npt.NDArray[np.int8]
    rules: npt.NDArray[np.object_]  # a tuple of rule ids per row
    vectorized: int  # rows decided by the vectorized path
    fallback: int  # rows decided one by one

    def effect_names(self) -> npt.NDArray[np.str_]:
        names: npt.NDArray[np.str_] = np.array(EFFECTS, dtype=object)[self.effects]
        return names

    def __len__(self) -> int:
        return len(self.effects)


class Unsupported(Exception):
    """An expression or a column with no vector form; its rows go row by row."""


# ---- columns as typed arrays --------------------------------------------------


@attrs.frozen
class Column:
    """One attribute over a group's rows, converted by its declared type."""

    kind: str  # "int", "float", "bool", "str", "label"
    values: Any
    missing: BoolArray  # absent or null: reading it is error
    invalid: BoolArray  # present but not of the declared type: error too
    order: str | None = None  # the label order, for labels


def _as_array(data: Any) -> Any:
    if isinstance(data, np.ndarray):
        return data
    return np.asarray(list(data), dtype=object)


def _typed_column(data: Any, typ: ir.Type, schema: ir.Schema) -> Column:
    """Converted as `request.convert` would convert each value, or
    `Unsupported` when that needs a value-by-value look."""
    mask: BoolArray | None = None
    if isinstance(data, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(data)
        data = data.filled(0 if data.dtype.kind in "iufb" else "")
    n = len(data)
    none = np.zeros(n, dtype=bool) if mask is None else mask
    kind = data.dtype.kind
    if kind == "O" and all(v is None for v in data):
        return Column("none", None, np.ones(n, dtype=bool), np.zeros(n, dtype=bool))
    if isinstance(typ, ir.Prim) and typ.name in ("int", "decimal") and kind == "O":
        return _exact_column(data, typ.name == "int", none)
    if isinstance(typ, ir.Prim) and typ.name in ("int", "decimal") and kind in "iu":
        if (
            kind == "u"
            and data.dtype.itemsize >= 8
            and (n and int(data.max()) > np.iinfo(np.int64).max)
        ):
            # Past int64: exact Python integers, never a wrapped value.
            return _exact_column(data.astype(object), typ.name == "int", none)
        return Column("int", data.astype(np.int64), none, np.zeros(n, dtype=bool))
    if isinstance(typ, ir.Prim) and typ.name == "decimal" and kind == "f":
        if np.isinf(data).any():
            raise Unsupported("an infinite number")
        nan = np.isnan(data)
        return Column(
            "float", np.where(nan, 0.0, data), none | nan, np.zeros(n, dtype=bool)
        )
    if isinstance(typ, ir.Prim) and typ.name == "bool" and kind == "O":
        is_none = np.fromiter((v is None for v in data), bool, n)
        if not all(v is None or type(v) is bool for v in data):
            raise Unsupported("a bool column with other values")
        values = np.where(is_none, False, data).astype(bool)
        return Column("bool", values, none | is_none, np.zeros(n, dtype=bool))
    if isinstance(typ, ir.Prim) and typ.name == "bool" and kind == "b":
        return Column("bool", data, none, np.zeros(n, dtype=bool))
    if (
        isinstance(typ, ir.Prim)
        and typ.name == "string"
        or isinstance(typ, ir.LabelType)
    ):
        if kind == "O":
            is_none = np.fromiter((v is None for v in data), bool, n)
            is_str = np.fromiter((type(v) is str for v in data), bool, n)
            if not (is_none | is_str).all():
                raise Unsupported("a string column with other values")
            none = none | is_none
            data = np.where(is_none, "", data).astype(str)
        elif kind != "U":
            raise Unsupported("a string attribute in a non-string column")
        if isinstance(typ, ir.LabelType):
            labels = schema.labels[typ.order].labels
            ranks = {name: i for i, name in enumerate(labels)}
            uniq, inverse = np.unique(data, return_inverse=True)
            rank_of = np.array([ranks.get(str(u), -1) for u in uniq], dtype=np.int64)
            rank = rank_of[inverse.reshape(-1)]
            unknown = (rank < 0) & ~none
            return Column("label", rank, none, unknown, typ.order)
        return Column("str", data, none, np.zeros(n, dtype=bool))
    raise Unsupported(f"a `{typ}` attribute in a `{data.dtype}` column")


def _exact_column(data: Any, whole: bool, none: BoolArray) -> Column:
    """Python numbers in an object column, converted as a request converts
    them (a float by its repr; for an int attribute, an integral decimal to
    int and any other to an error), then compared by Python, exactly."""
    n = len(data)
    values = np.empty(n, dtype=object)
    missing = none.copy()
    invalid = np.zeros(n, dtype=bool)
    for i, item in enumerate(data):
        kind = type(item)
        if item is None or missing[i]:
            missing[i], values[i] = True, 0
            continue
        if kind is float:
            if not math.isfinite(item):
                raise Unsupported("an infinite number")
            item, kind = Decimal(repr(item)), Decimal
        if kind is not int and kind is not Decimal:
            raise Unsupported("a number column with other values")
        if whole and kind is Decimal:
            if item == item.to_integral_value():
                item = int(item)
            else:
                invalid[i], item = True, 0
        values[i] = item
    return Column("exact", values, missing, invalid)


# ---- expressions over a group -------------------------------------------------

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class Frame:
    """A group's rows as seen by one evaluation: `principal` may be the
    request's principal or, for the no-escalation cap, its owner."""

    def __init__(
        self,
        n: int,
        action: str,
        principal_type: str,
        resource_type: str,
        read: Callable[[str, str], Column],
    ) -> None:
        self.n = n
        self.action = action
        self.principal_type = principal_type
        self.resource_type = resource_type
        self.read = read
        self.none = np.zeros(n, dtype=bool)

    def eval(self, expr: ir.Expr) -> Vec:  # noqa: C901 - one case per node
        if isinstance(expr, ir.Const):
            return expr.value, self.none
        if isinstance(expr, ir.GetAttr) and isinstance(expr.obj, ir.RequestRoot):
            column = self.read(expr.obj.name, expr.name)
            return column, column.missing | column.invalid
        if isinstance(expr, ir.Has) and isinstance(expr.obj, ir.RequestRoot):
            column = self.read(expr.obj.name, expr.name)
            return ~column.missing, self.none
        if isinstance(expr, ir.Is) and isinstance(expr.obj, ir.RequestRoot):
            if expr.obj.name == "context":
                raise Unsupported("`is` on the context")
            typ = (
                self.principal_type
                if expr.obj.name == "principal"
                else (self.resource_type)
            )
            return typ in expr.types, self.none
        if isinstance(expr, ir.ActionIn):
            action = self.action
            return any(
                action == a or action.startswith(a + ".") for a in expr.actions
            ), self.none
        if isinstance(expr, ir.Grants | ir.Via):
            return False, self.none  # an empty chain grants nothing
        if isinstance(expr, ir.DelegationFact):
            if expr.fact == "depth":
                return 0, self.none
            return None, ~self.none  # root, purpose and limits are error
        if isinstance(expr, ir.Compare):
            return self._compare(expr)
        if isinstance(expr, ir.And | ir.Or):
            return self._connective(expr)
        if isinstance(expr, ir.Not):
            value, err = self._truth(expr.operand)
            return ~value, err
        if isinstance(expr, ir.RiskRef):
            return self.eval(expr.expr)
        raise Unsupported(type(expr).__name__)

    def _truth(self, expr: ir.Expr) -> tuple[BoolArray, BoolArray]:
        value, err = self.eval(expr)
        if isinstance(value, Column):
            if value.kind == "none":
                return np.zeros(self.n, dtype=bool), err
            if value.kind != "bool":
                raise Unsupported("a non-bool condition")
            value = value.values
        if value is None:
            return np.zeros(self.n, dtype=bool), err
        if isinstance(value, bool | np.bool_):
            return np.full(self.n, bool(value)), err
        if not isinstance(value, np.ndarray) or value.dtype != bool:
            raise Unsupported("a non-bool condition")
        return value, err

    def _connective(self, expr: ir.And | ir.Or) -> tuple[BoolArray, BoolArray]:
        is_and = isinstance(expr, ir.And)
        decided = np.zeros(self.n, dtype=bool)  # a false (and) / true (or) operand
        erring = np.zeros(self.n, dtype=bool)
        for operand in expr.operands:
            value, err = self._truth(operand)
            decided |= ~err & (~value if is_and else value)
            erring |= err
        err = erring & ~decided
        value = ~decided if is_and else decided
        return value & ~err, err

    def _compare(self, expr: ir.Compare) -> tuple[BoolArray, BoolArray]:
        left, lerr = self.eval(expr.left)
        right, rerr = self.eval(expr.right)
        op = expr.op
        if not isinstance(left, Column) and isinstance(right, Column):
            left, right, op = right, left, _FLIP[op]
        err = lerr | rerr
        if err.all():
            return np.zeros(self.n, dtype=bool), err
        if isinstance(left, Column) and isinstance(right, Column):
            value = _column_column(op, left, right)
        elif isinstance(left, Column):
            value = _column_const(op, left, right)
        else:
            raise Unsupported("a comparison of constants")
        return value & ~err, err


def _numeric(column: Column) -> bool:
    return column.kind in ("int", "float", "exact")


def _column_const(op: str, column: Column, const: Any) -> BoolArray:
    values = column.values
    if (
        _numeric(column)
        and isinstance(const, int | Decimal)
        and not isinstance(const, bool)
    ):
        if column.kind == "int":
            return _int_const(op, values, const)
        if column.kind == "exact":
            return np.asarray(_op(op)(values, const), dtype=bool)
        return _float_const(op, values, const)
    if column.kind == "label" and isinstance(const, ir.Label):
        if const.order != column.order:
            raise Unsupported("labels of another order")
        if op in _ORDER:
            return _ORDER[op](values, const.rank)  # type: ignore[no-any-return]
        equal = values == const.rank
        return equal if op == "==" else ~equal  # type: ignore[no-any-return]
    if column.kind == "str" and isinstance(const, str) and op in ("==", "!="):
        equal = values == const
        return equal if op == "==" else ~equal  # type: ignore[no-any-return]
    if column.kind == "bool" and isinstance(const, bool) and op in ("==", "!="):
        equal = values == const
        return equal if op == "==" else ~equal  # type: ignore[no-any-return]
    raise Unsupported(f"`{op}` between a {column.kind} column and a constant")


_INT64 = (-(2**63), 2**63 - 1)


def _int_const(op: str, values: Any, const: int | Decimal) -> BoolArray:
    """Integers against a constant, exactly: a non-integral bound becomes its
    floor, a bound outside int64 decides every row."""
    n = len(values)
    integral = isinstance(const, int) or const == const.to_integral_value()
    if op in ("==", "!="):
        if not integral or not _INT64[0] <= int(const) <= _INT64[1]:
            return np.full(n, op == "!=")
        equal = values == int(const)
        return equal if op == "==" else ~equal  # type: ignore[no-any-return]
    bound = int(const) if integral else math.floor(const)
    if not integral:  # x < 2.5 is x <= 2, x >= 2.5 is x > 2
        op = {"<": "<=", "<=": "<=", ">": ">", ">=": ">"}[op]
    if bound < _INT64[0]:
        return np.full(n, op in (">", ">="))
    if bound > _INT64[1]:
        return np.full(n, op in ("<", "<="))
    return _ORDER[op](values, bound)  # type: ignore[no-any-return]


def _float_const(op: str, values: Any, const: int | Decimal) -> BoolArray:
    """Rounding is monotone, so only a float equal to the rounded constant can
    compare differently from its exact decimal; those rows are redone."""
    rounded = float(const)
    fn: Callable[[Any, Any], Any] = (
        _ORDER[op] if op in _ORDER else (operator.eq if op == "==" else operator.ne)
    )
    out = np.asarray(fn(values, rounded), dtype=bool)
    for i in np.flatnonzero(values == rounded):
        out[i] = fn(Decimal(repr(float(values[i]))), const)
    return out


def _op(op: str) -> Callable[[Any, Any], Any]:
    if op in _ORDER:
        return _ORDER[op]
    return operator.eq if op == "==" else operator.ne


def _column_column(op: str, left: Column, right: Column) -> BoolArray:
    if {left.kind, right.kind} <= {"int", "exact"} and "exact" in (
        left.kind,
        right.kind,
    ):
        pairs = (left.values.astype(object), right.values.astype(object))
        return np.asarray(_op(op)(*pairs), dtype=bool)
    if left.kind == "int" and right.kind == "int":
        fn = _ORDER.get(op) or (operator.eq if op == "==" else operator.ne)
        return np.asarray(fn(left.values, right.values), dtype=bool)
    if left.kind == right.kind and left.kind in ("str", "bool") and op in ("==", "!="):
        equal = left.values == right.values
        return equal if op == "==" else ~equal  # type: ignore[no-any-return]
    if left.kind == right.kind == "label" and left.order == right.order:
        fn = _ORDER.get(op) or (operator.eq if op == "==" else operator.ne)
        return np.asarray(fn(left.values, right.values), dtype=bool)
    raise Unsupported("a comparison of two columns of these kinds")


# ---- one bucket over a group --------------------------------------------------


@attrs.frozen
class GroupVerdict:
    effects: npt.NDArray[np.int8]
    members: BoolArray  # rules × rows: the rule is listed in the decision
    rules: tuple[ir.Rule, ...]


def _bucket_verdict(bucket: Bucket, frame: Frame) -> GroupVerdict:
    """`decision.combine` over the rows, as effect codes and listed rules."""
    n = frame.n
    rules = bucket.rules
    if not rules:
        return GroupVerdict(
            np.full(n, DENY, dtype=np.int8), np.zeros((0, n), dtype=bool), ()
        )
    for rule in rules:
        if any(
            not isinstance(a, ir.Const) for use in rule.obligations for a in use.args
        ):
            raise Unsupported("obligations computed from the request")
    matches = np.zeros((len(rules), n), dtype=bool)
    errors = np.zeros((len(rules), n), dtype=bool)
    for i, rule in enumerate(rules):
        if rule.condition is None:
            matches[i] = True
            continue
        value, err = frame._truth(rule.condition)
        matches[i], errors[i] = value & ~err, err
    rank = np.array([ir.EFFECT_ORDER[r.effect] for r in rules], dtype=np.int8)
    strict = (rank > 0)[:, None]
    blocking: BoolArray = np.asarray((errors & strict).any(axis=0), dtype=bool)
    best: npt.NDArray[np.int8] = np.where(matches, rank[:, None], -1).max(axis=0)
    effects = np.where(blocking | (best < 0), DENY, best).astype(np.int8)
    members: BoolArray = np.where(
        blocking[None, :],
        (errors & strict) | (matches & (rank == DENY)[:, None]),
        matches & (rank[:, None] == best[None, :]),
    )
    return GroupVerdict(effects, members, rules)


def _ids(verdict: GroupVerdict, row: int) -> set[str]:
    return {verdict.rules[i].id for i in np.flatnonzero(verdict.members[:, row])}


# ---- the whole batch -------------------------------------------------------------


def decide_columns(
    engine: Deciding, columns: Mapping[str, Any], min_group: int = MIN_GROUP
) -> ColumnResult:
    policy, evaluator = engine.snapshot()
    arrays = {name: _as_array(data) for name, data in columns.items()}
    n = len(arrays["action"])
    effects = np.full(n, DENY, dtype=np.int8)
    rules = np.empty(n, dtype=object)
    fallback = _fallback_rows(policy.schema, arrays, n)
    groups: dict[tuple[str, str, str, str | None], list[int]] = {}
    compiled = evaluator if isinstance(evaluator, CompiledPolicy) else None
    if compiled is not None:
        owner_type = arrays.get("owner.type")
        keys = zip(
            arrays["action"].tolist(),
            arrays["principal.type"].tolist(),
            arrays["resource.type"].tolist(),
            strict=True,
        )
        for row, (action, ptype, rtype) in enumerate(keys):
            if fallback[row]:
                continue
            root = _root_type(policy.schema, ptype, owner_type, row)
            if root == "":
                fallback[row] = True
                continue
            groups.setdefault((action, ptype, rtype, root), []).append(row)
    else:
        fallback[:] = True
    for key, rows in groups.items():
        assert compiled is not None
        index = np.array(rows, dtype=np.int64)
        if len(rows) < min_group:  # numpy's fixed cost exceeds a row's
            fallback[index] = True
            continue
        try:
            _decide_group(compiled, policy.schema, arrays, key, index, effects, rules)
        except Unsupported as exc:
            log.debug("rows of %s go one by one: %s", key[:3], exc)
            fallback[index] = True
    slow = np.flatnonzero(fallback)
    for position in slow.tolist():
        row = int(position)
        decision = engine.decide(request_of_row(arrays, row))
        effects[row] = ir.EFFECT_ORDER[decision.effect]
        rules[row] = decision.rule_ids
    return ColumnResult(effects, rules, n - len(slow), len(slow))


def _root_type(schema: ir.Schema, ptype: str, owner_type: Any, row: int) -> str | None:
    """None: no root to compare with; a type: the owner, a human; "": the row
    needs the full owner walk (one by one)."""
    kind = schema.entities[ptype].kind
    if kind in (None, "human"):
        return None
    if kind == "agent":
        return "agent"  # denied before any rule: acts only under a chain
    owner = None if owner_type is None else owner_type[row]
    if owner is None:
        return "orphan"  # root_not_found
    definition = schema.entities.get(owner)
    if definition is None or definition.kind != "human":
        return ""
    if owner not in schema.entities[ptype].owners:
        return ""  # not a declared owner: `decide` says why
    return str(owner)


def _fallback_rows(schema: ir.Schema, arrays: Mapping[str, Any], n: int) -> BoolArray:
    """Rows that only `decide` can take: a chain, extra entities, a bad request,
    a resource that is also the principal or the owner."""
    slow = np.zeros(n, dtype=bool)
    for name in ("delegation", "entities"):
        if name in arrays:
            slow |= np.fromiter((bool(v) for v in arrays[name]), bool, n)
    for name in ("principal.type", "resource.type", "owner.type"):
        if name in arrays:
            optional = name == "owner.type"
            slow |= _each(arrays[name], _type_test(schema, optional))
    if ("owner.type" in arrays) != ("owner.id" in arrays):
        slow[:] = True
    elif "owner.type" in arrays:
        slow |= _each(arrays["owner.type"], lambda v: v is None) != _each(
            arrays["owner.id"], lambda v: v is None
        )
    if "principal.type" in arrays:
        slow |= _each(
            arrays["principal.type"],
            lambda v: v in schema.entities and schema.entities[v].kind is None,
        )
    if "now" in arrays:
        slow |= _each(arrays["now"], lambda v: not _is_time(v))
    slow |= _each(arrays["action"], lambda a: a not in schema.actions)
    for name in ("principal.id", "resource.id", "owner.id"):
        if name in arrays:
            optional = name == "owner.id"
            slow |= _each(arrays[name], _id_test(optional))
    same = (arrays["resource.type"] == arrays["principal.type"]) & (
        arrays["resource.id"] == arrays["principal.id"]
    )
    if "owner.type" in arrays and "owner.id" in arrays:
        same |= (arrays["resource.type"] == arrays["owner.type"]) & (
            arrays["resource.id"] == arrays["owner.id"]
        )
    out: BoolArray = slow | np.asarray(same, dtype=bool)
    return out


def _type_test(schema: ir.Schema, optional: bool) -> Callable[[Any], bool]:
    def bad(value: Any) -> bool:
        return value not in schema.entities if value is not None else not optional

    return bad


def _id_test(optional: bool) -> Callable[[Any], bool]:
    def bad(value: Any) -> bool:
        if value is None:
            return not optional
        return not isinstance(value, str) or len(value) > MAX_ID_LENGTH

    return bad


def _each(data: Any, test: Callable[[Any], bool]) -> BoolArray:
    """`test` of every value, computed once per distinct value."""
    seen: dict[Any, bool] = {}

    def memo(value: Any) -> bool:
        try:
            found = seen.get(value)
        except TypeError:  # unhashable: never the plain values tested here
            return test(value)
        if found is None:
            found = seen[value] = test(value)
        return found

    return np.fromiter(map(memo, data.tolist()), bool, len(data))


def _is_time(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _decide_group(
    compiled: CompiledPolicy,
    schema: ir.Schema,
    arrays: Mapping[str, Any],
    key: tuple[str, str, str, str | None],
    index: Any,
    effects: Any,
    rules: Any,
) -> None:
    action, ptype, rtype, root = key
    n = len(index)
    if root == "agent":
        effects[index] = DENY
        for row in index:
            rules[row] = ()
        return
    own = _bucket_verdict(
        compiled.bucket((action, ptype, rtype)),
        Frame(
            n,
            action,
            ptype,
            rtype,
            _reader(schema, arrays, index, "principal", ptype, rtype),
        ),
    )
    if root == "orphan":
        # root_not_found denies, but a principal's own deny comes first and
        # keeps its rules (as `decide_parsed` does).
        effects[index] = DENY
        for j, row in enumerate(index):
            own_deny = own.effects[j] == DENY
            rules[row] = tuple(sorted(_ids(own, j))) if own_deny else ()
        return
    if root is None:
        effects[index] = own.effects
        patterns, first, inverse = _patterns(own.members)
        ids = [tuple(sorted(_ids(own, int(j)))) for j in first]
        _assign(rules, index, ids, inverse)
        return
    as_root = _bucket_verdict(
        compiled.bucket((action, root, rtype)),
        Frame(
            n, action, root, rtype, _reader(schema, arrays, index, "owner", root, rtype)
        ),
    )
    restrict = ir.EFFECT_ORDER["restrict"]
    final = np.maximum(own.effects, as_root.effects)
    effects[index] = final
    stacked = np.vstack(
        [
            own.members,
            as_root.members,
            own.effects[None, :] > as_root.effects[None, :],
            own.effects[None, :] < as_root.effects[None, :],
            own.effects[None, :] == restrict,
        ]
    )
    _, first, inverse = _patterns(stacked)
    listed = []
    for position in first:
        j = int(position)
        if own.effects[j] > as_root.effects[j]:
            found = _ids(own, j)
        elif as_root.effects[j] > own.effects[j]:
            found = _ids(as_root, j)
        elif own.effects[j] == restrict:
            found = _ids(own, j) | _ids(as_root, j)
        else:
            found = _ids(own, j)
        listed.append(tuple(sorted(found)))
    _assign(rules, index, listed, inverse)


def _patterns(members: BoolArray) -> tuple[Any, Any, Any]:
    """Rows with the same listed rules share one tuple of ids: the distinct
    columns of `members`, a row of each, and each row's pattern."""
    if members.shape[0] == 0:
        n = members.shape[1]
        return (
            members[:, :1],
            np.zeros(min(n, 1), dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )
    packed = np.packbits(members, axis=0)
    _, first, inverse = np.unique(
        packed.T, axis=0, return_index=True, return_inverse=True
    )
    return packed, first, inverse.reshape(-1)


def _assign(
    rules: Any, index: Any, listed: Sequence[tuple[str, ...]], inverse: Any
) -> None:
    table = np.empty(len(listed), dtype=object)
    table[:] = listed
    rules[index] = table[inverse]


def _reader(
    schema: ir.Schema,
    arrays: Mapping[str, Any],
    index: Any,
    principal_prefix: str,
    ptype: str,
    rtype: str,
) -> Callable[[str, str], Column]:
    """Columns of the group's rows by (root, attribute), typed by the schema."""
    cache: dict[tuple[str, str], Column] = {}
    n = len(index)

    def read(root: str, name: str) -> Column:
        found = cache.get((root, name))
        if found is not None:
            return found
        if root == "context":
            spec, column_name = schema.context.get(name), f"context.{name}"
        else:
            typ = ptype if root == "principal" else rtype
            prefix = principal_prefix if root == "principal" else "resource"
            spec = schema.entities[typ].attrs.get(name)
            column_name = f"{prefix}.attrs.{name}"
        if spec is None:
            raise Unsupported(f"`{root}.{name}` is not declared here")
        data = arrays.get(column_name)
        if data is None:
            missing = np.ones(n, dtype=bool)
            column = Column("none", None, missing, np.zeros(n, dtype=bool))
        else:
            column = _typed_column(data[index], spec.type, schema)
        cache[(root, name)] = column
        return column

    return read


# ---- rows and columns ------------------------------------------------------------


def request_of_row(arrays: Mapping[str, Any], row: int) -> dict[str, Any]:
    """One row as a request of the contract (for the one-by-one path)."""

    def value(name: str) -> Any:
        data = arrays[name]
        if (
            isinstance(data, np.ma.MaskedArray)
            and data.mask is not np.ma.nomask
            and (np.ma.getmaskarray(data)[row])
        ):
            return None
        item = data[row]
        if isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, float) and math.isnan(item):
            return None
        return item

    def entity(prefix: str) -> dict[str, Any]:
        attrs_ = {}
        start = f"{prefix}.attrs."
        for name in arrays:
            if name.startswith(start):
                attrs_[name[len(start) :]] = value(name)
        return {
            "type": value(f"{prefix}.type"),
            "id": value(f"{prefix}.id"),
            "attrs": attrs_,
        }

    principal = entity("principal")
    entities: list[Any] = []
    if "owner.type" in arrays and value("owner.type") is not None:
        owner = entity("owner")
        principal["owner"] = {"type": owner["type"], "id": owner["id"]}
        # The owner is listed in `entities` when the log says so, or, with no
        # `owner.present` column, whenever it gives the owner's attributes.
        if "owner.present" in arrays:
            present = bool(value("owner.present"))
        else:
            present = any(name.startswith("owner.attrs.") for name in arrays)
        if present:
            entities.append(owner)
    if "entities" in arrays and value("entities"):
        entities.extend(value("entities"))
    request: dict[str, Any] = {
        "principal": principal,
        "action": value("action"),
        "resource": entity("resource"),
        "context": {
            name[len("context.") :]: value(name)
            for name in arrays
            if name.startswith("context.")
        },
        "entities": entities,
    }
    for name in ("delegation", "now"):
        if name in arrays and value(name) is not None:
            request[name] = value(name)
    return request


def requests_to_columns(requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Requests of the contract as columns, e.g. to replay a decision log. The
    principal's `owner`, when it is among `entities`, becomes the `owner.*`
    columns; other entities and chains stay as object columns."""
    n = len(requests)
    columns: dict[str, list[Any]] = {}

    def put(name: str, row: int, item: Any) -> None:
        columns.setdefault(name, [None] * n)[row] = item

    for row, request in enumerate(requests):
        principal, resource = request["principal"], request["resource"]
        put("action", row, request["action"])
        for prefix, entity in (("principal", principal), ("resource", resource)):
            put(f"{prefix}.type", row, entity.get("type"))
            put(f"{prefix}.id", row, entity.get("id"))
            for name, item in (entity.get("attrs") or {}).items():
                put(f"{prefix}.attrs.{name}", row, item)
        for name, item in (request.get("context") or {}).items():
            put(f"context.{name}", row, item)
        others = list(request.get("entities") or [])
        owner = principal.get("owner")
        if owner is not None:
            put("owner.type", row, owner.get("type"))
            put("owner.id", row, owner.get("id"))
            for i, other in enumerate(others):
                if (other.get("type"), other.get("id")) == (
                    owner.get("type"),
                    owner.get("id"),
                ) and set(other) <= {"type", "id", "attrs"}:
                    for name, item in (other.get("attrs") or {}).items():
                        put(f"owner.attrs.{name}", row, item)
                    put("owner.present", row, True)
                    del others[i]
                    break
        put("entities", row, others or None)
        put("delegation", row, request.get("delegation") or None)
        put("now", row, request.get("now"))
    return {name: _column_array(values) for name, values in columns.items()}


def _column_array(values: Iterable[Any]) -> Any:
    """A typed array where every value has one plain type, else objects."""
    items = list(values)
    kinds = {type(v) for v in items}
    if kinds == {bool}:
        return np.array(items, dtype=bool)
    if kinds == {int} and all(_INT64[0] <= v <= _INT64[1] for v in items):
        return np.array(items, dtype=np.int64)
    if kinds == {float}:
        return np.array(items, dtype=np.float64)
    if kinds == {str}:
        return np.array(items, dtype=str)
    return np.array(items + [None], dtype=object)[:-1]
