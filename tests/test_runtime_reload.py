from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ripl
from ripl.runtime import AuditLog, ConfigurationError, ReloadingEngine

SCHEMA = """\
module schema

entity Ops: human { team: string }
entity Database { env: string }

actions db { drop, read }
"""

P1 = """\
module ops

import schema

allow ops_drop:
    principal is Ops
    action db.drop
    resource is Database
"""

P2 = """\
module ops

import schema

allow ops_read:
    principal is Ops
    action db.read
    resource is Database

deny nobody_drops:
    action db.drop
"""

# Parses, but reads an attribute the schema does not declare.
P3 = """\
module ops

import schema

allow ops_drop_prod:
    principal is Ops
    action db.drop
    when resource.region == "eu"
"""

REQUEST = {
    "principal": {"type": "Ops", "id": "agent:ops", "attrs": {"team": "sre"}},
    "action": "db.drop",
    "resource": {"type": "Database", "id": "main", "attrs": {"env": "prod"}},
    "now": "2026-12-04T09:00:00Z",
}


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def hash_of(*texts: str) -> str:
    return ripl.load_policy(text=texts[0], name="x").policy_hash


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "schema.ripl").write_text(SCHEMA, encoding="utf-8")
    (policies / "ops.ripl").write_text(P1, encoding="utf-8")
    return policies


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.db")


def make(*paths: Path, **options: Any) -> ReloadingEngine:
    """Most tests write files and reload at once: no settle wait."""
    options.setdefault("settle", 0.0)
    return ReloadingEngine(*paths, **options)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reload_installs_a_new_set(folder: Path, audit: AuditLog) -> None:
    engine = make(folder, audit=audit)
    first = engine.policy_hash
    assert engine.decide(REQUEST).effect == "allow"
    write_atomically(folder / "ops.ripl", P2)
    status = engine.reload()
    assert (status.ok, status.changed, status.previous_hash) == (True, True, first)
    decision = engine.decide(REQUEST)
    assert (decision.effect, decision.rule_ids) == ("deny", ("nobody_drops",))
    assert decision.policy_hash == status.policy_hash != first
    records = audit.query(tag="reload")
    assert [r.policy_hash for r in records] == [first, status.policy_hash]
    assert records[-1].decision["reasons"] == [
        f"reload_ok: installed {status.policy_hash}"
    ]


def test_an_unchanged_reload_is_ok_but_not_a_change(folder: Path) -> None:
    engine = make(folder)
    status = engine.reload()
    assert (status.ok, status.changed) == (True, False)


def test_a_half_written_file_fails_the_reload_and_the_old_set_serves(
    folder: Path, audit: AuditLog
) -> None:
    engine = make(folder, audit=audit)
    first = engine.policy_hash
    cut = P2.index("principal is Ops") + 5  # inside a rule
    with open(folder / "ops.ripl", "w", encoding="utf-8") as handle:
        handle.write(P2[:cut])
        handle.flush()
        status = engine.reload()
        handle.write(P2[cut:])
    assert not status.ok
    assert status.policy_hash == first
    assert status.error is not None and "ops.ripl:" in status.error
    assert engine.decide(REQUEST).effect == "allow"
    (failure,) = [r for r in audit.query(tag="reload") if "failed" in r.decision_json]
    assert failure.policy_hash == first
    assert failure.decision["reasons"][0].startswith("reload_failed: ")
    assert failure.decision["reasons"][0].endswith(f"; {first} retained")
    assert engine.reload(force=True).ok
    assert engine.decide(REQUEST).effect == "deny"


