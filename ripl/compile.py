"""Typed IR → decision tree → evaluator.

The tree dispatches on `(action, principal type, resource type)` by one dict
lookup to a bucket: the rules whose target holds for exactly that triple, in
policy order. Conditions are compiled once per policy set into Python
closures (no source text is generated, so no constant can ever be spliced
into code: every constant is a value bound in a closure). Inside a bucket,
sub-expressions that several rules share (the same comparison, the same risk
score) are computed once per request through a memo slot, and the operands
of `and`/`or` run cheapest first.

The reference interpreter defines the meaning. Every fast path here returns
what `ripl.interpret` would, error messages included; anything without a
fast path is handed to the interpreter itself. Because the three-valued
`and`/`or` are order-independent, reordering changes only speed: an `and`
stops at its first false operand, and otherwise reports the error of the
earliest erring operand in source order, as the interpreter does.

The tree never stops early on a certain deny: `Outcome` lists every match
and every error, and the decision's error list depends on all of them.
"""

from __future__ import annotations

import bisect
import decimal
import functools
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs

from ripl import interpret, ir, ops
from ripl.ast import Duration
from ripl.decision import (
    NO_RULE,
    Match,
    Outcome,
    Pending,
    RuleRef,
    Verdict,
    combine,
    combine_winners,
    matched_reason,
)
from ripl.delegation import Facts
from ripl.interpret import Result, Scope, path_text, truth
from ripl.ir import children, walk
from ripl.memo import CompiledSetCache
from ripl.request import Err, Parsed

log = logging.getLogger(__name__)

Triple: TypeAlias = tuple[str, str, str]
"""`(action, principal type, resource type)`: the dispatch key."""

Fn: TypeAlias = Callable[["Env"], Result]

EMPTY_OUTCOME = Outcome((), ())
MAX_BUCKETS = 65_536
"""More triples than this are evaluated without storing their bucket."""

_UNSET: Any = object()
_MISSING: Any = object()
_ORDER_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Env(Scope):
    """One evaluation: the request, the chain's facts, and the memo of shared
    sub-expressions. A subclass of the interpreter's scope, so every node
    without a fast path can be handed to `interpret.evaluate` unchanged."""

    __slots__ = ("memo",)

    def __init__(self, request: Parsed, facts: Facts) -> None:
        self.request = request
        self.facts = facts
        self.memo: dict[int, Result] = {}


# ---- reads: which request attributes a condition can touch ------------------


@attrs.frozen
class Reads:
    """What the conditions of a bucket can read: attribute names per request
    root, and whether anything else (owners, other entities, nested records)
    is read. The decision cache keys on these; `opaque` makes a bucket
    uncacheable."""

    principal: frozenset[str] = frozenset()
    resource: frozenset[str] = frozenset()
    context: frozenset[str] = frozenset()
    opaque: bool = False

    def union(self, other: Reads) -> Reads:
        return Reads(
            self.principal | other.principal,
            self.resource | other.resource,
            self.context | other.context,
            self.opaque or other.opaque,
        )


def reads_of(*exprs: ir.Expr | None) -> Reads:
    found: dict[str, set[str]] = {
        "principal": set(),
        "resource": set(),
        "context": set(),
    }
    opaque = any(_collect_reads(e, found) for e in exprs if e is not None)
    return Reads(
        frozenset(found["principal"]),
        frozenset(found["resource"]),
        frozenset(found["context"]),
        opaque,
    )


def _collect_reads(expr: ir.Expr, found: dict[str, set[str]]) -> bool:
    """Adds the attributes read to `found`; true when the expression reads
    something a key of attribute values cannot hold: an owner, an entity
    other than the principal and the resource, or a record as a whole."""
    if isinstance(expr, ir.GetAttr | ir.Has) and isinstance(expr.obj, ir.RequestRoot):
        found[expr.obj.name].add(expr.name)
        return False
    if isinstance(expr, ir.GetAttr | ir.Has | ir.Owner):
        return True
    if isinstance(expr, ir.RequestRoot) and expr.name == "context":
        return True
    opaque = False
    for child in children(expr):
        opaque = _collect_reads(child, found) or opaque
    return opaque


# ---- cost ---------------------------------------------------------------------


@functools.lru_cache(maxsize=16_384)
def cost(expr: ir.Expr) -> int:
    """A rough count of the work an expression does; the order of `and`/`or`
    operands follows it. Delegation facts and fallbacks to the interpreter are
    dearer than reading an attribute."""
    if isinstance(expr, ir.Const | ir.ActionValue):
        return 0
    if isinstance(expr, ir.RequestRoot | ir.ActionIn | ir.Is):
        return 1 + sum(cost(c) for c in children(expr))
    if isinstance(expr, ir.GetAttr | ir.Has):
        return 1 + cost(expr.obj)
    if isinstance(expr, ir.Compare | ir.Not | ir.And | ir.Or | ir.RiskRef):
        return 1 + sum(cost(c) for c in children(expr))
    if isinstance(expr, ir.Arith | ir.Neg | ir.Grants | ir.Via | ir.DelegationFact):
        return 3 + sum(cost(c) for c in children(expr))
    return 5 + sum(cost(c) for c in children(expr))


