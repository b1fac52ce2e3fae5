"""Declared scopes (`entity Bot: agent owner User scopes payments.refund`)
as the analysis sees them.

A request whose action lies outside the declared scopes of its principal's
type (or of anyone it acts through) is denied before any rule is read, so a
rule never applies to such a pair of principal type and action. The
analysis runs on the policy with each rule's actions cut to what its
principal types may do, wherever that cut is exact: every type the rule may
apply to declares scopes that leave it the same actions. Where it is not
(a rule for several types with different ceilings, or for types with and
without one), the rule is left whole and its findings are marked inexact.
A grant reaching past a ceiling is a `beyond-scope` finding of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ripl import ir

OUTSIDE_SHOWN = 3  # actions named in a finding's message


def identity_types(schema: ir.Schema) -> frozenset[str]:
    return frozenset(n for n, e in schema.entities.items() if e.kind is not None)


def rule_actions(rule: ir.Rule, schema: ir.Schema) -> frozenset[str]:
    return schema.actions if rule.actions is None else rule.actions & schema.actions


def allowed_actions(
    schema: ir.Schema, name: str, actions: frozenset[str]
) -> frozenset[str]:
    entity = schema.entities[name]
    return frozenset(a for a in actions if entity.may_act(a))


def clip_to_ceilings(policy: ir.PolicySet) -> tuple[ir.PolicySet, frozenset[str]]:
    """The policy with rules cut to the declared scopes of their principal
    types (a rule left with no action is dropped: it never applies), and the
    ids of the rules that could not be cut exactly."""
    schema = policy.schema
    if not schema.ceilings:
        return policy, frozenset()
    identities = identity_types(schema)
    rules: list[ir.Rule] = []
    inexact: set[str] = set()
    for rule in policy.rules:
        types = identities if rule.principal_types is None else rule.principal_types
        bound = types & schema.ceilings
        if not bound:
            rules.append(rule)
            continue
        actions = rule_actions(rule, schema)
        left = {allowed_actions(schema, name, actions) for name in bound}
        if left == {actions}:
            rules.append(rule)  # every bound type may do all of it
        elif len(left) == 1 and types <= schema.ceilings:
            (cut,) = left
            if cut:
                rules.append(attrs.evolve(rule, actions=cut))
        else:
            rules.append(rule)
            inexact.add(rule.id)
    return attrs.evolve(policy, rules=tuple(rules)), frozenset(inexact)


def beyond_declared(policy: ir.PolicySet) -> list[tuple[ir.Rule, str, list[str]]]:
    """Each grant (allow, restrict) that names actions outside the declared
    scopes of a principal type it applies to: (rule, type, those actions)."""
    schema = policy.schema
    if not schema.ceilings:
        return []
    identities = identity_types(schema)
    out = []
    for rule in policy.rules:
        if rule.effect not in ("allow", "restrict"):
            continue
        types = identities if rule.principal_types is None else rule.principal_types
        actions = rule_actions(rule, schema)
        for name in sorted(types & schema.ceilings):
            outside = sorted(actions - allowed_actions(schema, name, actions))
            if outside:
                out.append((rule, name, outside))
    return out


def shown(actions: Sequence[str]) -> str:
    named = ", ".join(f"`{a}`" for a in actions[:OUTSIDE_SHOWN])
    more = len(actions) - OUTSIDE_SHOWN
    return named + (f" and {more} more" if more > 0 else "")
