"""Input columns as a batch reads them: `Ragged` (arrow's `list<struct>`
layout) and `Coded` (dictionary-encoded) columns, text columns as `Text`
(values or codes, where missing, where not a string), names looked up as
codes by `Vocabulary`, ids as 64-bit hashes, timestamps as microseconds
since the epoch. Readers never raise on a bad value: they mark it, and the
rows holding it go one by one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ripl.request import BadRequest, parse_time

MAX_ID_LENGTH = 4096
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


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
