"""Batch replay over columnar data: many requests decided in a few numpy passes.

**Input** is a mapping of columns, one entry per request (a row), named after
the request contract: `action`, `principal.type`, `principal.id`,
`principal.attrs.NAME`, `resource.type`, `resource.id`, `resource.attrs.NAME`,
`context.NAME`, the principal's inline owner as `owner.type` and `owner.id`,
and `now` (RFC 3339 text, or `datetime64` read as UTC). A column is a numpy
array (typed, or objects), a masked array, or a `Coded` column (dictionary
encoded: codes into a small array of values, as parquet and arrow keep
repeated strings; a pandas `Categorical` reads the same way). A missing
value is `None` in an object column, NaN in a float column, NaT, a masked
entry, or code -1. `delegation` (the chain) and `entities` are either object
columns holding each row's list of mappings (or None), or `Ragged` columns:
the flat layout of an arrow `list<struct>` column, row i holding records
`offsets[i]:offsets[i + 1]` of one flat array per field, fields named by their
dotted path (`from.type`, `attrs.team`; a link's `scopes` is a `Ragged` of
names under the field name ""). `requests_to_columns` writes this layout, as
a decision log would keep it. The older `owner.attrs.NAME` and `owner.present`
columns still describe the owner's entry in `entities`.

**Output**: `ColumnResult.effects` holds effect codes (`ir.EFFECT_ORDER`:
0 allow … 3 deny). The rules that made the decisions are kept as compressed
rows: row i's rules are `rule_ids[k]` for each k in
`rule_index[rule_offsets[i]:rule_offsets[i + 1]]`, in id order, exactly as
`Decision.rule_ids` lists them. `rules_of(i)` reads one row, `rules` builds a
tuple for every row, and `reason_codes(i)` gives the reason codes `decide`
would give (a failed chain lists each failed check, in `check_chain`'s order).

**How.** What `decide` checks before any rule runs is done over whole
columns: the request's shape, every check of the delegation chain, the
declared scopes of every identity type the row acts through (its
principal's, and its chain's members or, with no chain, its owners' up to
the first human: one `scope_not_declared` each, after the chain's reasons),
and the root whose decision caps the principal's (the chain's first grantor,
or the human found by following owners through `entities`). Ids compare as
64-bit hashes, once the batch is seen to hold no two different ids with one
hash (else every row goes one by one). Each row, and each root of a row, is
an *evaluated row* of the bucket the compiled tree dispatches it to (action,
principal type, resource type). A test of an attribute against a constant
reads the value's *cell*: the constants all rules compare that attribute
with, sorted, cut its values into cells, and each value is put in its cell
once per batch, exactly (integers as integers, a float as
`Decimal(repr(x))`, the way a single request reads it). Any other test
(`or`, `not`, `has`, delegation facts, obligations read from the request) is
evaluated, three-valued, once per batch for each principal and resource type
it meets, and has the cells false, true and error. A bucket of up to 256
rules keeps, per attribute it reads and per cell (or, when that table would
be too big, per interval of its own tests), bit masks of the rules the value
leaves "clear" (not false) and "sound" (not error); an evaluated row ANDs
one mask pair per attribute, and its matches are what is clear and sound.
Bigger buckets are evaluated (row, rule) pair by pair. Matches and errors
combine as `decision.combine` does, and the root's result caps the
principal's as `engine.decide_parsed` does.

**Time.** A row without `now` is decided at `engine.now()`, read once per
batch (when the batch starts), as a single `decide` reads the engine's
clock once per call: with a clock that moves, two rows of one batch share
one instant where two calls of `decide` would not. Rows that go one by one
read the clock in their own `decide`.

Rows the vectorized path cannot take are decided one by one with
`Engine.decide`, so every row agrees with `decide`: bad requests, malformed
links, a chain with limits on a link (or with no `now` when the engine has
no timezone-aware `now()`), a principal or
resource that is also listed in `entities`, a resource that is the principal
or its root, and rows whose bucket holds a test with no vector form
(arithmetic, `principal.owner.…`, `delegation.root.…`, sets, `matches`).
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Protocol, TypeAlias

import attrs
import numpy as np
import numpy.typing as npt

from ripl import ir, ops
from ripl.ast import Duration
from ripl.compile import CompiledPolicy
from ripl.decision import Decision
from ripl.request import BadRequest, Err, Link, convert, intern_ref, parse_time


class Deciding(Protocol):
    """What a columnar batch needs from an engine (`ripl.Engine`). An engine
    may also offer `revoked_ids()` (every revoked link id, or None) and
    `is_revoked(link)`; with neither, rows with a chain are decided one by
    one. Without `now()` (a timezone-aware `datetime`), so are rows with a
    chain and no `now` of their own."""

    def snapshot(self) -> tuple[ir.PolicySet, Any]: ...

    def decide(self, request: Any) -> Decision: ...


log = logging.getLogger(__name__)

EFFECTS = ("allow", "restrict", "step_up", "deny")
DENY = ir.EFFECT_ORDER["deny"]
RESTRICT = ir.EFFECT_ORDER["restrict"]
MAX_ID_LENGTH = 4096
MIN_GROUP = 8
"""Smaller batches are decided row by row: numpy's fixed cost exceeds a row's."""
MAX_DENSE_BUCKETS = 1 << 22
"""Dispatch codes up to this many are looked up in one array, else in a dict."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
IntArray: TypeAlias = npt.NDArray[np.int64]
Vec: TypeAlias = tuple[Any, BoolArray]
"""A value (array, or a scalar for all rows) and where it is error."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICRO
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICRO
_INT_EDGE = 1 << 62
"""Integers this large are put in cells by Python, so clipped thresholds
can never decide them."""


class Unsupported(Exception):
    """An expression or a column with no vector form; its rows go row by row."""


# ---- ragged columns ----------------------------------------------------------


class Ragged:
    """A column whose rows hold lists of records (or of plain values, under
    the field name ""), laid out flat as arrow lays out `list<struct>`.
    `present` is False where a row has no list at all (None)."""

    __slots__ = ("offsets", "fields", "present")

    def __init__(
        self,
        offsets: Any,
        fields: Mapping[str, Any],
        present: Any = None,
    ) -> None:
        self.offsets: IntArray = np.asarray(offsets, dtype=np.int64)
        self.fields: dict[str, Any] = dict(fields)
        self.present: BoolArray | None = (
            None if present is None else np.asarray(present, dtype=bool)
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __repr__(self) -> str:
        return f"Ragged({len(self)} rows, fields {sorted(self.fields)})"

    @property
    def counts(self) -> IntArray:
        return np.diff(self.offsets)

    def __getitem__(self, rows: Any) -> Ragged:
        """The rows selected as a numpy index would select them."""
        index = np.arange(len(self))[rows]
        starts = self.offsets[index]
        counts = self.offsets[index + 1] - starts
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        take = _ranges(starts, counts)
        fields = {name: data[take] for name, data in self.fields.items()}
        present = None if self.present is None else self.present[index]
        return Ragged(offsets, fields, present)

    def row(self, i: int) -> list[Any] | None:
        """Row i as the request contract has it: a list of mappings, or None."""
        if self.present is not None and not self.present[i]:
            return None
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        if "" in self.fields:
            return [_value_at(self.fields[""], k) for k in range(start, end)]
        records = []
        for k in range(start, end):
            record: dict[str, Any] = {}
            for name, data in self.fields.items():
                value = _value_at(data, k)
                if value is None:
                    continue
                *path, last = name.split(".")
                place = record
                for part in path:
                    place = place.setdefault(part, {})
                place[last] = value
            records.append(record)
        return records


def _nonzero(mask: Any) -> IntArray:
    """`np.flatnonzero`, without its Python-level wrapping."""
    found: IntArray = np.asarray(mask).ravel().nonzero()[0]
    return found


def _append(values: Any, last: Any) -> Any:
    """`np.append` of one value, keeping the array's dtype."""
    return np.concatenate((values, np.array([last], dtype=values.dtype)))


