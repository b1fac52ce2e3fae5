"""Every example policy set checks clean and passes its own inline tests, and
between them the examples show every effect and every deny reason."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ripl
from ripl.cli import main
from ripl.engine import Mode
from ripl.request import load_json
from ripl.testing import load_test_request, run_tests

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# `examples/findings` plants one analyzer finding of each kind on purpose;
# tests/test_analyze_examples.py holds it to those. Every other folder is a
# policy set meant to check clean and pass its own tests.
PLANTED = {"findings"}
EXAMPLE_DIRS = sorted(
    p for p in EXAMPLES.iterdir() if any(p.glob("*.ripl")) and p.name not in PLANTED
)


@functools.cache
def _engine(folder: Path, mode: Mode = "compiled") -> ripl.Engine:
    return ripl.load(folder, mode=mode)


def _inline_tests() -> list[object]:
    cases = []
    for folder in EXAMPLE_DIRS:
        for test in _engine(folder).policy.tests:
            cases.append(
                pytest.param(folder, test.name, id=f"{folder.name}: {test.name}")
            )
    return cases


def test_the_three_examples_are_present() -> None:
    assert {p.name for p in EXAMPLE_DIRS} >= {"refunds", "assistant", "mcp-filesystem"}


@pytest.mark.parametrize("mode", ["reference", "compiled"])
@pytest.mark.parametrize(("folder", "name"), _inline_tests())
def test_inline_test_passes(folder: Path, name: str, mode: Mode) -> None:
    engine = _engine(folder, mode)
    results = [r for r in run_tests(engine) if r.test.name == name]
    assert len(results) == 1
    assert results[0].problems == ()


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_ripl_check_passes(folder: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(folder), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["summary"]["error"] == 0


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_every_request_file_is_used_by_an_inline_test(folder: Path) -> None:
    used = {
        Path(t.request_file).resolve()
        for t in _engine(folder).policy.tests
        if t.request_file is not None
    }
    files = {p.resolve() for p in (folder / "requests").glob("*.json")}
    assert files - used == set()


def _all_decisions() -> list[ripl.Decision]:
    decisions = []
    for folder in EXAMPLE_DIRS:
        engine = _engine(folder)
        for test in engine.policy.tests:
            decisions.append(engine.decide(load_test_request(test)))
        for file in sorted((folder / "requests").glob("*.json")):
            decisions.append(engine.decide(load_json(file.read_text("utf-8"))))
    return decisions


def test_examples_produce_all_four_effects() -> None:
    effects = {d.effect for d in _all_decisions()}
    assert effects == {"allow", "restrict", "step_up", "deny"}


@pytest.mark.parametrize(
    "code",
    [
        "no_rule",
        "scope_not_delegated",
        "scope_not_declared",
        "expired_link",
        "escalation",
        "error_in_rule",
        "agent_without_delegation",
    ],
)
def test_examples_produce_deny_reason(code: str) -> None:
    denials = [d for d in _all_decisions() if d.effect == "deny"]
    assert any(code in d.reason_codes for d in denials)


@pytest.mark.parametrize(
    "folder", ["assistant", "mcp-filesystem"], ids=lambda name: name
)
def test_new_examples_cover_every_effect_on_their_own(folder: str) -> None:
    engine = _engine(EXAMPLES / folder)
    effects = {engine.decide(load_test_request(t)).effect for t in engine.policy.tests}
    assert effects == {"allow", "restrict", "step_up", "deny"}


def _mcp_read(path: str) -> dict[str, object]:
    data = load_json((EXAMPLES / "mcp-filesystem/requests/read-head.json").read_text())
    data["resource"]["attrs"]["path"] = path
    return data


@pytest.mark.parametrize(
    ("path", "effect"),
    [
        ("/workspace/src/ledger.py", "allow"),
        ("/workspace", "allow"),  # `**` also matches no segment at all
        ("/workspace-old/src/ledger.py", "deny"),  # never a string prefix
        ("/workspacesrc", "deny"),
        ("/etc/passwd", "deny"),
        ("/workspace/secrets", "deny"),
        ("/workspace/secrets/prod/db.key", "deny"),
        ("/workspace/src/../../etc/passwd", "deny"),
    ],
)
def test_mcp_workspace_pattern_is_anchored_and_segment_wise(
    path: str, effect: str
) -> None:
    engine = _engine(EXAMPLES / "mcp-filesystem")
    assert engine.decide(_mcp_read(path)).effect == effect


def test_mcp_deep_parent_segment_is_refused() -> None:
    engine = _engine(EXAMPLES / "mcp-filesystem")
    decision = engine.decide(_mcp_read("/workspace/a/b/c/../../../../etc/passwd"))
    assert decision.effect == "deny"
