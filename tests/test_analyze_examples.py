"""examples/findings plants one instance of every finding kind; the analyzer
must report exactly those, and its JSON and SARIF must match the goldens in
tests/cases/analyze/ (regenerate with RIPL_REGEN_GOLDEN=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ripl
from ripl.analyze import KINDS, analyze
from ripl.analyze.report import check_output

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "cases" / "analyze"

PLANTED = {
    ("conflict", "users_view"),
    ("shadowed", "teen_share"),
    ("redundant", "album_view_adults"),
    ("unsatisfiable", "never"),
    ("always-true", "no_archive"),
    ("escalation", "bot_share"),
    ("beyond-scope", "bot_albums"),
    ("beyond-scope", "printer_albums"),
    ("blanket-grant", "bot_everything"),
    ("unguarded-optional", "locked"),
}


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_every_planted_finding_and_nothing_else_is_reported() -> None:
    policy = ripl.load_policy(Path("examples/findings"))
    found = {(f.code, f.rule.id) for f in analyze(policy)}
    assert found == PLANTED


def test_the_example_plants_every_finding_kind_about_rules() -> None:
    about_suppressions = {"bad-suppression", "unused-suppression"}
    assert {code for code, _ in PLANTED} == set(KINDS) - about_suppressions


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_machine_output_matches_the_golden_file(fmt: str) -> None:
    """Run as `ripl check` in a fresh process: z3 picks models by the order
    terms were created in, so an analysis after other tests in the same
    process may find another (equally confirmed) witness."""
    out = subprocess.run(
        [sys.executable, "-m", "ripl", "check", "examples/findings", "--format", fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        check=False,
    )
    assert out.returncode == 1, out.stderr
    golden = GOLDEN / f"findings.{fmt}"
    if os.environ.get("RIPL_REGEN_GOLDEN"):
        golden.write_text(out.stdout)
    assert json.loads(out.stdout) == json.loads(golden.read_text())


def test_text_output_points_at_both_rules_of_a_conflict() -> None:
    out = check_output([Path("examples/findings")], fmt="text")
    block = out.stdout.split("\n\n")[0]
    assert block.splitlines()[0].startswith(
        "examples/findings/photos.ripl:21:1: info[conflict]: rules `users_view`"
    )
    assert "^^^" in block
    assert (
        "= note: `risky_view` (deny) is here (examples/findings/photos.ripl:28:1)"
        in block
    )
    assert "= witness: {" in block