# ---- compiling expressions to closures ----------------------------------------


class ExprCompiler:
    """Compiles IR expressions to closures over `Env`, sharing one memo slot
    for every expression that occurs in more than one place."""

    def __init__(self, shared: Mapping[ir.Expr, int]) -> None:
        self.shared = shared
        self._done: dict[ir.Expr, Fn] = {}

    def compile(self, expr: ir.Expr) -> Fn:
        done = self._done.get(expr)
        if done is not None:
            return done
        fn = self._build(expr)
        slot = self.shared.get(expr)
        if slot is not None:
            fn = _memoized(slot, fn)
        self._done[expr] = fn
        return fn

    def _build(self, expr: ir.Expr) -> Fn:
        if isinstance(expr, ir.Const):
            return _const(expr.value)
        if isinstance(expr, ir.GetAttr) and isinstance(expr.obj, ir.RequestRoot):
            return _root_attr(expr.obj.name, expr.name, path_text(expr))
        if isinstance(expr, ir.Compare):
            return self._compare(expr)
        if isinstance(expr, ir.And):
            return _and(self._ordered(expr.operands))
        if isinstance(expr, ir.Or):
            return _or(self._ordered(expr.operands))
        if isinstance(expr, ir.Not):
            return _not(self.compile(expr.operand))
        if isinstance(expr, ir.RiskRef):
            return self.compile(expr.expr)
        if isinstance(expr, ir.Arith):
            return _arith(expr.op, self.compile(expr.left), self.compile(expr.right))
        if isinstance(expr, ir.Grants):
            return _grants(expr.scope)
        if isinstance(expr, ir.Via):
            return _via(expr.types)
        if isinstance(expr, ir.ActionIn):
            return _action_in(expr.actions)
        if (
            isinstance(expr, ir.Is)
            and isinstance(expr.obj, ir.RequestRoot)
            and (expr.obj.name != "context")
        ):
            return _root_is(expr.obj.name, expr.types)
        return _fallback(expr)

    def _ordered(self, operands: Sequence[ir.Expr]) -> tuple[tuple[int, Fn], ...]:
        ranked = sorted(enumerate(operands), key=lambda item: (cost(item[1]), item[0]))
        return tuple((index, self.compile(operand)) for index, operand in ranked)

    def _compare(self, expr: ir.Compare) -> Fn:
        left, right = self.compile(expr.left), self.compile(expr.right)
        if isinstance(expr.right, ir.Const):
            fast = _compare_const(expr.op, left, expr.right.value)
            if fast is not None:
                return fast
        return _compare(expr.op, left, right)


def _memoized(slot: int, fn: Fn) -> Fn:
    def memo(env: Env) -> Result:
        memo = env.memo
        value: Result = memo.get(slot, _UNSET)
        if value is _UNSET:
            value = memo[slot] = fn(env)
        return value

    return memo


def _const(value: ir.Value) -> Fn:
    def const(env: Env) -> Result:
        return value

    return const


def _root_attr(root: str, name: str, path: str) -> Fn:
    """`principal.x`, `resource.x`, `context.x`, as `interpret._getattr` reads
    them (the resource is looked up by reference, so a resource equal to the
    principal reads the principal's attributes)."""
    if root == "context":

        def context_attr(env: Env) -> Result:
            value: Result = env.request.context.get(name, _MISSING)
            if value is _MISSING:
                return Err(f"`{path}` is missing (on a record)")
            if type(value) is Err:
                return Err(f"`{path}`: {value.message}")
            return value

        return context_attr

    def entity_attr(env: Env) -> Result:
        request = env.request
        entity = request.principal
        if root == "resource":
            resource = request.resource
            if resource.id != entity.id or resource.type != entity.type:
                entity = resource
        value: Result = entity.attrs.get(name, _MISSING)
        if value is _MISSING:
            return Err(f"`{path}` is missing (on `{entity.type}::{entity.id}`)")
        if type(value) is Err:
            return Err(f"`{path}`: {value.message}")
        return value

    return entity_attr


def _compare(op: str, left: Fn, right: Fn) -> Fn:
    def compare(env: Env) -> Result:
        a, b = left(env), right(env)
        if isinstance(a, Err):
            return a
        if isinstance(b, Err):
            return b
        try:
            return ops.compare(op, a, b)
        except ops.OpError as exc:
            return Err(str(exc))

    return compare