def _ranges(starts: Any, counts: Any) -> IntArray:
    """The concatenation of `range(s, s + c)` for each start and count."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    shift = np.asarray(starts, dtype=np.int64) - (ends - counts)
    out: IntArray = np.repeat(shift, counts) + np.arange(total, dtype=np.int64)
    return out


def _value_at(data: Any, k: int) -> Any:
    """One value of a column as a request holds it (None when missing)."""
    if isinstance(data, Ragged):
        return data.row(k)
    if isinstance(data, Coded):
        code = int(data.codes[k])
        return None if code < 0 else _value_at(data.values, code)
    mask = np.ma.getmask(data)
    if mask is not np.ma.nomask and bool(mask[k]):
        return None
    item = data[k]
    if isinstance(item, np.datetime64):
        if np.isnat(item):
            return None
        item = item.astype("datetime64[us]")
        whole = int(item.view(np.int64)) % 1_000_000 == 0
        return str(np.datetime_as_string(item, unit="s" if whole else "us")) + "Z"
    return _plain(item)


def _plain(item: Any) -> Any:
    if isinstance(item, np.generic):
        item = item.item()
    if isinstance(item, float) and math.isnan(item):
        return None
    return item


class Coded:
    """A dictionary-encoded column, as parquet and arrow keep repeated
    values: row i holds `values[codes[i]]`, or nothing where the code is -1.
    A pandas `Categorical` is read the same way."""

    __slots__ = ("codes", "values")

    def __init__(self, codes: Any, values: Any) -> None:
        self.codes: IntArray = np.asarray(codes, dtype=np.int64)
        self.values: Any = (
            values if isinstance(values, np.ndarray) else _objects(values)
        )

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"Coded({len(self)} rows, {len(self.values)} values)"

    def __getitem__(self, rows: Any) -> Coded:
        return Coded(self.codes[rows], self.values)

    def decode(self) -> Any:
        """The plain column (masked where the code is -1)."""
        values, mask = _unmask(self.values)
        codes = self.codes
        missing = codes < 0
        if not len(values):
            return _objects([None] * len(codes))
        at = np.where(missing, 0, codes)
        out = values[at]
        if mask is not None:
            missing = missing | mask[at]
        if not missing.any():
            return out
        if out.dtype.kind == "O":
            out = out.copy()
            out[missing] = None
            return out
        return np.ma.array(out, mask=missing)


# ---- the result --------------------------------------------------------------


class ColumnResult:
    """Effect codes and the rules behind each decision, row by row (the
    layout is described in the module docstring)."""

    def __init__(
        self,
        effects: npt.NDArray[np.int8],
        rule_offsets: IntArray,
        rule_index: npt.NDArray[np.int32],
        rule_ids: tuple[str, ...],
        vectorized: int,
        fallback: int,
        reasons: _Reasons,
    ) -> None:
        self.effects = effects
        self.rule_offsets = rule_offsets
        self.rule_index = rule_index
        self.rule_ids = rule_ids
        self.vectorized = vectorized  # rows decided by the vectorized path
        self.fallback = fallback  # rows decided one by one
        self._reasons = reasons

    def __len__(self) -> int:
        return len(self.effects)

    def effect_names(self) -> npt.NDArray[np.object_]:
        names: npt.NDArray[np.object_] = np.array(EFFECTS, dtype=object)[self.effects]
        return names

    def rules_of(self, row: int) -> tuple[str, ...]:
        start, end = self.rule_offsets[row], self.rule_offsets[row + 1]
        ids = self.rule_ids
        return tuple([ids[k] for k in self.rule_index[start:end].tolist()])

    @functools.cached_property
    def rules(self) -> npt.NDArray[np.object_]:
        """A tuple of rule ids per row."""
        ids = np.array(self.rule_ids + ("",), dtype=object)
        names = ids[self.rule_index].tolist()
        bounds = self.rule_offsets.tolist()
        out = np.empty(len(self), dtype=object)
        out[:] = [tuple(names[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        return out

    def reason_codes(self, row: int) -> tuple[str, ...]:
        """The reason codes of row's decision, as `Decision.reason_codes`."""
        return self._reasons.codes(row)


# ---- reading columns ---------------------------------------------------------


def _as_array(data: Any) -> Any:
    if isinstance(data, np.ndarray | Ragged | Coded):
        return data
    if hasattr(data, "codes") and hasattr(data, "categories"):  # pandas
        return Coded(np.asarray(data.codes), np.asarray(data.categories, dtype=object))
    out = np.empty(len(data), dtype=object)
    out[:] = list(data)
    return out


