"""`@suppress("code", "reason")` on a rule: a finding about that rule with
that code is kept but marked suppressed, so reports can list it. A
suppression needs a known code and a reason; one that matches nothing is
reported too, so stale suppressions do not pile up."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ripl import ir
from ripl.analyze.findings import KINDS, Finding, RuleRef, sort_findings

SUPPRESS = "suppress"


def suppressions(rule: ir.Rule) -> list[tuple[object, ...]]:
    return [args for name, args in rule.annotations if name == SUPPRESS]


def apply_suppressions(
    policy: ir.PolicySet, findings: Sequence[Finding]
) -> list[Finding]:
    out: list[Finding] = []
    used: set[tuple[str, str]] = set()
    valid: dict[tuple[str, str], str] = {}
    for rule in policy.rules:
        for args in suppressions(rule):
            code = args[0] if args else None
            reason = args[1] if len(args) > 1 else None
            ref = RuleRef(rule.id, rule.span)
            if not isinstance(code, str) or code not in KINDS:
                out.append(
                    _bad(
                        ref,
                        f"`@suppress` on rule `{rule.id}` names no known finding code",
                        'write `@suppress("shadowed", "why it is kept")`',
                    )
                )
            elif not isinstance(reason, str) or not reason.strip():
                out.append(
                    _bad(
                        ref,
                        f'`@suppress("{code}")` on rule `{rule.id}` gives no reason',
                        "add the reason as a second argument",
                    )
                )
            else:
                valid[(rule.id, code)] = reason
    for finding in findings:
        key = (finding.rule.id, finding.code)
        if key in valid:
            used.add(key)
            out.append(attrs.evolve(finding, suppressed=valid[key]))
        else:
            out.append(finding)
    for (rule_id, code), _ in sorted(valid.items()):
        if (rule_id, code) not in used:
            owner = policy.rule(rule_id)
            assert owner is not None
            out.append(
                Finding(
                    "unused-suppression",
                    f"rule `{rule_id}` suppresses `{code}`, but "
                    "the analyzer reports no such finding for it",
                    (RuleRef(owner.id, owner.span),),
                    KINDS["unused-suppression"].severity,
                    hint="remove the annotation",
                )
            )
    return sort_findings(out)


def _bad(ref: RuleRef, message: str, hint: str) -> Finding:
    return Finding(
        "bad-suppression", message, (ref,), KINDS["bad-suppression"].severity, hint=hint
    )
