from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ripl.runtime import (
    GENESIS,
    AuditError,
    AuditLog,
    AuditRecord,
    Checkpoint,
    ConfigurationError,
    Identity,
    canonical_json,
    render_record,
)

T0 = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()


def make_request(
    principal_id: str = "rb-7", index: int = 0, **extra: Any
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "principal": {
            "type": "RefundBot",
            "id": principal_id,
            "owner": {"type": "User", "id": "alice"},
        },
        "action": "payments.refund",
        "resource": {"type": "Invoice", "id": f"inv-{index}", "attrs": {"amount": 80}},
        "context": {"anomaly": 0.1, "organisation": "acme", "workflow": "wf-9"},
        "delegation": [
            {
                "from": {"type": "User", "id": "alice"},
                "to": {"type": "RefundBot", "id": principal_id},
                "scopes": ["payments.refund"],
                "expires": "2026-12-04T10:00:00Z",
                "id": "d-1",
            }
        ],
    }
    request.update(extra)
    return request


def make_decision(effect: str = "allow", rule: str = "small_refunds") -> dict[str, Any]:
    return {
        "effect": effect,
        "rules": [{"id": rule, "file": "payments.ripl", "line": 12, "col": 1}],
        "reasons": [f"matched: rule `{rule}`"],
        "obligations": {"cap": Decimal("99.95")},
        "requirements": [],
        "errors": [],
        "policy_hash": "sha256:abc",
        "evaluated_at": "2026-12-04T09:00:00Z",
    }


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.db") as log:
        yield log


def fill(log: AuditLog, count: int) -> list[AuditRecord]:
    return [
        log.append(
            make_request(index=i), make_decision(), now=T0 + timedelta(minutes=i)
        )
        for i in range(count)
    ]


def raw(log: AuditLog) -> sqlite3.Connection:
    """A second connection, as someone editing the file would have."""
    return sqlite3.connect(log.path, isolation_level=None)


# -- what a record holds --------------------------------------------------------


def test_first_record_holds_request_facts_and_chains_to_genesis(
    audit: AuditLog,
) -> None:
    request = make_request()
    record = audit.append(request, make_decision(), now=T0)

    assert record.seq == 1
    assert record.prev_hash == GENESIS
    assert record.time == "2026-12-04T09:00:00.000000Z"
    assert record.principal == Identity("RefundBot", "rb-7")
    assert record.root == Identity("User", "alice")
    assert record.organisation == "acme"
    assert record.workflow == "wf-9"
    assert record.delegation_ids == ("d-1",)
    assert record.effect == "allow"
    assert record.rules == ("small_refunds",)
    assert record.policy_hash == "sha256:abc"
    assert record.tag is None
    digest = hashlib.sha256(canonical_json(request).encode()).hexdigest()
    assert record.request_digest == f"sha256:{digest}"


def test_record_hash_covers_every_field_and_the_previous_hash(
    audit: AuditLog,
) -> None:
    first, second = fill(audit, 2)

    assert second.prev_hash == first.hash
    expected = hashlib.sha256(
        canonical_json(second.hashed_fields()).encode()
    ).hexdigest()
    assert second.hash == f"sha256:{expected}"
    assert "prev_hash" in second.hashed_fields()
    assert "hash" not in second.hashed_fields()


def test_stored_decision_reads_back_equal_with_exact_decimals(
    audit: AuditLog,
) -> None:
    audit.append(make_request(), make_decision(), now=T0)

    (stored,) = audit.query()

    assert stored.decision == make_decision()
    assert stored.decision["obligations"]["cap"] == Decimal("99.95")


def test_root_is_the_owner_without_a_chain_and_the_principal_without_either(
    audit: AuditLog,
) -> None:
    owned = make_request(delegation=[])
    alone = make_request()
    del alone["delegation"]
    del alone["principal"]["owner"]

    assert audit.append(owned, make_decision()).root == Identity("User", "alice")
    assert audit.append(alone, make_decision()).root == Identity("RefundBot", "rb-7")
    explicit = audit.append(alone, make_decision(), root={"type": "User", "id": "bo"})
    assert explicit.root == Identity("User", "bo")


