"""A seeded, engine-neutral agent workload: identities, resources, rules, requests.

Everything here is plain data. Each engine's translator reads it and writes the
engine's own policy text, entities and requests, so the engines decide exactly
the same questions. The same seed gives the same workload on every machine
(the generator uses its own `random.Random` streams and no wall clock).

The entity pool does not depend on the number of rules, so the requests at
N = 10 and N = 10 000 refer to the same identities and resources; only the
rules, and which rules the requests are aimed at, change.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

import attrs

SENSITIVITY: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
SENSITIVITY_RANK: Mapping[str, int] = {label: i for i, label in enumerate(SENSITIVITY)}

Value = int | Decimal | str | bool
Effect = Literal["allow", "deny"]
Subject = Literal["principal", "resource", "context"]
Op = Literal["<", "<=", ">", ">=", "==", "!="]

# Attribute types: "int", "decimal", "string", "bool", "label" (sensitivity).
PRINCIPAL_TYPES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "User": ("human", {"team": "string", "mfa": "bool"}),
    "Agent": ("agent", {"model": "string"}),
    "Tool": ("tool", {"vendor": "string"}),
    "Connector": ("connector", {"system": "string"}),
    "Service": ("service", {"tier": "string"}),
}
OWNER_TYPES: Mapping[str, tuple[str, ...]] = {
    "Agent": ("User",),
    "Tool": ("Agent",),
    "Connector": ("Agent", "Service"),
    "Service": ("User",),
}
# Each resource type has one numeric attribute, named after what it counts.
NUMERIC_ATTR: Mapping[str, str] = {
    "Invoice": "amount",
    "Document": "pages",
    "Dataset": "rows",
    "Ticket": "priority",
}
NUMERIC_RANGE: Mapping[str, tuple[int, int]] = {
    "Invoice": (1, 5_000),
    "Document": (1, 400),
    "Dataset": (10, 1_000_000),
    "Ticket": (1, 5),
}
RESOURCE_TYPES: Mapping[str, Mapping[str, str]] = {
    rtype: {attr: "int", "sensitivity": "label", "project": "string"}
    for rtype, attr in NUMERIC_ATTR.items()
}
CONTEXT_ATTRS: Mapping[str, str] = {"anomaly": "decimal", "env": "string"}

GROUPS: tuple[str, ...] = (
    "payments", "docs", "tickets", "datasets", "crm", "email", "calendar",
    "code", "deploy", "hr", "billing", "storage", "search", "chat",
    "analytics", "secrets", "vendors", "contracts", "reports", "identity",
)  # fmt: skip
VERBS: tuple[str, ...] = (
    "read", "list", "create", "update", "delete",
    "share", "export", "approve", "archive", "restore",
)  # fmt: skip
PAYMENT_VERBS: tuple[str, ...] = (
    "refund", "charge", "payout", "read", "list",
    "void", "approve", "export", "reconcile", "dispute",
)  # fmt: skip

TEAMS: tuple[str, ...] = (
    "billing", "support", "legal", "platform", "data",
    "security", "sales", "finance", "research", "ops",
)  # fmt: skip
MODELS: tuple[str, ...] = ("m-1", "m-2", "m-3", "m-4", "m-5")
PROJECTS: tuple[str, ...] = ("eu", "us", "apac", "internal", "labs")
ENVS: tuple[str, ...] = ("prod", "staging", "dev")

BASE_NOW = dt.datetime(2026, 12, 4, 9, 0, 0, tzinfo=dt.UTC)
MAX_CHAIN = 2
"""Longest delegation chain generated (human -> agent -> tool)."""


@attrs.frozen
class Ref:
    type: str
    id: str


@attrs.frozen
class Entity:
    ref: Ref
    kind: str
    """`human`, `agent`, `tool`, `connector`, `service`, or `resource`."""
    attrs: Mapping[str, Value]
    owner: Ref | None = None


@attrs.frozen
class Comparison:
    subject: Subject
    attr: str
    op: Op
    value: Value
    """A label comparison (`sensitivity`) holds the label name."""


@attrs.frozen
class Rule:
    id: str
    effect: Effect
    principal_type: str | None
    """None targets every principal."""
    action: str
    """A declared action, or a group covering every action under it."""
    resource_type: str | None
    conditions: tuple[Comparison, ...]
    """A conjunction; every rule has one to three."""


@attrs.frozen
class Link:
    id: str
    source: Ref
    target: Ref
    scopes: tuple[str, ...]
    expires: dt.datetime


@attrs.frozen
class Request:
    principal: Ref
    action: str
    resource: Ref
    context: Mapping[str, Value]
    chain: tuple[Link, ...]
    now: dt.datetime


@attrs.frozen
class Workload:
    seed: int
    groups: Mapping[str, tuple[str, ...]]
    """Group name to its dotted action names."""
    group_resource: Mapping[str, str]
    """The resource type each group's actions act on."""
    entities: Mapping[Ref, Entity]
    rules: tuple[Rule, ...]
    requests: tuple[Request, ...]

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a for actions in self.groups.values() for a in actions)


