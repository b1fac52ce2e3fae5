"""`ripl check` with the analyzer, and `ripl diff`: formats, --fail-on, exit
codes 0/1/2, and PEER case R3 (a check that read nothing never passes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ripl.cli import main

CONFLICT = """
entity User: human { age: int }
entity Doc { public: bool }
actions docs { read }
allow readers: principal is User action docs.read when principal.age > 10
deny old: principal is User action docs.read when principal.age > 60
"""
CLEAN = """
entity User: human { age: int }
entity Doc { public: bool }
actions docs { read }
allow readers: principal is User action docs.read when principal.age > 10
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "p.ripl").write_text(CONFLICT)
    return tmp_path


def test_a_readable_file_with_a_conflict_exits_1_with_one_conflict(
    folder: Path,
) -> None:
    code, out = invoke("check", str(folder), "--format", "json", "--fail-on", "info")
    assert code == 1
    assert [f["code"] for f in json.loads(out)["findings"]] == ["conflict"]


def test_findings_below_the_fail_level_exit_0(folder: Path) -> None:
    code, out = invoke("check", str(folder))
    assert code == 0
    assert "1 finding (1 info)" in out
    assert "--show-info lists them" in out
    code, out = invoke("check", str(folder), "--show-info")
    assert code == 0
    assert "info[conflict]" in out


def test_a_clean_policy_exits_0(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text(CLEAN)
    code, out = invoke("check", str(tmp_path), "--fail-on", "info")
    assert code == 0
    assert "no findings" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_exits_2(folder: Path) -> None:
    (folder / "p.ripl").chmod(0)
    code, out = invoke("check", str(folder))
    assert code == 2
    assert "p.ripl" in out


def test_a_dangling_symlink_exits_2_and_sarif_is_still_written(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").symlink_to(tmp_path / "missing.ripl")
    code, out = invoke("check", str(tmp_path), "--format", "sarif")
    assert code == 2
    log = json.loads(out)
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "p.ripl" in json.dumps(invocation["toolExecutionNotifications"])


def test_an_empty_folder_exits_2(tmp_path: Path) -> None:
    code, out = invoke("check", str(tmp_path), "--format", "sarif")
    assert code == 2
    assert "no policy files found" in out


def test_a_partial_check_is_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "good.ripl").write_text(CLEAN)
    (tmp_path / "bad.ripl").symlink_to(tmp_path / "gone.ripl")
    code, out = invoke("check", str(tmp_path), "--format", "json")
    assert code == 2
    assert json.loads(out)["errors"]


def test_diff_exits_1_when_a_version_is_more_permissive(tmp_path: Path) -> None:
    old, new = tmp_path / "old.ripl", tmp_path / "new.ripl"
    old.write_text(CLEAN)
    new.write_text(CLEAN.replace("principal.age > 10", "principal.age > 5"))
    code, out = invoke("diff", str(old), str(new), "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert [c["change"] for c in report["more_permissive"]] == ["deny → allow"]
    code, _ = invoke("diff", str(new), str(old))
    assert code == 0


def test_a_policy_path_that_cannot_be_read_as_a_file_exits_2(tmp_path: Path) -> None:
    """Works as root too, where a file without permissions is still readable."""
    (tmp_path / "good.ripl").write_text(CLEAN)
    (tmp_path / "odd.ripl").mkdir()
    code, out = invoke("check", str(tmp_path), "--format", "sarif")
    assert code == 2
    notes = json.loads(out)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("odd.ripl" in json.dumps(n) for n in notes)