@pytest.mark.parametrize(
    ("context", "organisation", "workflow"),
    [
        ({"org": "acme"}, "acme", None),
        ({"organization": {"type": "Org", "id": "acme"}}, "acme", None),
        (
            {"workflow": {"name": "refunds", "step": 2}},
            None,
            '{"name":"refunds","step":2}',
        ),
        ({}, None, None),
    ],
)
def test_organisation_and_workflow_come_from_documented_context_keys(
    audit: AuditLog,
    context: dict[str, Any],
    organisation: str | None,
    workflow: str | None,
) -> None:
    record = audit.append(make_request(context=context), make_decision())

    assert (record.organisation, record.workflow) == (organisation, workflow)


def test_decision_objects_with_to_json_or_attrs_are_accepted(audit: AuditLog) -> None:
    class WithToJson:
        def to_json(self) -> dict[str, Any]:
            return make_decision("deny", "risky")

    @attrs.frozen
    class AttrsDecision:
        effect: str
        policy_hash: str

    first = audit.append(make_request(), WithToJson())  # type: ignore[arg-type]
    second = audit.append(make_request(), AttrsDecision("restrict", "sha256:x"))  # type: ignore[arg-type]

    assert (first.effect, first.rules) == ("deny", ("risky",))
    assert (second.effect, second.policy_hash) == ("restrict", "sha256:x")


def test_request_without_json_form_is_refused_and_nothing_is_written(
    audit: AuditLog,
) -> None:
    with pytest.raises(AuditError):
        audit.append(make_request(context={"when": object()}), make_decision())
    with pytest.raises(AuditError):
        audit.append(make_request(context={"score": float("nan")}), make_decision())
    with pytest.raises(AuditError):
        audit.append(make_request(principal_id="bad\ud800"), make_decision())

    assert len(audit) == 0
    assert audit.append(make_request(), make_decision()).seq == 1


def test_log_file_is_in_wal_mode(audit: AuditLog) -> None:
    with raw(audit) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_appends_are_synchronous_so_sequence_numbers_have_no_gaps(
    tmp_path: Path,
) -> None:
    """PEER R8: there is no buffer to overflow; every append is committed."""
    with AuditLog(tmp_path / "audit.db") as log:
        fill(log, 300)
    with AuditLog(tmp_path / "audit.db") as reopened:
        seqs = [record.seq for record in reopened.records()]
        assert seqs == list(range(1, 301))
        assert reopened.verify().ok


def test_tag_marks_shadow_and_reload_records(audit: AuditLog) -> None:
    audit.append(make_request(), make_decision())
    audit.append(make_request(), make_decision("deny"), tag="shadow")
    audit.append({}, {"effect": None, "event": "reload"}, tag="reload")

    assert [r.seq for r in audit.query(tag="shadow")] == [2]
    reload = audit.query(tag="reload")[0]
    assert (reload.principal, reload.root, reload.effect) == (None, None, None)
    assert audit.verify().ok


# -- verification and tampering --------------------------------------------------


def test_untouched_log_verifies(audit: AuditLog) -> None:
    records = fill(audit, 5)

    result = audit.verify()

    assert result.ok
    assert (result.records, result.head_hash) == (5, records[-1].hash)
    assert (result.first_bad, result.problem) == (None, None)


def test_empty_log_verifies_with_genesis_head(audit: AuditLog) -> None:
    result = audit.verify()

    assert result.ok and result.records == 0 and result.head_hash == GENESIS


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("effect", "deny"),
        ("principal_id", "root"),
        ("decision", '{"effect":"allow"}'),
        ("time", "2026-01-01T00:00:00.000000Z"),
        ("rules", '["other"]'),
        ("tag", "shadow"),
    ],
)
def test_edited_record_is_named(audit: AuditLog, column: str, value: str) -> None:
    fill(audit, 5)
    with raw(audit) as conn:
        conn.execute(f"UPDATE audit_records SET {column} = ? WHERE seq = 3", (value,))

    result = audit.verify()

    assert not result.ok
    assert result.first_bad == 3
    assert result.problem == "record 3 was altered: its hash does not match it"


