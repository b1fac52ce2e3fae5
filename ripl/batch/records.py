"""Requests of the contract and columns, both ways: `requests_to_columns`
writes a decision log's layout (typed, masked, `Ragged` lists),
`request_of_row` reads one row back as a request for the one-by-one path.
`entities` and `delegation` lists are flattened here; a list of any other
shape is kept whole and marked, so its rows go one by one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from ripl import ir
from ripl.batch.columns import (
    _EPOCH,
    _MICRO,
    BoolArray,
    Coded,
    Ragged,
    _objects,
    _strings,
    _unmask,
    _value_at,
)
from ripl.request import BadRequest, parse_time

_ENTITY_KEYS = frozenset({"type", "id", "attrs", "owner"})
_LINK_KEYS = frozenset(
    {"id", "from", "to", "scopes", "expires", "not_before", "purpose", "limits"}
)
_REF_KEYS = frozenset({"type", "id"})


def _flat_entity(entity: Any) -> dict[str, Any] | None:
    """An entity's fields by dotted path, or None for any other shape."""
    if type(entity) is not dict or not entity.keys() <= _ENTITY_KEYS:
        return None
    out = {"type": entity.get("type"), "id": entity.get("id")}
    owner = entity.get("owner")
    if owner is not None:
        if type(owner) is not dict or not owner.keys() <= _REF_KEYS:
            return None
        out["owner.type"], out["owner.id"] = owner.get("type"), owner.get("id")
    found = entity.get("attrs")
    if found is not None:
        if type(found) is not dict:
            return None
        for name, value in found.items():
            if type(name) is not str or "." in name or not name:
                return None
            out[f"attrs.{name}"] = value
    return out


def _flat_link(link: Any) -> dict[str, Any] | None:
    if type(link) is not dict or not link.keys() <= _LINK_KEYS:
        return None
    out = {key: link.get(key) for key in ("id", "expires", "not_before", "purpose")}
    out["limits"] = link.get("limits")
    for end in ("from", "to"):
        ref = link.get(end)
        if type(ref) is not dict or not ref.keys() <= _REF_KEYS:
            return None
        out[f"{end}.type"], out[f"{end}.id"] = ref.get("type"), ref.get("id")
    scopes = link.get("scopes")
    if type(scopes) is not list:
        return None
    out["scopes"] = scopes
    return out


def _flatten(
    lists: Sequence[Any],
    flat: Callable[[Any], dict[str, Any] | None],
    declared: Callable[[str], bool] = lambda name: False,
) -> tuple[Ragged, BoolArray]:
    """Rows of lists of mappings as a `Ragged`, and the rows of another shape
    (those hold no records here; `request_of_row` reads them from `lists`)."""
    n = len(lists)
    bad = np.zeros(n, dtype=bool)
    present = np.zeros(n, dtype=bool)
    counts = np.zeros(n, dtype=np.int64)
    records: list[dict[str, Any]] = []
    for row, items in enumerate(lists):
        if items is None:
            continue
        if type(items) not in (list, tuple):
            bad[row] = True
            continue
        flats = [flat(item) for item in items]
        if any(f is None for f in flats):
            bad[row] = True
            continue
        present[row] = True
        counts[row] = len(flats)
        records.extend(f for f in flats if f is not None)
    names = sorted({name for record in records for name in record})
    fields: dict[str, Any] = {}
    for name in names:
        values = [record.get(name) for record in records]
        if all(v is None for v in values):
            continue  # a field no record gives reads as missing everywhere
        if name == "scopes":
            fields[name] = _scalar_lists(values)
        elif name == "limits":
            fields[name] = _objects(values)
        elif name in ("expires", "not_before"):
            fields[name] = _time_column(values)
        else:
            fields[name] = _column_array(values, declared(name))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Ragged(offsets, fields, present), bad


def _items(data: Any) -> list[Any]:
    """An object column's values, None where masked."""
    data, mask = _unmask(data)
    items: list[Any] = data.tolist()
    if mask is not None:
        items = [None if m else v for v, m in zip(items, mask.tolist(), strict=True)]
    return items


def _scalar_lists(values: Sequence[Any]) -> Ragged:
    counts = [len(v) if type(v) is list else 0 for v in values]
    items = [item for v in values if type(v) is list for item in v]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    present = [type(v) is list for v in values]
    return Ragged(offsets, {"": _column_array(items, False)}, present)


def request_of_row(arrays: Mapping[str, Any], row: int) -> dict[str, Any]:
    """One row as a request of the contract (for the one-by-one path)."""

    def value(name: str) -> Any:
        return _value_at(arrays[name], row)

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
        owner_id = value("owner.id") if "owner.id" in arrays else None
        principal["owner"] = {"type": value("owner.type"), "id": owner_id}
        # The owner is listed in `entities` when the log says so, or, with no
        # `owner.present` column, whenever it gives the owner's attributes.
        if "owner.present" in arrays:
            present = bool(value("owner.present"))
        else:
            present = any(name.startswith("owner.attrs.") for name in arrays)
        if present:
            owner = entity("owner")
            owner["id"] = owner_id
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