def _compare_const(op: str, left: Fn, const: ir.Value) -> Fn | None:
    """A comparison with a constant on the right: the usual shape of a rule
    test. The fast case is exactly the one `ops.compare` would take; any
    other value goes through `ops.compare`."""
    slow = _compare(op, left, _const(const))
    order = _ORDER_OPS.get(op)
    if ops.is_number(const) and order is not None:

        def number_order(env: Env) -> Result:
            a = left(env)
            kind = type(a)
            if kind is int or kind is Decimal:
                return order(a, const)
            return slow(env)

        return number_order
    if isinstance(const, ir.Label) and order is not None:
        rank, label_order = const.rank, const.order

        def label_order_test(env: Env) -> Result:
            a = left(env)
            if type(a) is ir.Label and a.order == label_order:
                return order(a.rank, rank)
            return slow(env)

        return label_order_test
    if isinstance(const, str | bool) and op in ("==", "!="):
        exact = type(const)
        equal = op == "=="

        def scalar_equal(env: Env) -> Result:
            a = left(env)
            if type(a) is exact:
                return (a == const) is equal
            return slow(env)

        return scalar_equal
    return None


def _and(operands: tuple[tuple[int, Fn], ...]) -> Fn:
    def and_(env: Env) -> Result:
        error: Result = None  # type: ignore[assignment]
        first = len(operands)
        for index, fn in operands:
            value = fn(env)
            if value is False:
                return False
            if value is not True and index < first:
                error, first = truth(value), index
        return True if error is None else error

    return and_


def _or(operands: tuple[tuple[int, Fn], ...]) -> Fn:
    def or_(env: Env) -> Result:
        error: Result = None  # type: ignore[assignment]
        first = len(operands)
        for index, fn in operands:
            value = fn(env)
            if value is True:
                return True
            if value is not False and index < first:
                error, first = truth(value), index
        return False if error is None else error

    return or_


def _not(operand: Fn) -> Fn:
    def not_(env: Env) -> Result:
        value = operand(env)
        if value is True:
            return False
        if value is False:
            return True
        return truth(value)

    return not_


