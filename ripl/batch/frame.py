"""Tests with no cell form (`or`, `not`, `has`, delegation facts, two
attributes compared), evaluated three-valued over the rows of one
principal type and resource type. An expression with no vector form raises
`Unsupported`, and the rows of its bucket go one by one."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

import attrs
import numpy as np

from ripl import ir
from ripl.batch.cells import _FLIP
from ripl.batch.columns import BoolArray, IntArray, Unsupported, Vec, _nonzero
from ripl.batch.plan import Plan


@attrs.frozen
class Column:
    """One attribute over a frame's rows, converted by its declared type."""

    kind: str  # "int", "float", "bool", "str", "label"
    values: Any
    missing: BoolArray  # absent or null: reading it is error
    invalid: BoolArray  # present but not of the declared type: error too
    order: str | None = None  # the label order, for labels


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


class Facts(Protocol):
    """The delegation facts of a frame's rows (`chains.FrameFacts`)."""

    def grants(self, scope: str) -> BoolArray: ...

    def via(self, types: frozenset[str]) -> BoolArray: ...

    def fact(self, expr: ir.DelegationFact) -> Column: ...


class Frame:
    """Rows of one principal type and resource type, as one evaluation sees
    them: `principal` is the request's principal or, for the no-escalation
    cap, the root; `read` gives an attribute's column and `facts` the chain's."""

    def __init__(
        self,
        n: int,
        actions: IntArray,
        plan: Plan,
        principal_type: str,
        resource_type: str,
        read: Callable[[str, str], Column],
        facts: Facts,
    ) -> None:
        self.n = n
        self.actions = actions
        self.plan = plan
        self.principal_type = principal_type
        self.resource_type = resource_type
        self.read = read
        self.facts = facts
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
                else self.resource_type
            )
            return typ in expr.types, self.none
        if isinstance(expr, ir.ActionIn):
            return self.plan.action_test(expr.actions)[self.actions], self.none
        if isinstance(expr, ir.Grants):
            return self.facts.grants(expr.scope), self.none
        if isinstance(expr, ir.Via):
            return self.facts.via(expr.types), self.none
        if isinstance(expr, ir.DelegationFact):
            column = self.facts.fact(expr)
            return column, column.missing | column.invalid
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

    def truth(self, expr: ir.Expr) -> tuple[BoolArray, BoolArray]:
        return self._truth(expr)

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


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


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
    for i in _nonzero(values == rounded):
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