def _unmask(data: Any) -> tuple[Any, BoolArray | None]:
    """A plain array and its mask (None when nothing is masked)."""
    if isinstance(data, Coded):
        data = data.decode()
    if isinstance(data, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(data)
        fill: Any = 0 if data.dtype.kind in "iufb" else ""
        if data.dtype.kind == "O":
            fill = None
        if data.dtype.kind == "M":
            fill = np.datetime64("NaT")
        return data.filled(fill), (mask if mask.any() else None)
    return data, None


class Text:
    """A column of strings: the values (`""` where not a string), where the
    value is missing (None), and where it is present but not a string. A
    dictionary-encoded column keeps its codes, and decodes only if asked."""

    __slots__ = ("none", "bad", "codes", "unique", "_values")

    def __init__(
        self,
        values: npt.NDArray[np.str_] | None,
        none: BoolArray,
        bad: BoolArray,
        codes: IntArray | None = None,
        unique: npt.NDArray[np.str_] | None = None,
    ) -> None:
        self._values = values
        self.none = none
        self.bad = bad
        self.codes = codes  # into `unique`, -1 where missing or not a string
        self.unique = unique

    @property
    def values(self) -> npt.NDArray[np.str_]:
        if self._values is None:
            assert self.codes is not None and self.unique is not None
            padded = np.concatenate([self.unique, np.zeros(1, dtype=self.unique.dtype)])
            self._values = padded[self.codes]
        return self._values


def _text(data: Any, size: int = 0) -> Text:
    """Strings of a column; `None` stands for a column of `size` missing."""
    if data is None:
        return Text(
            np.zeros(size, dtype="<U1"),
            np.ones(size, dtype=bool),
            np.zeros(size, dtype=bool),
        )
    if isinstance(data, Coded):
        inner = _text(data.values)
        codes = data.codes
        if not (inner.none.any() or inner.bad.any()):  # the usual dictionary
            plain = np.zeros(len(codes), dtype=bool)
            return Text(None, codes < 0, plain, codes, inner.values)
        none = np.concatenate([inner.none, [True]])[codes]
        bad = np.concatenate([inner.bad, [False]])[codes]
        return Text(None, none, bad, np.where(none | bad, -1, codes), inner.values)
    data, mask = _unmask(data)
    n = len(data)
    kind = data.dtype.kind
    none = np.zeros(n, dtype=bool) if mask is None else mask
    if kind == "U":
        return Text(data, none, np.zeros(n, dtype=bool))
    if kind != "O":
        return Text(np.zeros(n, dtype="<U1"), none, ~none)
    items = data.tolist()
    if all(type(v) is str and not v.endswith("\0") for v in items):
        return Text(_strings(items), none, np.zeros(n, dtype=bool))
    none = none | np.fromiter((v is None for v in items), bool, n)
    # Numpy cannot hold a trailing NUL; such a string is sent one by one.
    good = np.fromiter(
        (type(v) is str and not v.endswith("\0") for v in items), bool, n
    )
    values = _strings(
        [v if type(v) is str and not v.endswith("\0") else "" for v in items]
    )
    return Text(values, none, ~none & ~good)


def _strings(items: Sequence[str]) -> npt.NDArray[np.str_]:
    out: npt.NDArray[np.str_] = np.array(list(items) + [""], dtype=str)[:-1]
    return out


class Vocabulary:
    """Declared names (actions, types, scopes) and their codes, looked up
    for a whole column by hashing its characters; every hit is confirmed by
    comparing the strings, so a hash never decides."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.code = {name: i for i, name in enumerate(self.names)}
        self.array = _strings(self.names) if self.names else np.zeros(0, dtype="<U1")
        hashes = _hash(self.array)
        size = 64
        while size < 8 * len(self.names) or _collide(hashes, size):
            size *= 2
            if size > 1 << 22:
                break
        self.exact = not _collide(hashes, size)
        self.table = np.full(size, -1, dtype=np.int64)
        slots = (hashes & np.uint64(size - 1)).astype(np.int64)
        self.table[slots] = np.arange(len(self.names))
        self.hashes = hashes

    def codes(self, text: Text, unknown: bool = False) -> IntArray:
        """Each string's code, -1 for a name not declared (or no string);
        with `unknown`, another string's code is its own past the names'."""
        if text.codes is not None:
            assert text.unique is not None
            unique = text.unique
            if len(unique) >= 64 and self.exact and self.names:
                known = self._lookup(unique)
            else:
                known = np.array([self.code.get(u, -1) for u in unique.tolist()])
            if unknown:  # each other dictionary value is a name of its own
                known = np.where(
                    known < 0, len(self.names) + np.arange(len(known)), known
                )
            out: IntArray = _append(known, -1)[text.codes]
            return out
        values = text.values
        if len(values) < 64 or not self.exact or not self.names:
            found = _codes_by_sorting(values, self.code)
        else:
            found = self._lookup(values)
        return np.where(text.none | text.bad, -1, found)

    def _lookup(self, values: npt.NDArray[np.str_]) -> IntArray:
        hashes = _hash(values)
        mask = np.uint64(len(self.table) - 1)
        slot = self.table[(hashes & mask).astype(np.int64)]
        at = np.maximum(slot, 0)
        hit = (slot >= 0) & (self.hashes[at] == hashes) & (self.array[at] == values)
        out: IntArray = np.where(hit, at, -1)
        return out

    def factor(self, text: Text) -> IntArray:
        """Codes, with a code of its own past the declared ones for every
        other string, so two unknown names never compare equal by code."""
        codes = self.codes(text, unknown=True)
        missing = text.none | text.bad
        unknown = _nonzero((codes < 0) & ~missing)
        if len(unknown):
            _, inverse = np.unique(text.values[unknown], return_inverse=True)
            codes[unknown] = len(self.names) + inverse.reshape(-1)
        codes[missing] = NO_CODE
        return codes


NO_CODE = 1 << 40
"""The code `factor` gives a missing name or a value that is not a string."""


def _collide(hashes: npt.NDArray[np.uint64], size: int) -> bool:
    return len(set((hashes & np.uint64(size - 1)).tolist())) < len(hashes)


_HASH_WEIGHTS = np.random.default_rng().integers(
    1, 1 << 62, 256, dtype=np.int64
).astype(np.uint64) * np.uint64(2) + np.uint64(1)


def _hash(values: npt.NDArray[np.str_]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each string (NUL padding adds nothing)."""
    n = len(values)
    width = values.dtype.itemsize // 4
    if n == 0 or width == 0:
        return np.zeros(n, dtype=np.uint64)
    weights = _HASH_WEIGHTS
    while len(weights) < width:
        weights = np.concatenate([weights, weights * np.uint64(0x9E3779B97F4A7C15)])
    chars = np.ascontiguousarray(values).view(np.uint32).reshape(n, width)
    out: npt.NDArray[np.uint64] = chars.astype(np.uint64) @ weights[:width]
    return out


def _codes_by_sorting(
    values: npt.NDArray[np.str_], table: Mapping[str, int]
) -> IntArray:
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(values, return_inverse=True)
    mapped = np.array([table.get(u, -1) for u in unique.tolist()], dtype=np.int64)
    out: IntArray = mapped[inverse.reshape(-1)]
    return out


def _ids_bad(text: Text) -> BoolArray:
    """An entity id must be a string of at most `MAX_ID_LENGTH` characters."""
    bad = text.none | text.bad
    if text.codes is not None and text.unique is not None:
        if text.unique.dtype.itemsize // 4 > MAX_ID_LENGTH:
            long = np.strings.str_len(text.unique) > MAX_ID_LENGTH
            bad = bad | np.concatenate([long, [False]])[text.codes]
        return bad
    if text.values.dtype.itemsize // 4 > MAX_ID_LENGTH:
        bad = bad | (np.strings.str_len(text.values) > MAX_ID_LENGTH)
    return bad


Hashes: TypeAlias = npt.NDArray[np.uint64]
"""Ids as 64-bit hashes: equal exactly when the ids are, once `_hash_ids`
has found no two different ids of the batch with one hash."""


def _empty(text: Text) -> BoolArray:
    if text.codes is not None and text.unique is not None:
        found: BoolArray = _append(text.unique == "", False)[text.codes]
        return found
    out: BoolArray = text.values == ""
    return out


def _text_hashes(text: Text) -> tuple[Hashes, npt.NDArray[np.str_], Hashes]:
    """Each value's hash, and the distinct strings with their hashes."""
    if text.codes is not None and text.unique is not None:
        unique = text.unique
        hashes = _hash(unique)
        return _append(hashes, np.uint64(0))[text.codes], unique, hashes
    hashes = _hash(text.values)
    return hashes, text.values, hashes


def _hash_ids(rows: Rows, entities: Entities, chains: Chains) -> bool:
    """Give every id of the batch its hash, so that ids compare as numbers;
    False when two different strings share a hash (then nothing here may
    compare ids by hash)."""
    places: list[tuple[Any, str, Text]] = [
        (rows, "pid", rows.texts["pid"]),
        (rows, "rid", rows.texts["rid"]),
        (rows, "owner_id", rows.texts["owner_id"]),
        (entities, "id", entities.texts["id"]),
        (entities, "owner_id", entities.texts["owner_id"]),
        (chains, "source_id", chains.texts["source_id"]),
        (chains, "target_id", chains.texts["target_id"]),
    ]
    strings, hashes = [], []
    for owner, name, text in places:
        each, unique, unique_hashes = _text_hashes(text)
        setattr(owner, name, each)
        strings.append(unique)
        hashes.append(unique_hashes)
    every = np.concatenate(hashes)
    order = np.argsort(every, kind="stable")
    ranked = every[order]
    twins = _nonzero(ranked[1:] == ranked[:-1])
    if not len(twins):
        return True
    names = np.concatenate(strings)
    return bool((names[order[twins]] == names[order[twins + 1]]).all())


# ---- timestamps --------------------------------------------------------------


def _times(data: Any, size: int = 0) -> tuple[IntArray, BoolArray, BoolArray]:
    """Microseconds since the epoch, UTC; where missing; where not a
    timestamp `parse_time` accepts. `None` stands for `size` missing."""
    if data is None:
        return (
            np.zeros(size, dtype=np.int64),
            np.ones(size, dtype=bool),
            np.zeros(size, dtype=bool),
        )
    if isinstance(data, Coded):
        micros, none, bad = _times(data.values)
        codes = data.codes
        missing = codes < 0
        at = np.where(missing, len(micros), codes)
        return (
            np.concatenate([micros, [0]])[at],
            np.concatenate([none, [True]])[at],
            np.concatenate([bad, [False]])[at],
        )
    data, mask = _unmask(data)
    n = len(data)
    none = np.zeros(n, dtype=bool) if mask is None else mask.copy()
    bad = np.zeros(n, dtype=bool)
    if data.dtype.kind == "M":
        nat = np.isnat(data)
        micros = data.astype("datetime64[us]").view(np.int64).copy()
        micros[nat] = 0
        return micros, none | nat, bad
    micros = np.zeros(n, dtype=np.int64)
    if data.dtype.kind == "U":
        fast, ok = _fast_times(data)
        micros[ok] = fast[ok]
        slow = _nonzero(~ok & ~none)
        items = data[slow].tolist()
    elif data.dtype.kind == "O":
        slow = _nonzero(~none)
        items = data[slow].tolist()
    else:
        return micros, none, ~none
    seen: dict[Any, int | None] = {}
    for position, item in zip(slow.tolist(), items, strict=True):
        if item is None:
            none[position] = True
            continue
        if type(item) is not str:
            bad[position] = True
            continue
        found = seen.get(item, -1)
        if found == -1:
            found = seen[item] = _parse_micros(item)
        if found is None:
            bad[position] = True
        else:
            micros[position] = found
    return micros, none, bad


def _parse_micros(text: str) -> int | None:
    try:
        moment = parse_time(text, ())
    except BadRequest:
        return None
    return (moment - _EPOCH) // _MICRO


_DIGIT_AT = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "Z"))