_EXACT_OPS: Mapping[str, Callable[[Any, Any], Decimal]] = {
    "+": ops._EXACT.add,
    "-": ops._EXACT.subtract,
    "*": ops._EXACT.multiply,
}
_INT_OPS: Mapping[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def _arith(op: str, left: Fn, right: Fn) -> Fn:
    """Exact arithmetic; the fast cases are the ones `ops.arith` computes the
    same way (ints stay ints, a decimal in the mix goes through the exact
    context), everything else is `ops.arith` itself."""
    exact, whole = _EXACT_OPS[op], _INT_OPS[op]

    def arith(env: Env) -> Result:
        a, b = left(env), right(env)
        ta, tb = type(a), type(b)
        if (ta is Decimal or ta is int) and (tb is Decimal or tb is int):
            if ta is int and tb is int:
                return whole(a, b)  # type: ignore[arg-type]
            try:
                return exact(a, b)
            except decimal.DecimalException:
                return Err("decimal result is too long to be exact")
        if isinstance(a, Err):
            return a
        if isinstance(b, Err):
            return b
        try:
            return ops.arith(op, a, b)
        except ops.OpError as exc:
            return Err(str(exc))

    return arith


def _grants(scope: str) -> Fn:
    def grants(env: Env) -> Result:
        return env.facts.grants(scope)

    return grants


def _via(types: frozenset[str]) -> Fn:
    def via(env: Env) -> Result:
        return env.facts.via(types)

    return via


def _action_in(actions: frozenset[str]) -> Fn:
    seen: dict[str, bool] = {}

    def action_in(env: Env) -> Result:
        action = env.request.action
        found = seen.get(action)
        if found is None:
            found = seen[action] = any(
                action == a or action.startswith(a + ".") for a in actions
            )
        return found

    return action_in


def _root_is(root: str, types: frozenset[str]) -> Fn:
    def is_(env: Env) -> Result:
        entity = env.request.principal if root == "principal" else env.request.resource
        return entity.type in types

    return is_


def _fallback(expr: ir.Expr) -> Fn:
    def interpreted(env: Env) -> Result:
        return interpret.evaluate(expr, env)

    return interpreted


# ---- rules, buckets, the tree ---------------------------------------------------


@attrs.frozen
class CompiledRule:
    index: int  # position in the policy set's rules
    id: str
    effect: str
    condition: Fn | None = attrs.field(eq=False, repr=False)
    cost: int
    has_obligations: bool


@attrs.frozen
class Test:
    """A sub-expression several rules share, computed once per request."""

    slot: int
    expr: ir.Expr
    cost: int


@attrs.frozen
class Core:
    """Everything compiled from a policy set's content, independent of which
    `PolicySet` object it came from; cached by content hash."""

    policy_hash: str
    rule_ids: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    tests: tuple[Test, ...]
    by_action: Mapping[str | None, tuple[int, ...]]
    by_principal: Mapping[str | None, tuple[int, ...]]
    by_resource: Mapping[str | None, tuple[int, ...]]
    reads: tuple[Reads, ...]


def _index(
    rules: Sequence[ir.Rule], pick: Callable[[ir.Rule], frozenset[str] | None]
) -> dict[str | None, tuple[int, ...]]:
    out: dict[str | None, list[int]] = {}
    for i, rule in enumerate(rules):
        names = pick(rule)
        for name in names if names is not None else (None,):
            out.setdefault(name, []).append(i)
    return {k: tuple(v) for k, v in out.items()}


def _shared(rules: Sequence[ir.Rule]) -> dict[ir.Expr, int]:
    """Sub-expressions worth a memo slot: those found in two or more rules,
    or twice in one, that do more than read an attribute."""
    counts: dict[ir.Expr, int] = {}
    for rule in rules:
        for node in walk(rule.condition):
            if isinstance(node, ir.Compare | ir.Arith | ir.RiskRef | ir.And | ir.Or):
                counts[node] = counts.get(node, 0) + 1
            elif isinstance(node, ir.Matches | ir.In | ir.DelegationFact | ir.Owner):
                counts[node] = counts.get(node, 0) + 1
    shared = [expr for expr, n in counts.items() if n > 1]
    return {expr: slot for slot, expr in enumerate(shared)}


def build_core(policy: ir.PolicySet) -> Core:
    rules = policy.rules
    shared = _shared(rules)
    compiler = ExprCompiler(shared)
    compiled = tuple(
        CompiledRule(
            i,
            rule.id,
            rule.effect,
            None if rule.condition is None else compiler.compile(rule.condition),
            0 if rule.condition is None else cost(rule.condition),
            bool(rule.obligations),
        )
        for i, rule in enumerate(rules)
    )
    tests = tuple(Test(slot, expr, cost(expr)) for expr, slot in shared.items())
    reads = tuple(
        reads_of(rule.condition, *(a for use in rule.obligations for a in use.args))
        for rule in rules
    )
    log.debug("compiled %d rules, %d shared tests", len(rules), len(tests))
    return Core(
        policy.policy_hash,
        tuple(r.id for r in rules),
        compiled,
        tests,
        _index(rules, lambda r: r.actions),
        _index(rules, lambda r: r.principal_types),
        _index(rules, lambda r: r.resource_types),
        reads,
    )


class Bucket:
    """The rules whose target holds for one triple, in policy order."""

    __slots__ = (
        "key",
        "rules",
        "entries",
        "reads",
        "_screens",
        "_full",
        "_effects",
        "_static",
        "_written",
        "_every",
    )

    def __init__(
        self,
        key: Triple,
        rules: Sequence[ir.Rule],
        entries: Sequence[CompiledRule],
        reads: Reads,
    ) -> None:
        self.key = key
        self.rules = tuple(rules)
        self.entries = tuple(
            _entry(rule, entry) for rule, entry in zip(rules, entries, strict=True)
        )
        self.reads = reads
        self._screens: tuple[tuple[Screen, int], ...] = ()
        self._full = 0
        if len(rules) >= MIN_SCREENED:
            self._screens, self._full = build_screens(self.entries)
        self._effects = tuple(
            sum(1 << i for i, rule in enumerate(self.rules) if rule.effect == effect)
            for effect in STRONGEST_FIRST
        )
        # Rules without obligations match the same way on every request, so
        # the verdict a set of them wins with is written once and kept.
        self._static = sum(
            1 << i for i, entry in enumerate(self.entries) if entry[2] is not None
        )
        self._written: dict[int, Pending] = {}
        self._every = (1 << len(self.entries)) - 1

    def outcome(self, request: Parsed, facts: Facts) -> Outcome:
        entries = self.entries
        if not entries:
            return EMPTY_OUTCOME
        env = Env(request, facts)
        if not self._screens:
            return _walk(entries, env)
        live, certain = self._screen(env)
        matches: list[Match] = []
        errors: list[tuple[ir.Rule, str]] = []
        while live:
            low = live & -live
            live ^= low
            entry = entries[low.bit_length() - 1]
            if low & certain:
                assert entry[2] is not None
                matches.append(entry[2])
            else:
                _evaluate(entry, env, matches, errors)
        return Outcome(tuple(matches), tuple(errors))

    def verdict(
        self,
        request: Parsed,
        facts: Facts,
        definitions: Mapping[str, ir.ObligationDef],
    ) -> Verdict:
        """`combine(self.outcome(request, facts), definitions)`."""
        return self.pending(request, facts, definitions).verdict()

    def pending(
        self,
        request: Parsed,
        facts: Facts,
        definitions: Mapping[str, ir.ObligationDef],
    ) -> Pending:
        """The verdict of `combine(self.outcome(…))`, its rules and reasons
        written on demand; the matches a stronger effect makes irrelevant
        are never built."""
        entries = self.entries
        if not entries:
            return NO_MATCH
        env = Env(request, facts)
        if self._screens:
            live, certain = self._screen(env)
        else:
            live, certain = self._every, 0
        todo = live & ~certain
        matched = certain
        found: dict[int, Match] = {}
        errors: list[tuple[ir.Rule, str]] = []
        while todo:
            low = todo & -todo
            todo ^= low
            position = low.bit_length() - 1
            entry = entries[position]
            value = True if entry[1] is None else entry[1](env)
            if value is True and entry[2] is not None:
                matched |= low
                found[position] = entry[2]
            elif value is not False:
                matches: list[Match] = []
                _evaluate(entry, env, matches, errors)
                if matches:
                    matched |= low
                    found[position] = matches[0]
        if errors:  # rare: the general rules of `combine` apply
            return Pending.of(combine(self.outcome(request, facts), definitions))
        for mask, effect in zip(self._effects, STRONGEST_FIRST, strict=True):
            winning = matched & mask
            if not winning:
                continue
            if winning & self._static != winning:
                return Pending(
                    effect, (), partial(_winners, winning, found, entries, definitions)
                )
            written = self._written.get(winning)
            if written is not None:
                return written
            return Pending(effect, (), partial(self._write, winning, definitions))
        return NO_MATCH

    def _write(
        self, winning: int, definitions: Mapping[str, ir.ObligationDef]
    ) -> Verdict:
        """The verdict of rules without obligations, kept by which of them won.
        Its obligations are read-only: the verdict is shared by decisions."""
        verdict = _winners(winning, {}, self.entries, definitions)
        verdict.obligations = MappingProxyType(dict(verdict.obligations))
        if len(self._written) < MAX_WRITTEN:
            self._written[winning] = Pending.of(verdict)
        return verdict

    def _screen(self, env: Env) -> tuple[int, int]:
        """The rules not ruled out, and among them those certain to match:
        rules made only of screened tests, each decided by a fast read."""
        live = self._every
        unsure = 0
        for screen, members in self._screens:
            mask = screen(env)
            if mask < 0:  # no fast answer for this read
                unsure |= members
            else:
                live &= mask
        return live, live & self._full & ~unsure


STRONGEST_FIRST = ("deny", "step_up", "restrict", "allow")
NO_MATCH = Pending.of(Verdict("deny", (), (NO_RULE,), MappingProxyType({})))
"""`combine` of no match and no error, shared: nothing in it can be edited."""


def _winners(
    winning: int,
    found: Mapping[int, Match],
    entries: tuple[Entry, ...],
    definitions: Mapping[str, ir.ObligationDef],
) -> Verdict:
    winners = []
    while winning:
        low = winning & -winning
        winning ^= low
        position = low.bit_length() - 1
        match = found.get(position) or entries[position][2]
        assert match is not None
        winners.append(match)
    return combine_winners(winners, definitions)


def _walk(entries: tuple[Entry, ...], env: Env) -> Outcome:
    matches: list[Match] = []
    errors: list[tuple[ir.Rule, str]] = []
    for entry in entries:
        _evaluate(entry, env, matches, errors)
    return Outcome(tuple(matches), tuple(errors))


def _evaluate(
    entry: Entry,
    env: Env,
    matches: list[Match],
    errors: list[tuple[ir.Rule, str]],
) -> None:
    rule, condition, match = entry
    value = True if condition is None else condition(env)
    if value is True:
        if match is None:
            found = interpret.obligation_values(rule, env)
            if isinstance(found, Err):
                errors.append((rule, found.message))
                return
            ref = RuleRef.of(rule)
            reason = matched_reason(rule.id, rule.effect)
            matches.append(Match(rule, found, ref, reason))
        else:
            matches.append(match)
    elif value is not False:
        error = truth(value)
        assert isinstance(error, Err)
        errors.append((rule, error.message))


Entry: TypeAlias = tuple[ir.Rule, "Fn | None", "Match | None"]
"""A rule, its compiled condition, and the match it gives when it has no
obligations (made once: such a match is the same on every request)."""


def _entry(rule: ir.Rule, compiled: CompiledRule) -> Entry:
    match = None
    if not compiled.has_obligations:
        ref = RuleRef.of(rule)
        match = Match(rule, {}, ref, matched_reason(rule.id, rule.effect))
    return (rule, compiled.condition, match)


def _targets(rule: ir.Rule, principal: str, resource: str) -> bool:
    types = rule.principal_types
    if types is not None and principal not in types:
        return False
    return rule.resource_types is None or resource in rule.resource_types


class CompiledPolicy:
    """The decision tree of one policy set: `outcome` equals
    `Interpreter(policy).outcome` on every request."""

    def __init__(self, policy: ir.PolicySet, core: Core) -> None:
        self.policy = policy
        self.core = core
        self._buckets: dict[Triple, Bucket] = {}
        self._lock = threading.Lock()

    @property
    def policy_hash(self) -> str:
        return self.core.policy_hash

    def outcome(self, request: Parsed, facts: Facts) -> Outcome:
        key = (request.action, request.principal.type, request.resource.type)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self.bucket(key)
        return bucket.outcome(request, facts)

    def verdict(
        self,
        request: Parsed,
        facts: Facts,
        definitions: Mapping[str, ir.ObligationDef],
    ) -> Verdict:
        """Equals `combine(self.outcome(request, facts), definitions)`."""
        return self.pending(request, facts, definitions).verdict()

    def pending(
        self,
        request: Parsed,
        facts: Facts,
        definitions: Mapping[str, ir.ObligationDef],
    ) -> Pending:
        key = (request.action, request.principal.type, request.resource.type)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self.bucket(key)
        return bucket.pending(request, facts, definitions)

    def bucket(self, key: Triple) -> Bucket:
        """The bucket for a triple, built on first use. Dict assignment is
        atomic, so two threads building the same bucket store equal ones."""
        found = self._buckets.get(key)
        if found is not None:
            return found
        core = self.core
        action, principal, resource = key
        rules = self.policy.rules
        candidates = core.by_action.get(action, ()) + core.by_action.get(None, ())
        indices = sorted(
            i for i in candidates if _targets(rules[i], principal, resource)
        )
        reads = Reads()
        for i in indices:
            reads = reads.union(core.reads[i])
        bucket = Bucket(
            key,
            [self.policy.rules[i] for i in indices],
            [core.rules[i] for i in indices],
            reads,
        )
        if len(self._buckets) < MAX_BUCKETS:
            self._buckets[key] = bucket
        return bucket

    def triples(self) -> Iterator[Triple]:
        """Every declared `(action, principal type, resource type)`."""
        schema = self.policy.schema
        types = sorted(schema.entities)
        for action in sorted(schema.actions):
            for principal in types:
                for resource in types:
                    yield action, principal, resource

    def buckets(self, identities_only: bool = False) -> Iterator[Bucket]:
        """Every non-empty bucket over the declared triples; with
        `identities_only`, principal types without an identity kind are left
        out unless a rule names them as its principal."""
        named = {t for r in self.policy.rules for t in r.principal_types or ()}
        entities = self.policy.schema.entities
        for key in self.triples():
            if (
                identities_only
                and entities[key[1]].kind is None
                and (key[1] not in named)
            ):
                continue
            bucket = self.bucket(key)
            if bucket.rules:
                yield bucket


# ---- screens: ruling out rules by one attribute read ---------------------------

MIN_SCREENED = 8
MAX_WRITTEN = 512  # verdicts kept per bucket
"""Buckets with fewer rules are walked rule by rule; a screen costs more."""

Screen: TypeAlias = Callable[[Env], int]
"""Given a request, a bit mask over a bucket's rules, from one attribute
read. A cleared bit means the screened test of that rule is false, so its
condition is false (three-valued `and` is false as soon as one operand is,
whatever the others give); a set bit means the test is true (or the rule
has no test on this screen). -1 when the value read has no fast answer (an
error value, another type): then nothing is known about the rules tested."""

_Conjunct: TypeAlias = tuple[str, str, str, Any]
"""`(root, attribute, op, constant)` of a test `root.attribute op constant`."""


def _conjuncts(condition: ir.Expr | None) -> tuple[list[_Conjunct], bool]:
    """The tests of a condition that a screen can decide: the condition
    itself, or the operands of a top-level `and`, when they compare a
    principal, resource or context attribute with a constant exactly as
    `_compare_const`'s fast cases do; and whether that is all of them."""
    if condition is None:
        return [], True
    operands = condition.operands if isinstance(condition, ir.And) else (condition,)
    out = []
    for expr in operands:
        if not (
            isinstance(expr, ir.Compare)
            and isinstance(expr.right, ir.Const)
            and isinstance(expr.left, ir.GetAttr)
            and isinstance(expr.left.obj, ir.RequestRoot)
        ):
            continue
        const = expr.right.value
        op = expr.op
        if op in _ORDER_OPS and (ops.is_number(const) or isinstance(const, ir.Label)):
            out.append((expr.left.obj.name, expr.left.name, op, const))
        elif op in ("==", "!=") and type(const) in (str, bool):
            out.append((expr.left.obj.name, expr.left.name, op, const))
    return out, len(out) == len(operands)


def build_screens(
    entries: Sequence[Entry],
) -> tuple[tuple[tuple[Screen, int], ...], int]:
    """One screen per (attribute, kind of test) that rules of the bucket use,
    each with the bits of the rules it tests; and the bits of the rules whose
    whole condition is screened and that have no obligations: when every
    read gave a fast answer, such a rule matches exactly when no screen
    ruled it out."""
    groups: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}
    full = 0
    for position, (rule, _, match) in enumerate(entries):
        conjuncts, whole = _conjuncts(rule.condition)
        keys = set()
        for root, name, op, const in conjuncts:
            if isinstance(const, ir.Label):
                kind: tuple[Any, ...] = ("label", const.order, op)
                value: Any = const.rank
            elif op in _ORDER_OPS:
                kind, value = ("number", op), const
            else:
                kind, value = (op, type(const)), const
            key = (root, name, *kind)
            keys.add(key)
            groups.setdefault(key, []).append((position, value))
        # Two tests on one screen leave a bit set when either holds, so such
        # a rule is only ever ruled out, never taken as certain.
        if whole and match is not None and len(keys) == len(conjuncts):
            full |= 1 << position
    everyone = (1 << len(entries)) - 1
    screens = []
    for group, members in groups.items():
        root, name, kind = group[0], group[1], group[2:]
        inside = 0
        for position, _ in members:
            inside |= 1 << position
        outside = everyone & ~inside
        read = _reader(root, name)
        if kind[0] in ("==", "!="):
            screen = _equality_screen(read, kind[0], kind[1], members, outside)
        else:
            screen = _order_screen(read, kind, members, outside)
        screens.append((screen, inside))
    return tuple(screens), full