def test_edit_with_a_recomputed_hash_breaks_the_next_record(audit: AuditLog) -> None:
    fill(audit, 5)
    third = audit.query()[2]
    forged = attrs.evolve(third, effect="deny")
    with raw(audit) as conn:
        conn.execute(
            "UPDATE audit_records SET effect = 'deny', hash = ? WHERE seq = 3",
            (forged.computed_hash(),),
        )

    result = audit.verify()

    assert result.first_bad == 4
    assert result.problem == "record 4 does not follow the record before it"


def test_deleted_record_is_named(audit: AuditLog) -> None:
    fill(audit, 5)
    with raw(audit) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 3")

    result = audit.verify()

    assert result.first_bad == 3
    assert result.problem == "record 3 is missing"


def test_several_deleted_records_are_named_as_a_range(audit: AuditLog) -> None:
    fill(audit, 6)
    with raw(audit) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq IN (2, 3, 4)")

    assert audit.verify().problem == "records 2 to 4 are missing"


def test_deleting_the_first_record_is_named(audit: AuditLog) -> None:
    fill(audit, 3)
    with raw(audit) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 1")

    assert audit.verify().first_bad == 1


def _shift_up_from(conn: sqlite3.Connection, seq: int) -> None:
    last = conn.execute("SELECT MAX(seq) FROM audit_records").fetchone()[0]
    for current in range(last, seq - 1, -1):
        conn.execute(
            "UPDATE audit_records SET seq = ? WHERE seq = ?", (current + 1, current)
        )


def _insert_row(conn: sqlite3.Connection, record: AuditRecord) -> None:
    conn.execute(
        "INSERT INTO audit_records (seq, time, tag, decision, request_digest,"
        " principal_type, principal_id, root_type, root_id, organisation, workflow,"
        " delegation_ids, effect, rules, policy_hash, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.seq,
            record.time,
            record.tag,
            record.decision_json,
            record.request_digest,
            "RefundBot",
            "rb-7",
            "User",
            "alice",
            record.organisation,
            record.workflow,
            "[]",
            record.effect,
            "[]",
            record.policy_hash,
            record.prev_hash,
            record.hash,
        ),
    )


def test_inserted_record_is_named(audit: AuditLog) -> None:
    records = fill(audit, 5)
    fake = attrs.evolve(records[2], seq=3, effect="allow", hash="sha256:" + "1" * 64)
    with raw(audit) as conn:
        _shift_up_from(conn, 3)
        _insert_row(conn, fake)

    result = audit.verify()

    assert result.first_bad == 3
    assert result.problem == "record 3 was altered: its hash does not match it"


def test_inserted_record_with_a_valid_hash_still_breaks_the_chain_after_it(
    audit: AuditLog,
) -> None:
    """Without a checkpoint a forger who hashes well hides the insert itself,
    but not the record that used to follow: its seq and prev no longer fit."""
    records = fill(audit, 5)
    draft = attrs.evolve(
        records[2], seq=3, prev_hash=records[1].hash, delegation_ids=(), rules=()
    )
    fake = attrs.evolve(draft, hash=draft.computed_hash())
    with raw(audit) as conn:
        _shift_up_from(conn, 3)
        _insert_row(conn, fake)

    result = audit.verify()

    assert result.records == 6
    assert result.first_bad == 4


def test_appended_forgery_at_the_end_is_named(audit: AuditLog) -> None:
    records = fill(audit, 3)
    with raw(audit) as conn:
        _insert_row(conn, attrs.evolve(records[-1], seq=4, hash="sha256:" + "2" * 64))

    assert audit.verify().first_bad == 4


def test_reordered_records_are_named_at_the_first_moved_one(audit: AuditLog) -> None:
    fill(audit, 5)
    with raw(audit) as conn:
        conn.execute("UPDATE audit_records SET seq = 100 WHERE seq = 2")
        conn.execute("UPDATE audit_records SET seq = 2 WHERE seq = 4")
        conn.execute("UPDATE audit_records SET seq = 4 WHERE seq = 100")

    result = audit.verify()

    assert result.first_bad == 2
    assert result.problem == "record 2 was altered: its hash does not match it"