def _fast_times(data: npt.NDArray[np.str_]) -> tuple[IntArray, BoolArray]:
    """`YYYY-MM-DDTHH:MM:SSZ`, the shape logs write, read without Python;
    `ok` is False for every other text, which `parse_time` then reads."""
    n = len(data)
    if data.dtype.itemsize != 80 or n == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    chars = np.ascontiguousarray(data).view(np.uint32).reshape(n, 20)
    digits = chars[:, _DIGIT_AT].astype(np.int64) - 48
    ok = ((digits >= 0) & (digits <= 9)).all(axis=1)
    for at, sep in _SEPARATORS:
        ok &= chars[:, at] == ord(sep)
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    hour = digits[:, 8] * 10 + digits[:, 9]
    minute = digits[:, 10] * 10 + digits[:, 11]
    second = digits[:, 12] * 10 + digits[:, 13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    lengths = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    month_days = lengths[np.clip(month - 1, 0, 11)] + ((month == 2) & leap)
    ok &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
    ok &= (day <= month_days) & (hour < 24) & (minute < 60) & (second < 60)
    # Days from the civil date (proleptic Gregorian), as `datetime` counts.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    micros: IntArray = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000
    return micros, ok


# ---- cells: where a value falls among the constants it is compared with ------

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


# ---- the plan: a policy set's buckets as arrays ------------------------------


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


# ---- typed columns, for tests with no cell form ------------------------------


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


# ---- tests with no cell form, over the rows of one type pair -----------------


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
        facts: FrameFacts,
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


# ---- the rows: the request's shape -------------------------------------------


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


# ---- entities ----------------------------------------------------------------


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


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


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


# ---- delegation chains -------------------------------------------------------

_CONTINUITY, _TWICE, _EXPIRED, _NOT_YET, _REVOKED, _WIDENS, _PURPOSE = (
    1 << i for i in range(7)
)
_LINK_CODES = (
    (_CONTINUITY, "broken_chain"),
    (_TWICE, "broken_chain"),
    (_EXPIRED, "expired_link"),
    (_NOT_YET, "expired_link"),
    (_REVOKED, "revoked_link"),
    (_WIDENS, "chain_widens"),
    (_PURPOSE, "chain_widens"),
)


class Chains:
    """Every check of `check_chain`, over the rows that carry a chain: one row
    of `bits` per chain, one column per link position, in check order."""

    def __init__(
        self,
        plan: Plan,
        engine: Any,
        arrays: Mapping[str, Any],
        rows: Rows,
        leeway: int,
    ) -> None:
        self.plan = plan
        data = arrays.get("delegation")
        n = rows.n
        if data is None:
            data = Ragged(np.zeros(n + 1, dtype=np.int64), {})
        elif not isinstance(data, Ragged):
            data, bad = _flatten(_items(data), _flat_link)
            rows.slow |= bad
        counts = data.counts
        self._links(data, rows, leeway, counts, engine)
        self.rows = _nonzero((counts > 0) & ~rows.slow)
        self.index = np.full(n, -1, dtype=np.int64)  # row → its chain
        self.index[self.rows] = np.arange(len(self.rows))
        self.count = counts[self.rows]
        width = int(self.count.max()) if len(self.rows) else 0
        self.width = width
        self.valid = np.arange(width)[None, :] < self.count[:, None]
        starts = data.offsets[self.rows]
        self.pad = np.where(self.valid, starts[:, None] + np.arange(width), -1)

    def _links(
        self, data: Ragged, rows: Rows, leeway: int, counts: IntArray, engine: Any
    ) -> None:
        """Each link's fields as codes; rows with a malformed link, limits or
        no time to check links at go one by one (`decide` says why)."""
        size = int(data.offsets[-1])
        fields = data.fields

        def text(name: str) -> Text:
            return _text(fields.get(name), size)

        ident, purpose = text("id"), text("purpose")
        ends = [text(name) for name in ("from.type", "from.id", "to.type", "to.id")]
        bad = ident.none | ident.bad | _empty(ident) | purpose.bad
        for end in ends:
            bad |= end.none | end.bad
        expires, expires_none, expires_bad = _times(fields.get("expires"), size)
        not_before, before_none, before_bad = _times(fields.get("not_before"), size)
        bad |= expires_none | expires_bad | before_bad
        bad |= expires > _MAX_US - leeway  # `expires + leeway` would overflow
        bad |= ~before_none & (not_before < _MIN_US + leeway)
        limits = fields.get("limits")
        # TODO: link limits (a later link raising one is `chain_widens`, rules
        # read their minimum) have no vector form yet, so every row whose
        # chain sets a limit goes through `decide` one by one.
        if limits is not None:
            bad |= np.array([bool(_plain(v)) for v in _items(limits)], dtype=bool)
        scopes = fields.get("scopes")
        if not isinstance(scopes, Ragged):
            scopes = Ragged(np.zeros(size + 1, dtype=np.int64), {"": _objects([])})
            bad[:] = True
        names = _text(scopes.fields.get(""), int(scopes.offsets[-1]))
        self.scope_code = self.plan.group_names.codes(names)
        wrong = names.none | names.bad | (self.scope_code < 0)
        self.scope_start = scopes.offsets[:-1]
        self.scope_count = scopes.counts
        scope_link = np.repeat(np.arange(size, dtype=np.int64), self.scope_count)
        bad |= np.bincount(scope_link, weights=wrong, minlength=size) > 0
        if scopes.present is not None:
            bad |= ~scopes.present
        link_row = np.repeat(np.arange(rows.n, dtype=np.int64), counts)
        rows.slow |= np.bincount(link_row, weights=bad, minlength=rows.n) > 0
        rows.slow |= (counts > 0) & rows.now_none  # no time to check links at
        self.source = self.plan.type_names.factor(ends[0])
        self.target = self.plan.type_names.factor(ends[2])
        self.texts = dict(
            zip(
                ("source_type", "source_id", "target_type", "target_id"),
                ends,
                strict=True,
            )
        )
        self.source_id: Hashes = np.zeros(0, dtype=np.uint64)  # set by `_hash_ids`
        self.target_id: Hashes = self.source_id
        self.expires, self.not_before = expires, not_before
        self.has_not_before = ~before_none
        self.purpose, self.has_purpose = purpose.values, ~purpose.none
        wanted = ~rows.slow[link_row]
        revoked = _revoked(engine, self, ident, wanted)
        if revoked is None:  # no way to ask: every chain one by one
            rows.slow |= counts > 0
            revoked = np.zeros(size, dtype=bool)
        self.link_revoked = revoked

    def check(self, rows: Rows, leeway: int) -> None:
        """Every check, once ids are hashed (`_hash_ids`)."""
        pad, valid, width = self.pad, self.valid, self.width
        chained = self.rows
        count = len(chained)
        bits = np.zeros((count, width), dtype=np.int64)
        source, source_id = self.source[pad], self.source_id[pad]
        target, target_id = self.target[pad], self.target_id[pad]
        if width:
            bits[:, 1:] |= _CONTINUITY * (
                (target[:, :-1] != source[:, 1:])
                | (target_id[:, :-1] != source_id[:, 1:])
            )
        for j in range(width):
            twice = (target[:, j] == source[:, 0]) & (
                target_id[:, j] == source_id[:, 0]
            )
            for k in range(j):
                twice |= (target[:, j] == target[:, k]) & (
                    target_id[:, j] == target_id[:, k]
                )
            bits[:, j] |= _TWICE * twice
        now = rows.now[chained][:, None]
        bits |= _EXPIRED * (now >= self.expires[pad] + leeway)
        if self.has_not_before.any():
            bits |= _NOT_YET * (
                self.has_not_before[pad] & (now < self.not_before[pad] - leeway)
            )
        if self.link_revoked.any():
            bits |= _REVOKED * self.link_revoked[pad]
        groups = self.plan.action_group[rows.action[chained]]
        covered, widens = self._scopes(groups)
        bits |= _WIDENS * widens
        if self.has_purpose.any():
            bits |= _PURPOSE * self._purpose_changes()
        self.bits = np.where(valid, bits, 0)
        kind = (
            self.plan.kind[np.minimum(source[:, 0], len(self.plan.types))]
            if width
            else np.zeros(0, np.int8)
        )
        self.not_human = kind != 1 if width else np.zeros(0, dtype=bool)
        last = pad[np.arange(count), self.count - 1] if count else np.zeros(0, np.int64)
        self.end = (self.target[last] != rows.ptype[chained]) | (
            self.target_id[last] != rows.pid[chained]
        )
        self.outside = valid & ~covered
        self.failed = (
            self.bits.any(axis=1) | self.not_human | self.end | self.outside.any(axis=1)
        )
        self.root = source[:, 0] if width else np.zeros(0, dtype=np.int64)
        self.root_id = source_id[:, 0] if width else np.zeros(0, dtype=np.uint64)
        self._source, self._target = source, target

    def _entries(self, links: IntArray) -> tuple[IntArray, IntArray]:
        """The scopes of each given link: (which of `links`, scope code)."""
        counts = self.scope_count[links]
        owner = np.repeat(np.arange(len(links), dtype=np.int64), counts)
        return owner, self.scope_code[_ranges(self.scope_start[links], counts)]

    def _scopes(self, groups: IntArray) -> tuple[BoolArray, BoolArray]:
        """Per link position: does the link cover the action; does it grant a
        scope its grantor was not given (a widening link)."""
        count, width = self.pad.shape
        covers = self.plan.covers()
        flat = _nonzero(self.valid.ravel())
        links = self.pad.ravel()[flat]
        owner, code = self._entries(links)
        cell = flat[owner]  # (row, position) of each scope entry
        hit = covers[code, groups[cell // max(width, 1)]]
        covered = np.bincount(cell, weights=hit, minlength=count * width) > 0
        child = _nonzero(cell % max(width, 1) > 0)
        parents = self.pad.ravel()[cell[child] - 1]
        pair, parent_code = self._entries(parents)
        held = covers[parent_code, code[child][pair]]
        granted = np.bincount(pair, weights=held, minlength=len(child)) > 0
        widening = (
            np.bincount(cell[child], weights=~granted, minlength=count * width) > 0
        )
        shape = (count, width)
        return covered.reshape(shape), widening.reshape(shape)

    def _purpose_changes(self) -> BoolArray:
        """A later link may state the purpose the first stated one had, never
        another; the first stated purpose counts even when empty."""
        count, width = self.pad.shape
        out = np.zeros((count, width), dtype=bool)
        stated = np.zeros(count, dtype=bool)
        first = np.full(count, "", dtype=self.purpose.dtype)
        for j in range(width):
            at = self.pad[:, j]
            has = self.has_purpose[at] & self.valid[:, j]
            value = self.purpose[at]
            out[:, j] = has & stated & (value != first)
            first = np.where(stated, first, value)
            stated |= has
        return out

    # ---- facts for rules (valid chains)

    @functools.cached_property
    def first_purpose(self) -> tuple[npt.NDArray[np.str_], BoolArray]:
        count, width = self.pad.shape
        value = np.full(count, "", dtype=self.purpose.dtype)
        found = np.zeros(count, dtype=bool)
        for j in range(width):
            at = self.pad[:, j]
            has = self.has_purpose[at] & self.valid[:, j] & (self.purpose[at] != "")
            value = np.where(found | ~has, value, self.purpose[at])
            found |= has
        return value, found

    def grants(self, scope: str) -> BoolArray:
        """`delegation.grants(scope)` per chain: every link covers it."""
        count, width = self.pad.shape
        target = self.plan.group_code.get(scope)
        if target is None or width == 0:
            return np.zeros(count, dtype=bool)
        flat = _nonzero(self.valid.ravel())
        owner, code = self._entries(self.pad.ravel()[flat])
        hit = self.plan.covers()[code, target]
        covered = np.bincount(flat[owner], weights=hit, minlength=count * width) > 0
        out: BoolArray = np.all(covered.reshape(count, width) | ~self.valid, axis=1)
        return out

    def via(self, types: frozenset[str]) -> BoolArray:
        codes = [self.plan.type_code[t] for t in types if t in self.plan.type_code]
        on = np.logical_or(np.isin(self._source, codes), np.isin(self._target, codes))
        out: BoolArray = np.any(on & self.valid, axis=1)
        return out

    def codes(self, chain: int) -> tuple[str, ...]:
        """The reason codes of a failing chain, as `check_chain` lists them."""
        out = ["root_not_human"] if self.not_human[chain] else []
        for j in range(int(self.count[chain])):
            bits = int(self.bits[chain, j])
            out.extend(code for bit, code in _LINK_CODES if bits & bit)
        if self.end[chain]:
            out.append("broken_chain")
        if self.outside[chain].any():
            out.append("scope_not_delegated")
        return tuple(out)


def _revoked(
    engine: Any, chains: Chains, text: Text, wanted: BoolArray
) -> BoolArray | None:
    """Which links the engine counts as revoked (only `wanted` ones are
    asked), or None when it cannot be asked."""
    found = _revoked_ids(engine)
    size = len(text.none)
    if found is not None:
        if not found:
            return np.zeros(size, dtype=bool)
        revoked = np.array(sorted(found), dtype=str)
        if text.codes is not None and text.unique is not None:
            hit = _append(np.isin(text.unique, revoked), False)
            out: BoolArray = hit[text.codes]
            return out
        return np.isin(text.values, revoked)
    ids = text.values
    is_revoked = getattr(engine, "is_revoked", None)
    if not callable(is_revoked):
        return None
    out = np.zeros(len(ids), dtype=bool)
    texts = {name: found.values for name, found in chains.texts.items()}
    for k in _nonzero(wanted).tolist():
        link = Link(
            0,
            str(ids[k]),
            intern_ref(str(texts["source_type"][k]), str(texts["source_id"][k])),
            intern_ref(str(texts["target_type"][k]), str(texts["target_id"][k])),
            (),
            _EPOCH + timedelta(microseconds=int(chains.expires[k])),
            None,
            None,
            {},
        )
        out[k] = bool(is_revoked(link))
    return out


def _revoked_ids(engine: Any) -> frozenset[str] | None:
    """The revoked link ids (`Engine.revoked_ids`), when they are all there
    is to the engine's revocations; None when a shared store must be asked
    link by link, or the engine offers no such view."""
    hook = getattr(engine, "revoked_ids", None)
    found = hook() if callable(hook) else None
    return None if found is None else frozenset(found)


# ---- roots: whose decision caps the principal's ------------------------------


@attrs.define
class Roots:
    """Per row: a root to cap with (`has`), or none to be found
    (`missing`, root_not_found), the root's type code, id and its entry in
    `entities` (-1: not listed, so no attributes)."""

    has: BoolArray
    missing: BoolArray
    code: IntArray
    id: Hashes
    entity: IntArray


def _roots(
    plan: Plan, rows: Rows, entities: Entities, chains: Chains, live: BoolArray
) -> Roots:
    n = rows.n
    has = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=bool)
    code = np.zeros(n, dtype=np.int64)
    ident = np.zeros(n, dtype=np.uint64)
    chained = chains.rows[live[chains.rows]]
    at = chains.index[chained]
    code[chained] = chains.root[at]
    ident[chained] = chains.root_id[at]
    has[chained] = (code[chained] != rows.ptype[chained]) | (
        ident[chained] != rows.pid[chained]
    )
    types = len(plan.types)
    kind = plan.kind[np.minimum(rows.ptype, types)]
    owned = _nonzero(live & (chains.index < 0) & (kind == 3))
    _walk_owners(plan, rows, entities, owned, has, missing, code, ident)
    entity = np.full(n, -1, dtype=np.int64)
    found = _nonzero(has)
    entity[found] = entities.find(found, code[found], ident[found])
    # A resource that is the root reads the root's attributes there.
    rows.slow |= has & (rows.rtype == code) & (rows.rid == ident)
    return Roots(has, missing, code, ident, entity)


def _walk_owners(
    plan: Plan,
    rows: Rows,
    entities: Entities,
    active: IntArray,
    has: BoolArray,
    missing: BoolArray,
    code: IntArray,
    ident: Hashes,
) -> None:
    """`find_root` for rows without a chain: owners are followed through
    `entities` until a human, every row one step at a time."""
    types = len(plan.types)
    current = rows.owner[active]
    current_id = rows.owner_id[active]
    none = rows.owner_none[active]
    owned = rows.ptype[active]
    seen = [(rows.ptype[active], rows.pid[active])]
    for _ in range(entities.pad.shape[1] + 2):
        if not len(active):
            return
        lost = none | ~plan.owners[owned, np.minimum(current, types)]
        for kind, name in seen:
            lost |= (current == kind) & (current_id == name)
        human = ~lost & (plan.kind[np.minimum(current, types)] == 1)
        found = active[human]
        has[found] = True
        code[found] = current[human]
        ident[found] = current_id[human]
        step = ~lost & ~human
        seen = [(kind[step], name[step]) for kind, name in seen]
        seen.append((current[step], current_id[step]))
        entry = entities.find(active[step], current[step], current_id[step])
        missing[active[lost]] = True
        missing[active[step][entry < 0]] = True
        go = entry >= 0
        seen = [(kind[go], name[go]) for kind, name in seen]
        active, owned = active[step][go], current[step][go]
        entry = entry[go]
        current = entities.owner[entry]
        current_id = entities.owner_id[entry]
        none = entities.owner_none[entry]
    rows.slow[active] = True  # longer than any owner chain can be


# ---- declared scopes: the ceilings of the identities a row acts through ------


def _undeclared(plan: Plan, rows: Rows, entities: Entities, chains: Chains) -> IntArray:
    """`beyond_declared` per row, as a count of `scope_not_declared` reasons:
    the identity types the row acts through (its principal's, and its chain's
    members or, with no chain, its owners' up to the first human) whose
    declared scopes leave the action out. Rows already going one by one
    count 0."""
    n = rows.n
    beyond = plan.beyond
    if beyond is None:
        return np.zeros(n, dtype=np.int64)
    types = len(plan.types)
    live = ~rows.slow
    everyone = _nonzero(live)
    who, what = [everyone], [rows.ptype[everyone]]
    chained = chains.rows[live[chains.rows]]
    if len(chained) and chains.width:
        at = chains.index[chained]
        links = chains.pad[at][chains.valid[at]]  # row-major: row by row
        members = np.repeat(chained, chains.count[at])
        who += [members, members]
        what += [chains.source[links], chains.target[links]]
    owned = _nonzero(live & (chains.index < 0) & ~rows.owner_none)
    _owner_path(plan, rows, entities, owned, who, what)
    width = types + 1
    pairs = np.unique(
        np.concatenate(who) * width + np.minimum(np.concatenate(what), types)
    )
    row, code = pairs // width, pairs % width
    hit = beyond[code, rows.action[row]]
    counts: IntArray = np.bincount(row[hit], minlength=n)
    return counts


def _owner_path(
    plan: Plan,
    rows: Rows,
    entities: Entities,
    active: IntArray,
    who: list[IntArray],
    what: list[IntArray],
) -> None:
    """`owner_types` for rows without a chain: each owner's (row, type code),
    from the principal's own owner through `entities`, stopping after a
    human, a type that is no identity, or an owner not listed. A row never
    stops for a cycle here: once an owner repeats, the types it leads to are
    already recorded, and the steps are bounded by the entities a row lists."""
    types = len(plan.types)
    current = rows.owner[active]
    current_id = rows.owner_id[active]
    for _ in range(entities.pad.shape[1] + 1):
        if not len(active):
            return
        who.append(active)
        what.append(current)
        onward = plan.kind[np.minimum(current, types)] >= 2  # agents and others
        active, current, current_id = (
            active[onward],
            current[onward],
            current_id[onward],
        )
        entry = entities.find(active, current, current_id)
        listed = entry >= 0
        entry = entry[listed]
        owned = ~entities.owner_none[entry]
        active, entry = active[listed][owned], entry[owned]
        current, current_id = entities.owner[entry], entities.owner_id[entry]


# ---- facts for tests with no cell form ---------------------------------------


class FrameFacts:
    """The delegation facts of a frame's rows (chain -1: none, as for a root)."""

    def __init__(self, chains: Chains, chain: IntArray) -> None:
        self.chains = chains
        self.chain = chain
        self.has = chain >= 0
        self.at = np.where(self.has, chain, 0)

    def _gather(self, values: Any, default: Any) -> Any:
        if not len(values):
            return np.full(len(self.chain), default)
        return np.where(self.has, values[self.at], default)

    def grants(self, scope: str) -> BoolArray:
        out: BoolArray = self._gather(self.chains.grants(scope), False)
        return out

    def via(self, types: frozenset[str]) -> BoolArray:
        out: BoolArray = self._gather(self.chains.via(types), False)
        return out

    def fact(self, expr: ir.DelegationFact) -> Column:
        n = len(self.chain)
        none = np.zeros(n, dtype=bool)
        if expr.fact == "depth":
            depth = self._gather(self.chains.count, 0).astype(np.int64)
            return Column("int", depth, none, none)
        if expr.fact == "purpose":
            value, found = self.chains.first_purpose
            text = self._gather(value, "").astype(str)
            return Column("str", text, ~self._gather(found, False), none)
        if expr.fact == "limit":  # chains with limits go one by one
            return Column("none", None, np.ones(n, dtype=bool), none)
        raise Unsupported(f"`delegation.{expr.fact}`")


# ---- evaluation: every (row, rule) pair at once ------------------------------


class Layout:
    """The evaluated rows: each live row, followed by its root where it has
    one, so that both sides of a row sit next to each other."""

    def __init__(self, rows: Rows, roots: Roots, chains: Chains, own: IntArray) -> None:
        capped = roots.has[own]
        self.own_at = np.arange(len(own)) + np.cumsum(capped) - capped
        self.root_at = self.own_at + 1  # meaningful where capped
        size = len(own) + int(np.count_nonzero(capped))
        self.size = size
        self.capped = capped
        capping = own[capped]  # the rows that have a root
        self.roots = self.root_at[capped]  # where their roots are evaluated
        self.src = np.empty(size, dtype=np.int64)
        self.src[self.own_at] = own
        self.src[self.roots] = capping
        self.is_root = np.zeros(size, dtype=bool)
        self.is_root[self.roots] = True
        self.ptype = rows.ptype[self.src]
        self.root_type = roots.code[capping]
        self.ptype[self.roots] = self.root_type
        self.rtype = rows.rtype[self.src]
        self.action = rows.action[self.src]
        self.root_entity = roots.entity[capping]
        self.entity = np.full(size, -1, dtype=np.int64)
        self.entity[self.roots] = self.root_entity
        self.chain = chains.index[self.src]
        self.chain[self.roots] = -1


class Verdicts:
    """Per evaluated row: effect, best matching effect (-1: none), erring
    strict rules and winning matches; and the rules each row lists."""

    def __init__(self, size: int, parts: BucketArrays) -> None:
        self.effect = np.full(size, DENY, dtype=np.int8)
        self.best = np.full(size, -1, dtype=np.int64)
        self.blocking = np.zeros(size, dtype=np.int64)
        self.winners = np.zeros(size, dtype=np.int64)
        self.parts = parts
        self._tables: list[tuple[IntArray, IntArray, npt.NDArray[np.uint32]]] = []
        self._pairs: list[tuple[IntArray, IntArray, BoolArray]] = []

    def listed(self, chosen: BoolArray) -> tuple[IntArray, IntArray]:
        """The (evaluated row, rule) entries of the rows `chosen`, by row."""
        parts = self.parts
        rows, rules = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for at, bucket, member in self._tables:
            keep = chosen[at]
            masks = np.where(keep[:, None], member, np.uint32(0)).astype("<u4")
            octets = masks.view(np.uint8).ravel()
            some = _nonzero(octets)
            value = octets[some]
            count = _BYTE_BITS[value]
            bit = _BYTE_POSITIONS[_ranges(_BYTE_START[value], count)]
            position = np.repeat(some, count)
            per_row = masks.shape[1] * 4
            row = position // per_row
            bit = bit + 8 * (position % per_row)
            rows.append(at[row])
            slot = parts.slot_start[bucket[row]] + bit
            rules.append(parts.slot_rule[slot].astype(np.int64))
        for pair_row, pair_slot, listed in self._pairs:
            pick = _nonzero(listed & chosen[pair_row])
            rows.append(pair_row[pick])
            rules.append(parts.slot_rule[pair_slot[pick]].astype(np.int64))
        row_of, rule_of = np.concatenate(rows), np.concatenate(rules).astype(np.int64)
        if sum(len(r) > 0 for r in rows) > 1:
            order = np.argsort(row_of, kind="stable")
            row_of, rule_of = row_of[order], rule_of[order]
        return row_of, rule_of


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)
_BYTE_START = np.cumsum(_BYTE_BITS) - _BYTE_BITS
_BYTE_POSITIONS = np.array(
    [bit for v in range(256) for bit in range(8) if v >> bit & 1], dtype=np.int64
)
"""For each byte value: how many bits are set, and which (from the lowest)."""


class Evaluation:
    def __init__(
        self,
        plan: Plan,
        arrays: Mapping[str, Any],
        rows: Rows,
        entities: Entities,
        chains: Chains,
        layout: Layout,
    ) -> None:
        self.plan = plan
        self.arrays = arrays
        self.rows = rows
        self.entities = entities
        self.chains = chains
        self.layout = layout
        self._cells: dict[tuple[str, int], Any] = {}
        self.failed_columns: list[int] = []
        self.slow_rows = np.zeros(0, dtype=np.int64)

    def run(self) -> Verdicts:
        plan, layout = self.plan, self.layout
        size = layout.size
        types = len(plan.types)
        codes = (layout.action * types + layout.ptype) * types + layout.rtype
        bucket, parts = plan.bucket_ids(codes)
        lanes = parts.lanes[bucket]
        tabled = _nonzero(lanes > 0)
        count = parts.table_count[bucket[tabled]]
        read_row = np.repeat(tabled, count)
        read = _ranges(parts.table_start[bucket[tabled]], count)
        read_column = parts.table_column[read]
        tested = _nonzero(lanes == 0)
        tests = parts.atom_count[bucket[tested]]
        atom_row = np.repeat(tested, tests)
        atom = _ranges(parts.atom_start[bucket[tested]], tests)
        atom_column = parts.atom_column[atom]
        cells = self._all_cells(np.concatenate([read_column, atom_column]), size)
        if self.failed_columns:  # a test with no vector form: its rows
            failed = self.failed_columns
            where = np.concatenate(
                [
                    read_row[np.isin(read_column, failed)],
                    atom_row[np.isin(atom_column, failed)],
                ]
            )
            self.slow_rows = layout.src[where]
        verdicts = Verdicts(size, parts)
        flat = cells.ravel()
        cell = flat[read_column * size + read_row].astype(np.int64)
        mapped = parts.table_mapped[read]
        if mapped.any():  # the bucket's own intervals, found by one search
            at = _nonzero(mapped)
            key = (read[at] << 32) + cell[at]
            local = parts.break_key.searchsorted(key, side="right") - 1
            local -= parts.break_start[read[at]]
            cell[at] = np.where(cell[at] < 0, -1, local)
        entry = parts.table_offset[read] + (cell + 1) * lanes[read_row]
        ends = np.cumsum(count)
        widths = lanes[tabled]
        if len(tabled) and widths.min() == widths.max() == 1:
            self._one_lane(verdicts, bucket[tabled], tabled, count, entry)
        else:
            for width in np.unique(widths).tolist():
                group = _nonzero(widths == width)
                self._tabled(verdicts, bucket, tabled, group, count, ends, entry, width)
        if len(tested):
            cell = flat[atom_column * size + atom_row]
            self._tested(verdicts, bucket, tested, atom, atom_row, cell)
        return verdicts

    def _one_lane(
        self,
        verdicts: Verdicts,
        b: IntArray,
        at: IntArray,
        counts: IntArray,
        entry: IntArray,
    ) -> None:
        """`_tabled` for buckets of at most 32 rules (every bucket, for most
        policy sets): one 64-bit word per read, clear below and sound above."""
        parts = verdicts.parts
        both = parts.whole[b]
        has = counts > 0
        if len(entry):
            starts = np.cumsum(counts) - counts
            found = np.bitwise_and.reduceat(parts.tables[entry], starts[has])
            both[has] = found
        clear = both.astype(np.uint32)
        sound = (both >> np.uint64(32)).astype(np.uint32)
        matched = clear & sound
        erring = clear ^ matched
        narrow = parts.narrow
        denies = matched & narrow[3][b]
        steps = matched & narrow[2][b]
        restricts = matched & narrow[1][b]
        allows = matched & narrow[0][b]
        deny, step, restrict = denies != 0, steps != 0, restricts != 0
        best = np.where(
            deny, 3, np.where(step, 2, np.where(restrict, 1, (allows != 0) - 1))
        )
        block = erring & parts.strict[b]
        win = np.where(
            deny, denies, np.where(step, steps, np.where(restrict, restricts, allows))
        )
        blocked = block != 0
        member = np.where(blocked, block | denies, win)
        verdicts.best[at] = best
        verdicts.blocking[at] = np.bitwise_count(block)
        verdicts.winners[at] = np.bitwise_count(win)
        verdicts.effect[at] = np.where(blocked | (best < 0), DENY, best)
        verdicts._tables.append((at, b, member[:, None]))

    def _tabled(
        self,
        verdicts: Verdicts,
        bucket: IntArray,
        tabled: IntArray,
        group: IntArray,
        count: IntArray,
        ends: IntArray,
        entry: IntArray,
        lanes: int,
    ) -> None:
        """Rows whose bucket has tables `lanes` lanes wide: each column read
        narrows the slots still clear and still sound (AND over columns);
        `entry` is each read's entry for lane 0 (its cell or interval,
        error first, `lanes` entries apiece)."""
        parts = verdicts.parts
        at = tabled[group]
        b = bucket[at]
        counts = count[group]
        reads = _ranges(ends[group] - counts, counts)
        first = entry[reads]
        found = parts.tables[first[:, None] + np.arange(lanes)]
        ranks = np.ascontiguousarray(parts.ranks[b][:, :, :lanes])  # row, rank, lane
        full = (ranks[:, 0] | ranks[:, 1] | ranks[:, 2] | ranks[:, 3]).astype(np.uint64)
        both = full | (full << np.uint64(32))
        has = _nonzero(counts > 0)
        if len(has):
            starts = (np.cumsum(counts) - counts)[has]
            both[has] = np.bitwise_and.reduceat(found, starts, axis=0)
        clear = (both & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        sound = (both >> np.uint64(32)).astype(np.uint32)
        matched = clear & sound
        erring = clear & ~sound
        best = np.full(len(at), -1, dtype=np.int64)
        for rank in range(4):
            best = np.where((matched & ranks[:, rank]).any(axis=1), rank, best)
        block = erring & (ranks[:, 1] | ranks[:, 2] | ranks[:, 3])
        blocking = np.bitwise_count(block).sum(axis=1, dtype=np.int64)
        win = matched & ranks[np.arange(len(at)), np.maximum(best, 0)]
        win[best < 0] = 0
        blocked = blocking > 0
        member = np.where(blocked[:, None], block | (matched & ranks[:, DENY]), win)
        verdicts.best[at] = best
        verdicts.blocking[at] = blocking
        verdicts.winners[at] = np.bitwise_count(win).sum(axis=1, dtype=np.int64)
        verdicts.effect[at] = np.where(blocked | (best < 0), DENY, best)
        verdicts._tables.append((at, b, member))

    def _tested(
        self,
        verdicts: Verdicts,
        bucket: IntArray,
        tested: IntArray,
        atom: IntArray,
        atom_row: IntArray,
        cell: npt.NDArray[np.int32],
    ) -> None:
        """Rows of big buckets: every (row, rule) pair, every test of it."""
        parts = verdicts.parts
        size = self.layout.size
        slots = np.zeros(size, dtype=np.int64)
        slots[tested] = parts.slot_count[bucket[tested]]
        pair_start = np.cumsum(slots) - slots
        pairs = int(slots.sum())
        pair_row = np.repeat(np.arange(size, dtype=np.int64), slots)
        pair_slot = _ranges(parts.slot_start[bucket[tested]], slots[tested])
        atom_pair = pair_start[atom_row] + parts.atom_slot[atom]
        err = cell < 0
        start = (cell - parts.atom_first[atom]).astype(np.uint32)
        hit = (start < parts.atom_width[atom]) != parts.atom_negated[atom]
        state = np.bincount(
            atom_pair, weights=(~hit & ~err) + 65536.0 * err, minlength=pairs
        )
        failing = (state % 65536) > 0
        erring = ~failing & (state >= 65536)
        matched = ~failing & (state == 0)
        rank = parts.slot_rank[pair_slot].astype(np.int64)
        block = erring & (rank > 0)
        blocking = np.bincount(pair_row, weights=block, minlength=size).astype(np.int64)
        counts = np.bincount(pair_row * 4 + rank, weights=matched, minlength=4 * size)
        counts = counts.reshape(size, 4)
        best = np.full(size, -1, dtype=np.int64)
        for effect in range(4):
            best = np.where(counts[:, effect] > 0, effect, best)
        winners = counts[np.arange(size), np.maximum(best, 0)].astype(np.int64)
        winners[best < 0] = 0
        blocked = blocking > 0
        member = np.where(
            blocked[pair_row],
            block | (matched & (rank == DENY)),
            matched & (rank == best[pair_row]),
        )
        verdicts.best[tested] = best[tested]
        verdicts.blocking[tested] = blocking[tested]
        verdicts.winners[tested] = winners[tested]
        effect_of = np.where(blocked | (best < 0), DENY, best)
        verdicts.effect[tested] = effect_of[tested]
        verdicts._pairs.append((pair_row, pair_slot, member))

    def _all_cells(self, column: IntArray, size: int) -> npt.NDArray[np.int32]:
        plan = self.plan
        count = len(plan.columns)
        cells = np.full((count, size), -1, dtype=np.int32)
        used = _nonzero(np.bincount(column, minlength=count))
        failed = []
        for c in used.tolist():
            spec = plan.columns[c]
            if isinstance(spec, CellSpec):
                cells[c] = self._spec_cells(spec)
                continue
            try:
                cells[c] = self._derived_cells(spec)
            except Unsupported as exc:
                log.debug("a test goes row by row: %s", exc)
                failed.append(c)
        self.failed_columns = failed
        return cells

    # ---- cells of one column over the evaluated rows

    def _source_cells(self, spec: CellSpec, key: str, data: Any) -> Any:
        memo = (key, id(spec))  # a spec's hash would walk all its constants
        found = self._cells.get(memo)
        if found is None:
            found = self._cells[memo] = _cells(spec, data, self.plan.schema)
        return found

    def _spec_cells(self, spec: CellSpec) -> npt.NDArray[np.int32]:
        layout = self.layout
        if spec.root == "context":
            name = f"context.{spec.name}"
        else:
            name = f"{spec.root}.attrs.{spec.name}"
        data = self.arrays.get(name)
        if data is None:
            out = np.full(layout.size, -1, dtype=np.int32)
        else:
            out = self._source_cells(spec, name, data)[layout.src]
        if spec.root == "principal" and len(layout.roots):
            # A root's attributes are those of its entry in `entities`.
            declares = self.plan.declares(spec)
            reading = declares[np.minimum(layout.root_type, len(declares) - 1)]
            if reading.any():
                entity = layout.root_entity[reading]
                out[layout.roots[reading]] = self.entities.cells(spec)[entity]
        return out

    def _derived_cells(self, spec: Derived) -> npt.NDArray[np.int32]:
        plan, layout = self.plan, self.layout
        out = np.full(layout.size, -1, dtype=np.int32)
        at = _nonzero(
            (layout.ptype == plan.type_code[spec.principal_type])
            & (layout.rtype == plan.type_code[spec.resource_type])
        )
        frame = Frame(
            len(at),
            layout.action[at],
            plan,
            spec.principal_type,
            spec.resource_type,
            self._reader(at, spec.principal_type, spec.resource_type),
            FrameFacts(self.chains, layout.chain[at]),
        )
        if spec.mode == "truth":
            value, err = frame.truth(spec.expr)
            out[at] = np.where(err, -1, value.astype(np.int32))
        else:
            _, err = frame.eval(spec.expr)
            out[at] = np.where(err, -1, 1)
        return out

    def _reader(
        self, at: IntArray, ptype: str, rtype: str
    ) -> Callable[[str, str], Column]:
        schema = self.plan.schema
        layout = self.layout
        cache: dict[tuple[str, str], Column] = {}

        def read(root: str, name: str) -> Column:
            found = cache.get((root, name))
            if found is not None:
                return found
            if root == "context":
                spec = schema.context.get(name)
                column_name = f"context.{name}"
            else:
                owner = ptype if root == "principal" else rtype
                spec = schema.entities[owner].attrs.get(name)
                column_name = f"{root}.attrs.{name}"
            if spec is None:
                raise Unsupported(f"`{root}.{name}` is not declared here")
            data = self.arrays.get(column_name)
            own = data[layout.src[at]] if data is not None else len(at)
            if root == "principal" and layout.is_root[at].any():
                roots = layout.is_root[at]
                source = self.entities.attr(name)
                mine = (
                    data[layout.src[at[~roots]]]
                    if data is not None
                    else int((~roots).sum())
                )
                theirs = source[layout.entity[at[roots]]]
                merged = _concat([mine, theirs])
                order = np.concatenate([_nonzero(~roots), _nonzero(roots)])
                own = merged[np.argsort(order, kind="stable")]
            if isinstance(own, int):
                column = Column(
                    "none", None, np.ones(own, dtype=bool), np.zeros(own, dtype=bool)
                )
            else:
                column = _typed_column(own, spec.type, schema)
            cache[(root, name)] = column
            return column

        return read


# ---- the whole batch ---------------------------------------------------------

_RULES, _CHAIN, _AGENT, _CEILING, _ORPHAN, _ONE_BY_ONE = range(6)


class _Reasons:
    """What is needed to write a row's reason codes, kept until asked."""

    def __init__(self, n: int) -> None:
        self.stage = np.full(n, _ONE_BY_ONE, dtype=np.int8)
        self.escalated = np.zeros(n, dtype=bool)
        self.blocking = np.zeros(n, dtype=np.int64)
        self.winners = np.zeros(n, dtype=np.int64)
        self.undeclared = np.zeros(n, dtype=np.int64)
        self.chains: Chains | None = None
        self.decided: dict[int, tuple[str, ...]] = {}

    def codes(self, row: int) -> tuple[str, ...]:
        stage = int(self.stage[row])
        if stage == _ONE_BY_ONE:
            return self.decided[row]
        if stage in (_CHAIN, _AGENT, _CEILING):  # denied before any rule
            ceilings = ("scope_not_declared",) * int(self.undeclared[row])
            if stage == _CHAIN:
                assert self.chains is not None
                return self.chains.codes(int(self.chains.index[row])) + ceilings
            if stage == _AGENT:
                return ("agent_without_delegation", *ceilings)
            return ceilings
        if stage == _ORPHAN:
            return ("root_not_found",)
        if self.escalated[row]:
            return ("escalation",)
        if self.blocking[row]:
            return ("error_in_rule",) * int(self.blocking[row])
        if not self.winners[row]:
            return ("no_rule",)
        return ("matched",) * int(self.winners[row])


def decide_columns(
    engine: Deciding, columns: Mapping[str, Any], min_group: int = MIN_GROUP
) -> ColumnResult:
    """Decide every row of `columns` (see the module docstring); each row
    gets the effect and rules `engine.decide` would give its request."""
    policy, evaluator = engine.snapshot()
    arrays = {name: _as_array(data) for name, data in columns.items()}
    n = len(arrays["action"])
    effects = np.full(n, DENY, dtype=np.int8)
    reasons = _Reasons(n)
    slow = np.ones(n, dtype=bool)
    entry_rows: list[Any] = []
    entry_rules: list[Any] = []
    plan = None
    if isinstance(evaluator, CompiledPolicy) and n >= min_group:
        plan = plan_for(evaluator)
        if plan.usable:
            slow, rows_, rules_ = _vectorized(
                plan, engine, policy, arrays, effects, reasons
            )
            entry_rows.append(rows_)
            entry_rules.append(rules_)
    ids = (
        plan.rule_ids if plan is not None else tuple(sorted(r.id for r in policy.rules))
    )
    rest = _nonzero(slow).tolist()
    more_rows: list[int] = []
    more_rules: list[int] = []
    if rest:
        index = (
            plan.rule_index if plan is not None else {r: i for i, r in enumerate(ids)}
        )
        extra: dict[str, int] = {}
        for row in rest:
            decision = engine.decide(request_of_row(arrays, row))
            effects[row] = ir.EFFECT_ORDER[decision.effect]
            reasons.decided[row] = decision.reason_codes
            for rule_id in decision.rule_ids:
                found = index.get(rule_id)
                if found is None:  # the engine was given another policy set
                    found = extra.setdefault(rule_id, len(ids) + len(extra))
                more_rows.append(row)
                more_rules.append(found)
        ids = ids + tuple(extra)
    reasons.stage[slow] = _ONE_BY_ONE
    entry_rows.append(np.array(more_rows, dtype=np.int64))
    entry_rules.append(np.array(more_rules, dtype=np.int64))
    offsets, rule_index = _compress(n, entry_rows, entry_rules)
    return ColumnResult(
        effects, offsets, rule_index, ids, n - len(rest), len(rest), reasons
    )


def _compress(
    n: int, rows: Sequence[IntArray], rules: Sequence[IntArray]
) -> tuple[IntArray, npt.NDArray[np.int32]]:
    """Row-sorted (row, rule) entries as offsets and rule indices; each part
    is sorted by row already, so parts only need merging."""
    all_rows = np.concatenate(rows)
    all_rules = np.concatenate(rules)
    if len(rows) > 1 and len(rows[-1]) and len(all_rows) > len(rows[-1]):
        order = np.argsort(all_rows, kind="stable")
        all_rows, all_rules = all_rows[order], all_rules[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_rows, minlength=n), out=offsets[1:])
    return offsets, all_rules.astype(np.int32)


def _vectorized(
    plan: Plan,
    engine: Any,
    policy: ir.PolicySet,
    arrays: Mapping[str, Any],
    effects: npt.NDArray[np.int8],
    reasons: _Reasons,
) -> tuple[BoolArray, IntArray, IntArray]:
    """Decide what can be decided over whole columns; returns the rows left
    for `decide` and the (row, rule) entries of the others."""
    n = len(effects)
    leeway = policy.options.get("clock_leeway", Duration(0))
    assert isinstance(leeway, Duration)
    rows = _rows(plan, arrays, n, _clock(engine))
    entities = Entities(plan, arrays, rows)
    micros = leeway.seconds * 1_000_000
    chains = Chains(plan, engine, arrays, rows, micros)
    if not _hash_ids(rows, entities, chains):  # two ids hash alike: no shortcut
        rows.slow[:] = True
    rows.slow |= (rows.ptype == rows.rtype) & (rows.pid == rows.rid)  # reads itself
    entities.check(rows)
    chains.check(rows, micros)
    undeclared = _undeclared(plan, rows, entities, chains)
    kind = plan.kind[np.minimum(rows.ptype, len(plan.types))]
    agent = ~rows.slow & (chains.index < 0) & (kind == 2)
    failed = np.zeros(n, dtype=bool)
    failed[chains.rows[chains.failed]] = True
    refused = undeclared > 0
    live = ~rows.slow & ~agent & ~failed & ~refused
    roots = _roots(plan, rows, entities, chains, live)
    live &= ~rows.slow
    own = _nonzero(live)
    layout = Layout(rows, roots, chains, own)
    evaluation = Evaluation(plan, arrays, rows, entities, chains, layout)
    verdicts = evaluation.run()
    rows.slow[evaluation.slow_rows] = True
    entry_rows, entry_rules = _cap(verdicts, layout, roots, own, effects, reasons)
    reasons.stage[refused & ~rows.slow] = _CEILING
    reasons.stage[agent] = _AGENT
    reasons.stage[failed & ~rows.slow] = _CHAIN
    reasons.undeclared = undeclared
    reasons.chains = chains
    keep = ~rows.slow[entry_rows]
    return rows.slow, entry_rows[keep], entry_rules[keep]


def _clock(engine: Any) -> int | None:
    """The engine's `now()` in microseconds since the epoch, read once: the
    time of every row that gives none. None when the engine has no clock to
    read or it is not timezone-aware (`decide` then says what that means)."""
    read = getattr(engine, "now", None)
    if not callable(read):
        return None
    moment = read()
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        return None
    micros: int = (moment - _EPOCH) // _MICRO
    return micros


def _cap(
    verdicts: Verdicts,
    layout: Layout,
    roots: Roots,
    own: IntArray,
    effects: npt.NDArray[np.int8],
    reasons: _Reasons,
) -> tuple[IntArray, IntArray]:
    """The no-escalation cap, as `decide_parsed` and `cap_pending` apply it:
    a principal's deny stands; otherwise a root that cannot be found denies;
    otherwise the stronger effect wins, listing its side's rules, and two
    restricts list both sides' rules."""
    effect = verdicts.effect
    mine = effect[layout.own_at].astype(np.int64)
    capped = layout.capped
    theirs = np.where(capped, effect[np.where(capped, layout.root_at, 0)], -1)
    denied = mine == DENY
    orphan = roots.missing[own] & ~denied
    active = capped & ~denied & ~orphan
    escalated = active & (theirs > mine)
    both = active & (theirs == mine) & (mine == RESTRICT)
    final = np.where(escalated, theirs, mine)
    final[orphan] = DENY
    effects[own] = final
    listed = np.zeros(layout.size, dtype=bool)
    listed[layout.own_at] = ~orphan & ~escalated
    listed[layout.root_at[capped]] = (escalated | both)[capped]
    evaluated, entry_rules = verdicts.listed(listed)
    entry_rows = layout.src[evaluated]
    if both.any():  # two sides listed: sorted by id, each rule once
        key = np.unique(entry_rows * (1 << 32) + entry_rules)
        entry_rows, entry_rules = key >> 32, key & ((1 << 32) - 1)
    reasons.stage[own] = np.where(orphan, _ORPHAN, _RULES)
    reasons.escalated[own] = escalated
    at = layout.own_at
    reasons.blocking[own] = verdicts.blocking[at]
    reasons.winners[own] = np.where(verdicts.best[at] >= 0, verdicts.winners[at], 0)
    return entry_rows, entry_rules


# ---- rows and columns --------------------------------------------------------


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
