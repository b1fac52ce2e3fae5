"""The request's shape over the batch (`Rows`: action and type codes, ids,
the principal's owner, `now`) and every row's `entities`, flat. Rows that
are bad requests, or that list their principal or resource among the
entities (attributes merge), are marked to go one by one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ripl.batch.cells import CellSpec, _cells
from ripl.batch.columns import (
    BoolArray,
    Hashes,
    IntArray,
    Ragged,
    Text,
    _append,
    _ids_bad,
    _nonzero,
    _objects,
    _plain,
    _text,
    _times,
    _unmask,
)
from ripl.batch.plan import Plan
from ripl.batch.records import _flat_entity, _flatten, _items


@attrs.define
class Rows:
    """The batch's rows as codes, and which go one by one (`slow`)."""

    n: int
    slow: BoolArray
    action: IntArray
    ptype: IntArray
    rtype: IntArray
    texts: dict[str, Text]  # principal, resource and owner ids; owner type
    owner: IntArray  # the principal's owner's type code
    owner_none: BoolArray
    now: IntArray  # microseconds since the epoch
    now_none: BoolArray  # no `now` and no engine clock to read
    pid: Hashes = attrs.field(init=False)  # ids, once `_hash_ids` has run
    rid: Hashes = attrs.field(init=False)
    owner_id: Hashes = attrs.field(init=False)


def _rows(
    plan: Plan, arrays: Mapping[str, Any], n: int, clock: int | None = None
) -> Rows:
    """The rows' codes; a row with no `now` is at `clock` (microseconds, the
    engine's clock read once for the batch), or, with no clock, one whose
    chain needs a time goes one by one."""
    slow = np.zeros(n, dtype=bool)
    action = _text(arrays["action"])
    acode = plan.action_names.codes(action)
    slow |= action.none | action.bad | (acode < 0)
    codes = []
    for name in ("principal.type", "resource.type"):
        text = _text(arrays[name])
        code = plan.type_names.factor(text)
        slow |= text.none | text.bad | (code >= len(plan.types))
        codes.append(code)
    ptype, rtype = codes
    slow |= plan.kind[np.minimum(ptype, len(plan.types))] == 0  # not an identity
    pid, rid = _text(arrays["principal.id"]), _text(arrays["resource.id"])
    slow |= _ids_bad(pid) | _ids_bad(rid)
    owner = _text(arrays.get("owner.type"), n)
    owner_id = _text(arrays.get("owner.id"), n)
    # `request_of_row` gives an owner where `owner.type` is not None.
    slow |= owner.bad | (~owner.none & (owner_id.none | owner_id.bad))
    if "now" in arrays:
        now, now_none, now_bad = _times(arrays["now"])
        slow |= now_bad
    else:
        now, now_none = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    if clock is not None:
        now = np.where(now_none, clock, now)
        now_none = np.zeros(n, dtype=bool)
    return Rows(
        n,
        slow,
        acode,
        ptype,
        rtype,
        {"pid": pid, "rid": rid, "owner_id": owner_id, "owner_type": owner},
        plan.type_names.factor(owner),
        owner.none,
        now,
        now_none,
    )


