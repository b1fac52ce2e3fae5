"""The engines ripl is measured against, each behind the same small interface.

Every peer turns the neutral workload into its own form in `translate` and
`prepare` (not timed), parses or compiles that form in `load` (timed as load
time), and answers allow or deny in `decide` and `decide_batch` (timed).

The naive loop is the benchmark's reference for meaning: it follows the design's
semantics for the subset the workload uses (allow and deny rules, deny wins,
default deny, three-valued conditions that fail closed, delegation checked before
rules, no escalation past the chain root). Where Cedar or Casbin cannot say the
same thing, the difference is listed in `SEMANTIC_DIFFERENCES`, and the checker in
`benchmarks.check` explains each mismatch by one of them or reports it.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple, TypeVar

from benchmarks.workload import (
    MAX_CHAIN,
    SENSITIVITY_RANK,
    Comparison,
    Entity,
    Link,
    Ref,
    Request,
    Rule,
    Workload,
    covers,
)

T = TypeVar("T")


class PeerUnavailableError(RuntimeError):
    """The engine is not installed or cannot run this workload; the harness
    skips it and prints the message."""


class Peer(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def translate(self, workload: Workload) -> None:
        """Build the engine's policy text and data (not timed)."""

    @abc.abstractmethod
    def load(self) -> None:
        """Parse or compile what `translate` built (timed as load)."""

    @abc.abstractmethod
    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        """Turn requests into the engine's own input form (not timed)."""

    @abc.abstractmethod
    def decide(self, item: Any) -> bool:
        """True when the engine allows the prepared request."""

    def decide_batch(self, items: Sequence[Any]) -> list[bool]:
        return [self.decide(item) for item in items]

    def bust_cache(self) -> None:
        """Make the next `load` compile from scratch, for engines that cache
        compiled policy sets (only ripl does)."""
        return None


# ---- neutral semantics ------------------------------------------------------


class Outcome(NamedTuple):
    allowed: bool
    code: str
    """A reason code from the design (`matched`, `no_rule`, `error_in_rule`, ...),
    or `deny_rule` when a deny rule matched."""
    erred_deny: bool
    """A deny rule whose target held had a condition that was error (neither
    true nor false), which denies by itself."""
    read_missing: bool
    """A rule whose target held read a missing attribute before any of its
    comparisons, in source order, came out false."""


def chain_failure(request: Request, principal: Entity) -> str | None:
    """The reason code the chain fails with, or None when it passes.

    The generator only builds well-formed, narrowing chains, so only the checks
    that can fail on them are made: expiry and the action's coverage by every
    link's scopes, plus an agent with no chain at all."""
    if not request.chain:
        return "agent_without_delegation" if principal.kind == "agent" else None
    for link in request.chain:
        if request.now >= link.expires:
            return "expired_link"
        if not any(covers(scope, request.action) for scope in link.scopes):
            return "scope_not_delegated"
    return None


def find_root(request: Request, entities: Mapping[Ref, Entity]) -> Entity | None:
    """The chain's first human, else the human reached by following owners.

    Humans acting without a chain have no root (None); so does a principal whose
    owners run out or loop, which callers must treat as `root_not_found`."""
    if request.chain:
        return entities.get(request.chain[0].source)
    entity = entities.get(request.principal)
    seen: set[Ref] = set()
    while entity is not None and entity.kind != "human":
        if entity.owner is None or entity.owner in seen:
            return None
        seen.add(entity.ref)
        entity = entities.get(entity.owner)
    return entity


def needs_root(request: Request, principal: Entity) -> bool:
    return principal.kind != "human" or bool(request.chain)


def pair_with_root(
    requests: Sequence[Request],
    entities: Mapping[Ref, Entity],
    build: Callable[[Request, Entity, Sequence[Link]], T],
) -> list[tuple[T | None, T | None]]:
    """For engines without no-escalation: each request in the engine's form,
    with the same question asked for its root (no chain) when one must be
    asked. `(None, None)` stands for a root that cannot be found, a deny."""
    pairs: list[tuple[T | None, T | None]] = []
    for request in requests:
        principal = entities[request.principal]
        own = build(request, principal, request.chain)
        if not needs_root(request, principal):
            pairs.append((own, None))
            continue
        root = find_root(request, entities)
        if root is None:
            pairs.append((None, None))
        else:
            pairs.append((own, build(request, root, ())))
    return pairs


