"""The whole batch: the stages in order, the no-escalation cap, and the rows
the vectorized path leaves decided one by one with `Engine.decide`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ripl import ir
from ripl.ast import Duration
from ripl.batch.chains import Chains
from ripl.batch.columns import (
    _EPOCH,
    _MICRO,
    BoolArray,
    IntArray,
    Text,
    _as_array,
    _nonzero,
    _text_hashes,
)
from ripl.batch.evaluate import Evaluation, Layout, Verdicts
from ripl.batch.plan import DENY, RESTRICT, Plan, plan_for
from ripl.batch.records import request_of_row
from ripl.batch.result import (
    _AGENT,
    _CEILING,
    _CHAIN,
    _ONE_BY_ONE,
    _ORPHAN,
    _RULES,
    ColumnResult,
    _compress,
    _Reasons,
)
from ripl.batch.roots import Roots, _roots, _undeclared
from ripl.batch.rows import Entities, Rows, _rows
from ripl.compile import CompiledPolicy
from ripl.decision import Decision


class Deciding(Protocol):
    """What a columnar batch needs from an engine (`ripl.Engine`). An engine
    may also offer `revoked_ids()` (every revoked link id, or None) and
    `is_revoked(link)`; with neither, rows with a chain are decided one by
    one. Without `now()` (a timezone-aware `datetime`), so are rows with a
    chain and no `now` of their own."""

    def snapshot(self) -> tuple[ir.PolicySet, Any]: ...

    def decide(self, request: Any) -> Decision: ...


MIN_GROUP = 8
"""Smaller batches are decided row by row: numpy's fixed cost exceeds a row's."""


def _hash_ids(rows: Rows, entities: Entities, chains: Chains) -> bool:
    """Give every id of the batch its hash, so that ids compare as numbers;
    False when two different strings share a hash (then nothing here may
    compare ids by hash)."""
    places: list[tuple[Any, str, Text]] = [
        (rows, "pid", rows.texts["pid"]),
        (rows, "rid", rows.texts["rid"]),
        (rows, "owner_id", rows.texts["owner_id"]),
        (entities, "id", entities.texts["id"]),
        (entities, "owner_id", entities.texts["owner_id"]),
        (chains, "source_id", chains.texts["source_id"]),
        (chains, "target_id", chains.texts["target_id"]),
    ]
    strings, hashes = [], []
    for owner, name, text in places:
        each, unique, unique_hashes = _text_hashes(text)
        setattr(owner, name, each)
        strings.append(unique)
        hashes.append(unique_hashes)
    every = np.concatenate(hashes)
    order = np.argsort(every, kind="stable")
    ranked = every[order]
    twins = _nonzero(ranked[1:] == ranked[:-1])
    if not len(twins):
        return True
    names = np.concatenate(strings)
    return bool((names[order[twins]] == names[order[twins + 1]]).all())


def decide_columns(
    engine: Deciding, columns: Mapping[str, Any], min_group: int = MIN_GROUP
) -> ColumnResult:
    """Decide every row of `columns` (see `ripl.batch`); each row
    gets the effect and rules `engine.decide` would give its request."""
    policy, evaluator = engine.snapshot()
    arrays = {name: _as_array(data) for name, data in columns.items()}
    n = len(arrays["action"])
    effects = np.full(n, DENY, dtype=np.int8)
    reasons = _Reasons(n)
    slow = np.ones(n, dtype=bool)
    entry_rows: list[Any] = []
    entry_rules: list[Any] = []
    plan = None
    if isinstance(evaluator, CompiledPolicy) and n >= min_group:
        plan = plan_for(evaluator)
        if plan.usable:
            slow, rows_, rules_ = _vectorized(
                plan, engine, policy, arrays, effects, reasons
            )
            entry_rows.append(rows_)
            entry_rules.append(rules_)
    ids = (
        plan.rule_ids if plan is not None else tuple(sorted(r.id for r in policy.rules))
    )
    rest = _nonzero(slow).tolist()
    more_rows: list[int] = []
    more_rules: list[int] = []
    if rest:
        index = (
            plan.rule_index if plan is not None else {r: i for i, r in enumerate(ids)}
        )
        extra: dict[str, int] = {}
        for row in rest:
            decision = engine.decide(request_of_row(arrays, row))
            effects[row] = ir.EFFECT_ORDER[decision.effect]
            reasons.decided[row] = decision.reason_codes
            for rule_id in decision.rule_ids:
                found = index.get(rule_id)
                if found is None:  # the engine was given another policy set
                    found = extra.setdefault(rule_id, len(ids) + len(extra))
                more_rows.append(row)
                more_rules.append(found)
        ids = ids + tuple(extra)
    reasons.stage[slow] = _ONE_BY_ONE
    entry_rows.append(np.array(more_rows, dtype=np.int64))
    entry_rules.append(np.array(more_rules, dtype=np.int64))
    offsets, rule_index = _compress(n, entry_rows, entry_rules)
    return ColumnResult(
        effects, offsets, rule_index, ids, n - len(rest), len(rest), reasons
    )


def _vectorized(
    plan: Plan,
    engine: Any,
    policy: ir.PolicySet,
    arrays: Mapping[str, Any],
    effects: npt.NDArray[np.int8],
    reasons: _Reasons,
) -> tuple[BoolArray, IntArray, IntArray]:
    """Decide what can be decided over whole columns; returns the rows left
    for `decide` and the (row, rule) entries of the others."""
    n = len(effects)
    leeway = policy.options.get("clock_leeway", Duration(0))
    assert isinstance(leeway, Duration)
    rows = _rows(plan, arrays, n, _clock(engine))
    entities = Entities(plan, arrays, rows)
    micros = leeway.seconds * 1_000_000
    chains = Chains(plan, engine, arrays, rows, micros)
    if not _hash_ids(rows, entities, chains):  # two ids hash alike: no shortcut
        rows.slow[:] = True
    rows.slow |= (rows.ptype == rows.rtype) & (rows.pid == rows.rid)  # reads itself
    entities.check(rows)
    chains.check(rows, micros)
    undeclared = _undeclared(plan, rows, entities, chains)
    kind = plan.kind[np.minimum(rows.ptype, len(plan.types))]
    agent = ~rows.slow & (chains.index < 0) & (kind == 2)
    failed = np.zeros(n, dtype=bool)
    failed[chains.rows[chains.failed]] = True
    refused = undeclared > 0
    live = ~rows.slow & ~agent & ~failed & ~refused
    roots = _roots(plan, rows, entities, chains, live)
    live &= ~rows.slow
    own = _nonzero(live)
    layout = Layout(rows, roots, chains, own)
    evaluation = Evaluation(plan, arrays, rows, entities, chains, layout)
    verdicts = evaluation.run()
    rows.slow[evaluation.slow_rows] = True
    entry_rows, entry_rules = _cap(verdicts, layout, roots, own, effects, reasons)
    reasons.stage[refused & ~rows.slow] = _CEILING
    reasons.stage[agent] = _AGENT
    reasons.stage[failed & ~rows.slow] = _CHAIN
    reasons.undeclared = undeclared
    reasons.chains = chains
    keep = ~rows.slow[entry_rows]
    return rows.slow, entry_rows[keep], entry_rules[keep]


def _clock(engine: Any) -> int | None:
    """The engine's `now()` in microseconds since the epoch, read once: the
    time of every row that gives none. None when the engine has no clock to
    read or it is not timezone-aware (`decide` then says what that means)."""
    read = getattr(engine, "now", None)
    if not callable(read):
        return None
    moment = read()
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        return None
    micros: int = (moment - _EPOCH) // _MICRO
    return micros


def _cap(
    verdicts: Verdicts,
    layout: Layout,
    roots: Roots,
    own: IntArray,
    effects: npt.NDArray[np.int8],
    reasons: _Reasons,
) -> tuple[IntArray, IntArray]:
    """The no-escalation cap, as `decide_parsed` and `cap_pending` apply it:
    a principal's deny stands; otherwise a root that cannot be found denies;
    otherwise the stronger effect wins, listing its side's rules, and two
    restricts list both sides' rules."""
    effect = verdicts.effect
    mine = effect[layout.own_at].astype(np.int64)
    capped = layout.capped
    theirs = np.where(capped, effect[np.where(capped, layout.root_at, 0)], -1)
    denied = mine == DENY
    orphan = roots.missing[own] & ~denied
    active = capped & ~denied & ~orphan
    escalated = active & (theirs > mine)
    both = active & (theirs == mine) & (mine == RESTRICT)
    final = np.where(escalated, theirs, mine)
    final[orphan] = DENY
    effects[own] = final
    listed = np.zeros(layout.size, dtype=bool)
    listed[layout.own_at] = ~orphan & ~escalated
    listed[layout.root_at[capped]] = (escalated | both)[capped]
    evaluated, entry_rules = verdicts.listed(listed)
    entry_rows = layout.src[evaluated]
    if both.any():  # two sides listed: sorted by id, each rule once
        key = np.unique(entry_rows * (1 << 32) + entry_rules)
        entry_rows, entry_rules = key >> 32, key & ((1 << 32) - 1)
    reasons.stage[own] = np.where(orphan, _ORPHAN, _RULES)
    reasons.escalated[own] = escalated
    at = layout.own_at
    reasons.blocking[own] = verdicts.blocking[at]
    reasons.winners[own] = np.where(verdicts.best[at] >= 0, verdicts.winners[at], 0)
    return entry_rows, entry_rules
