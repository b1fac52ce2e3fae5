"""Request data (the JSON contract, as dicts) → a typed `Parsed` request.

Values are converted by the schema: a string becomes a label only where the
attribute is typed as one, decimals stay decimal, durations are parsed. A
value that does not fit its declared type is kept as an error value, which
fails closed where a rule reads it. A request that names an undeclared
principal type, resource type or action, or is not shaped like the contract,
is a bad request (`BadRequest`), which the engine turns into deny.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

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


class Entity:
    """An entity of the request. `attrs` maps declared attribute names to
    values (or error values); undeclared and null attributes are absent."""

    __slots__ = ("type", "id", "attrs", "owner", "ref")

    def __init__(
        self,
        type: str,
        id: str,
        attrs: Mapping[str, ir.Value | Err],
        owner: ir.EntityRef | None,
    ) -> None:
        self.type = type
        self.id = id
        self.attrs = attrs
        self.owner = owner
        self.ref = intern_ref(type, id)

    def __repr__(self) -> str:
        return f"Entity({self.type!r}, {self.id!r})"


_NOT_READ: Any = object()
_REFS: dict[tuple[str, str], ir.EntityRef] = {}
_MAX_REFS = 65_536
_MAX_INTERNED_ID = 256


def intern_ref(typ: str, ident: str) -> ir.EntityRef:
    """The same `EntityRef` for the same plain-string type and id, so a
    request does not build a new one for every entity it names. References
    are immutable and compare by value, so sharing one changes nothing."""
    if type(typ) is not str or type(ident) is not str or len(ident) > _MAX_INTERNED_ID:
        return ir.EntityRef(_plain_any(typ), _plain_any(ident))
    key = (typ, ident)
    ref = _REFS.get(key)
    if ref is None:
        if len(_REFS) >= _MAX_REFS:
            _REFS.clear()
        ref = _REFS[key] = ir.EntityRef(typ, ident)
    return ref


class LazyAttrs(Mapping[str, "ir.Value | Err"]):
    """Attributes converted by their declared type on first read, so a request
    costs only what its rules look at. Later layers (attributes given inline)
    override earlier ones (the entity's entry in `entities`)."""

    __slots__ = ("_layers", "_record", "_schema", "_cache")

    def __init__(
        self,
        layers: Sequence[Mapping[str, Any]],
        record: ir.RecordType,
        schema: ir.Schema,
    ) -> None:
        self._layers = layers
        self._record = record
        self._schema = schema
        self._cache: dict[str, ir.Value | Err] = {}

    def _raw(self, name: str) -> Any:
        for layer in reversed(self._layers):
            value = layer.get(name)
            if value is not None:
                return value
        return None

    def __getitem__(self, name: str) -> ir.Value | Err:
        try:
            return self._cache[name]
        except KeyError:
            pass
        spec = self._record.get(name)
        raw = self._raw(name) if spec is not None else None
        if spec is None or raw is None:
            raise KeyError(name)
        value = self._cache[name] = convert(raw, spec.type, self._schema)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """As `Mapping.get`, without raising and catching `KeyError`."""
        found = self._cache.get(name, _NOT_READ)
        if found is not _NOT_READ:
            return found
        spec = self._record.get(name)
        if spec is None:
            return default
        raw = self._raw(name)
        if raw is None:
            return default
        value = self._cache[name] = convert(raw, spec.type, self._schema)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._cache:
            return True
        return self._record.get(name) is not None and self._raw(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, _ in self._record.fields if n in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)


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


class Parsed:
    """A request that fits the contract and the schema."""

    __slots__ = (
        "principal",
        "action",
        "resource",
        "context",
        "chain",
        "link_errors",
        "entities",
        "now",
    )

    def __init__(
        self,
        principal: Entity,
        action: str,
        resource: Entity,
        context: Mapping[str, ir.Value | Err],
        chain: tuple[Link, ...] | None,
        link_errors: tuple[str, ...],
        entities: EntityIndex,
        now: datetime,
    ) -> None:
        self.principal = principal
        self.action = action
        self.resource = resource
        self.context = context
        self.chain = chain  # None: no chain was given
        self.link_errors = link_errors  # `malformed_link: …` reasons
        self.entities = entities
        self.now = now

    def entity(self, ref: ir.EntityRef) -> Entity | None:
        if ref == self.principal.ref:
            return self.principal
        if ref == self.resource.ref:
            return self.resource
        return self.entities.get(ref)


class EntityIndex:
    """The request's `entities`, by type and id, each built on first use."""

    __slots__ = ("_raw", "_schema", "_built")

    def __init__(
        self, raw: Mapping[tuple[str, str], Mapping[str, Any]], schema: ir.Schema
    ) -> None:
        self._raw = raw
        self._schema = schema
        self._built: dict[tuple[str, str], Entity] = {}

    def raw(self, typ: str, ident: str) -> Mapping[str, Any] | None:
        return self._raw.get((typ, ident))

    def get(self, ref: ir.EntityRef) -> Entity | None:
        key = (ref.type, ref.id)
        found = self._built.get(key)
        if found is None:
            data = self._raw.get(key)
            if data is None:
                return None
            found = self._built[key] = _build_entity(data, (), self._schema, None)
        return found


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
        if not _is_map(value):
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
            return value if type(value) is int else int(value)  # an `IntEnum`
        if (
            isinstance(value, Decimal)
            and value.is_finite()
            and (value == value.to_integral_value())
        ):
            return int(value)
    elif name == "decimal":
        if isinstance(value, Decimal) and not value.is_finite():
            return Err(f"`{value}` is not a finite number")
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            if type(value) is int or type(value) is Decimal:
                return value
            return int(value) if isinstance(value, int) else Decimal(value)
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
            return plain(value)
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


def plain(text: str) -> str:
    """The characters of a string as a plain `str`: a subclass (`StrEnum`,
    a tagged string) compares and hashes as its text, and nothing further in
    ripl sees the subclass or its methods."""
    return text if type(text) is str else str.__str__(text)


def _plain_any(value: Any) -> Any:
    return plain(value) if isinstance(value, str) else value


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
    if _is_map(value):
        return "an object"
    return type(value).__name__


def _is_map(value: object) -> bool:
    """`isinstance(x, Mapping)` is slow through the ABC; dicts go first."""
    return type(value) is dict or isinstance(value, Mapping)


def entity_ref(value: Any) -> ir.EntityRef | None:
    if type(value) is dict:
        typ, ident = value.get("type"), value.get("id")
        if type(typ) is str and type(ident) is str:
            return intern_ref(typ, ident)
    if isinstance(value, ir.EntityRef):
        return value
    if _is_map(value):
        typ, ident = value.get("type"), value.get("id")
        if isinstance(typ, str) and isinstance(ident, str):
            return ir.EntityRef(plain(typ), plain(ident))
    return None


# ---- the request as a whole -------------------------------------------------


def parse_time(value: Any, path: Sequence[str | int]) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("expected an RFC 3339 timestamp", path)
    parsed = _parse_time(value)
    if parsed is None:
        raise BadRequest(
            f"`{value}` is not an RFC 3339 timestamp",
            path,
            "write it like `2026-12-04T09:00:00Z`",
        )
    return parsed


_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


@functools.lru_cache(maxsize=4096)
def _parse_time(value: str) -> datetime | None:
    """Timestamps repeat across requests (expiries, `now`); parse each once.
    A date without a time of day is not a timestamp."""
    if not _TIMESTAMP_RE.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_entity(
    data: Any, path: tuple[str | int, ...], schema: ir.Schema
) -> ir.EntityDef:
    if type(data) is dict:  # the common case, checked in one go
        typ, ident = data.get("type"), data.get("id")
        definition = schema.entities.get(typ) if type(typ) is str else None
        if (
            definition is not None
            and type(ident) is str
            and len(ident) <= MAX_ID_LENGTH
            and type(data.get("attrs", {})) is dict
            and (data.get("owner") is None or type(data["owner"]) is dict)
            and (data.get("owner") is None or entity_ref(data["owner"]) is not None)
        ):
            return definition
    if not _is_map(data):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        raise BadRequest(
            f"`{where.lstrip('.')}` must be an object with `type` and `id`", path
        )
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
    attrs_data = data.get("attrs")
    if attrs_data is not None and not _is_map(attrs_data):
        raise BadRequest("`attrs` must be an object", (*path, "attrs"))
    owner = data.get("owner")
    if owner is not None and entity_ref(owner) is None:
        raise BadRequest(
            "`owner` must be an object with `type` and `id`", (*path, "owner")
        )
    return definition


def _build_entity(
    data: Mapping[str, Any],
    path: tuple[str | int, ...],
    schema: ir.Schema,
    index: EntityIndex | None,
) -> Entity:
    if path:
        definition = _check_entity(data, path, schema)
    else:
        definition = schema.entities[data["type"]]
    typ, ident = plain(data["type"]), plain(data["id"])
    base = index._raw.get((typ, ident)) if index is not None else None
    owner = entity_ref(data.get("owner"))
    return _assemble(typ, ident, definition, data.get("attrs"), owner, base, schema)


def _assemble(
    typ: str,
    ident: str,
    definition: ir.EntityDef,
    inline: Mapping[str, Any] | None,
    owner: ir.EntityRef | None,
    base: Mapping[str, Any] | None,
    schema: ir.Schema,
) -> Entity:
    """An entity from its parts: attributes given inline over those of its
    entry in `entities` (`base`); the owner given inline, else the entry's."""
    if base is None:
        layers: tuple[Mapping[str, Any], ...] = (inline,) if inline else ()
    else:
        layers = tuple(layer for layer in (base.get("attrs"), inline) if layer)
        if owner is None:
            owner = entity_ref(base.get("owner"))
    return Entity(typ, ident, LazyAttrs(layers, definition.attrs, schema), owner)


_LINKS: dict[tuple[Any, ...], tuple[frozenset[str], Link | str]] = {}
_MAX_LINKS = 8192


def _link(data: Any, index: int, schema: ir.Schema) -> Link | str:
    """A parsed link, or the reason it is malformed. Links repeat across
    requests (one delegation serves many calls), so a link whose fields are
    all plain strings is parsed once per schema: the result depends only on
    those fields and on the declared scopes, checked by identity."""
    key = _link_key(data, index)
    if key is None:
        return _parse_link(data, index, schema)
    found = _LINKS.get(key)
    if found is not None and found[0] is schema.groups:
        return found[1]
    link = _parse_link(data, index, schema)
    if len(_LINKS) >= _MAX_LINKS:
        _LINKS.clear()
    _LINKS[key] = (schema.groups, link)
    return link


def _link_key(data: Any, index: int) -> tuple[Any, ...] | None:
    """Every field `_parse_link` reads, when each is a plain string (or
    absent) and the link has no limits; None otherwise (parsed each time)."""
    if type(data) is not dict:
        return None
    source, target, scopes = data.get("from"), data.get("to"), data.get("scopes")
    if type(source) is not dict or type(target) is not dict or type(scopes) is not list:
        return None
    if data.get("limits"):
        return None
    fields = (
        data.get("id"),
        source.get("type"),
        source.get("id"),
        target.get("type"),
        target.get("id"),
        data.get("expires"),
        data.get("not_before"),
        data.get("purpose"),
        *scopes,
    )
    for value in fields:
        if type(value) is not str and value is not None:
            return None
    if None in fields[8:]:
        return None
    return (index, len(scopes), *fields)


def _parse_link(data: Any, index: int, schema: ir.Schema) -> Link | str:
    where = f"link {index}"
    if not _is_map(data):
        return f"malformed_link: {where} is not an object"
    source, target = entity_ref(data.get("from")), entity_ref(data.get("to"))
    if source is None or target is None:
        return f"malformed_link: {where} needs `from` and `to` as entities"
    scopes = data.get("scopes")
    if not isinstance(scopes, list | tuple) or not all(
        isinstance(s, str) for s in scopes
    ):
        return f"malformed_link: {where} needs `scopes` as a list of names"
    unknown = [s for s in scopes if s not in schema.groups]
    if unknown:
        return f"malformed_link: {where} names unknown scope `{unknown[0]}`"
    try:
        expires = parse_time(data.get("expires"), ())
    except BadRequest:
        return f"malformed_link: {where} needs `expires` as an RFC 3339 timestamp"
    not_before = None
    if data.get("not_before") is not None:
        try:
            not_before = parse_time(data["not_before"], ())
        except BadRequest:
            return (
                f"malformed_link: {where} has a `not_before` that is not an "
                "RFC 3339 timestamp"
            )
    purpose = data.get("purpose")
    if purpose is not None and not isinstance(purpose, str):
        return f"malformed_link: {where} has a `purpose` that is not a string"
    link_id = data.get("id")
    if not isinstance(link_id, str) or not link_id:
        # Without an id a link could never be revoked, so it is not accepted.
        return f"malformed_link: {where} needs an `id` (a non-empty string)"
    raw_limits = data.get("limits") or {}
    if not _is_map(raw_limits):
        return f"malformed_link: {where} has `limits` that are not an object"
    limits = dict(raw_limits)
    for name, value in limits.items():
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            limits[name] = Decimal(repr(value))
    if not all(
        isinstance(v, int | Decimal)
        and not isinstance(v, bool)
        and (not isinstance(v, Decimal) or v.is_finite())
        for v in limits.values()
    ):
        return f"malformed_link: {where} has `limits` that are not numbers"
    return Link(
        index,
        plain(link_id),
        source,
        target,
        tuple(plain(scope) for scope in scopes),
        expires,
        not_before,
        None if purpose is None else plain(purpose),
        dict(limits),
    )


def as_mapping(request: Any) -> Mapping[str, Any]:
    """Accept the contract as a mapping, or a typed object that converts to one."""
    if _is_map(request):
        return cast(Mapping[str, Any], request)
    for method in ("to_dict", "to_json"):
        convert_ = getattr(request, method, None)
        if callable(convert_):
            data = convert_()
            if _is_map(data):
                return cast(Mapping[str, Any], data)
    if attrs.has(type(request)):
        return attrs.asdict(request)
    raise BadRequest("a request must be an object (a mapping)")


def parse_request(data: Any, schema: ir.Schema, clock: datetime) -> Parsed:
    """Raises `BadRequest`; everything else about the request is data.
    Attribute values are converted lazily, when a rule reads them."""
    if type(data) is dict:
        parsed = _parse_plain(data, schema, clock)
        if parsed is not None:
            return parsed
    return _parse_general(data, schema, clock)


def _plain_entity(
    data: Any, schema: ir.Schema
) -> tuple[ir.EntityDef, Mapping[str, Any] | None, Any] | None:
    """An entity of plain dicts and strings, of a declared type: its
    definition, inline attributes and raw owner. None when anything about it
    is unusual, for the general path to judge."""
    if type(data) is not dict:
        return None
    typ, ident = data.get("type"), data.get("id")
    if type(typ) is not str or type(ident) is not str or len(ident) > MAX_ID_LENGTH:
        return None
    definition = schema.entities.get(typ)
    inline = data.get("attrs")
    owner = data.get("owner")
    if definition is None or (inline is not None and type(inline) is not dict):
        return None
    if owner is not None and (
        type(owner) is not dict
        or type(owner.get("type")) is not str
        or type(owner.get("id")) is not str
    ):
        return None
    return definition, inline, owner


def _plain_build(
    data: Mapping[str, Any],
    found: tuple[ir.EntityDef, Mapping[str, Any] | None, Any],
    raw: Mapping[tuple[str, str], Mapping[str, Any]],
    schema: ir.Schema,
) -> Entity:
    """`_build_entity` for an entity `_plain_entity` accepted."""
    definition, inline, owner_data = found
    typ, ident = data["type"], data["id"]
    owner = (
        None if owner_data is None else intern_ref(owner_data["type"], owner_data["id"])
    )
    base = raw.get((typ, ident)) if raw else None
    return _assemble(typ, ident, definition, inline, owner, base, schema)


def _parse_plain(
    data: dict[str, Any], schema: ir.Schema, clock: datetime
) -> Parsed | None:
    """The common request in one pass: plain dicts, lists and strings, every
    name declared. None when anything is unusual; the general path then
    decides, and explains what is wrong. Gives what the general path gives."""
    action = data.get("action")
    if type(action) is not str or action not in schema.actions:
        return None
    principal_data, resource_data = data.get("principal"), data.get("resource")
    principal_found = _plain_entity(principal_data, schema)
    resource_found = _plain_entity(resource_data, schema)
    if principal_found is None or resource_found is None:
        return None
    if principal_found[0].kind is None:
        return None
    raw: dict[tuple[str, str], Mapping[str, Any]] = {}
    listed = data.get("entities")
    if listed:
        if type(listed) is not list:
            return None
        for item in listed:
            if _plain_entity(item, schema) is None:
                return None
            key = (item["type"], item["id"])
            if key in raw:
                return None
            raw[key] = item
    context_data = data.get("context") or {}
    if type(context_data) is not dict:
        return None
    stamp = data.get("now")
    if stamp is None:
        now = clock
    elif type(stamp) is not str:
        return None
    else:
        moment = _parse_time(stamp)
        if moment is None:
            return None
        now = moment
    chain_data = data.get("delegation")
    chain: tuple[Link, ...] | None = None
    link_errors: tuple[str, ...] = ()
    if chain_data is not None:
        if type(chain_data) is not list:
            return None
        links: list[Link] = []
        errors: list[str] = []
        for i, item in enumerate(chain_data):
            link = _link(item, i, schema)
            if isinstance(link, str):
                errors.append(link)
            else:
                links.append(link)
        chain = tuple(links) if chain_data else None
        link_errors = tuple(errors)
    assert principal_data is not None and resource_data is not None
    return Parsed(
        _plain_build(principal_data, principal_found, raw, schema),
        action,
        _plain_build(resource_data, resource_found, raw, schema),
        LazyAttrs((context_data,), schema.context, schema),
        chain,
        link_errors,
        EntityIndex(raw, schema),
        now,
    )


def _parse_general(data: Any, schema: ir.Schema, clock: datetime) -> Parsed:
    data = as_mapping(data)
    for key in ("principal", "action", "resource"):
        if data.get(key) is None:
            raise BadRequest(
                f"missing `{key}`",
                (key,),
                "a request has `principal`, `action` and `resource`",
            )
    raw_entities: dict[tuple[str, str], Mapping[str, Any]] = {}
    entities = data.get("entities") or ()
    if not isinstance(entities, list | tuple):
        raise BadRequest("`entities` must be a list", ("entities",))
    for i, item in enumerate(entities):
        _check_entity(item, ("entities", i), schema)
        entity_key: tuple[str, str] = (plain(item["type"]), plain(item["id"]))
        if entity_key in raw_entities:
            raise BadRequest(
                f"entity `{entity_key[0]}::{entity_key[1]}` is listed twice",
                ("entities", i),
                "give each entity once; which entry counts would be a guess",
            )
        raw_entities[entity_key] = item
    index = EntityIndex(raw_entities, schema)
    principal = _build_entity(data["principal"], ("principal",), schema, index)
    if schema.entities[principal.type].kind is None:
        raise BadRequest(
            f"`{principal.type}` is not an identity, so it cannot be the principal",
            ("principal", "type"),
            "principals are humans, agents, services, tools or connectors",
        )
    resource = _build_entity(data["resource"], ("resource",), schema, index)
    action = data["action"]
    if not isinstance(action, str):
        raise BadRequest("`action` must be a string", ("action",))
    action = plain(action)
    if action not in schema.actions:
        from ripl.check import did_you_mean

        hint = did_you_mean(action, schema.actions)
        if action in schema.groups:
            hint = f"`{action}` is a group of actions; name one action under it"
        raise BadRequest(f"unknown action `{action}`", ("action",), hint)
    context_data = data.get("context") or {}
    if not _is_map(context_data):
        raise BadRequest("`context` must be an object", ("context",))
    now = clock if data.get("now") is None else parse_time(data["now"], ("now",))
    chain_data = data.get("delegation")
    chain: tuple[Link, ...] | None = None
    link_errors: list[str] = []
    if chain_data is not None:
        if not isinstance(chain_data, list | tuple):
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
        context=LazyAttrs((context_data,), schema.context, schema),
        chain=chain,
        link_errors=tuple(link_errors),
        entities=index,
        now=now,
    )


