"""Operations on runtime values, shared by the checker (constant folding),
the reference interpreter and the compiled evaluator, so all three compute
the same thing. Numbers are exact: integers are unbounded and decimals are
decimal; a result that cannot be represented exactly is an error, never a
rounded value.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal

from ripl.ast import Duration
from ripl.ir import EntityRef, Label, Value

_EXACT = decimal.Context(
    prec=1000, traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation]
)


class OpError(Exception):
    """A type error or an inexact result at run time; the caller makes it an
    error value, which fails closed."""


def is_number(v: object) -> bool:
    return isinstance(v, int | Decimal) and not isinstance(v, bool)


def _kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if is_number(v):
        return "number"
    if isinstance(v, Label):
        return "label:" + v.order
    if isinstance(v, frozenset):
        return "set"
    if isinstance(v, Mapping):
        return "record"
    if isinstance(v, str):  # a subclass (`StrEnum`) is a string all the same
        return "str"
    return type(v).__name__


def equal(a: Value, b: Value) -> bool:
    if _kind(a) != _kind(b):
        raise OpError(f"cannot compare {describe(a)} with {describe(b)}")
    return a == b


def order(op: str, a: Value, b: Value) -> bool:
    if is_number(a) and is_number(b):
        pass
    elif isinstance(a, Duration) and isinstance(b, Duration):
        a, b = a.seconds, b.seconds
    elif isinstance(a, Label) and isinstance(b, Label) and a.order == b.order:
        a, b = a.rank, b.rank
    else:
        raise OpError(f"cannot order {describe(a)} and {describe(b)}")
    assert isinstance(a, int | Decimal) and isinstance(b, int | Decimal)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def compare(op: str, a: Value, b: Value) -> bool:
    if op == "==":
        return equal(a, b)
    if op == "!=":
        return not equal(a, b)
    return order(op, a, b)


def arith(op: str, a: Value, b: Value) -> Value:
    if isinstance(a, Duration) and isinstance(b, Duration) and op in "+-":
        return Duration(a.seconds + b.seconds if op == "+" else a.seconds - b.seconds)
    if isinstance(a, Duration) and isinstance(b, int) and not isinstance(b, bool):
        if op == "*":
            return Duration(a.seconds * b)
    if not (is_number(a) and is_number(b)):
        raise OpError(f"cannot compute {describe(a)} {op} {describe(b)}")
    assert isinstance(a, int | Decimal) and isinstance(b, int | Decimal)
    if isinstance(a, int) and isinstance(b, int):
        return a + b if op == "+" else a - b if op == "-" else a * b
    try:
        x, y = Decimal(a), Decimal(b)
        if op == "+":
            return _EXACT.add(x, y)
        if op == "-":
            return _EXACT.subtract(x, y)
        return _EXACT.multiply(x, y)
    except decimal.DecimalException:
        raise OpError("decimal result is too long to be exact") from None


def negate(a: Value) -> Value:
    if is_number(a):
        assert isinstance(a, int | Decimal)
        return -a
    if isinstance(a, Duration):
        return Duration(-a.seconds)
    raise OpError(f"cannot negate {describe(a)}")


def contains(container: Value, element: Value) -> bool:
    if not isinstance(container, frozenset):
        raise OpError(f"`in` needs a set, got {describe(container)}")
    kinds = {_kind(x) for x in container}
    if kinds and _kind(element) not in kinds:
        raise OpError(f"cannot look for {describe(element)} in a set of other values")
    return element in container


def describe(v: object) -> str:
    if isinstance(v, bool):
        return "a bool"
    if is_number(v):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, Duration):
        return "a duration"
    if isinstance(v, Label):
        return f"a `{v.order}` label"
    if isinstance(v, EntityRef):
        return "an entity"
    if isinstance(v, frozenset):
        return "a set"
    if isinstance(v, Mapping):
        return "a record"
    return "a value"
