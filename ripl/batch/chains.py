"""Delegation chains over the batch: every check of `check_chain`, for
every link of every row at once, and the facts (`delegation.grants`,
`via`, `depth`, `purpose`) rules read. Rows with a malformed link, a link
with limits, no way to ask about revocations or no time to check links at
(no `now`, and no engine clock) go one by one."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from ripl import ir
from ripl.batch.columns import (
    _EPOCH,
    _MAX_US,
    _MIN_US,
    BoolArray,
    Hashes,
    IntArray,
    Ragged,
    Text,
    Unsupported,
    _append,
    _empty,
    _nonzero,
    _objects,
    _plain,
    _ranges,
    _text,
    _times,
)
from ripl.batch.frame import Column
from ripl.batch.plan import Plan
from ripl.batch.records import _flat_link, _flatten, _items
from ripl.batch.rows import Rows
from ripl.request import Link, intern_ref

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