# ---- naive loop -------------------------------------------------------------

_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_SUBJECT_INDEX: Mapping[str, int] = {"principal": 0, "resource": 1, "context": 2}

_CompiledCondition = tuple[int, str, Callable[[Any, Any], bool], Any, bool]
_CompiledRule = tuple[
    bool, str | None, str, str, str | None, tuple[_CompiledCondition, ...]
]


class NaivePeer(Peer):
    """Every decision walks every rule; only the operator lookups and label
    ranks are worked out in advance."""

    name = "naive"

    def translate(self, workload: Workload) -> None:
        self._workload = workload

    def load(self) -> None:
        self._entities = self._workload.entities
        self._rules = [_compile_rule(rule) for rule in self._workload.rules]

    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        return list(requests)

    def decide(self, item: Any) -> bool:
        return self.evaluate(item).allowed

    def evaluate(self, request: Request) -> Outcome:
        principal = self._entities[request.principal]
        failure = chain_failure(request, principal)
        if failure is not None:
            return Outcome(False, failure, False, False)
        own = self._evaluate_rules(principal, request)
        if not own.allowed or not needs_root(request, principal):
            return own
        root = find_root(request, self._entities)
        if root is None:
            return own._replace(allowed=False, code="root_not_found")
        of_root = self._evaluate_rules(root, request)
        read_missing = own.read_missing or of_root.read_missing
        erred_deny = own.erred_deny or of_root.erred_deny
        code = "matched" if of_root.allowed else "escalation"
        return Outcome(of_root.allowed, code, erred_deny, read_missing)

    def _evaluate_rules(self, principal: Entity, request: Request) -> Outcome:
        resource = self._entities[request.resource]
        subjects = (principal.attrs, resource.attrs, request.context)
        ptype, rtype, action = principal.ref.type, resource.ref.type, request.action
        allow = deny = erred_deny = read_missing = False
        for (
            is_deny,
            rule_ptype,
            rule_action,
            prefix,
            rule_rtype,
            conditions,
        ) in self._rules:
            if rule_ptype is not None and rule_ptype != ptype:
                continue
            if rule_action != action and not action.startswith(prefix):
                continue
            if rule_rtype is not None and rule_rtype != rtype:
                continue
            result: bool | None = True
            for index, attr, op, value, is_label in conditions:
                actual: Any = subjects[index].get(attr)
                if actual is None:
                    # Three-valued `and`: an error only stands if no later
                    # comparison is false, so keep looking.
                    result = None
                    read_missing = True
                    continue
                if is_label:
                    actual = SENSITIVITY_RANK[actual]
                if not op(actual, value):
                    result = False
                    break
            if result is None:
                erred_deny = erred_deny or is_deny
            elif result:
                if is_deny:
                    deny = True
                else:
                    allow = True
        if deny:
            return Outcome(False, "deny_rule", erred_deny, read_missing)
        if erred_deny:
            return Outcome(False, "error_in_rule", erred_deny, read_missing)
        if allow:
            return Outcome(True, "matched", erred_deny, read_missing)
        return Outcome(False, "no_rule", erred_deny, read_missing)


def _compile_rule(rule: Rule) -> _CompiledRule:
    conditions = tuple(_compile_condition(c) for c in rule.conditions)
    prefix = rule.action + "."
    return (
        rule.effect == "deny",
        rule.principal_type,
        rule.action,
        prefix,
        rule.resource_type,
        conditions,
    )


def _compile_condition(comparison: Comparison) -> _CompiledCondition:
    is_label = comparison.attr == "sensitivity"
    value = SENSITIVITY_RANK[str(comparison.value)] if is_label else comparison.value
    index = _SUBJECT_INDEX[comparison.subject]
    return (index, comparison.attr, _OPS[comparison.op], value, is_label)


