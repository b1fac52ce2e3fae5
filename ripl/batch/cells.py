"""Cells: the constants every rule compares an attribute with, sorted, cut
its values into cells, and each value is put in its cell exactly as a
single request reads it (integers as integers, a float as
`Decimal(repr(x))`). A value of another type, or past the numbers a cell
can hold exactly, is put in its cell by Python."""

from __future__ import annotations

import bisect
import functools
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ripl import ir, ops
from ripl.batch.columns import _INT_EDGE, Coded, IntArray, _nonzero, _plain
from ripl.request import Err, convert

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


@attrs.frozen
class CellSpec:
    """An attribute as the rules compare it with constants. With the sorted
    constants c0 < c1 < … < c(m-1), a value below c0 is in cell 0, equal to
    ci in cell 2i+1, between ci and c(i+1) in cell 2i+2; an error value (a
    missing attribute, a wrong type, an unknown label) is in cell -1."""

    root: str  # "principal", "resource" or "context"
    name: str
    type: ir.Type
    kind: str  # "number", "string", "bool" or "label" (by rank)
    constants: tuple[Any, ...]

    def test(self, op: str, constant: Any) -> tuple[int, int, bool] | None:
        """`value op constant` as the cells it holds on: (first, count, negated)."""
        i = bisect.bisect_left(self.constants, constant)
        if i == len(self.constants) or self.constants[i] != constant:
            return None
        m = len(self.constants)
        return {
            "<": (0, 2 * i + 1, False),
            "<=": (0, 2 * i + 2, False),
            ">": (2 * i + 2, 2 * m - 2 * i - 1, False),
            ">=": (2 * i + 1, 2 * m - 2 * i, False),
            "==": (2 * i + 1, 1, False),
            "!=": (2 * i + 1, 1, True),
        }[op]

    @functools.cached_property
    def bounds(self) -> Bounds:
        """The constants as arrays, for putting whole columns in cells."""
        constants = self.constants
        if self.kind == "string":
            strings = np.array(list(constants) + [""], dtype=str)[:-1]
            return Bounds(strings, strings, strings, False, False)
        edge = _INT_EDGE
        floors = [max(-edge, min(edge, _floor(c))) for c in constants]
        floats = [_to_float(c) for c in constants]
        exact = [  # a float equal to this rounded constant is the constant
            math.isfinite(f)
            and Decimal(repr(f)) == c
            and (i == 0 or floats[i - 1] != f)
            and (i + 1 == len(floats) or floats[i + 1] != f)
            for i, (f, c) in enumerate(zip(floats, constants, strict=True))
        ]
        return Bounds(
            np.array(floors + [edge], dtype=np.int64),
            np.array([_floor(c) == c for c in constants] + [False]),
            np.array(floats + [math.inf], dtype=np.float64),
            any(abs(c) >= edge for c in constants),
            not all(exact),
        )

    def exact(self, value: Any) -> int:
        """The cell of one converted value (Python, exact)."""
        if isinstance(value, Err):
            return -1
        if isinstance(value, ir.Label):
            value = value.rank
        elif type(value) is bool:
            value = int(value)
        return bisect.bisect_left(self.constants, value) + bisect.bisect_right(
            self.constants, value
        )


@attrs.frozen
class Bounds:
    """A cell spec's constants as arrays, each with one sentinel past the
    end: floors (numbers, clipped to ±2**62), whether each is an integer,
    and the constants as floats; whether any was clipped, and whether some
    float equal to a rounded constant needs an exact look."""

    floors: Any
    whole: Any
    floats: Any
    clipped: bool
    inexact: bool


def _floor(c: Any) -> int:
    return c if isinstance(c, int) else int(c.to_integral_value(ROUND_FLOOR))


def _ceiling(c: Any) -> int:
    return c if isinstance(c, int) else int(c.to_integral_value(ROUND_CEILING))


def _to_float(c: Any) -> float:
    try:
        return float(c)
    except OverflowError:
        return math.inf if c > 0 else -math.inf


def _cell_kind(typ: ir.Type) -> str | None:
    if isinstance(typ, ir.LabelType):
        return "label"
    if isinstance(typ, ir.Prim):
        return {
            "int": "number",
            "decimal": "number",
            "string": "string",
            "bool": "bool",
        }.get(typ.name)
    return None


def _cell_constant(kind: str, typ: ir.Type, op: str, const: Any) -> Any:
    """The constant as a cell boundary, or None when `op` with it has no cell
    form (the test is then evaluated as a whole)."""
    if kind == "number" and ops.is_number(const):
        return const
    if (
        kind == "label"
        and isinstance(const, ir.Label)
        and isinstance(typ, ir.LabelType)
        and const.order == typ.order
    ):
        return const.rank
    if op not in ("==", "!="):
        return None
    if kind == "string" and type(const) is str:
        return const
    if kind == "bool" and type(const) is bool:
        return int(const)
    return None


