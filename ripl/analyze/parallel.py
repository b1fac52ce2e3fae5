"""Running the analysis of a large policy set in chunks, on several cores.

Input: an analysis that can run any one of its chunks on its own (a chunk
is a fixed list of rules, decided by the policy set alone, never by the
number of cores). Output: the chunks' results, in chunk order.

Each chunk starts from the same state wherever it runs: fresh solvers, the
solver cache as it was when the run began, and the shared, read-only
encoding of every rule. So a chunk's findings are the same in a worker
process and in this one, and merging them in chunk order gives the same
report on one core as on many. Workers are forked after the encoding is
built, each with its own copy of it and of the z3 context; where forking
is not available, or other threads are running (forking them is unsafe),
the chunks run here one after another.
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

log = logging.getLogger(__name__)

CHUNK_RULES = 1000
"""A policy set up to this many rules is one chunk, analyzed in source
order exactly as without chunks; a larger one is cut into chunks of about
half as many (enough of them to keep every core busy to the end)."""

WORKERS_ENV = "RIPL_ANALYZE_WORKERS"
"""Environment variable capping the worker processes (1: never fork)."""


@attrs.frozen
class ChunkResult:
    findings: tuple[Any, ...]
    answers: tuple[tuple[tuple[str, ...], Any], ...]
    """Solver cache entries the chunk added, in the order it added them."""
    hits: int
    misses: int
    checks: int
    unconfirmed: int
    point_misses: int
    rules: int


class Chunked(Protocol):
    @property
    def chunks(self) -> Sequence[Sequence[str]]: ...

    def run_chunk(self, index: int, *, report: bool) -> ChunkResult: ...


def plan_chunks(
    ids: Sequence[str], group: Callable[[str], str], size: int | None = None
) -> list[list[str]]:
    """Rule ids in chunks: one in source order when there are at most `size`
    (default `CHUNK_RULES`), else sorted by `group` (rules that share a
    group share overlapping rules and engines) and cut into equal runs of
    about `size / 2`."""
    size = CHUNK_RULES if size is None else size
    if len(ids) <= size:
        return [list(ids)]
    position = {rule_id: i for i, rule_id in enumerate(ids)}
    ordered = sorted(ids, key=lambda rule_id: (group(rule_id), position[rule_id]))
    count = math.ceil(2 * len(ordered) / size)
    bounds = [round(i * len(ordered) / count) for i in range(count + 1)]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(count)]


def worker_count(requested: int | None, chunks: int) -> int:
    """How many processes to use: the request (or the environment's cap,
    or the cores this process may use), never more than the chunks, and
    one when forking is unavailable or unsafe, or this process is itself a
    daemonic worker."""
    if chunks <= 1:
        return 1
    if requested is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        requested = int(env) if env.isdigit() else _cores()
    if requested <= 1:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if threading.active_count() > 1:
        log.debug("other threads are running: analyzing in one process")
        return 1
    if multiprocessing.current_process().daemon:
        return 1  # a daemonic worker may not start processes of its own
    return min(requested, chunks)


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


_CURRENT: Chunked | None = None
"""The analysis the forked workers run chunks of (inherited at fork)."""


def _start_worker() -> None:
    # What the fork inherited is read-only from here on: keep the collector
    # from scanning it (and from touching, so copying, its pages).
    gc.freeze()


def _run_forked(index: int) -> ChunkResult:
    assert _CURRENT is not None
    return _CURRENT.run_chunk(index, report=False)


def run_chunks(
    analysis: Chunked,
    workers: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ChunkResult], int]:
    """Every chunk's result, in chunk order, and how many processes ran
    them."""
    total = sum(len(c) for c in analysis.chunks)
    count = worker_count(workers, len(analysis.chunks))
    if count > 1:
        try:
            return _run_parallel(analysis, count, total, progress), count
        except OSError as exc:  # no processes to be had: fall back
            log.warning("analyzing in one process: %s", exc)
    indices = range(len(analysis.chunks))
    return [analysis.run_chunk(i, report=True) for i in indices], 1


def _run_parallel(
    analysis: Chunked,
    count: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> list[ChunkResult]:
    global _CURRENT
    log.debug("analyzing %d chunks in %d processes", len(analysis.chunks), count)
    _CURRENT = analysis
    try:
        context = multiprocessing.get_context("fork")
        results: list[ChunkResult] = []
        done = 0
        with context.Pool(count, initializer=_start_worker) as pool:
            for result in pool.imap(_run_forked, range(len(analysis.chunks))):
                results.append(result)
                done += result.rules
                if progress is not None:
                    progress(done, total)
        return results
    finally:
        _CURRENT = None
