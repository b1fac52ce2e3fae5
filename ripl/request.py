"""Request data (the JSON contract, as dicts) → a typed `Parsed` request.

Values are converted by the schema: a string becomes a label only where the
attribute is typed as one, decimals stay decimal, durations are parsed. A
value that does not fit its declared type is kept as an error value, which
fails closed where a rule reads it. A request that names an undeclared
principal type, resource type or action, or is not shaped like the contract,
is a bad request (`BadRequest`), which the engine turns into deny.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from ripl import ir
from ripl.ast import Duration
from ripl.errors import EvaluationError
from ripl.parse import parse_duration

MAX_ID_LENGTH = 4096


class BadRequest(EvaluationError):
    """A request that does not fit the contract or the schema. `path` names
    the offending field (for positions in a JSON file)."""

    def __init__(
        self, message: str, path: Sequence[str | int] = (), hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)
        self.hint = hint


@attrs.frozen
class Err:
    """An error value: evaluation of anything that reads it is error."""

    message: str


@attrs.frozen
class Entity:
    type: str
    id: str
    attrs: Mapping[str, ir.Value | Err]
    owner: ir.EntityRef | None

    @property
    def ref(self) -> ir.EntityRef:
        return ir.EntityRef(self.type, self.id)


@attrs.frozen
class Link:
    index: int
    id: str | None
    source: ir.EntityRef
    target: ir.EntityRef
    scopes: tuple[str, ...]
    expires: datetime
    not_before: datetime | None
    purpose: str | None
    limits: Mapping[str, int | Decimal]


@attrs.frozen
class Parsed:
    principal: Entity
    action: str
    resource: Entity
    context: Mapping[str, ir.Value | Err]
    chain: tuple[Link, ...] | None  # None: no chain was given
    link_errors: tuple[str, ...]  # `malformed_link: …` reasons
    entities: Mapping[tuple[str, str], Entity]
    now: datetime

    def entity(self, ref: ir.EntityRef) -> Entity | None:
        if ref == self.principal.ref:
            return self.principal
        if ref == self.resource.ref:
            return self.resource
        return self.entities.get((ref.type, ref.id))


# ---- conversion of values by their declared type ----------------------------


def convert(value: Any, typ: ir.Type, schema: ir.Schema) -> ir.Value | Err:
    if isinstance(typ, ir.Prim):
        return _convert_prim(value, typ)
    if isinstance(typ, ir.LabelType):
        if not isinstance(value, str):
            return Err(f"expected a `{typ.order}` label, got {_json_kind(value)}")
        label = schema.labels[typ.order].label(value)
        return (
            label
            if label is not None
            else Err(f"unknown `{typ.order}` label `{value}`")
        )
    if isinstance(typ, ir.SetType):
        if not isinstance(value, list | tuple | set | frozenset):
            return Err(f"expected a set, got {_json_kind(value)}")
        items = []
        for item in value:
            converted = convert(item, typ.element, schema) if typ.element else item
            if isinstance(converted, Err):
                return converted
            items.append(converted)
        return frozenset(items)
    if isinstance(typ, ir.RecordType):
        if not isinstance(value, Mapping):
            return Err(f"expected a record, got {_json_kind(value)}")
        return convert_fields(value, typ, schema)
    if isinstance(typ, ir.EntityType):
        ref = entity_ref(value)
        if ref is None:
            return Err('expected an entity `{"type": …, "id": …}`')
        if ref.type not in typ.names:
            return Err(f"expected an entity of type {typ}, got `{ref.type}`")
        return ref
    return Err("unsupported value")


def convert_fields(
    data: Mapping[str, Any], record: ir.RecordType, schema: ir.Schema
) -> dict[str, ir.Value | Err]:
    """Declared fields only; a missing or null field stays absent."""
    out: dict[str, ir.Value | Err] = {}
    for name, spec in record.fields:
        if name in data and data[name] is not None:
            out[name] = convert(data[name], spec.type, schema)
    return out


def _convert_prim(value: Any, typ: ir.Prim) -> ir.Value | Err:
    name = typ.name
    if name == "bool":
        if isinstance(value, bool):
            return value
    elif name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
    elif name == "decimal":
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            return Decimal(repr(value))
        if isinstance(value, str):
            try:
                return (
                    Decimal(value)
                    if _DECIMAL_RE.match(value)
                    else Err(f"`{value}` is not a decimal")
                )
            except InvalidOperation:
                pass
    elif name == "string":
        if isinstance(value, str):
            return value
    elif name == "duration":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return Duration(value)
        if isinstance(value, str) and _DURATION_RE.match(value):
            return parse_duration(value)
        if isinstance(value, Duration):
            return value
    return Err(f"expected {name}, got {_json_kind(value)}")


_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_DURATION_RE = re.compile(r"^([0-9]+[dhms])+$")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def entity_ref(value: Any) -> ir.EntityRef | None:
    if isinstance(value, ir.EntityRef):
        return value
    if isinstance(value, Mapping):
        typ, ident = value.get("type"), value.get("id")
        if isinstance(typ, str) and isinstance(ident, str):
            return ir.EntityRef(typ, ident)
    return None


# ---- the request as a whole -------------------------------------------------


def parse_time(value: Any, path: Sequence[str | int]) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("expected an RFC 3339 timestamp", path)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"`{value}` is not an RFC 3339 timestamp",
            path,
            "write it like `2026-12-04T09:00:00Z`",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _entity(
    data: Any,
    path: tuple[str | int, ...],
    schema: ir.Schema,
    known: Mapping[tuple[str, str], Entity],
) -> Entity:
    if not isinstance(data, Mapping):
        raise BadRequest(f"`{path[-1]}` must be an object with `type` and `id`", path)
    typ, ident = data.get("type"), data.get("id")
    if not isinstance(typ, str):
        raise BadRequest("missing entity `type`", (*path, "type"))
    if not isinstance(ident, str):
        raise BadRequest("missing entity `id` (a string)", (*path, "id"))
    if len(ident) > MAX_ID_LENGTH:
        raise BadRequest(
            f"entity id is longer than {MAX_ID_LENGTH} characters", (*path, "id")
        )
    definition = schema.entities.get(typ)
    if definition is None:
        from ripl.check import did_you_mean

        raise BadRequest(
            f"unknown entity type `{typ}`",
            (*path, "type"),
            did_you_mean(typ, schema.entities),
        )
    attrs_data = data.get("attrs", {})
    if attrs_data is None:
        attrs_data = {}
    if not isinstance(attrs_data, Mapping):
        raise BadRequest("`attrs` must be an object", (*path, "attrs"))
    base = known.get((typ, ident))
    merged = dict(base.attrs) if base else {}
    merged.update(convert_fields(attrs_data, definition.attrs, schema))
    owner = base.owner if base else None
    if data.get("owner") is not None:
        owner = entity_ref(data["owner"])
        if owner is None:
            raise BadRequest(
                "`owner` must be an object with `type` and `id`", (*path, "owner")
            )
    return Entity(typ, ident, merged, owner)


def _link(data: Any, index: int, schema: ir.Schema) -> Link | str:
    where = f"link {index}"
    if not isinstance(data, Mapping):
        return f"malformed_link: {where} is not an object"
    source, target = entity_ref(data.get("from")), entity_ref(data.get("to"))
    if source is None or target is None:
        return f"malformed_link: {where} needs `from` and `to` as entities"
    scopes = data.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return f"malformed_link: {where} needs `scopes` as a list of names"
    unknown = [s for s in scopes if s not in schema.groups]
    if unknown:
        return f"malformed_link: {where} names unknown scope `{unknown[0]}`"
    try:
        expires = parse_time(data.get("expires"), ())
        not_before = None
        if data.get("not_before") is not None:
            not_before = parse_time(data["not_before"], ())
    except BadRequest:
        return f"malformed_link: {where} needs `expires` as an RFC 3339 timestamp"
    purpose = data.get("purpose")
    if purpose is not None and not isinstance(purpose, str):
        return f"malformed_link: {where} has a `purpose` that is not a string"
    link_id = data.get("id")
    if link_id is not None and not isinstance(link_id, str):
        return f"malformed_link: {where} has an `id` that is not a string"
    limits = data.get("limits") or {}
    if not isinstance(limits, Mapping) or not all(
        isinstance(v, int | Decimal) and not isinstance(v, bool)
        for v in limits.values()
    ):
        return f"malformed_link: {where} has `limits` that are not numbers"
    return Link(
        index,
        link_id,
        source,
        target,
        tuple(scopes),
        expires,
        not_before,
        purpose,
        dict(limits),
    )


def as_mapping(request: Any) -> Mapping[str, Any]:
    """Accept the contract as a mapping, or a typed object that converts to one."""
    if isinstance(request, Mapping):
        return request
    for method in ("to_dict", "to_json"):
        convert_ = getattr(request, method, None)
        if callable(convert_):
            data = convert_()
            if isinstance(data, Mapping):
                return data
    if attrs.has(type(request)):
        return attrs.asdict(request)
    raise BadRequest("a request must be an object (a mapping)")


def _floats_to_decimal(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _floats_to_decimal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_floats_to_decimal(v) for v in value]
    return value


def parse_request(data: Any, schema: ir.Schema, clock: datetime) -> Parsed:
    """Raises `BadRequest`; everything else about the request is data."""
    data = _floats_to_decimal(as_mapping(data))
    for key in ("principal", "action", "resource"):
        if key not in data or data[key] is None:
            raise BadRequest(
                f"missing `{key}`",
                (key,),
                "a request has `principal`, `action` and `resource`",
            )
    known: dict[tuple[str, str], Entity] = {}
    entities = data.get("entities") or []
    if not isinstance(entities, list):
        raise BadRequest("`entities` must be a list", ("entities",))
    for i, item in enumerate(entities):
        entity = _entity(item, ("entities", i), schema, known)
        known[(entity.type, entity.id)] = entity
    principal = _entity(data["principal"], ("principal",), schema, known)
    resource = _entity(data["resource"], ("resource",), schema, known)
    action = data["action"]
    if not isinstance(action, str):
        raise BadRequest("`action` must be a string", ("action",))
    if action not in schema.actions:
        from ripl.check import did_you_mean

        hint = did_you_mean(action, schema.actions)
        if action in schema.groups:
            hint = f"`{action}` is a group of actions; name one action under it"
        raise BadRequest(f"unknown action `{action}`", ("action",), hint)
    context_data = data.get("context") or {}
    if not isinstance(context_data, Mapping):
        raise BadRequest("`context` must be an object", ("context",))
    now = clock if data.get("now") is None else parse_time(data["now"], ("now",))
    chain_data = data.get("delegation")
    chain: tuple[Link, ...] | None = None
    link_errors: list[str] = []
    if chain_data is not None:
        if not isinstance(chain_data, list):
            raise BadRequest("`delegation` must be a list of links", ("delegation",))
        links = []
        for i, item in enumerate(chain_data):
            link = _link(item, i, schema)
            if isinstance(link, str):
                link_errors.append(link)
            else:
                links.append(link)
        chain = tuple(links) if chain_data else None
    return Parsed(
        principal=principal,
        action=action,
        resource=resource,
        context=convert_fields(context_data, schema.context, schema),
        chain=chain,
        link_errors=tuple(link_errors),
        entities=known,
        now=now,
    )


def load_json(text: str) -> Any:
    """JSON with exact numbers: integers stay unbounded, decimals decimal."""
    return json.loads(text, parse_float=Decimal)