def _reader(root: str, name: str) -> Callable[[Env], Any]:
    """The value `root.name` has for a request, as `_root_attr` resolves it
    (an error value or `_MISSING` simply passes no fast test)."""
    if root == "context":

        def context_value(env: Env) -> Any:
            return env.request.context.get(name, _MISSING)

        return context_value

    def entity_value(env: Env) -> Any:
        request = env.request
        entity = request.principal
        if root == "resource":
            resource = request.resource
            if resource.id != entity.id or resource.type != entity.type:
                entity = resource
        return entity.attrs.get(name, _MISSING)

    return entity_value


def _order_screen(
    read: Callable[[Env], Any],
    kind: Sequence[Any],
    members: Sequence[tuple[int, Any]],
    outside: int,
) -> Screen:
    """Tests `x op c` for one attribute x and one op, with many constants c.
    Sorted by c, the rules whose test holds form a prefix (`>`, `>=`) or a
    suffix (`<`, `<=`) found by bisection; their bits are precomputed."""
    op = kind[-1]
    ordered = sorted(members, key=lambda m: m[1])
    consts = [value for _, value in ordered]
    bits = [1 << position for position, _ in ordered]
    masks = [outside] * (len(ordered) + 1)
    if op in ("<", "<="):  # holds for c above x: a suffix
        for k in range(len(ordered) - 1, -1, -1):
            masks[k] = masks[k + 1] | bits[k]
    else:  # holds for c below x: a prefix
        for k in range(len(ordered)):
            masks[k + 1] = masks[k] | bits[k]
    # `x <= c` and `x > c` split at the first c >= x; `x < c`, `x >= c` after it.
    cut = bisect.bisect_left if op in ("<=", ">") else bisect.bisect_right
    if kind[0] == "label":
        order = kind[1]

        def label_screen(env: Env) -> int:
            value = read(env)
            if type(value) is ir.Label and value.order == order:
                return masks[cut(consts, value.rank)]
            return -1

        return label_screen

    def number_screen(env: Env) -> int:
        value = read(env)
        kind_ = type(value)
        if kind_ is int or kind_ is Decimal:
            return masks[cut(consts, value)]
        return -1

    return number_screen


