"""z3 models → concrete requests in the contract's shape, and the check that
a request really shows what a finding claims.

A witness is only ever reported after `observe` has run it through the
reference engine (and, to see which rules matched, the reference
interpreter on the same parsed request). A witness that does not reproduce
is a bug in the encoding; the analyzer drops it and logs it at warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import attrs
import z3

from ripl import ir
from ripl.analyze.encode import ModelValues, Readable, Vars
from ripl.decision import Decision, Outcome, combine
from ripl.delegation import NO_CHAIN, Facts, check_chain, find_root
from ripl.engine import Engine
from ripl.interpret import Interpreter, Scope, evaluate_rule, target_holds
from ripl.request import BadRequest, Err, Parsed, parse_request

log = logging.getLogger(__name__)

NOW = "2026-01-01T00:00:00Z"
EXPIRES = "2026-01-02T00:00:00Z"
FRESH_IDS = {"p": "p-1", "r": "r-1", "o": "o-1", "root": "h-1"}


# ---- building -------------------------------------------------------------------


def _decimal(value: Any, unit: int) -> Decimal:
    exact = Fraction(value) / unit
    return _fraction_decimal(exact)


def _fraction_decimal(value: Fraction) -> Decimal:
    result = Decimal(value.numerator) / Decimal(value.denominator)
    return (
        result.normalize()
        if result != result.to_integral_value()
        else Decimal(int(result))
    )


class WitnessBuilder:
    """Reads one model; the request it builds satisfies every formula the
    model satisfies, given the domain's assumptions."""

    def __init__(self, variables: Vars, schemas: tuple[ir.Schema, ...]) -> None:
        self.v = variables
        self.schemas = schemas

    def _entity_def(self, name: str) -> ir.EntityDef | None:
        for schema in self.schemas:
            if name in schema.entities:
                return schema.entities[name]
        return None

    def _label_name(self, order: str, rank: int) -> str:
        for schema in self.schemas:
            if order in schema.labels:
                labels = schema.labels[order].labels
                return labels[max(0, min(rank, len(labels) - 1))]
        return str(rank)

    def build(self, z3_model: z3.ModelRef) -> dict[str, Any]:
        return self.build_from(ModelValues(z3_model, self.v.names))

    def build_from(self, model: Readable) -> dict[str, Any]:
        v = self.v
        d = v.domain
        val = model.get

        ptype = d.types[val(v.ptype)]
        rtype = d.types[val(v.rtype)]
        action = d.actions[val(v.action)]
        otype_index = val(v.slot_types["o"])
        root_index = val(v.slot_types["root"])
        otype = d.types[otype_index] if 0 <= otype_index < len(d.types) else None
        roottype = d.types[root_index] if 0 <= root_index < len(d.types) else None
        depth = val(v.depth) or 0
        kind = d.kinds.get(ptype)
        has_root = kind not in (None, "human")
        owner_present = bool(val(v.owner_present)) and has_root and otype is not None

        ids = self._ids(model)
        types = {"p": ptype, "r": rtype, "o": otype, "root": roottype}
        if (
            has_root
            and depth == 0
            and otype is not None
            and d.kinds.get(otype) == "human"
        ):
            ids["root"], types["root"] = ids["o"], otype
        attrs_of = {
            slot: self._attrs(model, slot, types[slot])
            for slot in ("p", "r", "o", "root")
        }
        attrs_of["ctx"] = self._attrs(model, "ctx", None)
        self._merge_same_refs(types, ids, attrs_of)

        principal: dict[str, Any] = {
            "type": ptype,
            "id": ids["p"],
            "attrs": attrs_of["p"],
        }
        entities: list[dict[str, Any]] = []
        if owner_present and otype is not None:
            principal["owner"] = {"type": otype, "id": ids["o"]}
            owner: dict[str, Any] = {
                "type": otype,
                "id": ids["o"],
                "attrs": attrs_of["o"],
            }
            if d.kinds.get(otype) not in (None, "human") and roottype is not None:
                owner["owner"] = {"type": roottype, "id": ids["root"]}
            entities.append(owner)
        root_needed = roottype is not None and (
            depth >= 1
            or (has_root and (otype is None or d.kinds.get(otype) != "human"))
        )
        if (
            root_needed
            and roottype is not None
            and not (owner_present and (otype, ids["o"]) == (roottype, ids["root"]))
        ):
            entities.append(
                {"type": roottype, "id": ids["root"], "attrs": attrs_of["root"]}
            )
        request: dict[str, Any] = {
            "principal": principal,
            "action": action,
            "resource": {"type": rtype, "id": ids["r"], "attrs": attrs_of["r"]},
            "context": attrs_of["ctx"],
            "now": NOW,
        }
        if depth >= 1 and roottype is not None:
            request["delegation"] = self._chain(
                model, depth, roottype, ids["root"], ptype, ids["p"]
            )
        if entities:
            request["entities"] = entities
        return request

    def _ids(self, model: Readable) -> dict[str, str]:
        v = self.v
        ids: dict[str, str] = {}
        taken: set[str] = set()
        for slot in ("p", "r", "o", "root"):
            if slot in v.used_ids:
                value = model.get(v.ids[slot])
                ids[slot] = value if isinstance(value, str) else FRESH_IDS[slot]
                taken.add(ids[slot])
        for slot in ("p", "r", "o", "root"):
            if slot not in ids:
                fresh = FRESH_IDS[slot]
                while fresh in taken:
                    fresh += "x"
                ids[slot] = fresh
                taken.add(fresh)
        # The owner and the root name one entity when the model says so.
        if model.get(v.root_is_owner) is True:
            if "root" in v.used_ids and "o" not in v.used_ids:
                ids["o"] = ids["root"]
            else:
                ids["root"] = ids["o"]
        return ids

    def _spec(self, slot: str, typ: str | None, first: str) -> ir.AttrSpec | None:
        if slot == "ctx":
            for schema in self.schemas:
                spec = schema.context.get(first)
                if spec is not None:
                    return spec
            return None
        entity = self._entity_def(typ) if typ else None
        return entity.attrs.get(first) if entity else None

    def _attrs(self, model: Readable, slot: str, typ: str | None) -> dict[str, Any]:
        v = self.v
        out: dict[str, Any] = {}
        leaves: list[tuple[tuple[str, ...], Any]] = []
        for (s, path, type_name), term in v.values.items():
            if s == slot:
                leaves.append((path, (type_name, term)))
        for (s, path, element), term in v.members.items():
            if s == slot:
                value = v.member_values[(s, path, element)]
                leaves.append((path, ("#member", value, term)))
        for path, payload in sorted(leaves, key=lambda x: x[0]):
            spec = self._spec(slot, typ, path[0])
            if spec is None:
                continue
            field_path = [p for p in path if not p.startswith("#")]
            specs = self._walk_specs(spec, field_path)
            if specs is None:
                continue
            if not all(
                self._present(model, slot, tuple(field_path[: i + 1]), s)
                for i, s in enumerate(specs)
            ):
                continue
            self._place(out, field_path, path, payload, specs[-1].type, model)
        # An optional attribute only tested with `has` has no value of its own
        # in the model: give it one of its type.
        for (s, path), term in sorted(v.presence.items(), key=lambda x: x[0][1]):
            if s != slot or model.get(term) is not True:
                continue
            spec = self._spec(slot, typ, path[0])
            specs = self._walk_specs(spec, list(path)) if spec else None
            if specs is None or not all(
                self._present(model, slot, path[: i + 1], x)
                for i, x in enumerate(specs)
            ):
                continue
            target = out
            for name in path[:-1]:
                target = target.setdefault(name, {})
            if isinstance(target, dict) and path[-1] not in target:
                target[path[-1]] = self._default(specs[-1].type)
        return out

    def _default(self, typ: ir.Type) -> Any:
        if isinstance(typ, ir.RecordType):
            return {
                name: self._default(spec.type)
                for name, spec in typ.fields
                if not spec.optional
            }
        if isinstance(typ, ir.LabelType):
            return self._label_name(typ.order, 0)
        if isinstance(typ, ir.SetType):
            return []
        if isinstance(typ, ir.EntityType):
            return {"type": sorted(typ.names)[0] if typ.names else "?", "id": "e-1"}
        return {"bool": False, "string": ""}.get(str(typ), 0)

    def _walk_specs(
        self, first: ir.AttrSpec, path: list[str]
    ) -> list[ir.AttrSpec] | None:
        specs = [first]
        for name in path[1:]:
            current = specs[-1].type
            if not isinstance(current, ir.RecordType):
                return None
            nxt = current.get(name)
            if nxt is None:
                return None
            specs.append(nxt)
        return specs

    def _present(
        self, model: Readable, slot: str, path: tuple[str, ...], spec: ir.AttrSpec
    ) -> bool:
        if not spec.optional:
            return True
        term = self.v.presence.get((slot, path))
        return term is not None and model.get(term) is True

    def _place(
        self,
        out: dict[str, Any],
        field_path: list[str],
        path: tuple[str, ...],
        payload: Any,
        typ: ir.Type,
        model: Readable,
    ) -> None:
        target = out
        for name in field_path[:-1]:
            target = target.setdefault(name, {})
        leaf = field_path[-1]
        if payload[0] == "#member":
            _, element, term = payload
            items = target.setdefault(leaf, [])
            if model.get(term) is True and isinstance(items, list):
                items.append(element)
            return
        _, term = payload
        raw = model.get(term)
        if path[-1] == "#type":
            ref = target.setdefault(leaf, {})
            ref["type"] = (
                self.v.domain.types[raw]
                if isinstance(raw, int) and 0 <= raw < len(self.v.domain.types)
                else "?"
            )
            return
        if path[-1] == "#id":
            target.setdefault(leaf, {})["id"] = raw
            return
        target[leaf] = self._json_value(raw, typ)

    def _json_value(self, raw: Any, typ: ir.Type) -> Any:
        if typ == ir.DECIMAL:
            return _decimal(raw, self.v.unit)
        if isinstance(typ, ir.LabelType):
            return self._label_name(typ.order, int(raw))
        return raw

    def _merge_same_refs(
        self,
        types: Mapping[str, str | None],
        ids: Mapping[str, str],
        attrs_of: dict[str, dict[str, Any]],
    ) -> None:
        slots = ("p", "r", "o", "root")
        for a in slots:
            for b in slots:
                if a < b and types[a] and (types[a], ids[a]) == (types[b], ids[b]):
                    merged = {**attrs_of[a], **attrs_of[b]}
                    attrs_of[a] = attrs_of[b] = merged

    def _chain(
        self,
        model: Readable,
        depth: int,
        roottype: str,
        root_id: str,
        ptype: str,
        principal_id: str,
    ) -> list[dict[str, Any]]:
        v = self.v
        action = v.domain.actions[model.get(v.action)]
        chosen = {g for g, term in v.inscope.items() if model.get(term) is True}
        scopes = sorted(chosen | {action})
        members = [t for t, term in v.mid.items() if model.get(term) is True]
        while len(members) < depth - 1:
            members.append(ptype)
        hops = [(roottype, root_id)]
        hops += [(t, f"m-{i + 1}") for i, t in enumerate(members[: depth - 1])]
        hops.append((ptype, principal_id))
        links: list[dict[str, Any]] = []
        for i in range(len(hops) - 1):
            link: dict[str, Any] = {
                "from": {"type": hops[i][0], "id": hops[i][1]},
                "to": {"type": hops[i + 1][0], "id": hops[i + 1][1]},
                "scopes": scopes,
                "expires": EXPIRES,
                "id": f"d-{i}",
            }
            links.append(link)
        first = links[0]
        if model.get(v.purpose_present) is True:
            first["purpose"] = model.get(v.purpose)
        limits = {}
        for name, (present, value) in sorted(v.limits.items()):
            if model.get(present) is True:
                limits[name] = _decimal(model.get(value), v.unit)
        if limits:
            first["limits"] = limits
        return links