def requests_to_columns(
    requests: Sequence[Mapping[str, Any]], schema: ir.Schema | None = None
) -> dict[str, Any]:
    """Requests of the contract as columns, as a decision log keeps them:
    typed (masked where a value is missing), with `entities` and `delegation`
    as `Ragged` columns where every row's list has the contract's shape.
    With the policy set's `schema`, an attribute declared `decimal` becomes a
    float column when every value reads back exactly (a float reads as
    `Decimal(repr(x))`)."""
    n = len(requests)
    columns: dict[str, list[Any]] = {}

    def put(name: str, row: int, item: Any) -> None:
        columns.setdefault(name, [None] * n)[row] = item

    entity_lists: list[Any] = []
    chain_lists: list[Any] = []
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
        owner = principal.get("owner")
        if owner is not None:
            put("owner.type", row, owner.get("type"))
            put("owner.id", row, owner.get("id"))
        entity_lists.append(request.get("entities") or None)
        chain_lists.append(request.get("delegation") or None)
        put("now", row, request.get("now"))
    decimal = _decimal_names(schema)
    out: dict[str, Any] = {
        name: _column_array(values, name in decimal) for name, values in columns.items()
    }
    if "now" in columns:
        out["now"] = _time_column(columns["now"])
    for name, lists, flat in (
        ("entities", entity_lists, _flat_entity),
        ("delegation", chain_lists, _flat_link),
    ):
        ragged, bad = _flatten(
            lists,
            flat,
            lambda field: "entity." + field.removeprefix("attrs.") in decimal,
        )
        out[name] = _objects(lists) if bad.any() else ragged
    return out


def _decimal_names(schema: ir.Schema | None) -> set[str]:
    """Column names whose every declared type is `decimal`."""
    if schema is None:
        return set()
    seen: dict[str, set[ir.Type]] = {}
    for name, spec in schema.context.fields:
        seen.setdefault(f"context.{name}", set()).add(spec.type)
    for definition in schema.entities.values():
        for name, spec in definition.attrs.fields:
            roots = ["resource", "entity"]
            if definition.kind is not None:
                roots.append("principal")
            for root in roots:
                key = f"{root}.attrs.{name}" if root != "entity" else f"entity.{name}"
                seen.setdefault(key, set()).add(spec.type)
    return {name for name, types in seen.items() if types == {ir.DECIMAL}}


_INT64 = (-(2**63), 2**63 - 1)


def _column_array(values: Iterable[Any], decimal: bool = False) -> Any:
    """A typed array where every value has one plain type (masked where
    None), else objects."""
    items = list(values)
    present = [v for v in items if v is not None]
    kinds = {type(v) for v in present}
    mask = np.array([v is None for v in items], dtype=bool)
    if not present:
        return _objects(items)
    if (
        kinds == {float}
        or decimal
        and kinds <= {Decimal, int, float}
        and all(_reads_back(v) for v in present)
    ):
        return np.array([math.nan if v is None else float(v) for v in items])
    if (
        kinds == {str}
        and len(present) >= 16
        and not any(v.endswith("\0") for v in present)
    ):
        unique: dict[str, int] = {}
        codes = [-1 if v is None else unique.setdefault(v, len(unique)) for v in items]
        if len(unique) <= len(items) // 2:  # repeated values: dictionary-encoded
            return Coded(np.array(codes, dtype=np.int32), _strings(list(unique)))
    fill: Any = None
    dtype: Any = None
    if kinds == {bool}:
        fill, dtype = False, bool
    elif kinds == {int} and all(_INT64[0] <= v <= _INT64[1] for v in present):
        fill, dtype = 0, np.int64
    elif kinds == {str}:
        fill, dtype = "", str
    if dtype is None:
        return _objects(items)
    data = np.array([fill if v is None else v for v in items], dtype=dtype)
    return np.ma.array(data, mask=mask) if mask.any() else data


def _time_column(values: Sequence[Any]) -> Any:
    """Timestamps as `datetime64[us]` (NaT where None), as a log keeps them,
    when every one is UTC text that `parse_time` reads; else as they are."""
    micros = []
    for value in values:
        if value is None:
            micros.append(_NAT)
            continue
        try:
            moment = parse_time(value, ())
        except BadRequest:
            return _column_array(values)
        if moment.utcoffset():  # reasons show the offset as it was written
            return _column_array(values)
        micros.append((moment - _EPOCH) // _MICRO)
    return np.array(micros, dtype=np.int64).view("datetime64[us]")


_NAT = np.iinfo(np.int64).min


def _reads_back(value: Any) -> bool:
    """A decimal attribute's value that a float keeps exactly."""
    if isinstance(value, float):
        return math.isfinite(value)
    try:
        as_float = float(value)
    except OverflowError:
        return False
    return math.isfinite(as_float) and Decimal(repr(as_float)) == value