class Entities:
    """The `entities` of every row, flat, with one empty entity at the end
    (position -1: "not listed"), and `pad[row, j]` the row's j-th entry."""

    def __init__(self, plan: Plan, arrays: Mapping[str, Any], rows: Rows) -> None:
        n = rows.n
        self.plan = plan
        pieces: list[tuple[IntArray, Mapping[str, Any], int]] = []
        legacy = self._legacy(arrays, rows)
        if len(legacy):
            fields = {
                "type": rows.texts["owner_type"].values[legacy],
                "id": rows.texts["owner_id"].values[legacy],
            }
            for name, data in arrays.items():
                if name.startswith("owner.attrs."):
                    fields["attrs." + name[len("owner.attrs.") :]] = data[legacy]
            pieces.append((legacy, fields, len(legacy)))
        data = arrays.get("entities")
        if data is not None:
            if not isinstance(data, Ragged):
                data, bad = _flatten(_items(data), _flat_entity)
                rows.slow |= bad
            counts = data.counts
            owner = np.repeat(np.arange(n, dtype=np.int64), counts)
            pieces.append((owner, data.fields, len(owner)))
        self._pieces = pieces
        self.row = np.concatenate([p[0] for p in pieces] + [np.zeros(1, np.int64)])
        type_ = self._text("type")
        ident = self._text("id")
        owner_type = self._text("owner.type")
        owner_id = self._text("owner.id")
        self.code = plan.type_names.factor(type_)
        self.texts = {"id": ident, "owner_id": owner_id}
        self.owner = plan.type_names.factor(owner_type)
        self.owner_none = owner_type.none & owner_id.none
        bad = type_.none | type_.bad | (self.code >= len(plan.types)) | _ids_bad(ident)
        bad |= ~self.owner_none & (
            owner_type.none | owner_type.bad | owner_id.none | owner_id.bad
        )
        self.pad = self._layout(n)
        self.bad = bad
        self._attrs: dict[str, Any] = {}
        self.id: Hashes = np.zeros(0, dtype=np.uint64)  # set by `_hash_ids`
        self.owner_id: Hashes = self.id

    @staticmethod
    def _legacy(arrays: Mapping[str, Any], rows: Rows) -> IntArray:
        """Rows whose owner is listed through `owner.attrs.*` / `owner.present`."""
        if "owner.present" in arrays:
            data, mask = _unmask(arrays["owner.present"])
            present = np.array([bool(_plain(v)) for v in data.tolist()], dtype=bool)
            if mask is not None:
                present &= ~mask
        elif any(name.startswith("owner.attrs.") for name in arrays):
            present = np.ones(rows.n, dtype=bool)
        else:
            return np.zeros(0, dtype=np.int64)
        return _nonzero(present & ~rows.owner_none)

    def _text(self, name: str) -> Text:
        """A text field of every entity, the one at position -1 missing."""
        parts = [_text(fields.get(name), size) for _, fields, size in self._pieces]
        if len(parts) == 1 and parts[0].codes is not None:  # stays encoded
            only = parts[0]
            assert only.codes is not None
            return Text(
                None,
                _append(only.none, True),
                _append(only.bad, False),
                _append(only.codes, -1),
                only.unique,
            )
        parts.append(_text(None, 1))
        values = [part.values for part in parts]
        return Text(
            np.concatenate(values) if len(values) > 1 else values[0],
            np.concatenate([part.none for part in parts]),
            np.concatenate([part.bad for part in parts]),
        )

    def cells(self, spec: CellSpec) -> npt.NDArray[np.int32]:
        """The cells of an attribute of every entity (-1 at position -1)."""
        schema = self.plan.schema
        name = "attrs." + spec.name
        parts = [
            _cells(spec, fields[name], schema)
            if name in fields
            else np.full(size, -1, dtype=np.int32)
            for _, fields, size in self._pieces
        ]
        return np.concatenate([*parts, np.full(1, -1, dtype=np.int32)])

    def _field(self, name: str) -> Any:
        parts: list[Any] = []
        for _, fields, size in self._pieces:
            parts.append(fields.get(name, size))
        parts.append(1)  # the entity at position -1 has nothing
        return _concat(parts)

    def _layout(self, n: int) -> IntArray:
        flat = len(self.row) - 1
        order = np.argsort(self.row[:flat], kind="stable")
        counts = np.bincount(self.row[:flat], minlength=n)
        width = int(counts.max()) if flat else 0
        pad = np.full((n, width), -1, dtype=np.int64)
        if flat:
            sorted_rows = self.row[order]
            starts = np.cumsum(counts) - counts
            pad[sorted_rows, np.arange(flat) - starts[sorted_rows]] = order
        return pad

    def check(self, rows: Rows) -> None:
        """A row with a malformed or repeated entity is a bad request; one that
        lists its principal or resource merges attributes: both go one by one."""
        bad = self.bad
        pad = self.pad
        width = pad.shape[1]
        code, ident = self.code, self.id
        for j in range(width):
            at = pad[:, j]
            used = at >= 0
            rows.slow |= used & bad[at]
            for k in range(j + 1, width):
                other = pad[:, k]
                same = _nonzero(used & (other >= 0) & (code[at] == code[other]))
                rows.slow[same[ident[at[same]] == ident[other[same]]]] = True
            for mine, name in ((rows.ptype, rows.pid), (rows.rtype, rows.rid)):
                same = _nonzero(used & (code[at] == mine))
                rows.slow[same[ident[at[same]] == name[same]]] = True

    def find(self, rows: IntArray, code: IntArray, ident: Any) -> IntArray:
        """The position of entity (code, ident) among each row's entities, -1."""
        out = np.full(len(rows), -1, dtype=np.int64)
        for j in range(self.pad.shape[1]):
            at = self.pad[rows, j]
            hit = (at >= 0) & (self.code[at] == code) & (self.id[at] == ident)
            out = np.where(hit & (out < 0), at, out)
        return out

    def attr(self, name: str) -> Any:
        """An attribute of every entity, raw (as given in the request)."""
        found = self._attrs.get(name)
        if found is None:
            found = self._attrs[name] = self._field("attrs." + name)
        return found


def _concat(parts: Sequence[Any]) -> Any:
    """One column from pieces (an int: that many missing values). Pieces of
    one plain kind stay of that kind, masked where missing; else objects."""
    pieces: list[tuple[Any, Any]] = []
    for part in parts:
        if isinstance(part, int):
            pieces.append((None, part))
        else:
            pieces.append(_unmask(part))
    dtypes = [d.dtype for d, _ in pieces if d is not None and len(d)]
    kinds = {dtype.kind for dtype in dtypes}
    if len(kinds) == 1 and kinds <= set("biufU"):
        dtype = np.result_type(*dtypes)
        values, masks = [], []
        for data, mask in pieces:
            if data is None:
                values.append(np.zeros(mask, dtype=dtype))
                masks.append(np.ones(mask, dtype=bool))
            else:
                values.append(data.astype(dtype, copy=False))
                masks.append(np.zeros(len(data), bool) if mask is None else mask)
        merged, masked = np.concatenate(values), np.concatenate(masks)
        return np.ma.array(merged, mask=masked) if masked.any() else merged
    items: list[Any] = []
    for data, mask in pieces:
        if data is None:
            items.extend([None] * mask)
            continue
        found = [_plain(v) for v in data.tolist()]
        if mask is not None:
            found = [
                None if m else v for v, m in zip(found, mask.tolist(), strict=True)
            ]
        items.extend(found)
    return _objects(items)