def covers(scope: str, action: str) -> bool:
    """A scope or rule action covers itself and every action below it."""
    return action == scope or action.startswith(scope + ".")


def build_groups() -> dict[str, tuple[str, ...]]:
    return {
        group: tuple(
            f"{group}.{verb}"
            for verb in (PAYMENT_VERBS if group == "payments" else VERBS)
        )
        for group in GROUPS
    }


def build_group_resource() -> dict[str, str]:
    rtypes = tuple(RESOURCE_TYPES)
    return {group: rtypes[i % len(rtypes)] for i, group in enumerate(GROUPS)}


# ---- entities ---------------------------------------------------------------

POOL_SIZES: Mapping[str, int] = {
    "User": 120,
    "Agent": 240,
    "Tool": 80,
    "Connector": 30,
    "Service": 12,
}
RESOURCES_PER_TYPE = 150


def generate_entities(seed: int, missing_rate: float) -> dict[Ref, Entity]:
    """Owners are always generated before what they own, so every owner exists.

    A `missing_rate` share of resources lacks one attribute, which makes every
    rule reading it err (the fail-closed cases of the design)."""
    rng = random.Random(f"{seed}:entities")
    pool: dict[Ref, Entity] = {}
    by_type: dict[str, list[Ref]] = {}

    def add(entity: Entity) -> None:
        pool[entity.ref] = entity
        by_type.setdefault(entity.ref.type, []).append(entity.ref)

    for ptype in ("User", "Service", "Agent", "Tool", "Connector"):
        kind = PRINCIPAL_TYPES[ptype][0]
        for i in range(POOL_SIZES[ptype]):
            ref = Ref(ptype, f"{ptype.lower()}-{i}")
            owner = None
            if ptype in OWNER_TYPES:
                owner = rng.choice(by_type[rng.choice(OWNER_TYPES[ptype])])
            add(Entity(ref, kind, _principal_attrs(rng, ptype), owner))

    for rtype, attr in NUMERIC_ATTR.items():
        low, high = NUMERIC_RANGE[rtype]
        for i in range(RESOURCES_PER_TYPE):
            values: dict[str, Value] = {
                attr: rng.randint(low, high),
                "sensitivity": rng.choices(SENSITIVITY, weights=(4, 4, 2, 1))[0],
                "project": rng.choice(PROJECTS),
            }
            if rng.random() < missing_rate:
                del values[rng.choice((attr, "sensitivity"))]
            add(Entity(Ref(rtype, f"{rtype.lower()}-{i}"), "resource", values))
    return pool


def _principal_attrs(rng: random.Random, ptype: str) -> dict[str, Value]:
    if ptype == "User":
        return {"team": rng.choice(TEAMS), "mfa": rng.random() < 0.7}
    if ptype == "Agent":
        return {"model": rng.choice(MODELS)}
    if ptype == "Tool":
        return {"vendor": rng.choice(("acme", "globex", "initech"))}
    if ptype == "Connector":
        return {"system": rng.choice(("salesforce", "jira", "s3", "github"))}
    return {"tier": rng.choice(("gold", "silver"))}


# ---- rules ------------------------------------------------------------------

