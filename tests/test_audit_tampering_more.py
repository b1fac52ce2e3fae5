"""Tampering that goes around the hash chain: schema objects added to the
file, a log cut short, columns edited into values that cannot be hashed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
)

from ripl.cli import main
from ripl.runtime import AuditLog
from ripl.runtime.errors import AuditError


def _request(who: str) -> dict[str, object]:
    return {
        "principal": {"type": "User", "id": who},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d"},
    }


DECISION = {"effect": "deny", "rules": [], "policy_hash": "sha256:x"}


def _log(tmp_path: Path, n: int) -> tuple[Path, AuditLog]:
    path = tmp_path / "audit.db"
    log = AuditLog(path)
    for i in range(n):
        log.append(_request(f"u{i}"), DECISION)
    return path, log


def test_a_trigger_that_swallows_inserts_makes_append_fail_and_verify_flag_it(
    tmp_path: Path,
) -> None:
    path, log = _log(tmp_path, 1)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER hide BEFORE INSERT ON audit_records "
            "WHEN NEW.principal_id = 'mallory' BEGIN SELECT RAISE(IGNORE); END"
        )
    log = AuditLog(path)
    with pytest.raises(AuditError, match="was not stored as written"):
        log.append(_request("mallory"), DECISION)
    result = log.verify()
    assert not result.ok
    assert "trigger `hide`" in result.problems[0][1]
    out = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert out.exit_code == 1


def test_a_log_cut_short_fails_verify_with_the_public_key(tmp_path: Path) -> None:
    path, log = _log(tmp_path, 5)
    key = Ed25519PrivateKey.generate()
    log.checkpoint(key)
    log.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq >= 4")
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    out = CliRunner().invoke(
        main, ["audit", "verify", str(path), "--public-key", str(pem)]
    )
    assert out.exit_code == 1
    assert "truncated" in out.output


@pytest.mark.parametrize("column", ["time", "principal_id", "effect"])
def test_a_column_edited_into_bytes_is_tampering_not_a_crash(
    tmp_path: Path, column: str
) -> None:
    path, log = _log(tmp_path, 3)
    log.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE audit_records SET {column} = X'0a41' WHERE seq = 2")
    runner = CliRunner()
    verify = runner.invoke(main, ["audit", "verify", str(path)])
    assert verify.exit_code == 1
    assert "record 2" in verify.output
    show = runner.invoke(main, ["audit", "show", str(path)])
    assert show.exit_code in (1, 2)
    assert "internal error" not in show.output