# ---- cedarpy ----------------------------------------------------------------


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def _cedar_decimal(value: Decimal) -> str:
    # Cedar's decimal takes at most four fractional digits; the workload never
    # makes more, so this formatting is exact.
    return f"{value:.4f}"


class CedarPeer(Peer):
    """Cedar policies, with the entity store and policy set parsed once into
    cedarpy handles, and each request's context pre-serialised to JSON."""

    name = "cedarpy"

    def translate(self, workload: Workload) -> None:
        try:
            import cedarpy
        except ImportError as exc:
            raise PeerUnavailableError("cedarpy is not installed") from exc
        self._cedarpy = cedarpy
        self._workload = workload
        self.policies_text = cedar_policies(workload)
        self.entities_json = json.dumps(cedar_entities(workload))

    def load(self) -> None:
        cedarpy = self._cedarpy
        self._policies = cedarpy.PolicySet.from_str(self.policies_text)
        self._entities = cedarpy.Entities.from_json_str(self.entities_json)

    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        return pair_with_root(requests, self._workload.entities, cedar_request)

    def decide(self, item: Any) -> bool:
        own, root = item
        if own is None:
            return False
        cedarpy, policies, entities = self._cedarpy, self._policies, self._entities
        if not cedarpy.is_authorized(own, policies, entities).allowed:
            return False
        return root is None or bool(
            cedarpy.is_authorized(root, policies, entities).allowed
        )

    def decide_batch(self, items: Sequence[Any]) -> list[bool]:
        allowed = self._ask_batch([own for own, _ in items])
        pending = [
            i for i, (_, root) in enumerate(items) if allowed[i] and root is not None
        ]
        for i, answer in zip(
            pending, self._ask_batch([items[i][1] for i in pending]), strict=True
        ):
            allowed[i] = answer
        return allowed

    def _ask_batch(self, requests: Sequence[dict[str, Any] | None]) -> list[bool]:
        asked = [(i, request) for i, request in enumerate(requests) if request]
        allowed = [False] * len(requests)
        if asked:
            results = self._cedarpy.is_authorized_batch(
                [request for _, request in asked], self._policies, self._entities
            )
            for (i, _), result in zip(asked, results, strict=True):
                allowed[i] = bool(result.allowed)
        return allowed


_CEDAR_OPS: Mapping[str, str] = {
    "<": "lessThan",
    "<=": "lessThanOrEqual",
    ">": "greaterThan",
    ">=": "greaterThanOrEqual",
}


def cedar_policies(workload: Workload) -> str:
    """Rules become permit/forbid policies named by `@id`; delegation checks
    become forbid policies over context fields, one per possible link."""
    parts = [_cedar_rule(rule) for rule in workload.rules]
    parts.append(
        '@id("agent_without_delegation")\n'
        "forbid (principal is Agent, action, resource)\n"
        "when { context.depth == 0 };"
    )
    for i in range(MAX_CHAIN):
        parts.append(
            f'@id("scope_not_delegated_{i}")\n'
            "forbid (principal, action, resource)\n"
            f"when {{ context.depth > {i} }}\n"
            f"unless {{ action in context.link{i}_scopes }};"
        )
        parts.append(
            f'@id("expired_link_{i}")\n'
            "forbid (principal, action, resource)\n"
            f"when {{ context.depth > {i} && context.now >= context.link{i}_expires }};"
        )
    return "\n\n".join(parts) + "\n"


def _cedar_rule(rule: Rule) -> str:
    effect = "forbid" if rule.effect == "deny" else "permit"
    principal = (
        f"principal is {rule.principal_type}" if rule.principal_type else "principal"
    )
    if "." in rule.action:
        action = f'action == Action::"{rule.action}"'
    else:
        action = f'action in Action::"{rule.action}"'
    resource = f"resource is {rule.resource_type}" if rule.resource_type else "resource"
    condition = " && ".join(_cedar_condition(c) for c in rule.conditions)
    return (
        f'@id("{rule.id}")\n{effect} ({principal}, {action}, {resource})\n'
        f"when {{ {condition} }};"
    )


