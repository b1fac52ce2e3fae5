from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ripl.cli import main
from ripl.runtime import AuditLog

HOSTILE = [
    "agent:x\nDECISION allow principal=root action=admin.delete",
    'agent:y" decision="allow" principal="root',
    "agent:z\r\x00\u2028\x1b[31mred",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for index, principal in enumerate(HOSTILE):
            log.append(
                {
                    "principal": {"type": "Bot", "id": principal},
                    "action": "tool.call",
                    "delegation": [
                        {"id": f"d-{index}", "from": {"type": "User", "id": "alice"}}
                    ],
                },
                {
                    "effect": "deny" if index == 1 else "allow",
                    "rules": [{"id": f"rule_{index}"}],
                    "policy_hash": "sha256:p",
                },
                tag="guard",
            )
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_verify_ok(db: Path) -> None:
    code, out, _ = run("audit", "verify", str(db))
    assert code == 0
    assert out.startswith("ok: 3 records, head sha256:")


def test_verify_names_the_first_tampered_record(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_records SET effect = 'allow' WHERE seq = 2")
    code, _, err = run("audit", "verify", str(db))
    assert code == 1
    assert err.splitlines() == [
        f"error: audit log `{db}` fails verification at record 2",
        "  - record 2 was altered: its hash does not match it",
    ]


@pytest.mark.parametrize("content", [None, b"not a database at all", b""])
def test_verify_of_an_unreadable_file_exits_2(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "x.db"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run("audit", "verify", str(path))
    assert code == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_show_prints_each_record_on_one_escaped_line(db: Path) -> None:
    code, out, _ = run("audit", "show", str(db))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(line.isascii() and line.isprintable() for line in lines)
    assert 'principal.id="agent:x\\nDECISION allow' in lines[0]
    assert 'principal.id="agent:y\\" decision=\\"allow\\"' in lines[1]
    assert "\\x00" in lines[2] and "\\u2028" in lines[2] and "\\x1b" in lines[2]


def test_show_json_round_trips_the_ids(db: Path) -> None:
    code, out, _ = run("audit", "show", str(db), "--format", "json")
    assert code == 0
    lines = out.splitlines()
    assert [json.loads(line)["principal"]["id"] for line in lines] == HOSTILE


def test_show_filters(db: Path) -> None:
    _, out, _ = run("audit", "show", str(db), "--effect", "deny", "--format", "json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2]
    _, out, _ = run("audit", "show", str(db), "--rule", "rule_2", "--format", "json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3]
    _, out, _ = run("audit", "show", str(db), "--user", "alice")
    assert len(out.splitlines()) == 3
    _, out, _ = run("audit", "show", str(db), "--agent", "root")
    assert out == ""
    _, out, _ = run("audit", "show", str(db), "--until", "2000-01-01T00:00:00Z")
    assert out == ""
    _, out, _ = run("audit", "show", str(db), "--since", "2000-01-01T00:00:00Z")
    assert len(out.splitlines()) == 3


def test_show_rejects_a_bad_time(db: Path) -> None:
    code, _, err = run("audit", "show", str(db), "--since", "yesterday")
    assert code == 2
    assert "`--since` is not an RFC 3339 time" in err


def test_show_does_not_turn_another_sqlite_file_into_a_log(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = run("audit", "show", str(path))
    assert code == 2
    assert "is not a ripl audit log" in err
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("t",)]