def test_swapped_record_contents_are_named(audit: AuditLog) -> None:
    fill(audit, 5)
    columns = (
        "time, tag, decision, request_digest, principal_type, principal_id,"
        " root_type, root_id, organisation, workflow, delegation_ids, effect,"
        " rules, policy_hash, prev_hash, hash"
    )
    with raw(audit) as conn:
        two = conn.execute(
            f"SELECT {columns} FROM audit_records WHERE seq=2"
        ).fetchone()
        three = conn.execute(
            f"SELECT {columns} FROM audit_records WHERE seq=3"
        ).fetchone()
        assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
        conn.execute(f"UPDATE audit_records SET {assignments} WHERE seq=2", three)
        conn.execute(f"UPDATE audit_records SET {assignments} WHERE seq=3", two)

    assert audit.verify().first_bad == 2


def test_unreadable_record_is_named(audit: AuditLog) -> None:
    fill(audit, 3)
    with raw(audit) as conn:
        conn.execute("UPDATE audit_records SET rules = 'not json' WHERE seq = 2")

    result = audit.verify()

    assert (result.first_bad, result.problem) == (2, "record 2 is unreadable")
    with pytest.raises(AuditError):
        audit.query()


# -- checkpoints -----------------------------------------------------------------


def test_truncation_is_invisible_to_the_chain_but_caught_by_a_checkpoint(
    audit: AuditLog,
) -> None:
    fill(audit, 5)
    checkpoint = audit.checkpoint(KEY, now=T0)
    with raw(audit) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq >= 4")
        conn.execute("DELETE FROM audit_checkpoints")

    assert audit.verify().ok
    result = audit.verify([checkpoint], KEY.public_key())
    assert result.first_bad == 4
    assert result.problem == (
        "the log ends at record 3, but a signed checkpoint covers record 5: "
        "the log was truncated"
    )


def test_stored_checkpoint_is_checked_when_a_key_is_given(audit: AuditLog) -> None:
    fill(audit, 5)
    audit.checkpoint(KEY)
    with raw(audit) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 5")

    assert audit.verify().ok
    assert audit.verify(public_key=KEY.public_key()).first_bad == 5


def test_fully_rehashed_rewrite_is_caught_by_a_checkpoint(audit: AuditLog) -> None:
    """A forger who edits record 2 and recomputes every later hash makes a
    self-consistent chain; only the signed head tells."""
    fill(audit, 5)
    checkpoint = audit.checkpoint(KEY)
    rows = audit.query()
    prev = rows[0].hash
    with raw(audit) as conn:
        for record in rows[1:]:
            effect = "deny" if record.seq == 2 else record.effect
            draft = attrs.evolve(record, effect=effect, prev_hash=prev)
            prev = draft.computed_hash()
            conn.execute(
                "UPDATE audit_records SET effect = ?, prev_hash = ?, hash = ?"
                " WHERE seq = ?",
                (effect, draft.prev_hash, prev, record.seq),
            )

    assert audit.verify().ok
    result = audit.verify([checkpoint], KEY.public_key())
    assert result.first_bad == 5
    assert result.problem == (
        "record 5 or one before it was rewritten: the chain no longer matches "
        "the signed checkpoint"
    )


def test_checkpoint_signed_by_another_key_is_refused(audit: AuditLog) -> None:
    fill(audit, 2)
    checkpoint = audit.checkpoint(Ed25519PrivateKey.generate())

    result = audit.verify([checkpoint], KEY.public_key())

    assert result.problem == "the checkpoint at record 2 is not validly signed"


def test_later_appends_do_not_invalidate_an_earlier_checkpoint(
    audit: AuditLog,
) -> None:
    fill(audit, 3)
    checkpoint = audit.checkpoint(KEY)
    fill(audit, 2)

    assert audit.verify([checkpoint], KEY.public_key()).ok