def _cedar_condition(comparison: Comparison) -> str:
    path = f"{comparison.subject}.{comparison.attr}"
    value = comparison.value
    if isinstance(value, Decimal):
        return f'{path}.{_CEDAR_OPS[comparison.op]}(decimal("{_cedar_decimal(value)}"))'
    if comparison.attr == "sensitivity":
        return f"{path} {comparison.op} {SENSITIVITY_RANK[str(value)]}"
    if isinstance(value, bool):
        return f"{path} {comparison.op} {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"{path} {comparison.op} {json.dumps(value)}"
    return f"{path} {comparison.op} {value}"


def cedar_entities(workload: Workload) -> list[dict[str, Any]]:
    """Sensitivity labels are stored as their rank (Cedar has no ordered
    enumerations); actions are entities whose parent is their group."""
    out: list[dict[str, Any]] = []
    for entity in workload.entities.values():
        values = dict(entity.attrs)
        if "sensitivity" in values:
            values["sensitivity"] = SENSITIVITY_RANK[str(values["sensitivity"])]
        out.append({"uid": _uid(entity.ref), "attrs": values, "parents": []})
    for group, actions in workload.groups.items():
        group_uid = {"type": "Action", "id": group}
        out.append({"uid": group_uid, "attrs": {}, "parents": []})
        for action in actions:
            out.append(
                {
                    "uid": {"type": "Action", "id": action},
                    "attrs": {},
                    "parents": [group_uid],
                }
            )
    return out


def _uid(ref: Ref) -> dict[str, str]:
    return {"type": ref.type, "id": ref.id}


def cedar_request(
    request: Request, principal: Entity, chain: Sequence[Link]
) -> dict[str, Any]:
    context: dict[str, Any] = {"env": request.context["env"]}
    if "anomaly" in request.context:
        anomaly = request.context["anomaly"]
        assert isinstance(anomaly, Decimal)
        context["anomaly"] = {
            "__extn": {"fn": "decimal", "arg": _cedar_decimal(anomaly)}
        }
    context["now"] = _epoch(request.now)
    context["depth"] = len(chain)
    for i in range(MAX_CHAIN):
        link = chain[i] if i < len(chain) else None
        scopes = link.scopes if link is not None else ()
        context[f"link{i}_scopes"] = [
            {"__entity": {"type": "Action", "id": scope}} for scope in scopes
        ]
        context[f"link{i}_expires"] = _epoch(link.expires) if link is not None else 0
    return {
        "principal": _uid(principal.ref),
        "action": {"type": "Action", "id": request.action},
        "resource": _uid(request.resource),
        "context": json.dumps(context),
    }


# ---- pycasbin ---------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, act, obj, ctx

