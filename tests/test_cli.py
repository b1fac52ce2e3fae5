"""The `ripl` command: exit codes 0 / 1 / 2, malformed request files reported
at their line and column, and never a traceback. Run in-process through
click's CliRunner and, for the real entry point, as `python -m ripl`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ripl.cli import main

ROOT = Path(__file__).resolve().parent.parent
REFUNDS = ROOT / "examples" / "refunds"
SMALL_REFUND = REFUNDS / "requests" / "small-refund.json"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ripl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def request_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "request.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def small_refund() -> dict[str, object]:
    data = json.loads(SMALL_REFUND.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# ---- exit 0 ----


CLEAN = "entity U: human {}\naction docs.read\nallow readers:\n    principal is U\n"


def test_check_clean_policy_exits_0(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text(CLEAN, encoding="utf-8")
    result = run("check", str(tmp_path))
    assert result.exit_code == 0
    assert result.stdout == "ok: 1 rules; no findings\n"


def test_check_json_reports_no_errors() -> None:
    result = run("check", str(REFUNDS), "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["errors"] == []
    assert data["summary"]["error"] == 0


def test_check_findings_exit_0_unless_the_fail_level_says_otherwise() -> None:
    """The refunds example is clean of warnings; its deny rules overriding its
    allows are info findings."""
    assert run("check", str(REFUNDS)).exit_code == 0
    assert run("check", str(REFUNDS), "--fail-on", "warning").exit_code == 0
    assert run("check", str(REFUNDS), "--fail-on", "info").exit_code == 1


def test_eval_exits_0_whatever_the_effect() -> None:
    allowed = run("eval", str(REFUNDS), "--request", str(SMALL_REFUND))
    assert allowed.exit_code == 0
    assert allowed.stdout.startswith("effect: allow\n")
    denied = run("eval", str(REFUNDS), "-r", str(REFUNDS / "requests" / "fraud.json"))
    assert denied.exit_code == 0
    assert denied.stdout.startswith("effect: deny\n")


def test_eval_json_follows_the_decision_contract() -> None:
    result = run("eval", str(REFUNDS), "-r", str(SMALL_REFUND), "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["effect"] == "allow"
    assert [r["id"] for r in data["rules"]] == ["bot_small_refunds"]
    assert data["policy_hash"].startswith("sha256:")


def test_eval_reads_the_request_from_stdin() -> None:
    result = CliRunner().invoke(
        main, ["eval", str(REFUNDS), "-r", "-"], input=SMALL_REFUND.read_text()
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("effect: allow\n")


@pytest.mark.parametrize("example", ["refunds", "assistant", "mcp-filesystem"])
def test_inline_tests_of_an_example_pass_with_exit_0(example: str) -> None:
    result = run("test", str(ROOT / "examples" / example))
    assert result.exit_code == 0
    assert result.stdout.endswith(" passed, 0 failed\n")


# ---- exit 1 ----


def test_failing_inline_test_exits_1_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text(
        "entity U: human {}\naction docs.read\n"
        "allow readers:\n    principal is U\n"
        'test "expects the wrong thing":\n'
        '    request {"principal": {"type": "U", "id": "u"}, "action": "docs.read",'
        ' "resource": {"type": "U", "id": "u"}, "now": "2026-12-04T09:00:00Z"}\n'
        "    expect deny\n",
        encoding="utf-8",
    )
    result = run("test", str(tmp_path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith(" expects the wrong thing")
    assert lines[0].startswith("FAIL ")
    assert lines[1].strip() == "expected deny, got allow from rule `readers`"
    assert lines[-1] == "0 passed, 1 failed"


# ---- exit 2: malformed policies ----


def test_policy_that_does_not_type_check_exits_2_with_a_caret(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text(
        "entity Invoice { amount: decmial }\n", encoding="utf-8"
    )
    result = run("check", str(tmp_path / "p.ripl"))
    assert result.exit_code == 2
    assert "p.ripl:1:26: error[unknown-type]: unknown type `decmial`" in result.stderr
    assert "  |                          ^^^^^^^" in result.stderr
    assert "= hint: did you mean `decimal`?" in result.stderr


def test_check_json_lists_diagnostics_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text('allow r:\n    when 1 < "a"\n', encoding="utf-8")
    result = run("check", str(tmp_path), "--format", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [(d["line"], d["col"]) for d in data["errors"]] == [(2, 10)]


def test_empty_policy_folder_exits_2(tmp_path: Path) -> None:
    result = run("check", str(tmp_path))
    assert result.exit_code == 2
    assert "no policy files found" in result.stderr


# ---- exit 2: malformed requests ----


def test_truncated_json_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    text = SMALL_REFUND.read_text(encoding="utf-8")
    cut = text.index('"payments.refund"') + 6
    result = run("eval", str(REFUNDS), "-r", request_file(tmp_path, text[:cut]))
    assert result.exit_code == 2
    head = result.stderr.splitlines()[0]
    assert head.endswith(
        ":13:13: error[request]: invalid JSON: unterminated string starting at"
    )


def test_json_that_ends_too_early_points_at_the_end(tmp_path: Path) -> None:
    result = run("eval", str(REFUNDS), "-r", request_file(tmp_path, '{\n  "a": 1,\n'))
    assert result.exit_code == 2
    assert ":3:1: error[request]: invalid JSON:" in result.stderr


def test_json_array_is_not_a_request(tmp_path: Path) -> None:
    result = run("eval", str(REFUNDS), "-r", request_file(tmp_path, "[1, 2]\n"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].endswith(
        ":1:1: error[request]: a request must be a JSON object"
    )


def test_missing_principal_is_exit_2(tmp_path: Path) -> None:
    data = small_refund()
    del data["principal"]
    path = request_file(tmp_path, json.dumps(data, indent=2))
    result = run("eval", str(REFUNDS), "-r", path)
    assert result.exit_code == 2
    assert "error[request]: missing `principal`" in result.stderr


def test_unknown_action_points_at_the_action_with_a_hint(tmp_path: Path) -> None:
    data = small_refund()
    data["action"] = "payments.refnd"
    path = request_file(tmp_path, json.dumps(data, indent=2))
    result = run("eval", str(REFUNDS), "-r", path)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].endswith(":13:13: error[request]: unknown action `payments.refnd`")
    assert lines[-1] == "   = hint: did you mean `payments.refund`?"


def test_unknown_principal_type_points_into_the_file(tmp_path: Path) -> None:
    data = small_refund()
    data["principal"] = {"type": "RefundBott", "id": "rb-7"}
    path = request_file(tmp_path, json.dumps(data, indent=2))
    result = run("eval", str(REFUNDS), "-r", path)
    assert result.exit_code == 2
    assert "error[request]: unknown entity type `RefundBott`" in result.stderr


def test_missing_request_file_is_exit_2(tmp_path: Path) -> None:
    result = run("eval", str(REFUNDS), "-r", str(tmp_path / "absent.json"))
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_non_utf8_request_file_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_bytes(b'{"action": "caf\xe9"}')
    result = run("eval", str(REFUNDS), "-r", str(path))
    assert result.exit_code == 2


# ---- exit 2: wrong arguments, never a traceback ----

WRONG_ARGUMENTS = [
    pytest.param(["frobnicate"], id="unknown command"),
    pytest.param(["check"], id="check without paths"),
    pytest.param(["eval", str(REFUNDS)], id="eval without --request"),
    pytest.param(
        ["eval", str(REFUNDS), "-r", str(SMALL_REFUND), "--format", "xml"],
        id="unknown format",
    ),
    pytest.param(["check", "--fail-on", "sometimes", str(REFUNDS)], id="bad option"),
    pytest.param(["check", "/definitely/not/here"], id="missing policy path"),
    pytest.param(["test", str(SMALL_REFUND)], id="a json file as a policy"),
]


@pytest.mark.parametrize("args", WRONG_ARGUMENTS)
def test_wrong_arguments_exit_2_without_traceback(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# ---- the real process ----


def test_python_m_ripl_check_exits_0() -> None:
    proc = run_process("check", "examples/refunds")
    assert proc.returncode == 0
    assert "Traceback" not in proc.stdout + proc.stderr


def test_python_m_ripl_test_exits_1_on_a_failing_test(tmp_path: Path) -> None:
    (tmp_path / "p.ripl").write_text(
        "entity U: human {}\naction docs.read\n"
        'test "nothing allows it":\n'
        '    request {"principal": {"type": "U", "id": "u"}, "action": "docs.read",'
        ' "resource": {"type": "U", "id": "u"}}\n'
        "    expect allow\n",
        encoding="utf-8",
    )
    proc = run_process("test", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "0 passed, 1 failed"


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["eval", "examples/refunds", "-r", "examples/refunds/schema.ripl"],
        ["check", "tests/cases/errors/deep_nesting.ripl"],
        ["check", "tests/cases/errors/non_utf8.ripl"],
    ],
    ids=["bad flag", "policy as request", "deep nesting", "non-utf8 policy"],
)
def test_python_m_ripl_bad_input_exits_2_without_traceback(args: list[str]) -> None:
    proc = run_process(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip()
