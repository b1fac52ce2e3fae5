"""Who a row acts through: the root whose decision caps the principal's
(the chain's first grantor, or the human found by following owners
through `entities`), and the declared scopes of every identity type on
the way (`beyond_declared` over the batch)."""

from __future__ import annotations

import attrs
import numpy as np

from ripl.batch.chains import Chains
from ripl.batch.columns import BoolArray, Hashes, IntArray, _nonzero
from ripl.batch.plan import Plan
from ripl.batch.rows import Entities, Rows


@attrs.define
class Roots:
    """Per row: a root to cap with (`has`), or none to be found
    (`missing`, root_not_found), the root's type code, id and its entry in
    `entities` (-1: not listed, so no attributes)."""

    has: BoolArray
    missing: BoolArray
    code: IntArray
    id: Hashes
    entity: IntArray


def _roots(
    plan: Plan, rows: Rows, entities: Entities, chains: Chains, live: BoolArray
) -> Roots:
    n = rows.n
    has = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=bool)
    code = np.zeros(n, dtype=np.int64)
    ident = np.zeros(n, dtype=np.uint64)
    chained = chains.rows[live[chains.rows]]
    at = chains.index[chained]
    code[chained] = chains.root[at]
    ident[chained] = chains.root_id[at]
    has[chained] = (code[chained] != rows.ptype[chained]) | (
        ident[chained] != rows.pid[chained]
    )
    types = len(plan.types)
    kind = plan.kind[np.minimum(rows.ptype, types)]
    owned = _nonzero(live & (chains.index < 0) & (kind == 3))
    _walk_owners(plan, rows, entities, owned, has, missing, code, ident)
    entity = np.full(n, -1, dtype=np.int64)
    found = _nonzero(has)
    entity[found] = entities.find(found, code[found], ident[found])
    # A resource that is the root reads the root's attributes there.
    rows.slow |= has & (rows.rtype == code) & (rows.rid == ident)
    return Roots(has, missing, code, ident, entity)


def _walk_owners(
    plan: Plan,
    rows: Rows,
    entities: Entities,
    active: IntArray,
    has: BoolArray,
    missing: BoolArray,
    code: IntArray,
    ident: Hashes,
) -> None:
    """`find_root` for rows without a chain: owners are followed through
    `entities` until a human, every row one step at a time."""
    types = len(plan.types)
    current = rows.owner[active]
    current_id = rows.owner_id[active]
    none = rows.owner_none[active]
    owned = rows.ptype[active]
    seen = [(rows.ptype[active], rows.pid[active])]
    for _ in range(entities.pad.shape[1] + 2):
        if not len(active):
            return
        lost = none | ~plan.owners[owned, np.minimum(current, types)]
        for kind, name in seen:
            lost |= (current == kind) & (current_id == name)
        human = ~lost & (plan.kind[np.minimum(current, types)] == 1)
        found = active[human]
        has[found] = True
        code[found] = current[human]
        ident[found] = current_id[human]
        step = ~lost & ~human
        seen = [(kind[step], name[step]) for kind, name in seen]
        seen.append((current[step], current_id[step]))
        entry = entities.find(active[step], current[step], current_id[step])
        missing[active[lost]] = True
        missing[active[step][entry < 0]] = True
        go = entry >= 0
        seen = [(kind[go], name[go]) for kind, name in seen]
        active, owned = active[step][go], current[step][go]
        entry = entry[go]
        current = entities.owner[entry]
        current_id = entities.owner_id[entry]
        none = entities.owner_none[entry]
    rows.slow[active] = True  # longer than any owner chain can be


def _undeclared(plan: Plan, rows: Rows, entities: Entities, chains: Chains) -> IntArray:
    """`beyond_declared` per row, as a count of `scope_not_declared` reasons:
    the identity types the row acts through (its principal's, and its chain's
    members or, with no chain, its owners' up to the first human) whose
    declared scopes leave the action out. Rows already going one by one
    count 0."""
    n = rows.n
    beyond = plan.beyond
    if beyond is None:
        return np.zeros(n, dtype=np.int64)
    types = len(plan.types)
    live = ~rows.slow
    everyone = _nonzero(live)
    who, what = [everyone], [rows.ptype[everyone]]
    chained = chains.rows[live[chains.rows]]
    if len(chained) and chains.width:
        at = chains.index[chained]
        links = chains.pad[at][chains.valid[at]]  # row-major: row by row
        members = np.repeat(chained, chains.count[at])
        who += [members, members]
        what += [chains.source[links], chains.target[links]]
    owned = _nonzero(live & (chains.index < 0) & ~rows.owner_none)
    _owner_path(plan, rows, entities, owned, who, what)
    width = types + 1
    pairs = np.unique(
        np.concatenate(who) * width + np.minimum(np.concatenate(what), types)
    )
    row, code = pairs // width, pairs % width
    hit = beyond[code, rows.action[row]]
    counts: IntArray = np.bincount(row[hit], minlength=n)
    return counts


def _owner_path(
    plan: Plan,
    rows: Rows,
    entities: Entities,
    active: IntArray,
    who: list[IntArray],
    what: list[IntArray],
) -> None:
    """`owner_types` for rows without a chain: each owner's (row, type code),
    from the principal's own owner through `entities`, stopping after a
    human, a type that is no identity, or an owner not listed. A row never
    stops for a cycle here: once an owner repeats, the types it leads to are
    already recorded, and the steps are bounded by the entities a row lists."""
    types = len(plan.types)
    current = rows.owner[active]
    current_id = rows.owner_id[active]
    for _ in range(entities.pad.shape[1] + 1):
        if not len(active):
            return
        who.append(active)
        what.append(current)
        onward = plan.kind[np.minimum(current, types)] >= 2  # agents and others
        active, current, current_id = (
            active[onward],
            current[onward],
            current_id[onward],
        )
        entry = entities.find(active, current, current_id)
        listed = entry >= 0
        entry = entry[listed]
        owned = ~entities.owner_none[entry]
        active, entry = active[listed][owned], entry[owned]
        current, current_id = entities.owner[entry], entities.owner_id[entry]