# ---- observing ------------------------------------------------------------------


class Reading:
    """How the rules one engine subset holds evaluate for one principal (the
    request's own, or the root human it is capped by). Single rules are
    evaluated when asked about; the whole pass, for statuses and the
    combined effect, only when one of those is needed."""

    def __init__(self, subset: _Subset, parsed: Parsed, facts: Facts) -> None:
        self._subset = subset
        self._parsed = parsed
        self._facts = facts
        self._outcome: Outcome | None = None
        self._single: dict[str, str | None] = {}

    def outcome(self) -> Outcome:
        if self._outcome is None:
            self._outcome = self._subset.interpreter.outcome(self._parsed, self._facts)
        return self._outcome

    def statuses(self) -> dict[str, str]:
        outcome = self.outcome()
        found = {m.rule.id: "match" for m in outcome.matches}
        found.update((rule.id, "error") for rule, _ in outcome.errors)
        return found

    def errors(self) -> dict[str, str]:
        return {rule.id: message for rule, message in self.outcome().errors}

    def effect(self) -> str:
        return combine(self.outcome(), self._subset.policy.schema.obligations).effect

    def status(self, rule_id: str) -> str | None:
        """ "match", "error" or None, as the whole pass would say."""
        if self._outcome is not None:
            return self.statuses().get(rule_id)
        if rule_id not in self._single:
            self._single[rule_id] = self._evaluate(rule_id)
        return self._single[rule_id]

    def _evaluate(self, rule_id: str) -> str | None:
        rule = self._subset.by_id.get(rule_id)
        if rule is None or not target_holds(rule, self._parsed):
            return None
        result = evaluate_rule(rule, Scope(self._parsed, self._facts))
        if isinstance(result, Err):
            return "error"
        return None if result is None else "match"