def _equality_screen(
    read: Callable[[Env], Any],
    op: str,
    exact: type,
    members: Sequence[tuple[int, Any]],
    outside: int,
) -> Screen:
    """Tests `x == c` (or `!=`) for one attribute and many constants of one
    plain type; the rules a value leaves standing are one dict lookup away."""
    by_const: dict[Any, int] = {}
    for position, value in members:
        by_const[value] = by_const.get(value, 0) | (1 << position)
    every_member = 0
    for bits in by_const.values():
        every_member |= bits
    everyone = outside | every_member
    if op == "==":
        holding = {c: outside | bits for c, bits in by_const.items()}
        otherwise = outside
    else:
        holding = {c: outside | (every_member & ~bits) for c, bits in by_const.items()}
        otherwise = everyone

    def equality_screen(env: Env) -> int:
        value = read(env)
        if type(value) is exact:
            return holding.get(value, otherwise)
        return -1

    return equality_screen


# ---- compiling a policy set, with the cache -------------------------------------

COMPILED: CompiledSetCache[Core] = CompiledSetCache(maxsize=64)
"""Compiled policy sets by content hash, shared by every engine in the process."""


def compile_policy(
    policy: ir.PolicySet, cache: CompiledSetCache[Core] | None = None
) -> CompiledPolicy:
    """The decision tree for a policy set. An unchanged policy set (same
    content hash) reuses the compiled conditions; each call still binds them
    to this `PolicySet`'s own rules, so decisions name this load's sources."""
    store = COMPILED if cache is None else cache
    ids = tuple(r.id for r in policy.rules)
    key = policy.policy_hash
    core = store.get(key) if key else None
    if core is None or core.rule_ids != ids:
        core = build_core(policy)
        if key:
            store.put(key, core)
    return CompiledPolicy(policy, core)


