"""Decisions: how matching rules combine into one answer, and its JSON.

Combining never depends on rule order: the strongest effect wins
(deny > step_up > restrict > allow), restrict obligations merge to the
strictest, step-up requirements are unioned, and an erring deny, step_up or
restrict rule makes the decision deny.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs

from ripl import ir
from ripl.ast import Duration


@attrs.frozen
class RuleRef:
    id: str
    file: str
    line: int
    col: int

    @classmethod
    def of(cls, rule: ir.Rule) -> RuleRef:
        return cls(rule.id, rule.span.file, rule.span.line, rule.span.column)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "line": self.line, "col": self.col}


def matched_reason(rule_id: str, effect: str) -> str:
    return f"matched: rule `{rule_id}` ({effect})"


@attrs.frozen
class Match:
    """A rule that matched, with its obligation values. `ref` and `reason`
    may be made once per rule by the compiler; they are derived from `rule`,
    so they take no part in equality."""

    rule: ir.Rule
    obligations: Mapping[str, ir.Value]
    ref: RuleRef | None = attrs.field(default=None, eq=False, repr=False)
    reason: str | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Outcome:
    """What rule evaluation found for one principal: the rules that matched
    and the rules whose condition was error."""

    matches: tuple[Match, ...]
    errors: tuple[tuple[ir.Rule, str], ...]


class Verdict:
    """A decision before it is stamped with the policy hash and time. A plain
    slots class rather than attrs: one or two are made per decision."""

    __slots__ = ("effect", "rules", "reasons", "obligations", "requirements", "errors")

    def __init__(
        self,
        effect: str,
        rules: tuple[RuleRef, ...],
        reasons: tuple[str, ...],
        obligations: Mapping[str, ir.Value] | None = None,
        requirements: tuple[str, ...] = (),
        errors: tuple[str, ...] = (),
    ) -> None:
        self.effect = effect
        self.rules = rules
        self.reasons = reasons
        self.obligations: Mapping[str, ir.Value] = (
            {} if obligations is None else obligations
        )
        self.requirements = requirements
        self.errors = errors

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.effect,
            self.rules,
            self.reasons,
            self.obligations,
            self.requirements,
            self.errors,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not Verdict:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # obligations are a dict

    def __repr__(self) -> str:
        return (
            f"Verdict(effect={self.effect!r}, rules={self.rules!r}, "
            f"reasons={self.reasons!r}, obligations={self.obligations!r}, "
            f"requirements={self.requirements!r}, errors={self.errors!r})"
        )

    def replace(
        self,
        *,
        rules: tuple[RuleRef, ...] | None = None,
        obligations: Mapping[str, ir.Value] | None = None,
        requirements: tuple[str, ...] | None = None,
        errors: tuple[str, ...] | None = None,
    ) -> Verdict:
        return Verdict(
            self.effect,
            self.rules if rules is None else rules,
            self.reasons,
            self.obligations if obligations is None else obligations,
            self.requirements if requirements is None else requirements,
            self.errors if errors is None else errors,
        )


def deny(*reasons: str, errors: Sequence[str] = ()) -> Verdict:
    return Verdict("deny", (), reasons, None, (), tuple(errors))


NO_RULE = "no_rule: no rule matched; the default is deny"


def _sorted_refs(matches: Sequence[Match]) -> tuple[RuleRef, ...]:
    """One ref per rule id (the last match of an id stands), sorted by id."""
    unique = {m.rule.id: m for m in matches}
    return tuple(_ref_of(unique[k]) for k in sorted(unique))


def _ref_of(match: Match) -> RuleRef:
    ref = match.ref
    return ref if ref is not None else RuleRef.of(match.rule)


def merge_all(
    definitions: Mapping[str, ir.ObligationDef], parts: Sequence[Mapping[str, ir.Value]]
) -> dict[str, ir.Value]:
    out: dict[str, ir.Value] = {}
    for part in parts:
        for name, value in part.items():
            if name not in out:
                out[name] = value
            elif definitions[name].merge == "union":
                assert isinstance(out[name], frozenset) and isinstance(value, frozenset)
                out[name] = out[name] | value  # type: ignore[operator]
            else:
                out[name] = min(out[name], value, key=_key)
    return dict(sorted(out.items()))


def _key(value: ir.Value) -> Any:
    return value.seconds if isinstance(value, Duration) else value


def combine(outcome: Outcome, definitions: Mapping[str, ir.ObligationDef]) -> Verdict:
    matches = outcome.matches
    if not outcome.errors:  # the common case: no rule erred
        if not matches:
            return Verdict("deny", (), (NO_RULE,))
        if len(matches) == 1:
            return _single(matches[0], definitions)
        return _winners(matches, definitions, ())
    errors = tuple(
        sorted(f"rule `{rule.id}`: {message}" for rule, message in outcome.errors)
    )
    blocking = [rule for rule, _ in outcome.errors if rule.effect != "allow"]
    if blocking:
        denies = [m.rule for m in matches if m.rule.effect == "deny"]
        reasons = tuple(
            sorted(
                f"error_in_rule: rule `{rule.id}` ({rule.effect}) could not be "
                f"evaluated: {message}"
                for rule, message in outcome.errors
                if rule.effect != "allow"
            )
        )
        unique = {r.id: r for r in (*blocking, *denies)}
        refs = tuple(RuleRef.of(unique[k]) for k in sorted(unique))
        return Verdict("deny", refs, reasons, None, (), errors)
    if not matches:
        return Verdict("deny", (), (NO_RULE,), None, (), errors)
    return _winners(matches, definitions, errors)


def combine_winners(
    winners: Sequence[Match], definitions: Mapping[str, ir.ObligationDef]
) -> Verdict:
    """What `combine` gives when no rule erred and `winners`, in policy
    order, are exactly the matches of the strongest effect that matched:
    the weaker matches take no part in such a verdict."""
    if len(winners) == 1:
        return _single(winners[0], definitions)
    effect = winners[0].rule.effect
    unique = {m.rule.id: m for m in winners}
    chosen = [unique[k] for k in sorted(unique)]
    refs = tuple([_ref_of(m) for m in chosen])
    reasons = tuple([m.reason or matched_reason(m.rule.id, effect) for m in chosen])
    obligations: dict[str, ir.Value] = {}
    requirements: tuple[str, ...] = ()
    if effect == "restrict":
        obligations = merge_all(definitions, [m.obligations for m in winners])
    elif effect == "step_up":
        requirements = tuple(sorted({q for m in winners for q in m.rule.requirements}))
    return Verdict(effect, refs, reasons, obligations, requirements)


def _single(match: Match, definitions: Mapping[str, ir.ObligationDef]) -> Verdict:
    """One match and no error: what `_winners` gives for it, without the
    sorting and grouping."""
    rule = match.rule
    effect = rule.effect
    reason = match.reason
    if reason is None:
        reason = matched_reason(rule.id, effect)
    obligations: dict[str, ir.Value] = {}
    requirements: tuple[str, ...] = ()
    if effect == "restrict":
        obligations = merge_all(definitions, (match.obligations,))
    elif effect == "step_up":
        requirements = tuple(sorted(set(rule.requirements)))
    return Verdict(effect, (_ref_of(match),), (reason,), obligations, requirements)


def _winners(
    matches: Sequence[Match],
    definitions: Mapping[str, ir.ObligationDef],
    errors: tuple[str, ...],
) -> Verdict:
    order = ir.EFFECT_ORDER
    rank = max(order[m.rule.effect] for m in matches)
    winners = [m for m in matches if order[m.rule.effect] == rank]
    effect = winners[0].rule.effect
    refs = _sorted_refs(winners)
    reasons = tuple(matched_reason(r.id, effect) for r in refs)
    obligations: dict[str, ir.Value] = {}
    requirements: tuple[str, ...] = ()
    if effect == "restrict":
        obligations = merge_all(definitions, [m.obligations for m in winners])
    elif effect == "step_up":
        requirements = tuple(sorted({q for m in winners for q in m.rule.requirements}))
    return Verdict(effect, refs, reasons, obligations, requirements, errors)


class Pending:
    """A verdict whose effect and errors are known and whose rules and
    reasons are written only when asked for: the no-escalation cap often
    needs no more than the effect of one side."""

    __slots__ = ("effect", "errors", "_build", "_done")

    def __init__(
        self,
        effect: str,
        errors: tuple[str, ...],
        build: Callable[[], Verdict] | None = None,
        done: Verdict | None = None,
    ) -> None:
        self.effect = effect
        self.errors = errors
        self._build = build
        self._done = done

    @classmethod
    def of(cls, verdict: Verdict) -> Pending:
        return cls(verdict.effect, verdict.errors, None, verdict)

    def verdict(self) -> Verdict:
        done = self._done
        if done is None:
            assert self._build is not None
            done = self._done = self._build()
        return done


def cap_pending(
    own: Pending,
    root: Pending,
    root_name: str,
    definitions: Mapping[str, ir.ObligationDef],
) -> Verdict:
    """`cap_by_root(own.verdict(), root.verdict(), …)`, building only the
    side whose rules the answer lists."""
    own_rank, root_rank = ir.EFFECT_ORDER[own.effect], ir.EFFECT_ORDER[root.effect]
    if root_rank > own_rank:  # only the own side's errors are used
        stand_in = Verdict(own.effect, (), (), None, (), own.errors)
        return cap_by_root(stand_in, root.verdict(), root_name, definitions)
    if own_rank > root_rank or own.effect not in ("restrict", "step_up"):
        stand_in = Verdict(root.effect, (), (), None, (), root.errors)
        return cap_by_root(own.verdict(), stand_in, root_name, definitions)
    return cap_by_root(own.verdict(), root.verdict(), root_name, definitions)


def cap_by_root(
    own: Verdict,
    root: Verdict,
    root_name: str,
    definitions: Mapping[str, ir.ObligationDef],
) -> Verdict:
    """The stricter of a principal's verdict and its root's (no escalation)."""
    own_rank, root_rank = ir.EFFECT_ORDER[own.effect], ir.EFFECT_ORDER[root.effect]
    if not own.errors and not root.errors:
        errors: tuple[str, ...] = ()
    else:
        errors = tuple(sorted({*own.errors, *(f"as root: {e}" for e in root.errors)}))
    if own_rank > root_rank:
        return own if errors == own.errors else own.replace(errors=errors)
    if root_rank > own_rank:
        why = (
            "is not allowed this"
            if root.effect == "deny"
            else (f"gets only `{root.effect}` for this")
        )
        detail = "; ".join(root.reasons)
        return Verdict(
            root.effect,
            root.rules,
            (f"escalation: root `{root_name}` {why} ({detail})",),
            root.obligations,
            root.requirements,
            errors,
        )
    if own.effect == "restrict":
        return own.replace(
            rules=tuple(sorted({*own.rules, *root.rules}, key=lambda r: r.id)),
            obligations=merge_all(definitions, [own.obligations, root.obligations]),
            errors=errors,
        )
    if own.effect == "step_up":
        return own.replace(
            requirements=tuple(sorted({*own.requirements, *root.requirements})),
            errors=errors,
        )
    return own if errors == own.errors else own.replace(errors=errors)


# ---- the decision -------------------------------------------------------------


def read_only(obligations: Mapping[str, ir.Value]) -> Mapping[str, ir.Value]:
    if type(obligations) is MappingProxyType:
        return obligations
    if not obligations:
        return NO_OBLIGATIONS  # most decisions: one shared empty view
    return MappingProxyType(dict(obligations))


NO_OBLIGATIONS: Mapping[str, ir.Value] = MappingProxyType({})


@attrs.frozen
class Decision:
    """The answer to one request, with everything behind it."""

    effect: str
    rules: tuple[RuleRef, ...]
    reasons: tuple[str, ...]
    # Read-only: decisions may share one verdict (a kept one, or a cache hit),
    # so an application editing what it was told must not edit the next answer.
    obligations: Mapping[str, ir.Value] = attrs.field(converter=read_only)
    requirements: tuple[str, ...]
    errors: tuple[str, ...]
    policy_hash: str
    evaluated_at: datetime

    @property
    def allowed(self) -> bool:
        """True for allow and restrict: the action may run (with obligations)."""
        return self.effect in ("allow", "restrict")

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.split(":", 1)[0] for r in self.reasons)

    def to_json_text(self, indent: int | None = None) -> str:
        return dumps(self.to_json(), indent=indent)

    @classmethod
    def from_verdict(cls, verdict: Verdict, policy_hash: str, at: datetime) -> Decision:
        return cls(
            verdict.effect,
            verdict.rules,
            verdict.reasons,
            verdict.obligations,
            verdict.requirements,
            verdict.errors,
            policy_hash,
            at,
        )

    def same_answer(self, other: Decision) -> bool:
        """Equal in everything but the time it was made."""
        return attrs.evolve(self, evaluated_at=other.evaluated_at) == other

    def to_json(self) -> dict[str, Any]:
        """The decision contract as plain data. Non-integral decimals stay
        `Decimal` so nothing is rounded; `to_json_text` writes them exactly."""
        return {
            "effect": self.effect,
            "rules": [r.to_json() for r in self.rules],
            "reasons": list(self.reasons),
            "obligations": obligations_json(self.obligations),
            "requirements": list(self.requirements),
            "errors": list(self.errors),
            "policy_hash": self.policy_hash,
            "evaluated_at": self.evaluated_at.isoformat().replace("+00:00", "Z"),
        }


def obligations_json(obligations: Mapping[str, ir.Value]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in obligations.items():
        if isinstance(value, Duration):
            out[f"{name}_s"] = value.seconds
        else:
            out[name] = json_value(value)
    return out


def json_value(value: ir.Value) -> Any:
    if isinstance(value, frozenset):
        return sorted((json_value(v) for v in value), key=str)
    if isinstance(value, Decimal):
        # Never a float: a cap of 199.99… must not become 200.0.
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, Duration):
        return value.seconds
    if isinstance(value, ir.Label | ir.EntityRef):
        return str(value)
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    return value


def dumps(data: Any, *, indent: int | None = None) -> str:
    """JSON text with decimals written exactly, as JSON numbers."""
    marks: dict[str, str] = {}
    token = secrets.token_hex(8)

    def default(value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            key = f"{token}:{len(marks)}"
            marks[json.dumps(key)] = str(value)
            return key
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = json.dumps(data, indent=indent, default=default, ensure_ascii=False)
    for quoted, number in marks.items():
        text = text.replace(quoted, number)
    return text