def test_checkpoint_round_trips_through_its_text_form(audit: AuditLog) -> None:
    fill(audit, 2)
    checkpoint = audit.checkpoint(KEY, now=T0)

    text = checkpoint.serialize()

    assert re.fullmatch(r"rcp1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", text)
    assert Checkpoint.parse(text) == checkpoint
    assert checkpoint.seq == 2 and checkpoint.head_hash == audit.verify().head_hash


@pytest.mark.parametrize("text", ["", "rcp1.x.y", "rcp2.e30.AA", "rcp1.e30.AA"])
def test_unreadable_checkpoint_text_is_an_audit_error(text: str) -> None:
    with pytest.raises(AuditError):
        Checkpoint.parse(text)


def test_checkpoints_without_a_key_are_a_configuration_error(
    audit: AuditLog,
) -> None:
    checkpoint = audit.checkpoint(KEY)

    with pytest.raises(ConfigurationError):
        audit.verify([checkpoint])


# -- query -------------------------------------------------------------------------


def test_query_filters_by_user_agent_effect_rule_time_and_limit(
    audit: AuditLog,
) -> None:
    audit.append(make_request("rb-1"), make_decision("allow", "a"), now=T0)
    other = make_request("rb-2")
    other["delegation"][0]["from"] = {"type": "User", "id": "bob"}
    audit.append(other, make_decision("deny", "b"), now=T0 + timedelta(hours=1))
    audit.append(
        make_request("rb-1"), make_decision("deny", "b"), now=T0 + timedelta(hours=2)
    )

    def seqs(**filters: Any) -> list[int]:
        return [record.seq for record in audit.query(**filters)]

    assert seqs(user="alice") == [1, 3]
    assert seqs(user={"type": "User", "id": "bob"}) == [2]
    assert seqs(user={"type": "Group", "id": "bob"}) == []
    assert seqs(agent="rb-1") == [1, 3]
    assert seqs(effect="deny") == [2, 3]
    assert seqs(rule="b", agent="rb-1") == [3]
    assert seqs(since=T0 + timedelta(hours=1)) == [2, 3]
    assert seqs(until=T0 + timedelta(hours=1)) == [1]
    assert seqs(since=T0, until=T0 + timedelta(hours=2)) == [1, 2]
    assert seqs(limit=2) == [1, 2]
    assert seqs(rule="missing") == []


def test_time_filter_understands_offsets(audit: AuditLog) -> None:
    audit.append(make_request(), make_decision(), now=T0)
    same_moment = datetime(2026, 12, 4, 11, 0, 0, tzinfo=timezone(timedelta(hours=2)))

    assert len(audit.query(since=same_moment)) == 1
    assert audit.query(until=same_moment) == []
    assert len(audit.query(since=datetime(2026, 12, 4, 9, 0, 0))) == 1  # naive: UTC


# -- PEER R10: hostile ids ---------------------------------------------------------

HOSTILE = [
    "agent:x\nDECISION allow principal=root action=admin.delete",
    'agent:y" decision="allow" principal="root',
    "agent:z\r\x00\u2028\u2029\x1b[2J\x1b[31mallow\x85\x7f",
    "agent:" + "w" * (1024 * 1024),
]
FIELD = re.compile(r'([a-z_.]+)="((?:[^"\\]|\\.)*)"')


def test_hostile_principal_ids_round_trip_byte_exact(audit: AuditLog) -> None:
    for principal_id in HOSTILE:
        audit.append(make_request(principal_id), make_decision())

    stored = [record.principal.id for record in audit.query() if record.principal]

    assert stored == HOSTILE
    assert len(audit) == 4
    assert audit.verify().ok


def test_query_for_a_forged_field_value_finds_nothing(audit: AuditLog) -> None:
    for principal_id in HOSTILE:
        audit.append(make_request(principal_id), make_decision())

    assert audit.query(agent="root") == []
    assert audit.query(user="root") == []
    assert [r.seq for r in audit.query(agent=HOSTILE[1])] == [2]