# ---- showing the tree -------------------------------------------------------------


def render_expr(expr: ir.Expr | None) -> str:
    """An expression written back in the language's syntax, for `ripl compile`."""
    if expr is None:
        return "true"
    return _Renderer().render(expr)


class _Renderer:
    def render(self, expr: ir.Expr) -> str:  # noqa: C901 - one case per node
        if isinstance(expr, ir.Const):
            return _render_value(expr.value)
        if isinstance(expr, ir.RequestRoot):
            return expr.name
        if isinstance(expr, ir.ActionValue):
            return "action"
        if isinstance(expr, ir.GetAttr | ir.Owner | ir.DelegationFact):
            text = path_text(expr)
            if isinstance(expr, ir.DelegationFact) and expr.arg is not None:
                text += f"({expr.arg})"
            return text
        if isinstance(expr, ir.EntityId):
            return f"{self.render(expr.obj)}.id"
        if isinstance(expr, ir.Has):
            return f"{self.render(expr.obj)} has {expr.name}"
        if isinstance(expr, ir.Is):
            return f"{self.render(expr.obj)} is {' | '.join(sorted(expr.types))}"
        if isinstance(expr, ir.Compare | ir.Arith):
            return f"{self._wrap(expr.left)} {expr.op} {self._wrap(expr.right)}"
        if isinstance(expr, ir.In):
            return f"{self._wrap(expr.element)} in {self._wrap(expr.container)}"
        if isinstance(expr, ir.ActionIn):
            return f"action in [{', '.join(sorted(expr.actions))}]"
        if isinstance(expr, ir.SetLit):
            return "[" + ", ".join(self.render(i) for i in expr.items) + "]"
        if isinstance(expr, ir.Neg):
            return f"-{self._wrap(expr.operand)}"
        if isinstance(expr, ir.Not):
            return f"not {self._wrap(expr.operand)}"
        if isinstance(expr, ir.And | ir.Or):
            word = " and " if isinstance(expr, ir.And) else " or "
            return word.join(self._wrap(o) for o in expr.operands)
        if isinstance(expr, ir.Matches):
            return f"{self._wrap(expr.subject)} matches {expr.pattern.source!r}"
        if isinstance(expr, ir.Grants):
            return f"delegation.grants({expr.scope})"
        if isinstance(expr, ir.Via):
            return f"delegation.via({' | '.join(sorted(expr.types))})"
        assert isinstance(expr, ir.RiskRef)
        return expr.name

    def _wrap(self, expr: ir.Expr) -> str:
        text = self.render(expr)
        if isinstance(expr, ir.And | ir.Or | ir.Compare | ir.Arith | ir.Not):
            return f"({text})"
        return text


