"""Delegation: is the chain valid for this action, and what facts does it give
rules? Also how a principal's root human is found.

Checked before any rule is looked at. Every failed check is listed as its
own reason; a widening link invalidates the whole chain, never clamped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal

import attrs

from ripl import ir
from ripl.request import Entity, Link, Parsed


@attrs.frozen
class Facts:
    """What `delegation.…` reads in a rule. With no chain: depth 0, grants and
    via false, purpose, root and limits are error."""

    depth: int
    root: ir.EntityRef | None
    purpose: str | None
    limits: Mapping[str, int | Decimal]
    scopes: tuple[tuple[str, ...], ...]
    members: frozenset[str]  # entity types on the chain

    def grants(self, scope: str) -> bool:
        if not self.scopes:
            return False
        return all(any(_covers(s, scope) for s in link) for link in self.scopes)

    def via(self, types: frozenset[str]) -> bool:
        return bool(self.members & types)


NO_CHAIN = Facts(0, None, None, {}, (), frozenset())


def _covers(scope: str, action: str) -> bool:
    return action == scope or action.startswith(scope + ".")


def _narrows(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    return all(any(_covers(p, c) for p in parent) for c in child)


def check_chain(
    request: Parsed,
    schema: ir.Schema,
    *,
    leeway: timedelta = timedelta(0),
    is_revoked: Callable[[Link], bool] = lambda link: False,
) -> tuple[list[str], Facts]:
    """The reasons the chain fails (empty when valid) and the facts it gives."""
    chain = request.chain
    principal = request.principal
    kind = schema.entities[principal.type].kind
    failures = list(request.link_errors)
    if not chain:  # no chain, or only malformed links
        if failures:
            return failures, NO_CHAIN
        if kind == "agent":
            return [
                f"agent_without_delegation: agent `{principal.ref}` acts only "
                "under a delegation chain, and the request has none"
            ], NO_CHAIN
        return [], NO_CHAIN

    first = chain[0]
    root_def = schema.entities.get(first.source.type)
    if root_def is None or root_def.kind != "human":
        failures.append(
            f"root_not_human: the chain starts at `{first.source}`, "
            "which is not a human"
        )
    seen = {first.source}
    now = request.now
    prev: Link | None = None
    stated: str | None = None  # the first purpose any link states
    for link in chain:
        where = ""  # written only when a check fails
        if prev is not None and prev.target != link.source:
            where = _where(link)
            failures.append(
                f"broken_chain: {where} does not start where link "
                f"{prev.index} ended (`{prev.target}`)"
            )
        if link.target in seen:
            where = where or _where(link)
            failures.append(f"broken_chain: {where} visits `{link.target}` twice")
        seen.add(link.target)
        if now >= link.expires + leeway:
            where = where or _where(link)
            failures.append(
                f"expired_link: {where} expired at {link.expires.isoformat()}"
            )
        if link.not_before is not None and now < link.not_before - leeway:
            where = where or _where(link)
            failures.append(
                f"expired_link: {where} is not valid before "
                f"{link.not_before.isoformat()}"
            )
        if is_revoked(link):
            where = where or _where(link)
            failures.append(f"revoked_link: {where} (`{link.id}`) was revoked")
        if prev is not None:
            if not _narrows(link.scopes, prev.scopes):
                where = where or _where(link)
                failures.append(
                    f"chain_widens: {where} grants scopes its grantor was not given"
                )
            if link.limits:
                failures.extend(
                    _limit_widening(prev, link, chain, where or _where(link))
                )
            if (
                link.purpose is not None
                and stated is not None
                and link.purpose != stated
            ):
                # Stating a purpose narrows; changing a stated one does not.
                where = where or _where(link)
                failures.append(
                    f"chain_widens: {where} changes the purpose from `{stated}` "
                    f"to `{link.purpose}`"
                )
        if stated is None:
            stated = link.purpose
        prev = link
    last = chain[-1]
    if last.target != principal.ref:
        failures.append(
            f"broken_chain: the chain ends at `{last.target}`, not at "
            f"the principal `{principal.ref}`"
        )
    action = request.action
    outside = [
        link.index for link in chain if not any(_covers(s, action) for s in link.scopes)
    ]
    if outside:
        links = ", ".join(str(i) for i in outside)
        failures.append(
            f"scope_not_delegated: `{request.action}` is outside the "
            f"scopes of link {links}"
        )
    limits: dict[str, int | Decimal] = {}
    for link in chain:
        for name, value in link.limits.items():
            limits[name] = min(limits[name], value) if name in limits else value
    purpose = next((link.purpose for link in chain if link.purpose), None)
    members = frozenset(e.type for link in chain for e in (link.source, link.target))
    facts = Facts(
        len(chain),
        first.source,
        purpose,
        limits,
        tuple(link.scopes for link in chain),
        members,
    )
    return failures, facts


def _where(link: Link) -> str:
    return f"link {link.index} (`{link.source}` → `{link.target}`)"


def _limit_widening(
    prev: Link, link: Link, chain: tuple[Link, ...], where: str
) -> list[str]:
    earlier: dict[str, int | Decimal] = {}
    for item in chain[: link.index]:
        for name, value in item.limits.items():
            earlier[name] = min(earlier.get(name, value), value)
    return [
        f"chain_widens: {where} raises limit `{name}` to {value}"
        for name, value in sorted(link.limits.items())
        if name in earlier and value > earlier[name]
    ]


def find_root(
    request: Parsed, schema: ir.Schema, facts: Facts
) -> tuple[Entity | None, str | None]:
    """The root human whose decision caps this one, or (None, why not).
    (None, None) when there is no root to compare with: a human on their own."""
    if facts.root is not None:
        return _root_entity(request, facts.root), None
    principal = request.principal
    if schema.entities[principal.type].kind in (None, "human"):
        return None, None
    seen = {principal.ref}
    owned = principal.type
    owner = principal.owner
    while True:
        if owner is None:
            return None, (
                f"root_not_found: `{principal.ref}` has no owner in the "
                "request, so its root human cannot be found"
            )
        if owner.type not in schema.entities[owned].owners:
            allowed = ", ".join(f"`{t}`" for t in sorted(schema.entities[owned].owners))
            return None, (
                f"root_not_found: `{owner}` cannot own a `{owned}` "
                f"(its owners are {allowed})"
            )
        definition = schema.entities.get(owner.type)
        if definition is None or owner in seen:
            return (
                None,
                f"root_not_found: the owners of `{principal.ref}` lead "
                "nowhere or around in a circle",
            )
        if definition.kind == "human":
            return _root_entity(request, owner), None
        seen.add(owner)
        owned = owner.type
        # Owners and roots come from `entities` only: whoever describes the
        # resource inline must not be able to redirect or empower the root.
        entity = request.entities.get(owner)
        if entity is None:
            return None, (
                f"root_not_found: owner `{owner}` is not among the request's entities"
            )
        owner = entity.owner


def owner_types(request: Parsed, schema: ir.Schema) -> tuple[str, ...]:
    """The types of the principal's owners, in order, up to the first human
    (or as far as `entities` lead): whose authority a principal without a
    chain acts under."""
    out: list[str] = []
    seen: set[ir.EntityRef] = set()
    owner = request.principal.owner
    while owner is not None and owner not in seen:
        seen.add(owner)
        out.append(owner.type)
        definition = schema.entities.get(owner.type)
        if definition is None or definition.kind in (None, "human"):
            break
        entity = request.entities.get(owner)
        owner = None if entity is None else entity.owner
    return tuple(out)


def _root_entity(request: Parsed, ref: ir.EntityRef) -> Entity:
    """The root as `entities` describes it, never as the request's resource
    or principal describe it inline."""
    found = request.entities.get(ref)
    return found if found is not None else Entity(ref.type, ref.id, {}, None)
