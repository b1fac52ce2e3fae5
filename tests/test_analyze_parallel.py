"""A large policy set is analyzed in chunks, possibly in several processes:
the findings are the same however many processes run them, and the run
falls back to one process when forking is not possible or not safe."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

import ripl
from ripl.analyze import Analysis, Finding, SolverCache, parallel
from ripl.analyze.parallel import plan_chunks, worker_count

HEADER = """
import std.sensitivity
entity User: human { age: int, team: string }
entity Bot: agent owner User { model: string }
entity Doc { level: sensitivity, size: int }
actions docs { read, write, share, list }
context { anomaly: decimal }
"""

LABELS = ["public", "internal", "confidential", "restricted"]
needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(),
    reason="worker processes are forked",
)


def policy_text(count: int) -> str:
    """Rules of every effect over overlapping ranges, some on agents, some
    reading the delegation (so not all of them are boxes)."""
    rules = []
    actions = ["read", "write", "share", "list"]
    for i in range(count):
        effect = ["allow", "allow", "deny", "allow"][i % 4]
        who = "Bot" if i % 3 == 0 else "User"
        action = actions[i % 4] if i % 5 else "docs"
        parts = [f"resource.size <= {(i * 7) % 40}"]
        if who == "User":
            parts.append(f"principal.age > {i % 30}")
        if i % 6 == 0:
            parts.append(f"resource.level <= {LABELS[i % 4]}")
        if i % 11 == 0 and who == "Bot":
            parts.append("delegation.grants(docs.read)")
        target = f"docs.{action}" if action != "docs" else "docs"
        rules.append(
            f"{effect} r{i:03}: principal is {who} action {target} resource is Doc "
            f"when {' and '.join(parts)}"
        )
    return HEADER + "\n".join(rules)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "CHUNK_RULES", 12)


@needs_fork
def test_findings_are_the_same_in_one_process_and_in_two(
    small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked: list[int] = []
    run_parallel = parallel._run_parallel

    def spy(analysis: Any, count: int, *args: Any) -> Any:
        forked.append(count)
        return run_parallel(analysis, count, *args)

    monkeypatch.setattr(parallel, "_run_parallel", spy)
    policy = ripl.load_policy(text=policy_text(60), name="many.ripl")
    one = Analysis(policy, workers=1)
    two = Analysis(policy, workers=2)
    assert len(one.chunks) == 10
    first, second = one.run(), two.run()
    assert forked == [2]
    assert first == second
    assert first  # the set is built to have findings
    assert (one.checks, one.unconfirmed) == (two.checks, two.unconfirmed)
    assert one.unconfirmed == 0


def test_a_shared_cache_is_filled_by_every_chunk(small_chunks: None) -> None:
    """A warm cache skips solver calls, so a witness the solver builds may
    differ; the findings themselves do not."""
    policy = ripl.load_policy(text=policy_text(40), name="many.ripl")
    cache = SolverCache()
    first = Analysis(policy, cache=cache, workers=2).run()
    stored, misses = len(cache.answers), cache.misses
    assert stored > 0
    again = Analysis(policy, cache=cache, workers=2).run()
    assert [summary(f) for f in again] == [summary(f) for f in first]
    assert (len(cache.answers), cache.misses) == (stored, misses)


def summary(finding: Finding) -> tuple[object, ...]:
    rules = tuple(r.id for r in finding.rules)
    witnessed = finding.witness is not None
    return finding.code, rules, finding.message, finding.decision, witnessed


def test_progress_reaches_the_total_in_both_modes(small_chunks: None) -> None:
    policy = ripl.load_policy(text=policy_text(30), name="many.ripl")
    for workers in (1, 2):
        seen: list[int] = []

        def record(done: int, total: int, seen: list[int] = seen) -> None:
            assert total == 30
            seen.append(done)

        Analysis(policy, workers=workers, progress=record).run()
        assert seen[-1] == 30
        assert seen == sorted(seen)


def test_a_small_policy_set_is_one_chunk_in_source_order() -> None:
    ids = [f"r{i}" for i in range(5)]
    assert plan_chunks(ids, lambda r: "z" if r == "r0" else "a") == [ids]


def test_chunks_group_rules_and_cover_each_rule_once() -> None:
    ids = [f"r{i}" for i in range(10)]
    chunks = plan_chunks(ids, lambda r: str(int(r[1:]) % 2), size=8)
    assert [len(c) for c in chunks] == [3, 4, 3]
    assert sorted(r for c in chunks for r in c) == sorted(ids)
    assert chunks[0] == ["r0", "r2", "r4"]


def test_one_process_when_asked_for_one_or_there_is_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert worker_count(1, 8) == 1
    assert worker_count(4, 1) == 1
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert worker_count(None, 8) == 1


def test_one_process_while_other_threads_run() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert worker_count(2, 8) == 1
    finally:
        release.set()
        thread.join()


def test_one_process_when_forking_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, small_chunks: None
) -> None:
    monkeypatch.setattr(parallel.multiprocessing, "get_all_start_methods", list)
    assert worker_count(2, 8) == 1
    policy = ripl.load_policy(text=policy_text(30), name="many.ripl")
    assert Analysis(policy, workers=2).run() == Analysis(policy, workers=1).run()


def _count_in_daemon(queue: Any) -> None:
    queue.put(worker_count(2, 8))


@needs_fork
def test_one_process_inside_a_daemonic_worker() -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_count_in_daemon, args=(queue,), daemon=True)
    process.start()
    assert queue.get(timeout=30) == 1
    process.join(timeout=30)
