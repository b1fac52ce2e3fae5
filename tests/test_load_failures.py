"""PEER-BUGS R13: a policy set that fails to load is never "no policy"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ripl

BASE = """
entity Agent: agent owner Human {}
entity Human: human {}
entity Path { path: string }
actions fs { write }
# No principal clause: the agent's root human needs the same grant, since an
# agent never gets more than its root.
allow base_tmp:
    action fs.write
    when resource.path matches "/tmp/**"
"""
GUARD = """
deny guard_secrets:
    principal is Agent
    action fs.write
    when resource.path matches "/tmp/secrets/**"
"""


def _write(path: str) -> dict[str, object]:
    return {
        "principal": {
            "type": "Agent",
            "id": "a",
            "owner": {"type": "Human", "id": "h"},
        },
        "action": "fs.write",
        "resource": {"type": "Path", "id": path, "attrs": {"path": path}},
        "delegation": [
            {
                "id": "h-grant",
                "from": {"type": "Human", "id": "h"},
                "to": {"type": "Agent", "id": "a"},
                "scopes": ["fs"],
                "expires": "2030-01-01T00:00:00Z",
            }
        ],
        "now": "2026-12-04T09:00:00Z",
    }


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "base.ripl").write_text(BASE, encoding="utf-8")
    (tmp_path / "guard.ripl").write_text(GUARD, encoding="utf-8")
    return tmp_path


def test_valid_set_denies_secrets_and_allows_tmp(policy_dir: Path) -> None:
    engine = ripl.load(policy_dir)
    assert engine.decide(_write("/tmp/secrets/k")).effect == "deny"
    assert engine.decide(_write("/tmp/x")).effect == "allow"


def test_a_broken_file_makes_load_fail_and_load_or_deny_deny_everything(
    policy_dir: Path,
) -> None:
    (policy_dir / "guard.ripl").write_text(
        GUARD.replace("deny guard", "dny guard"), encoding="utf-8"
    )
    with pytest.raises(ripl.ParseError) as caught:
        ripl.load(policy_dir)
    assert "guard.ripl" in str(caught.value)
    engine = ripl.load_or_deny(policy_dir)
    for path in ("/tmp/x", "/tmp/secrets/k"):
        decision = engine.decide(_write(path))
        assert decision.effect == "deny"
        assert decision.reason_codes == ("policy_not_loaded",)
        assert "guard.ripl" in decision.reasons[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_an_unreadable_file_is_a_load_failure(policy_dir: Path) -> None:
    (policy_dir / "guard.ripl").chmod(0)
    engine = ripl.load_or_deny(policy_dir)
    assert engine.decide(_write("/tmp/x")).reason_codes == ("policy_not_loaded",)


def test_a_dangling_link_is_a_load_failure(policy_dir: Path) -> None:
    (policy_dir / "guard.ripl").unlink()
    (policy_dir / "guard.ripl").symlink_to(policy_dir / "missing.ripl")
    engine = ripl.load_or_deny(policy_dir)
    decision = engine.decide(_write("/tmp/x"))
    assert decision.effect == "deny"
    assert decision.reason_codes == ("policy_not_loaded",)


def test_an_empty_folder_is_a_load_failure(tmp_path: Path) -> None:
    with pytest.raises(ripl.CheckError, match="no policy files found"):
        ripl.load(tmp_path)
    assert ripl.load_or_deny(tmp_path).decide(_write("/tmp/x")).effect == "deny"


def test_a_policy_with_no_rules_denies_by_default() -> None:
    schema_only = BASE[: BASE.index("# No principal clause")]
    decision = ripl.load(schema_only).decide(_write("/tmp/x"))
    assert decision.effect == "deny"
    assert decision.reason_codes == ("no_rule",)


def test_replacing_a_failed_engine_serves_the_new_policy(policy_dir: Path) -> None:
    engine = ripl.load_or_deny(policy_dir / "nope")
    assert engine.decide(_write("/tmp/x")).reason_codes == ("policy_not_loaded",)
    engine.replace(ripl.load_policy(policy_dir))
    assert engine.decide(_write("/tmp/x")).effect == "allow"


def test_a_policy_path_that_cannot_be_read_is_a_load_failure(policy_dir: Path) -> None:
    """Works as root too: a folder where a policy file should be."""
    (policy_dir / "guard.ripl").unlink()
    (policy_dir / "guard.ripl").mkdir()
    with pytest.raises(ripl.CheckError, match="expected a file, found a folder"):
        ripl.load(policy_dir)
    decision = ripl.load_or_deny(policy_dir).decide(_write("/tmp/x"))
    assert decision.reason_codes == ("policy_not_loaded",)