def test_a_half_written_file_that_parses_is_caught_while_it_settles(
    folder: Path,
) -> None:
    """The first half of P2 is a valid policy on its own (one allow rule,
    the deny rule missing); the writer finishes while the reload settles."""
    half = P2[: P2.index("deny nobody_drops")]
    assert ripl.load_policy(text=SCHEMA + half.replace("import schema", ""))
    path = folder / "ops.ripl"
    pending: list[Any] = []
    slept: list[float] = []

    def writer_finishes(seconds: float) -> None:
        slept.append(seconds)
        for handle in pending:
            handle.write(P2[len(half) :])
            handle.close()
        pending.clear()

    engine = make(folder, settle=0.5, sleep=writer_finishes)
    first = engine.policy_hash
    slept.clear()
    handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - the slow writer
    handle.write(half)
    handle.flush()
    pending.append(handle)
    status = engine.reload()
    assert slept == [0.5]
    assert not status.ok
    assert status.error == (
        "a policy file changed while it was being read; retrying later"
    )
    assert engine.policy_hash == first
    assert engine.decide(REQUEST).rule_ids == ("ops_drop",)
    status = engine.reload(force=True)
    assert status.ok
    assert engine.decide(REQUEST).rule_ids == ("nobody_drops",)


def test_a_set_that_does_not_type_check_is_rejected(folder: Path) -> None:
    engine = make(folder)
    first = engine.policy_hash
    write_atomically(folder / "ops.ripl", P3)
    status = engine.reload()
    assert not status.ok and status.policy_hash == first
    assert status.error is not None and "ops.ripl:" in status.error
    assert "region" in status.error
    assert engine.decide(REQUEST).rule_ids == ("ops_drop",)


def test_an_unreadable_file_is_a_failure_not_an_empty_policy(folder: Path) -> None:
    engine = make(folder)
    (folder / "ops.ripl").unlink()
    (folder / "ops.ripl").mkdir()
    status = engine.reload()
    assert not status.ok
    assert engine.decide(REQUEST).effect == "allow"


def test_pinning_a_hash_and_watching_is_refused(folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="contradict"):
        make(folder, pinned_hash="sha256:abc", watch=True)


def test_a_pinned_engine_refuses_any_other_set_and_says_so(folder: Path) -> None:
    pinned = make(folder).policy_hash
    engine = make(folder, pinned_hash=pinned)
    write_atomically(folder / "ops.ripl", P2)
    status = engine.reload()
    assert not status.ok
    assert status.error is not None and f"not the pinned {pinned}" in status.error
    assert engine.policy_hash == pinned


def test_a_first_load_that_fails_is_an_error_by_default(folder: Path) -> None:
    write_atomically(folder / "ops.ripl", "allow broken")
    with pytest.raises(ConfigurationError, match="policy not loaded"):
        make(folder)


def test_an_engine_started_without_a_policy_denies_everything(folder: Path) -> None:
    write_atomically(folder / "ops.ripl", P3)
    engine = make(folder, require_loaded=False)
    decision = engine.decide(REQUEST)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("policy_not_loaded",)
    write_atomically(folder / "ops.ripl", P1)
    assert engine.reload().ok
    assert engine.decide(REQUEST).effect == "allow"


def test_a_failing_reload_is_retried_at_most_once_per_interval(folder: Path) -> None:
    clock = FakeClock()
    engine = make(folder, min_retry_interval=30.0, monotonic=clock)
    assert engine.reads == 1
    write_atomically(folder / "ops.ripl", "allow broken")
    assert not engine.reload().ok
    for _ in range(50):
        status = engine.reload()
        assert not status.ok and not status.attempted
    assert engine.reads == 2
    clock.now += 30.0
    assert engine.reload().attempted
    assert engine.reads == 3
    write_atomically(folder / "ops.ripl", P2)  # a change is tried at once
    assert engine.reload().ok
    assert engine.reads == 4
    assert engine.counts == {"ok": 2, "unchanged": 0, "failed": 2, "skipped": 50}


def test_poll_waits_until_the_files_stop_changing(folder: Path) -> None:
    engine = make(folder)
    assert engine.poll() is None
    write_atomically(folder / "ops.ripl", P2)
    assert engine.poll() is None  # first sight of the change
    status = engine.poll()
    assert status is not None and status.ok and status.changed
    assert engine.poll() is None


def test_the_watcher_thread_installs_a_change(folder: Path) -> None:
    with make(folder, watch=True, poll_interval=0.01) as engine:
        first = engine.policy_hash
        write_atomically(folder / "ops.ripl", P2)
        for _ in range(2000):
            if engine.policy_hash != first:
                break
            time.sleep(0.005)
        assert engine.decide(REQUEST).rule_ids == ("nobody_drops",)


