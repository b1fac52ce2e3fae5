"""The plug-in point for ripl itself: the neutral workload as ripl source text and
request dicts in the fixed request shape of the design.

`ripl_source` and `ripl_request` are the whole translation; `RiplPeer` only
calls `ripl.load(source).decide(request)` and, for batches, the columnar
`ripl.batch.decide_columns` on columns prepared before timing.
While the engine is not importable, `translate` raises `PeerUnavailableError`
and the harness skips ripl with that message.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from benchmarks.peers import Peer, PeerUnavailableError
from benchmarks.workload import (
    CONTEXT_ATTRS,
    OWNER_TYPES,
    PRINCIPAL_TYPES,
    RESOURCE_TYPES,
    Comparison,
    Entity,
    Ref,
    Request,
    Rule,
    Value,
    Workload,
)

_TYPE_NAMES: Mapping[str, str] = {
    "int": "int",
    "decimal": "decimal",
    "string": "string",
    "bool": "bool",
    "label": "sensitivity",
}


def ripl_source(workload: Workload) -> str:
    """One module: the schema (entities, context, actions; the sensitivity
    labels come from the standard library), then one rule per neutral rule, in
    the neutral order (ripl's result does not depend on it)."""
    lines = [
        "module bench",
        "",
        "import std.sensitivity",
        "",
    ]
    for ptype, (kind, attrs) in PRINCIPAL_TYPES.items():
        owner = ""
        if ptype in OWNER_TYPES:
            owner = " owner " + " | ".join(OWNER_TYPES[ptype])
        lines.append(f"entity {ptype}: {kind}{owner} {_attr_block(attrs)}")
    for rtype, attrs in RESOURCE_TYPES.items():
        lines.append(f"entity {rtype} {_attr_block(attrs)}")
    lines.append(f"context {_attr_block(CONTEXT_ATTRS)}")
    lines.append("")
    for group, actions in workload.groups.items():
        verbs = ", ".join(action.split(".", 1)[1] for action in actions)
        lines.append(f"actions {group} {{ {verbs} }}")
    lines.append("")
    for rule in workload.rules:
        lines.extend(_rule_lines(rule))
        lines.append("")
    return "\n".join(lines)


def _attr_block(attrs: Mapping[str, str]) -> str:
    fields = ", ".join(f"{name}: {_TYPE_NAMES[kind]}" for name, kind in attrs.items())
    return f"{{ {fields} }}"


def _rule_lines(rule: Rule) -> list[str]:
    lines = [f"{rule.effect} {rule.id}:"]
    if rule.principal_type is not None:
        lines.append(f"    principal is {rule.principal_type}")
    lines.append(f"    action {rule.action}")
    if rule.resource_type is not None:
        lines.append(f"    resource is {rule.resource_type}")
    condition = " and ".join(_condition(c) for c in rule.conditions)
    lines.append(f"    when {condition}")
    return lines


def _condition(comparison: Comparison) -> str:
    return (
        f"{comparison.subject}.{comparison.attr} {comparison.op} {_literal(comparison)}"
    )


def _literal(comparison: Comparison) -> str:
    value = comparison.value
    if comparison.attr == "sensitivity":
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Decimal):
        return f"{value:.4f}"
    return str(value)


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entity_dict(entity: Entity, *, with_owner: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": entity.ref.type, "id": entity.ref.id}
    out["attrs"] = dict(entity.attrs)
    if with_owner and entity.owner is not None:
        out["owner"] = _ref_dict(entity.owner)
    return out


def _ref_dict(ref: Ref) -> dict[str, str]:
    return {"type": ref.type, "id": ref.id}


def ripl_request(request: Request, entities: Mapping[Ref, Entity]) -> dict[str, Any]:
    """The request as the design's fixed JSON shape, with inline attributes for
    principal and resource, and `entities` carrying every owner and chain member
    the engine may need to find and evaluate the root."""
    principal = entities[request.principal]
    related: dict[Ref, Entity] = {}
    owner = principal.owner
    while owner is not None and owner not in related and owner in entities:
        related[owner] = entities[owner]
        owner = entities[owner].owner
    for link in request.chain:
        for ref in (link.source, link.target):
            if ref != request.principal and ref in entities:
                related[ref] = entities[ref]
    context: dict[str, Value] = dict(request.context)
    out: dict[str, Any] = {
        "principal": _entity_dict(principal),
        "action": request.action,
        "resource": _entity_dict(entities[request.resource], with_owner=False),
        "context": context,
        "entities": [_entity_dict(entity) for entity in related.values()],
        "now": _time(request.now),
    }
    if request.chain:
        out["delegation"] = [
            {
                "id": link.id,
                "from": _ref_dict(link.source),
                "to": _ref_dict(link.target),
                "scopes": list(link.scopes),
                "expires": _time(link.expires),
            }
            for link in request.chain
        ]
    return out


class RiplPeer(Peer):
    name = "ripl"

    def translate(self, workload: Workload) -> None:
        try:
            import ripl
        except ImportError as exc:
            raise PeerUnavailableError(f"ripl is not importable yet ({exc})") from exc
        if not hasattr(ripl, "load"):
            raise PeerUnavailableError(
                "ripl has no `load` yet; skipping the ripl engine"
            )
        self._ripl: Any = ripl
        self._workload = workload
        self.source = ripl_source(workload)

    def load(self) -> None:
        self._engine = self._ripl.load(text=self.source)

    def bust_cache(self) -> None:
        # The compiled-set cache is keyed by content hash, so a trailing
        # comment makes the same rules a new entry.
        self.source += "\n# cold load\n"

    def prepare(self, requests: Sequence[Request]) -> list[Any]:
        return [ripl_request(request, self._workload.entities) for request in requests]

    def prepare_batch(self, items: Sequence[Any]) -> Any:
        """The requests as columns, as a decision log would hold them (typed
        by the schema, strings dictionary-encoded, chains and entities as
        ragged columns): made before the clock starts, like the log itself."""
        from ripl.batch import requests_to_columns

        return _Columns(requests_to_columns(items, self._engine.policy.schema))

    def decide(self, item: Any) -> bool:
        # `Decision.effect` is the effect's name; reading it is all the timed
        # work besides ripl's own.
        return bool(self._engine.decide(item).effect == "allow")

    def decide_batch(self, items: Any) -> list[bool]:
        """Columns from `prepare_batch` go through `ripl.batch.decide_columns`
        and nothing else; plain requests are turned into columns first."""
        from ripl.batch import decide_columns

        prepared = items if isinstance(items, _Columns) else self.prepare_batch(items)
        result = decide_columns(self._engine, prepared.columns)
        return (result.effects == 0).tolist()  # type: ignore[no-any-return]


class _Columns:
    """A prepared batch: the columns `decide_columns` reads."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["action"])