[policy_definition]
p = sub_type, act, obj_type, cond, eft, rid

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.sub_type == "*" || r.sub.type == p.sub_type) && g(r.act, p.act) && \
r.obj.type == p.obj_type && (p.eft == "deny" || delegated(r.sub, r.ctx, r.act)) && \
eval(p.cond)
"""


def casbin_delegated(sub: Mapping[str, Any], ctx: Mapping[str, Any], act: str) -> bool:
    """Registered as a Casbin matcher function: Casbin has no notion of a
    delegation chain, so the check is Python called from the matcher."""
    chain = ctx["chain"]
    if not chain:
        return bool(sub["kind"] != "agent")
    now = ctx["now"]
    for scopes, expires in chain:
        if now >= expires:
            return False
        if not any(covers(scope, act) for scope in scopes):
            return False
    return True


class CasbinPeer(Peer):
    """An ABAC model: one policy line per rule with its condition run through
    `eval()`, actions grouped with `g`, deny wins over allow, default deny."""

    name = "pycasbin"

    def translate(self, workload: Workload) -> None:
        try:
            import casbin
            from simpleeval import (  # type: ignore[import-untyped]
                AttributeDoesNotExist,
            )
        except ImportError as exc:
            raise PeerUnavailableError("casbin is not installed") from exc
        self._casbin = casbin
        self._missing_attribute: type[Exception] = AttributeDoesNotExist
        self._workload = workload
        self.policy_rows = [_casbin_row(rule) for rule in workload.rules]
        self.grouping_rows = [
            [action, group]
            for group, actions in workload.groups.items()
            for action in actions
        ]

    def load(self) -> None:
        casbin = self._casbin
        model = casbin.model.Model()
        model.load_model_from_text(CASBIN_MODEL)
        enforcer = casbin.Enforcer(model)
        enforcer.add_function("delegated", casbin_delegated)
        enforcer.add_policies(self.policy_rows)
        enforcer.add_grouping_policies(self.grouping_rows)
        self._enforcer = enforcer

    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        return pair_with_root(requests, self._workload.entities, self._casbin_request)

    def _casbin_request(
        self, request: Request, principal: Entity, chain: Sequence[Link]
    ) -> tuple[Any, ...]:
        sub = {"type": principal.ref.type, "kind": principal.kind, **principal.attrs}
        resource = self._workload.entities[request.resource]
        obj: dict[str, Any] = {"type": resource.ref.type, **resource.attrs}
        if "sensitivity" in obj:
            obj["sensitivity"] = SENSITIVITY_RANK[obj["sensitivity"]]
        ctx: dict[str, Any] = {"env": request.context["env"]}
        if "anomaly" in request.context:
            # Casbin's expressions compare binary floats. Every workload value
            # has at most four decimals, so no comparison changes its answer.
            ctx["anomaly"] = float(request.context["anomaly"])
        ctx["now"] = _epoch(request.now)
        ctx["chain"] = tuple((link.scopes, _epoch(link.expires)) for link in chain)
        return (sub, request.action, obj, ctx)

    def decide(self, item: Any) -> bool:
        own, root = item
        if own is None or not self._enforce(own):
            return False
        return root is None or self._enforce(root)

    def _enforce(self, rvals: tuple[Any, ...]) -> bool:
        try:
            return bool(self._enforcer.enforce(*rvals))
        except self._missing_attribute:
            # Casbin raises when a condition reads a missing attribute; the
            # harness fails closed, as an application would have to.
            return False


def _casbin_row(rule: Rule) -> list[str]:
    condition = " && ".join(_casbin_condition(c) for c in rule.conditions)
    return [
        rule.principal_type or "*",
        rule.action,
        rule.resource_type or "*",
        condition,
        rule.effect,
        rule.id,
    ]


_CASBIN_SUBJECT: Mapping[str, str] = {
    "principal": "r.sub",
    "resource": "r.obj",
    "context": "r.ctx",
}


def _casbin_condition(comparison: Comparison) -> str:
    path = f"{_CASBIN_SUBJECT[comparison.subject]}.{comparison.attr}"
    value = comparison.value
    if comparison.attr == "sensitivity":
        literal = str(SENSITIVITY_RANK[str(value)])
    elif isinstance(value, bool):
        literal = "True" if value else "False"
    elif isinstance(value, str):
        literal = json.dumps(value)
    else:
        literal = str(value)
    return f"{path} {comparison.op} {literal}"


SEMANTIC_DIFFERENCES: Mapping[str, str] = {
    "cedar_skips_erroring_forbid": (
        "Cedar skips a policy whose condition errs, forbid included (the error is "
        "only listed in diagnostics), so a request that also meets a permit is "
        "allowed; ripl denies it with `error_in_rule`."
    ),
    "casbin_raises_on_missing_attribute": (
        "Casbin raises when a condition reads a missing attribute before any "
        "comparison in it is false (its `&&` runs left to right), so the harness "
        "denies the whole request; in ripl that rule is false or error, an erring "
        "allow grants nothing, and the other rules still decide."
    ),
}
"""Differences that change a decision in this workload, keyed by the name the
checker reports. Differences that do not change a decision are in
`benchmarks/README.md`."""