def test_eight_threads_never_see_a_mixed_decision(
    folder: Path, audit: AuditLog
) -> None:
    engine = make(folder, audit=audit)
    expected: dict[str, tuple[str, tuple[str, ...]]] = {
        engine.policy_hash: ("allow", ("ops_drop",))
    }
    seen: list[tuple[str, str, tuple[str, ...]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Barrier(9)
    lock = threading.Lock()

    def decide_forever() -> None:
        mine: list[tuple[str, str, tuple[str, ...]]] = []
        try:
            started.wait()
            while not stop.is_set() or len(mine) < 50:
                decision = engine.decide(REQUEST)
                mine.append((decision.policy_hash, decision.effect, decision.rule_ids))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=decide_forever) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    for round_ in range(20):
        text = P2 if round_ % 2 == 0 else P1
        write_atomically(folder / "ops.ripl", text + f"# round {round_}\n")
        status = engine.reload(force=True)
        assert status.ok, status.error
        effect = "deny" if text is P2 else "allow"
        rules = ("nobody_drops",) if text is P2 else ("ops_drop",)
        expected[status.policy_hash] = (effect, rules)
        after = engine.decide(REQUEST)
        assert (after.policy_hash, after.effect) == (status.policy_hash, effect)
    stop.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(seen) >= 8 * 50
    for policy_hash, effect, rules in seen:
        assert expected[policy_hash] == (effect, rules)
    assert len(audit.query(tag="reload")) == 21
    assert audit.verify().ok


def test_replace_installs_a_checked_set_from_text(folder: Path) -> None:
    engine = make(folder)
    policy = ripl.load_policy(text=SCHEMA.replace("module schema", "module other"))
    status: Any = engine.replace(policy)
    assert status.ok and engine.policy_hash == policy.policy_hash


# ---- found by an outside review ------------------------------------------------


def test_a_change_to_an_imported_module_is_seen_when_a_file_is_given(
    folder: Path,
) -> None:
    """Given `ops.ripl` alone, its import `schema` lives beside it: polling
    must notice a change there too, and a reload must install it."""
    engine = make(folder / "ops.ripl")
    assert engine.poll() is None
    widened = SCHEMA.replace(
        "actions db { drop, read }", "actions db { drop, read, list }"
    )
    write_atomically(folder / "schema.ripl", widened)
    assert engine.poll() is None  # first sight of the change
    status = engine.poll()
    assert status is not None and status.ok and status.changed
    assert "db.list" in engine.policy.schema.actions


def test_a_file_written_in_place_beside_a_given_file_is_caught_while_it_settles(
    folder: Path,
) -> None:
    engine = make(folder / "ops.ripl", settle=0.3)
    first = engine.policy_hash
    half = SCHEMA[: SCHEMA.index("actions")]  # parses: the actions are cut off
    (folder / "schema.ripl").write_text(half, encoding="utf-8")
    status = engine.reload()
    assert not status.ok
    assert engine.policy_hash == first


def test_the_reload_after_a_torn_read_is_not_skipped(folder: Path) -> None:
    engine = make(folder, settle=0.3, min_retry_interval=60.0)
    first = engine.policy_hash
    half_written = threading.Event()

    def slow_writer() -> None:
        with open(folder / "ops.ripl", "w", encoding="utf-8") as handle:
            handle.write(P2[: P2.index("deny")])  # parses; the deny is missing
            handle.flush()
            half_written.set()
            time.sleep(0.1)  # inside the reload's settle wait
            handle.write(P2[P2.index("deny") :])

    writer = threading.Thread(target=slow_writer)
    writer.start()
    half_written.wait()
    torn = engine.reload()
    writer.join()
    assert not torn.ok and engine.policy_hash == first
    status = engine.reload()  # the writer is done: this one must be tried
    assert status.attempted and status.ok and status.changed
    assert engine.decide(REQUEST).rule_ids == ("nobody_drops",)
