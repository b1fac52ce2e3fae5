"""Bounded, counted stores shared by the compiler (compiled policy sets by
content hash) and the decision cache, so either can report its hit rate."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

import attrs
from cachetools import LRUCache

T = TypeVar("T")


@attrs.frozen
class CacheStats:
    hits: int
    misses: int
    uncacheable: int
    size: int
    maxsize: int

    @property
    def hit_rate(self) -> float:
        asked = self.hits + self.misses
        return self.hits / asked if asked else 0.0


class CompiledSetCache(Generic[T]):
    """A bounded, thread-safe map from a policy set's content hash to what
    was compiled from it."""

    def __init__(self, maxsize: int = 64) -> None:
        self._cache: LRUCache[str, T] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> T | None:
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, key: str, value: T) -> None:
        with self._lock:
            self._cache[key] = value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self.hits, self.misses, 0, len(self._cache), int(self._cache.maxsize)
            )