def _render_value(value: ir.Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Duration):
        return f"{value.seconds}s"
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(_render_value(v) for v in value)) + "]"
    return str(value)


def describe_tree(compiled: CompiledPolicy) -> dict[str, Any]:
    """The tree as plain data: buckets (principal types that are identities,
    or that a rule names), the tests their rules share, and the leaves, the
    strongest effect first. Arithmetic inside a shared risk score is not
    listed apart from the score."""
    core = compiled.core
    slots = {test.expr: test for test in core.tests}
    buckets = []
    for bucket in compiled.buckets(identities_only=True):
        used: dict[int, list[str]] = {}
        for rule in bucket.rules:
            for node in walk(rule.condition):
                test = slots.get(node)
                if (
                    test is not None
                    and not isinstance(node, ir.Arith)
                    and rule.id not in used.setdefault(test.slot, [])
                ):
                    used[test.slot].append(rule.id)
        tests = [
            {
                "slot": slot,
                "test": render_expr(core.tests[slot].expr),
                "cost": core.tests[slot].cost,
                "rules": ids,
            }
            for slot, ids in sorted(used.items())
            if len(ids) > 1
        ]
        action, principal, resource = bucket.key
        buckets.append(
            {
                "action": action,
                "principal": principal,
                "resource": resource,
                "tests": tests,
                "leaves": [
                    {
                        "rule": rule.id,
                        "effect": rule.effect,
                        "condition": render_expr(rule.condition),
                        "cost": 0 if rule.condition is None else cost(rule.condition),
                    }
                    for rule in sorted(bucket.rules, key=_leaf_order)
                ],
                "cacheable": not bucket.reads.opaque,
            }
        )
    return {
        "policy_hash": core.policy_hash,
        "rules": len(core.rules),
        "shared_tests": len(core.tests),
        "buckets": buckets,
    }


def _leaf_order(rule: ir.Rule) -> tuple[int, str]:
    return (-ir.EFFECT_ORDER[rule.effect], rule.id)


def render_tree(tree: Mapping[str, Any]) -> str:
    """`describe_tree` as indented text."""
    lines = [
        f"policy {tree['policy_hash']}: {tree['rules']} rules, "
        f"{len(tree['buckets'])} non-empty buckets, "
        f"{tree['shared_tests']} shared tests",
    ]
    for bucket in tree["buckets"]:
        lines.append(
            f"bucket action {bucket['action']} / principal {bucket['principal']}"
            f" / resource {bucket['resource']}"
            + ("" if bucket["cacheable"] else "  (not cacheable)")
        )
        for test in bucket["tests"]:
            lines.append(
                f"  test #{test['slot']} [cost {test['cost']}] {test['test']}"
                f"  (shared by {', '.join(test['rules'])})"
            )
        for leaf in bucket["leaves"]:
            lines.append(
                f"  leaf {leaf['effect']} {leaf['rule']} [cost {leaf['cost']}]"
                f" when {leaf['condition']}"
            )
    return "\n".join(lines)


def compiled_rules(compiled: CompiledPolicy) -> Iterable[CompiledRule]:
    return compiled.core.rules
