"""Findings → SARIF 2.1.0, the format code-scanning services ingest.

One run, one `reportingDescriptor` per finding code (so a service can show
the rule's help), one result per finding. Suppressed findings are kept with
an `inSource` suppression carrying the reason. Files that could not be read
or checked become `toolExecutionNotifications` and make the invocation
unsuccessful, so an upload never reads "no problems" for a check that did
not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ripl.analyze.findings import KINDS, Finding, json_ready
from ripl.errors import Diagnostic
from ripl.source import Span

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def _region(span: Span) -> dict[str, int]:
    return {
        "startLine": span.line,
        "startColumn": span.column,
        "endLine": span.end_line,
        "endColumn": max(span.end_column, 1),
    }


def _location(span: Span, message: str | None = None) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": _uri(span.file)},
            "region": _region(span),
        }
    }
    if message:
        location["message"] = {"text": message}
    return location


def _uri(file: str) -> str:
    return file.replace("\\", "/")


def rule_descriptors() -> list[dict[str, Any]]:
    return [
        {
            "id": kind.code,
            "name": "".join(p.capitalize() for p in kind.code.split("-")),
            "shortDescription": {"text": kind.title},
            "fullDescription": {"text": kind.help},
            "help": {"text": kind.help},
            "defaultConfiguration": {"level": LEVELS[kind.severity]},
            "properties": {"tags": ["policy", "authorization"]},
        }
        for kind in KINDS.values()
    ]


def _result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": index[finding.code],
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message},
        "locations": [_location(finding.rule.span)],
        "partialFingerprints": {"riplFinding/v1": finding.fingerprint},
        "properties": {
            "exact": finding.exact,
            "rules": [r.id for r in finding.rules],
        },
    }
    related = [
        {"id": i, **_location(r.span, f"rule `{r.id}`")}
        for i, r in enumerate(finding.rules[1:], 1)
    ]
    if related:
        result["relatedLocations"] = related
    if finding.witness is not None:
        result["properties"]["witness"] = json_ready(finding.witness)
    if finding.suppressed is not None:
        result["suppressions"] = [
            {"kind": "inSource", "justification": finding.suppressed}
        ]
    return result


def _notification(diagnostic: Diagnostic) -> dict[str, Any]:
    return {
        "level": "error" if diagnostic.severity == "error" else "warning",
        "message": {"text": diagnostic.message},
        "descriptor": {"id": diagnostic.code},
        "locations": [_location(diagnostic.span)],
    }


def report_sarif(
    findings: Sequence[Finding],
    *,
    errors: Sequence[Diagnostic] = (),
    version: str = "0.1.0",
) -> dict[str, Any]:
    """The SARIF log. `errors` are input problems (unreadable files, parse
    or check errors); with any of them the invocation did not succeed."""
    descriptors = rule_descriptors()
    index = {d["id"]: i for i, d in enumerate(descriptors)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ripl",
                        "version": version,
                        "rules": descriptors,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not errors,
                        "toolExecutionNotifications": [
                            _notification(d) for d in errors
                        ],
                    }
                ],
                "results": [_result(f, index) for f in findings],
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