NON_HUMAN_WEIGHTS: Mapping[str, int] = {
    "Agent": 6,
    "Tool": 3,
    "Connector": 2,
    "Service": 1,
}


def generate_rules(
    seed: int, n: int, groups: Mapping[str, tuple[str, ...]]
) -> tuple[Rule, ...]:
    """About one rule in eight is a deny. An allow for a non-human identity is
    often followed by a group-wide allow for humans, because no escalation
    means an agent only gets what its root human also gets."""
    rng = random.Random(f"{seed}:rules:{n}")
    group_resource = build_group_resource()
    rules: list[Rule] = []
    while len(rules) < n:
        rule_id = f"r{len(rules):05d}"
        group = rng.choice(GROUPS)
        rtype = group_resource[group]
        if rng.random() < 0.12:
            rules.append(_deny_rule(rng, rule_id, group, groups[group], rtype))
            continue
        if rng.random() < 0.35:
            ptype = "User"
        else:
            ptype = rng.choices(
                tuple(NON_HUMAN_WEIGHTS), tuple(NON_HUMAN_WEIGHTS.values())
            )[0]
        group_wide = rng.random() < (0.5 if ptype == "User" else 0.15)
        action = group if group_wide else rng.choice(groups[group])
        rules.append(_allow_rule(rng, rule_id, ptype, action, rtype))
        if ptype != "User" and rng.random() < 0.6 and len(rules) < n:
            rules.append(_allow_rule(rng, f"r{len(rules):05d}", "User", group, rtype))
    return tuple(rules)


def _allow_rule(
    rng: random.Random, rule_id: str, ptype: str, action: str, rtype: str
) -> Rule:
    attr = NUMERIC_ATTR[rtype]
    low, high = NUMERIC_RANGE[rtype]
    pool: list[Comparison] = [
        Comparison("resource", attr, "<=", _threshold(rng, low, high, 0.3, 0.95)),
        Comparison("resource", "sensitivity", "<=", rng.choice(SENSITIVITY[1:])),
        Comparison("context", "anomaly", "<", Decimal(rng.randint(30, 85)) / 100),
    ]
    if ptype == "User":
        pool.append(Comparison("principal", "team", "==", rng.choice(TEAMS)))
        pool.append(Comparison("principal", "mfa", "==", True))
    elif ptype == "Agent":
        pool.append(Comparison("principal", "model", "!=", rng.choice(MODELS)))
    conditions = tuple(rng.sample(pool, rng.randint(1, 3)))
    return Rule(rule_id, "allow", ptype, action, rtype, conditions)


def _deny_rule(
    rng: random.Random,
    rule_id: str,
    group: str,
    actions: Sequence[str],
    rtype: str,
) -> Rule:
    attr = NUMERIC_ATTR[rtype]
    low, high = NUMERIC_RANGE[rtype]
    ptype = rng.choice((None, None, "Agent", "Tool", "Connector", "User"))
    pool: list[Comparison] = [
        Comparison("context", "anomaly", ">=", Decimal(rng.randint(70, 95)) / 100),
        Comparison("resource", "sensitivity", ">=", rng.choice(SENSITIVITY[2:])),
        Comparison("resource", attr, ">", _threshold(rng, low, high, 0.7, 0.99)),
    ]
    if ptype == "User":
        pool.append(Comparison("principal", "mfa", "==", False))
    action = group if rng.random() < 0.3 else rng.choice(actions)
    conditions = tuple(rng.sample(pool, rng.randint(1, 2)))
    return Rule(rule_id, "deny", ptype, action, rtype, conditions)


def _threshold(rng: random.Random, low: int, high: int, lo: float, hi: float) -> int:
    return max(low, int(low + (high - low) * rng.uniform(lo, hi)))


# ---- requests ---------------------------------------------------------------


