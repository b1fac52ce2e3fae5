"""Caches: compiled policy sets by content hash, and decisions by what they read.

A cached decision must never differ from a fresh one. The decision cache
therefore keys on everything the decision procedure can read for a request:
the dispatch triple, the principal, resource and root references, the values
of every attribute the rules of the request's bucket (and of the root's
bucket) can read, the delegation chain link by link, and the outcome of the
owner walk. The key is the bucket's static read set, a superset of what one
evaluation happens to read, so it is sound whatever short-circuits. Time is
handled by validity windows: a chain's checks change only at its links'
`expires` and `not_before`, so an entry holds for the window of `now` it was
computed in. Buckets that read what a key cannot hold (owners' attributes,
other entities, whole records) are not cached.

Invalidation: an engine keeps its decision cache in the same state tuple as
its policy set, so `replace` installs an empty cache with the new policy in
one assignment; `revoke` clears it, and an evaluation that started before a
clear cannot store its (possibly stale) result afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import attrs
from cachetools import LRUCache

from ripl.compile import Bucket, CompiledPolicy
from ripl.decision import Verdict
from ripl.delegation import NO_CHAIN, find_root, owner_types
from ripl.memo import CacheStats, CompiledSetCache
from ripl.request import Entity, Link, Parsed

__all__ = ["CacheStats", "CompiledSetCache", "DecisionCache", "decision_key"]

_ABSENT = ("absent",)


@attrs.frozen
class Window:
    """The span of `now` over which a chain's checks give the same answers."""

    start: datetime | None  # inclusive; None is the distant past
    end: datetime | None  # exclusive; None is the distant future

    def holds(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (
            self.end is None or now < self.end
        )


def chain_window(
    chain: tuple[Link, ...] | None, now: datetime, leeway: timedelta
) -> Window:
    """Every time check of `check_chain` is `now >= t` or `now < t` for a
    threshold t of some link; between two thresholds nothing changes."""
    if not chain:
        return Window(None, None)
    start: datetime | None = None
    end: datetime | None = None
    for link in chain:
        points = [link.expires + leeway]
        if link.not_before is not None:
            points.append(link.not_before - leeway)
        for point in points:
            if point <= now:
                start = point if start is None or point > start else start
            else:
                end = point if end is None or point < end else end
    return Window(start, end)


def _value_key(value: object) -> Hashable:
    """A value with its type, so `True`, `1` and `Decimal(1)` never share a key."""
    if isinstance(value, frozenset):
        return (frozenset, frozenset(_value_key(v) for v in value))
    return (type(value), value)


def _attrs_key(entity: Entity, names: frozenset[str]) -> tuple[Hashable, ...]:
    attrs_ = entity.attrs
    return tuple(
        _value_key(attrs_[name]) if name in attrs_ else _ABSENT
        for name in sorted(names)
    )


def _context_key(context: Any, names: frozenset[str]) -> tuple[Hashable, ...]:
    return tuple(
        _value_key(context[name]) if name in context else _ABSENT
        for name in sorted(names)
    )


def _link_key(link: Link) -> Hashable:
    return (
        link.index,
        link.id,
        link.source,
        link.target,
        link.scopes,
        link.expires,
        link.not_before,
        link.purpose,
        tuple(sorted((name, _value_key(v)) for name, v in link.limits.items())),
    )


def _resolved_resource(principal: Entity, resource: Entity) -> Entity:
    """The entity `resource.x` reads: the principal when the references agree."""
    if resource.type == principal.type and resource.id == principal.id:
        return principal
    return resource


def _bucket_key(
    bucket: Bucket, principal: Entity, request: Parsed
) -> tuple[Hashable, ...] | None:
    reads = bucket.reads
    if reads.opaque:
        return None
    resource = _resolved_resource(principal, request.resource)
    return (
        _attrs_key(principal, reads.principal),
        _attrs_key(resource, reads.resource),
        _context_key(request.context, reads.context),
    )


def decision_key(
    request: Parsed, compiled: CompiledPolicy
) -> tuple[Hashable, ...] | None:
    """Everything `decide_parsed` can read for this request, or None when a
    bucket reads something no key can hold."""
    principal = request.principal
    own = compiled.bucket((request.action, principal.type, request.resource.type))
    own_key = _bucket_key(own, principal, request)
    if own_key is None:
        return None
    chain = request.chain
    root_part: Hashable = None
    if chain:
        root: Entity | None = request.entities.get(chain[0].source)
        if root is None:
            root = Entity(chain[0].source.type, chain[0].source.id, {}, None)
        missing = None
    else:
        root, missing = find_root(request, compiled.policy.schema, NO_CHAIN)
    if root is not None:
        as_root = compiled.bucket((request.action, root.type, request.resource.type))
        root_key = _bucket_key(as_root, root, request)
        if root_key is None:
            return None
        root_part = (root.type, root.id, root_key)
    schema = compiled.policy.schema
    # Declared scopes are checked along the owners too (`beyond_declared`).
    owners = owner_types(request, schema) if schema.ceilings and not chain else ()
    return (
        request.action,
        principal.type,
        principal.id,
        request.resource.type,
        request.resource.id,
        own_key,
        None if chain is None else tuple(_link_key(link) for link in chain),
        request.link_errors,
        root_part,
        missing,
        owners,
    )


DecideFn = Callable[[Parsed], Verdict]


class DecisionCache:
    """A bounded LRU of verdicts, with hit counters. One per engine state."""

    def __init__(
        self, compiled: CompiledPolicy, maxsize: int, leeway: timedelta = timedelta(0)
    ) -> None:
        self.compiled = compiled
        self.leeway = leeway
        self._cache: LRUCache[Hashable, tuple[Verdict, Window]] = LRUCache(
            maxsize=maxsize
        )
        self._lock = threading.Lock()
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0

    def clear(self) -> None:
        """Drop every entry; evaluations in flight will not store theirs."""
        with self._lock:
            self._cache.clear()
            self._epoch += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self.hits,
                self.misses,
                self.uncacheable,
                len(self._cache),
                int(self._cache.maxsize),
            )

    def decide(self, request: Parsed, fresh: DecideFn) -> Verdict:
        """The cached verdict for this request, or `fresh(request)`, stored."""
        epoch = self._epoch
        try:
            key = decision_key(request, self.compiled)
            if key is not None:
                hash(key)
        except TypeError:  # an unhashable value: decide without the cache
            key = None
        if key is None:
            with self._lock:
                self.uncacheable += 1
            return fresh(request)
        with self._lock:
            found = self._cache.get(key)
            if found is not None and found[1].holds(request.now):
                self.hits += 1
                return found[0]
            self.misses += 1
        verdict = fresh(request)
        window = chain_window(request.chain, request.now, self.leeway)
        with self._lock:
            if self._epoch == epoch:
                self._cache[key] = (verdict, window)
        return verdict