class JsonError(ValueError):
    """Request text that is not strict JSON; `pos` is an offset into it."""

    def __init__(self, message: str, pos: int = 0, token: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.token = token  # what to look for when the decoder gave no offset


def _no_constants(name: str) -> Any:
    raise JsonError(f"`{name}` is not a JSON number", token=f"constant:{name}")


def _exact_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise JsonError(
            f"a number longer than {MAX_NUMBER_DIGITS} digits", token="number:"
        )
    return int(text)


def _exact_decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_DIGITS:
        raise JsonError(
            f"a number longer than {MAX_NUMBER_DIGITS} digits", token="number:"
        )
    return Decimal(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two readers of one request must never see two different values.
            raise JsonError(
                f"the key `{key}` appears twice in one object", token=f"key:{key}"
            )
        out[key] = value
    return out


_JSON_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"(?P<key>\s*:)?|(?P<open>[{\[])|(?P<close>[}\]])'
    r"|(?P<constant>-?Infinity|NaN)|(?P<number>[-0-9.eE+]{1001,})"
)


def _locate(text: str, token: str) -> int:
    """The offset of what the decoder refused without saying where: a key
    given twice in one object (strings are skipped whole, so text inside a
    string never matches), a NaN or Infinity, an overlong number. 0 when it
    cannot be found."""
    kind, _, detail = token.partition(":")
    objects: list[set[str]] = []  # the keys seen in each open object or array
    for match in _JSON_TOKENS.finditer(text):
        if match.group("open") is not None:
            objects.append(set())
        elif match.group("close") is not None:
            if objects:
                objects.pop()
        elif match.group("key") is not None:
            if kind != "key" or not objects:
                continue
            quoted = match.group(0)[: match.group(0).rindex('"') + 1]
            try:
                name = json.loads(quoted)
            except ValueError:
                continue
            if name in objects[-1] and name == detail:
                return match.start()
            objects[-1].add(name)
        elif kind == "constant" and match.group("constant") == detail:
            return match.start()
        elif kind == "number" and match.group("number") is not None:
            return match.start()
    return 0


MAX_NUMBER_DIGITS = 1000


def load_json(text: str) -> Any:
    """Strict JSON with exact numbers: integers stay unbounded (up to 1000
    digits), decimals decimal; NaN, Infinity and repeated keys are refused.
    Raises `JsonError`."""
    try:
        return json.loads(
            text,
            parse_float=_exact_decimal,
            parse_int=_exact_int,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise JsonError(exc.msg.lower(), exc.pos) from None
    except JsonError as exc:
        if exc.token is not None:
            exc.pos = _locate(text, exc.token)
        raise
    except RecursionError:
        raise JsonError("the JSON is nested too deeply") from None