def generate_requests(
    seed: int,
    n: int,
    rules: Sequence[Rule],
    entities: Mapping[Ref, Entity],
    groups: Mapping[str, tuple[str, ...]],
    missing_rate: float,
) -> tuple[Request, ...]:
    """Most requests are aimed at a rule's target (so conditions decide), the
    rest at random actions (so most of those meet no rule). Chains are mostly
    valid; some omit the action from their scopes or have expired."""
    rng = random.Random(f"{seed}:requests:{len(rules)}")
    group_resource = build_group_resource()
    by_type: dict[str, list[Entity]] = {}
    for entity in entities.values():
        by_type.setdefault(entity.ref.type, []).append(entity)
    ptypes = tuple(PRINCIPAL_TYPES)
    requests: list[Request] = []
    for i in range(n):
        if rules and rng.random() < 0.65:
            rule = rng.choice(rules)
            ptype = rule.principal_type or rng.choice(ptypes)
            group = rule.action.split(".")[0]
            action = rule.action if rule.action != group else rng.choice(groups[group])
        else:
            ptype = rng.choices(ptypes, weights=(3, 4, 2, 1, 1))[0]
            group = rng.choice(GROUPS)
            action = rng.choice(groups[group])
        rtype = group_resource[group]
        if rng.random() < 0.05:
            rtype = rng.choice(tuple(RESOURCE_TYPES))
        principal = rng.choice(by_type[ptype])
        resource = rng.choice(by_type[rtype])
        now = BASE_NOW + dt.timedelta(seconds=rng.randint(0, 3600))
        context: dict[str, Value] = {
            "anomaly": Decimal(int(10_000 * rng.random() ** 2)) / 10_000,
            "env": rng.choice(ENVS),
        }
        if rng.random() < missing_rate:
            del context["anomaly"]
        chain = _chain(rng, i, principal, action, now, entities, groups)
        requests.append(
            Request(principal.ref, action, resource.ref, context, chain, now)
        )
    return tuple(requests)


def _chain(
    rng: random.Random,
    index: int,
    principal: Entity,
    action: str,
    now: dt.datetime,
    entities: Mapping[Ref, Entity],
    groups: Mapping[str, tuple[str, ...]],
) -> tuple[Link, ...]:
    """Agents carry a chain from their owner (a few carry none); tools owned by
    an agent carry human -> agent -> tool half of the time. Later links only
    ever narrow, so every generated chain is well formed."""
    members: list[Ref | None]
    if principal.kind == "agent":
        if rng.random() < 0.03:
            return ()
        members = [principal.owner, principal.ref]
    elif (
        principal.kind == "tool" and principal.owner is not None and rng.random() < 0.5
    ):
        agent = entities[principal.owner]
        members = [agent.owner, agent.ref, principal.ref]
    else:
        return ()
    hops = [
        (source, target)
        for source, target in zip(members, members[1:], strict=False)
        if source is not None and target is not None
    ]
    assert len(hops) == len(members) - 1, "every agent and tool has an owner"

    group = action.split(".")[0]
    roll = rng.random()
    if roll < 0.1:
        scopes = [rng.choice(GROUPS)]
    elif roll < 0.55:
        scopes = [group]
    else:
        scopes = [action]
    if rng.random() < 0.3:
        scopes.append(rng.choice(GROUPS))

    links: list[Link] = []
    for hop, (source, target) in enumerate(hops):
        if hop > 0:
            scopes = [_narrow(rng, s, groups) for s in scopes]
        expired = rng.random() < 0.03
        delta = -rng.randint(0, 600) if expired else rng.randint(600, 86_400)
        expires = now + dt.timedelta(seconds=delta)
        link_id = f"d-{index}-{hop}"
        links.append(
            Link(link_id, source, target, tuple(dict.fromkeys(scopes)), expires)
        )
    return tuple(links)


def _narrow(
    rng: random.Random, scope: str, groups: Mapping[str, tuple[str, ...]]
) -> str:
    if scope in groups and rng.random() < 0.3:
        return rng.choice(groups[scope])
    return scope


def generate_workload(
    n_rules: int,
    n_requests: int,
    seed: int = 7,
    missing_rate: float = 0.02,
) -> Workload:
    groups = build_groups()
    entities = generate_entities(seed, missing_rate)
    rules = generate_rules(seed, n_rules, groups)
    requests = generate_requests(
        seed, n_requests, rules, entities, groups, missing_rate
    )
    return Workload(
        seed=seed,
        groups=groups,
        group_resource=build_group_resource(),
        entities=entities,
        rules=rules,
        requests=requests,
    )