def _cells(spec: CellSpec, data: Any, schema: ir.Schema) -> npt.NDArray[np.int32]:
    """The cell of every value of a column, read as `request.convert` reads
    each value for the attribute's declared type."""
    if isinstance(data, Coded):
        cells = np.concatenate([_cells(spec, data.values, schema), [-1]])
        found: npt.NDArray[np.int32] = cells.astype(np.int32)[data.codes]
        return found
    mask = None
    if isinstance(data, np.ma.MaskedArray):  # masked values become -1 below
        mask = np.ma.getmask(data)
        data = data.data if data.dtype.kind != "O" else data.filled(None)
        if mask is np.ma.nomask:
            mask = None
    kind = data.dtype.kind
    if kind == "u" and len(data) and int(data.max()) > np.iinfo(np.int64).max:
        kind, data = "O", data.astype(object)  # past int64: exact Python ints
    fast = {
        "number": "iuf",
        "string": "U",
        "bool": "b",
        "label": "U",
    }[spec.kind]
    out: npt.NDArray[np.int32]
    if kind == "O" or spec.kind == "number" and kind == "U":
        out = _python_cells(spec, data, schema)  # decimal text converts
    elif kind not in fast or kind == "f" and spec.type != ir.DECIMAL:
        out = np.full(len(data), -1, dtype=np.int32)  # none of these convert
    elif kind == "f":
        out = _float_cells(spec, data)
    elif spec.kind == "string":
        out = _string_cells(spec, data)
    elif spec.kind == "label":
        out = _label_cells(spec, data, schema)
    elif spec.kind == "bool":
        false, true = spec.exact(False), spec.exact(True)
        out = np.where(data, np.int32(true), np.int32(false))
    else:
        out = _integer_cells(spec, data.astype(np.int64))
    if mask is not None:
        out[mask] = -1
    return out


def _integer_cells(spec: CellSpec, values: IntArray) -> npt.NDArray[np.int32]:
    """For an integer x, c < x exactly when floor(c) < x, and x == c only
    for an integral c, which sorts first among constants of its floor."""
    bounds = spec.bounds
    below = np.searchsorted(bounds.floors[:-1], values, side="left")
    equal = (bounds.floors[below] == values) & bounds.whole[below]
    out: npt.NDArray[np.int32] = (2 * below + equal).astype(np.int32)
    if bounds.clipped:
        for i in _nonzero(np.abs(values) >= _INT_EDGE).tolist():
            out[i] = spec.exact(int(values[i]))
    return out


def _float_cells(spec: CellSpec, values: npt.NDArray[np.float64]) -> Any:
    """Rounding to float is monotone, so a float only needs an exact look
    when it equals a rounded constant, and not even then when that
    constant reads back from its float alone."""
    floats = spec.bounds.floats
    below = np.searchsorted(floats[:-1], values, side="left")
    tie = floats[below] == values
    out = (2 * below + tie).astype(np.int32)
    out[~np.isfinite(values)] = -1  # NaN is missing, ±inf is no decimal
    if spec.bounds.inexact:
        for i in _nonzero(tie).tolist():
            out[i] = spec.exact(Decimal(repr(float(values[i]))))
    return out


def _string_cells(spec: CellSpec, values: npt.NDArray[np.str_]) -> Any:
    strings = spec.bounds.floors
    m = len(strings)
    if m == 0:
        return np.zeros(len(values), dtype=np.int32)
    position = np.searchsorted(strings, values)
    equal = strings[np.minimum(position, m - 1)] == values
    return (2 * position + equal).astype(np.int32)


def _label_cells(
    spec: CellSpec, values: npt.NDArray[np.str_], schema: ir.Schema
) -> Any:
    assert isinstance(spec.type, ir.LabelType)
    labels = schema.labels[spec.type.order].labels
    rank = np.full(len(values), -1, dtype=np.int64)
    for i, name in enumerate(labels):
        rank[values == name] = i
    out = _integer_cells(spec, rank)
    out[rank < 0] = -1
    return out


def _python_cells(spec: CellSpec, data: Any, schema: ir.Schema) -> Any:
    """Value by value through `convert`, once per distinct value (a value
    and its type: `1`, `1.0` and `True` convert differently)."""
    out = np.empty(len(data), dtype=np.int32)
    seen: dict[tuple[type, Any], int] = {}
    for i, item in enumerate(data.tolist()):
        item = _plain(item)
        if item is None:
            out[i] = -1
            continue
        try:
            key = (type(item), item)
            found = seen.get(key)
        except TypeError:  # unhashable: a list or a mapping
            out[i] = spec.exact(convert(item, spec.type, schema))
            continue
        if found is None:
            found = seen[key] = spec.exact(convert(item, spec.type, schema))
        out[i] = found
    return out