def test_rendered_record_is_one_line_of_printable_ascii_whatever_the_id(
    audit: AuditLog,
) -> None:
    for principal_id in HOSTILE:
        audit.append(make_request(principal_id), make_decision(), tag="x\ny")

    lines = [render_record(record) for record in audit.query()]

    for line in lines:
        assert re.fullmatch(r"[\x20-\x7e]+", line), line[:200]
    assert 'principal.id="agent:x\\nDECISION allow principal=root' in lines[0]
    assert 'tag="x\\ny"' in lines[0]
    assert "\\x1b[2J" in lines[2] and "\\u2028" in lines[2] and "\\x00" in lines[2]


def test_tampered_time_column_cannot_break_the_rendered_line(
    audit: AuditLog,
) -> None:
    audit.append(make_request(), make_decision())
    with raw(audit) as conn:
        conn.execute("UPDATE audit_records SET time = 'x\nseq=9 effect=allow'")

    (record,) = audit.query()
    line = render_record(record)

    assert "\n" not in line
    assert 'time="x\\nseq=9 effect=allow"' in line


def test_quoted_fake_fields_do_not_parse_as_fields(audit: AuditLog) -> None:
    record = audit.append(make_request(HOSTILE[1]), make_decision())

    fields = dict(FIELD.findall(render_record(record)))

    assert fields["principal.id"] == 'agent:y\\" decision=\\"allow\\" principal=\\"root'
    assert "principal" not in fields and "decision" not in fields
    assert fields["effect"] == "allow"


def test_very_long_ids_render_truncated_with_a_marker_but_are_stored_whole(
    audit: AuditLog,
) -> None:
    record = audit.append(make_request(HOSTILE[3]), make_decision())

    line = render_record(record, max_field=64)

    assert (
        f'principal.id="agent:{"w" * 58}"[truncated {1024 * 1024 + 6 - 64} more chars]'
        in line
    )
    assert len(line) < 2000
    assert record.principal is not None and len(record.principal.id) == 1024 * 1024 + 6
    assert record.computed_hash() == record.hash


# -- concurrency and crashes --------------------------------------------------------


def _assert_complete(log: AuditLog, expected_ids: set[str]) -> None:
    records = list(log.records())
    assert [record.seq for record in records] == list(range(1, len(expected_ids) + 1))
    assert {r.principal.id for r in records if r.principal} == expected_ids
    assert log.verify().ok


@pytest.mark.parametrize("shared", [True, False], ids=["one-instance", "own-instance"])
def test_eight_threads_appending_at_once_lose_nothing(
    tmp_path: Path, shared: bool
) -> None:
    path = tmp_path / "audit.db"
    common = AuditLog(path)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        log = common if shared else AuditLog(path)
        try:
            start.wait()
            for index in range(40):
                log.append(make_request(f"t{worker}-{index}"), make_decision())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            if not shared:
                log.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    _assert_complete(common, {f"t{w}-{i}" for w in range(8) for i in range(40)})
    common.close()


def _append_in_process(path: str, name: str, count: int) -> None:
    with AuditLog(path) as log:
        for index in range(count):
            log.append(make_request(f"{name}-{index}"), make_decision())


def test_two_processes_appending_at_once_lose_nothing_and_do_not_fork(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_in_process, args=(str(path), name, 150))
        for name in ("p1", "p2")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert [worker.exitcode for worker in workers] == [0, 0]
    with AuditLog(path) as log:
        _assert_complete(log, {f"p{p}-{i}" for p in (1, 2) for i in range(150)})


def _die_inside_an_append(path: str) -> None:
    """Insert the row, then die before the commit, as a crash would."""
    log = AuditLog(path)
    insert = log._insert

    def insert_then_die(record: AuditRecord) -> None:
        insert(record)
        os._exit(3)

    log._insert = insert_then_die  # type: ignore[method-assign]
    log.append(make_request("doomed"), make_decision())


def test_crash_mid_append_leaves_a_verifiable_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 3)
    crasher = multiprocessing.get_context("spawn").Process(
        target=_die_inside_an_append, args=(str(path),)
    )
    crasher.start()
    crasher.join()

    assert crasher.exitcode == 3
    with AuditLog(path) as log:
        result = log.verify()
        assert (result.ok, result.records) == (True, 3)
        assert log.query(agent="doomed") == []
        assert log.append(make_request(), make_decision()).seq == 4
        assert log.verify().ok
