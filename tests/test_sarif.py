"""SARIF 2.1.0 output: the shape code-scanning services require, rule
metadata, suppressions, and a log that is still written (with a
tool-execution notification) when an input could not be read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ripl
from ripl.analyze import analyze, report_sarif
from ripl.errors import Diagnostic
from ripl.source import Span

LEVELS = {"none", "note", "warning", "error"}


def validate(log: Mapping[str, Any]) -> None:
    """The parts of the SARIF 2.1.0 schema that uploads depend on."""
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and log["runs"]
    for run in log["runs"]:
        driver = run["tool"]["driver"]
        assert isinstance(driver["name"], str) and driver["name"]
        ids = [rule["id"] for rule in driver.get("rules", [])]
        assert len(ids) == len(set(ids))
        for rule in driver.get("rules", []):
            assert rule["shortDescription"]["text"]
            assert rule["defaultConfiguration"]["level"] in LEVELS
        for invocation in run.get("invocations", []):
            assert isinstance(invocation["executionSuccessful"], bool)
            for note in invocation.get("toolExecutionNotifications", []):
                assert note["message"]["text"]
                assert note["level"] in LEVELS
        for result in run["results"]:
            assert result["message"]["text"]
            assert result["level"] in LEVELS
            assert ids[result["ruleIndex"]] == result["ruleId"]
            for location in result["locations"] + result.get("relatedLocations", []):
                physical = location["physicalLocation"]
                assert physical["artifactLocation"]["uri"]
                region = physical["region"]
                assert region["startLine"] >= 1 and region["startColumn"] >= 1
                assert region["endLine"] >= region["startLine"]
            for suppression in result.get("suppressions", []):
                assert suppression["kind"] in {"inSource", "external"}


POLICY = """
entity User: human { age: int }
entity Photo { public: bool }
actions photos { view }
@suppress("shadowed", "kept for audit clarity")
allow a: principal is User action photos.view when principal.age > 40
deny d: principal is User action photos.view when principal.age > 30
allow b: principal is User action photos.view when 1 == 2
"""


def test_findings_become_results_with_rule_metadata() -> None:
    policy = ripl.load_policy(text=POLICY, name="p.ripl")
    log = report_sarif(analyze(policy))
    validate(log)
    run = log["runs"][0]
    results = {r["ruleId"]: r for r in run["results"]}
    assert results["unsatisfiable"]["level"] == "error"
    assert results["shadowed"]["suppressions"] == [
        {"kind": "inSource", "justification": "kept for audit clarity"}
    ]
    assert results["shadowed"]["relatedLocations"][0]["message"]["text"] == ("rule `d`")
    assert run["invocations"][0]["executionSuccessful"] is True


def test_an_unreadable_input_is_a_tool_execution_notification() -> None:
    span = Span("policies/guard.ripl", 0, 0, 1, 1, 1, 1)
    error = Diagnostic("io", "cannot read policy file: permission denied", span)
    log = report_sarif([], errors=[error])
    validate(log)
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    note = invocation["toolExecutionNotifications"][0]
    assert "permission denied" in note["message"]["text"]
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "policies/guard.ripl"
    )
    assert log["runs"][0]["results"] == []