class Observation:
    """What the reference engine decides for a request, and which rules
    matched or erred for the principal (`own`) and for its root."""

    def __init__(
        self,
        decision: Decision,
        chain_ok: bool,
        own: Reading | None = None,
        root: Reading | None = None,
        action: str | None = None,
    ) -> None:
        self.decision = decision
        self.chain_ok = chain_ok
        self.action = action
        self._own = own
        self._root = root

    @property
    def effect(self) -> str:
        return self.decision.effect

    @property
    def own(self) -> Mapping[str, str]:
        return {} if self._own is None else self._own.statuses()

    @property
    def root(self) -> Mapping[str, str] | None:
        return None if self._root is None else self._root.statuses()

    @property
    def own_effect(self) -> str | None:
        return None if self._own is None else self._own.effect()

    @property
    def root_effect(self) -> str | None:
        return None if self._root is None else self._root.effect()

    @property
    def errors(self) -> Mapping[str, str]:
        return {} if self._own is None else self._own.errors()

    def matched(self, rule_id: str) -> bool:
        return self._own is not None and self._own.status(rule_id) == "match"

    def erred(self, rule_id: str) -> bool:
        return self._own is not None and self._own.status(rule_id) == "error"


class Observer:
    """Runs requests through the reference engine. A decision depends only on
    the rules whose target admits the request's action, resource type and
    the type of its principal or of the root human it is capped by, so each
    such combination gets an engine over those rules alone: the same
    decisions, without walking every rule of a large policy set for each
    witness. When the chain or the root cannot be found the types are not
    narrowed (the engine's own reading of the chain decides then)."""

    def __init__(self, policy: ir.PolicySet) -> None:
        self.policy = policy
        self._engines: dict[_Key, _Subset] = {}
        self._seen: dict[str, Observation | None] = {}
        self._by_action: dict[str, tuple[ir.Rule, ...]] = {}

    def _engine(
        self,
        action: str,
        resource: str | None = None,
        principals: frozenset[str] | None = None,
    ) -> _Subset:
        key = (action, resource, principals)
        found = self._engines.get(key)
        if found is None:
            for_action = self._by_action.get(action)
            if for_action is None:
                for_action = self._by_action[action] = tuple(
                    r
                    for r in self.policy.rules
                    if r.actions is None or action in r.actions
                )
            rules = tuple(
                r
                for r in for_action
                if (
                    resource is None
                    or r.resource_types is None
                    or resource in r.resource_types
                )
                and (
                    principals is None
                    or r.principal_types is None
                    or not principals.isdisjoint(r.principal_types)
                )
            )
            policy = attrs.evolve(self.policy, rules=rules)
            engine = Engine(policy, mode="reference", clock=_clock)
            found = self._engines[key] = _Subset(
                engine, policy, Interpreter(policy), {r.id: r for r in rules}
            )
        return found

    def observe(self, request: Mapping[str, Any]) -> Observation | None:
        """What the engine makes of `request`. Witnesses built at region
        points often coincide (every choice is the simplest value), so an
        observation is kept by the request's text and reused."""
        key = repr(request)
        if key in self._seen:
            return self._seen[key]
        found = self._observe(request)
        if len(self._seen) < SEEN_LIMIT:
            self._seen[key] = found
        return found

    def _observe(self, request: Mapping[str, Any]) -> Observation | None:
        action = request.get("action")
        if not isinstance(action, str) or action not in self.policy.schema.actions:
            return None
        schema = self.policy.schema
        try:
            parsed = parse_request(request, schema, datetime(2026, 1, 1, tzinfo=UTC))
        except BadRequest:
            decision = self._engine(action).engine.decide(request)
            return Observation(decision, False)
        failures, facts = check_chain(parsed, schema)
        root_entity, missing = find_root(parsed, schema, facts)
        principals = None
        if not failures and missing is None:
            principals = frozenset(
                [parsed.principal.type]
                + ([root_entity.type] if root_entity is not None else [])
            )
        subset = self._engine(action, parsed.resource.type, principals)
        decision = subset.engine.decide(request)
        root: Reading | None = None
        if (
            root_entity is not None
            and missing is None
            and (root_entity.ref != parsed.principal.ref)
        ):
            as_root = Parsed(
                root_entity,
                parsed.action,
                parsed.resource,
                parsed.context,
                None,
                (),
                parsed.entities,
                parsed.now,
            )
            root = Reading(subset, as_root, NO_CHAIN)
        return Observation(
            decision,
            not failures and missing is None,
            Reading(subset, parsed, facts),
            root,
            parsed.action,
        )


_Key = tuple[str, str | None, frozenset[str] | None]
SEEN_LIMIT = 100_000
"""Observations an observer keeps for reuse."""


@attrs.frozen
class _Subset:
    """The engine and interpreter over the rules one combination of action,
    resource type and principal types can meet."""

    engine: Engine
    policy: ir.PolicySet
    interpreter: Interpreter
    by_id: Mapping[str, ir.Rule]


def _clock() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)
