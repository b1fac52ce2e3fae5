"""What the analyzer reports: findings with stable codes, and how they become
`Diagnostic`s and JSON.

The codes, their severities and the JSON shape are a contract (see
docs/analyzer.md): CI configurations and SARIF baselines key on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from ripl.errors import Diagnostic
from ripl.source import Span

SCHEMA_VERSION = 1
SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {"error": 2, "warning": 1, "info": 0}


@attrs.frozen
class Kind:
    code: str
    severity: str
    title: str
    help: str


KINDS: Mapping[str, Kind] = {
    k.code: k
    for k in (
        Kind(
            "conflict",
            "info",
            "allow and deny rules match one request",
            "A granting rule (allow or restrict) and a deny or step_up rule both "
            "match some request; the stronger effect wins there. Check that this "
            "is intended, or narrow one of the rules.",
        ),
        Kind(
            "shadowed",
            "warning",
            "rule can never change a decision",
            "Wherever this rule matches, a stronger rule also matches (or a "
            "stronger rule errs, which denies), so the rule never decides.",
        ),
        Kind(
            "redundant",
            "info",
            "rule is covered by another rule of the same effect",
            "Every request this rule matches is matched by another rule with the "
            "same effect (and no weaker obligations or requirements).",
        ),
        Kind(
            "unsatisfiable",
            "error",
            "rule can never match",
            "No request that fits the schema makes the rule's target and "
            "condition hold, so the rule never applies.",
        ),
        Kind(
            "always-true",
            "warning",
            "rule's condition always holds",
            "The condition is true for every request the target admits (or the "
            "rule has no target and no condition): it applies unconditionally.",
        ),
        Kind(
            "escalation",
            "warning",
            "non-human identity is granted what its root is not",
            "The rule grants an agent, tool, connector or service something the "
            "root human of its chain (or its owner) is not granted for the same "
            "action, resource and context. The engine caps the decision by the "
            "root's, so the grant does not take effect there.",
        ),
        Kind(
            "beyond-scope",
            "error",
            "grant reaches beyond the scopes declared or checked",
            "The rule grants an action outside the scopes declared for the "
            "identity (`@scopes` on its entity type) or outside the scope its own "
            "`delegation.grants(…)` test checks.",
        ),
        Kind(
            "blanket-grant",
            "warning",
            "non-human identity granted everything",
            "A non-human identity is allowed every action, every resource type, "
            "or resources of the highest sensitivity with no bound on it.",
        ),
        Kind(
            "unguarded-optional",
            "warning",
            "restricting rule can err and deny",
            "A deny, step_up or restrict rule reads something that may be absent "
            "(an optional attribute, the owner, a delegation fact) without a `has` "
            "guard; where it is absent the rule errs, and the decision is deny.",
        ),
        Kind(
            "bad-suppression",
            "warning",
            "suppression without a reason or code",
            '`@suppress("code", "reason")` needs a known finding code and a reason.',
        ),
        Kind(
            "unused-suppression",
            "info",
            "suppression matches no finding",
            "The rule carries `@suppress` for a finding the analyzer no longer "
            "reports; remove it.",
        ),
    )
}


@attrs.frozen
class RuleRef:
    id: str
    span: Span


@attrs.frozen
class Finding:
    """One finding. `rules[0]` is the rule the finding is about; the others
    are the rules it involves (the overriding, covering or conflicting
    rule). `witness` is a request confirmed by the reference engine."""

    code: str
    message: str
    rules: tuple[RuleRef, ...]
    severity: str
    exact: bool = True
    witness: Mapping[str, Any] | None = None
    decision: str | None = None
    hint: str | None = None
    notes: tuple[tuple[str, Span], ...] = ()
    suppressed: str | None = None

    @property
    def rule(self) -> RuleRef:
        return self.rules[0]

    @property
    def fingerprint(self) -> str:
        """Stable across runs and edits that do not touch the rules involved."""
        text = "\0".join([self.code, *(r.id for r in self.rules)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def diagnostic(self) -> Diagnostic:
        notes = list(self.notes)
        for other in self.rules[1:]:
            if not any(span == other.span for _, span in notes):
                notes.append((f"rule `{other.id}` is here", other.span))
        if not self.exact:
            notes.append(
                ("the analysis approximated part of this rule", self.rule.span)
            )
        return Diagnostic(
            self.code,
            self.message,
            self.rule.span,
            self.severity,
            self.hint,
            tuple(notes),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "exact": self.exact,
            "fingerprint": self.fingerprint,
            "rules": [{"id": r.id, **r.span.to_json()} for r in self.rules],
            "witness": json_ready(self.witness) if self.witness is not None else None,
        }
        if self.decision is not None:
            data["decision"] = self.decision
        if self.hint:
            data["hint"] = self.hint
        if self.suppressed is not None:
            data["suppressed"] = self.suppressed
        return data


def json_ready(value: Any) -> Any:
    """Witness data as JSON values; decimals become numbers when a float
    spells them exactly, else strings (which the request parser accepts for
    decimal attributes)."""
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    return value


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (
            f.rule.span.file,
            f.rule.span.line,
            f.rule.span.column,
            f.code,
            [r.id for r in f.rules],
        ),
    )


def at_or_above(findings: Sequence[Finding], level: str) -> list[Finding]:
    floor = SEVERITY_RANK[level]
    return [
        f
        for f in findings
        if f.suppressed is None and SEVERITY_RANK[f.severity] >= floor
    ]


def report_json(
    findings: Sequence[Finding],
    *,
    files: Sequence[str] = (),
    errors: Sequence[Diagnostic] = (),
) -> dict[str, Any]:
    """The `ripl check --format json` document (schema version 1)."""
    active = [f for f in findings if f.suppressed is None]
    return {
        "version": SCHEMA_VERSION,
        "tool": "ripl",
        "files": list(files),
        "findings": [f.to_json() for f in active],
        "suppressed": [f.to_json() for f in findings if f.suppressed is not None],
        "errors": [d.to_json() for d in errors],
        "summary": {s: sum(1 for f in active if f.severity == s) for s in SEVERITIES},
    }
