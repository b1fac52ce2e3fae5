"""The analysis of one policy set: which rules to compare, which questions to
ask the solver, and which findings follow.

Rules are compared only when they can meet the same request: every rule
gets its *reach* (the actions, principal types and resource types its
target and top-level condition admit) and an index finds the rules whose
reach overlaps. Each question is asked once per rule, with the overlapping
rules folded into one formula, not once per pair; where every rule a
question involves is a box it is decided over regions (`regions.py`)
instead, with the solver's answer. Answers are cached by the content of
the rules involved (`cache.py`), so identical rules, and rules unchanged
since a previous run in the same process, are not solved again. Privilege
drift is in `drift.py`; large policy sets run in chunks (`parallel.py`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import z3

from ripl import ir
from ripl.analyze.boxes import Boxes, Reach, ReachIndex, conjuncts
from ripl.analyze.cache import CacheView, SolverCache, canonical, content_hash
from ripl.analyze.ceilings import beyond_declared, clip_to_ceilings, shown
from ripl.analyze.drift import NON_HUMAN, drift
from ripl.analyze.encode import (
    EFFECT_RANK,
    GRANTS,
    OWN,
    ROOT,
    Domain,
    Encoder,
    PointValues,
    RuleTerms,
    Vars,
    any_of,
    build_domain,
    covers,
    holding,
    holds,
    negate,
    scale_for,
)
from ripl.analyze.findings import KINDS, Finding, RuleRef, sort_findings
from ripl.analyze.parallel import ChunkResult, plan_chunks, run_chunks
from ripl.analyze.regions import BudgetError, Dim, Finite, Region, Space, pick
from ripl.analyze.witness import FRESH_IDS, Observation, Observer, WitnessBuilder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TIMEOUT_MS = 5000
KIND_TYPES = {"int": ir.INT, "dec": ir.DECIMAL, "bool": ir.BOOL, "str": ir.STRING}
"""The type of an attribute a region dimension of each kind reads."""


def reach_of(rule: ir.Rule, domain: Domain, principals: frozenset[str]) -> Reach:
    actions = frozenset(domain.actions)
    if rule.actions is not None:
        actions &= rule.actions
    who = (
        principals
        if rule.principal_types is None
        else (principals & rule.principal_types)
    )
    what = (
        domain.resources
        if rule.resource_types is None
        else (domain.resources & rule.resource_types)
    )
    for part in conjuncts(rule.condition):
        if isinstance(part, ir.ActionIn):
            actions = frozenset(
                a for a in actions if any(covers(g, a) for g in part.actions)
            )
        elif (
            isinstance(part, ir.Compare)
            and part.op == "=="
            and isinstance(part.left, ir.ActionValue)
            and isinstance(part.right, ir.Const)
        ):
            actions &= {str(part.right.value)}
        elif isinstance(part, ir.Is) and isinstance(part.obj, ir.RequestRoot):
            if part.obj.name == "principal":
                who &= part.types
            elif part.obj.name == "resource":
                what &= part.types
    return Reach(actions, who, what)


def stronger(a: ir.Rule, b: ir.Rule) -> bool:
    return EFFECT_RANK[a.effect] > EFFECT_RANK[b.effect]


def same_contribution(rule: ir.Rule, other: ir.Rule) -> bool:
    """`other` gives at least what `rule` gives when both match."""
    if rule.effect != other.effect:
        return False
    if rule.effect == "restrict":
        key = sorted(repr(canonical(o)) for o in rule.obligations)
        return key == sorted(repr(canonical(o)) for o in other.obligations)
    if rule.effect == "step_up":
        return set(rule.requirements) <= set(other.requirements)
    return True


class Analysis:
    def __init__(
        self,
        policy: ir.PolicySet,
        *,
        cache: SolverCache | None = None,
        progress: Progress | None = None,
        timeout_ms: int = TIMEOUT_MS,
        workers: int | None = None,
    ) -> None:
        """`workers`: processes to analyze large policy sets with (None:
        the cores available, capped by `RIPL_ANALYZE_WORKERS`); the findings
        do not depend on it."""
        self.original = policy
        policy, self.inexact = clip_to_ceilings(policy)
        self.policy = policy
        self.shared_cache = cache if cache is not None else SolverCache()
        self.cache: SolverCache = self.shared_cache
        self.progress = progress
        self.workers = workers
        self.timeout_ms = timeout_ms
        self.domain = build_domain([policy])
        self.v = Vars(self.domain, scale_for([policy]))
        self.encoder = Encoder(policy, self.v)
        self.rules = list(policy.rules)
        self.by_id = {r.id: r for r in self.rules}
        self.hash = {r.id: content_hash(r) for r in self.rules}
        self.schema_hash = hashlib.sha256(
            repr(canonical(policy.schema)).encode()
        ).hexdigest()
        self.humans = self.domain.humans()
        self.reach = {
            r.id: reach_of(r, self.domain, self.domain.principals) for r in self.rules
        }
        self.root_reach = {
            r.id: reach_of(r, self.domain, self.humans) for r in self.rules
        }
        self.own: dict[str, RuleTerms] = {}
        self.root: dict[str, RuleTerms] = {}
        for rule in self.rules:
            self.own[rule.id] = self.encoder.rule(rule, OWN)
            if self.root_reach[rule.id].principals:
                self.root[rule.id] = self.encoder.rule(rule, ROOT)
        for rule_id in self.inexact:  # declared scopes cut these inexactly
            self.own[rule_id] = attrs.evolve(self.own[rule_id], exact=False)
            if rule_id in self.root:
                self.root[rule_id] = attrs.evolve(self.root[rule_id], exact=False)
        self.index = ReachIndex([r.id for r in self.rules], self.reach)
        self.boxes = Boxes(self.by_id, self.reach, policy.schema, self.v.unit)
        self.rules_order = {r.id: i for i, r in enumerate(self.rules)}
        self.principal_universe = self._principal_universe()
        self.space = Space(
            {
                ("action",): frozenset(self.domain.actions),
                ("type", "p"): self.principal_universe,
                ("type", "r"): self.domain.resources,
                ("type", "root"): self.humans,
            },
            self.domain.labels,
        )
        self.regions: dict[str, Region] = {}
        self.root_regions: dict[str, Region] = {}
        self._build_regions()
        self.root_index = ReachIndex([r.id for r in self.rules], self.root_reach)
        self.closing = self.v.closing_axioms()
        self.core, self.full = self._solvers()
        self.solve_ctx: z3.Context | None = None
        self._label_variables()
        self.chunks = plan_chunks(
            [r.id for r in self.rules],
            lambda rule_id: min(self.reach[rule_id].actions, default=""),
        )
        self.builder = WitnessBuilder(self.v, (policy.schema,))
        self.observer = Observer(policy)
        self.unconfirmed = 0
        self.point_misses = 0
        self.processes = 0
        self.checks = 0
        self._overlapping: dict[tuple[str, bool], list[ir.Rule]] = {}
        self._not_matches: dict[str, z3.BoolRef] = {}
        log.debug(
            "encoded %d rules over %d variables", len(self.rules), len(self.v.values)
        )

    # ---- plumbing ---------------------------------------------------------------

    def _solvers(self, ctx: z3.Context | None = None) -> tuple[z3.Solver, z3.Solver]:
        """Fresh solvers, in `ctx` (default: the one the encoding lives in):
        one with the core axioms, one with every axiom."""
        out = []
        for axioms in (self.v.core_axioms(), self.v.axioms()):
            solver = z3.Solver(ctx=ctx)
            solver.set("timeout", self.timeout_ms)
            parts = [axioms, self.closing]
            solver.add(*(p if ctx is None else p.translate(ctx) for p in parts))
            out.append(solver)
        return out[0], out[1]

    def _label_variables(self) -> None:
        """The variable of every required label attribute of a resource type,
        made now, not when a blanket-grant question first reads it: the
        witnesses a chunk builds must not depend on which chunks ran before
        it in the same process."""
        for rtype in sorted(self.domain.resources):
            entity = self.policy.schema.entities.get(rtype)
            for name, spec in entity.attrs.fields if entity else ():
                if isinstance(spec.type, ir.LabelType) and not spec.optional:
                    self.v.value("r", (name,), spec.type)

    def _principal_universe(self) -> frozenset[str]:
        """The principal types the core axioms admit: without a human type no
        non-human identity has a root, so none can be the principal."""
        if self.humans:
            return self.domain.principals
        return frozenset(
            t
            for t in self.domain.principals
            if self.domain.kinds.get(t) not in NON_HUMAN
        )

    def _build_regions(self) -> None:
        """The region of every exactly encoded box rule, for the principal
        and, where it applies to humans, for the root human."""
        for rule in self.rules:
            if not self.own[rule.id].exact:
                continue
            region = self.boxes.region(rule.id, self.reach[rule.id], "p", self.space)
            if region is None:
                continue
            self.regions[rule.id] = region
            root = self.root.get(rule.id)
            if root is not None and root.exact:
                reach = self.root_reach[rule.id]
                found = self.boxes.region(rule.id, reach, "root", self.space)
                if found is not None:
                    self.root_regions[rule.id] = found

    def regions_of(
        self, rules: Iterable[ir.Rule], *, root: bool = False
    ) -> list[Region] | None:
        """The regions of all of `rules`, or None when one is not a box."""
        table = self.root_regions if root else self.regions
        out: list[Region] = []
        for rule in rules:
            found = table.get(rule.id)
            if found is None:
                return None
            out.append(found)
        return out

    def uncovered(self, region: Region, others: Sequence[Region]) -> bool | None:
        """Whether part of `region` lies outside all of `others`; None when
        the question is too large to split (the solver is asked instead)."""
        try:
            return self.space.uncovered(region, others) is not None
        except BudgetError:
            return None

    def target_region(self, rule: ir.Rule) -> Region:
        parts = {
            ("action",): rule.actions,
            ("type", "p"): rule.principal_types,
            ("type", "r"): rule.resource_types,
        }
        return self.space.region(
            {
                dim: [] if names is None else [Finite(names)]
                for dim, names in parts.items()
            }
        )

    def overlapping(self, rule_id: str, *, root: bool = False) -> list[ir.Rule]:
        """The other rules that can meet a request this rule reaches (for
        `root`, the rules that apply to the root human of such a request)."""
        key = (rule_id, root)
        found = self._overlapping.get(key)
        if found is None:
            found = self._overlapping[key] = self._overlapping_uncached(rule_id, root)
        return found

    def _overlapping_uncached(self, rule_id: str, root: bool) -> list[ir.Rule]:
        reach = self.reach[rule_id]
        if root:
            reach = Reach(reach.actions, self.humans, reach.resources)
            found = self.root_index.overlapping(reach)
        else:
            found = self.index.overlapping(reach, exclude=rule_id)
        return [self.by_id[other] for other in found]

    def not_matches(self, rule: ir.Rule) -> z3.BoolRef:
        found = self._not_matches.get(rule.id)
        if found is None:
            found = self._not_matches[rule.id] = negate(self.own[rule.id].matches)
        return found

    def needs_chain(self, *rules: ir.Rule, root: bool = False) -> bool:
        return root or any(self.own[r.id].chain for r in rules)

    def check(
        self, *formulas: z3.BoolRef, chain: bool, model: bool = False
    ) -> tuple[str, z3.ModelRef | None]:
        """Ask the solver. `chain` says the formulas read the chain, the owner
        or the root, which needs every axiom; others use the core axioms
        only (see `Vars.core_axioms`), which is several times faster."""
        solver = self.full if chain else self.core
        self.checks += 1
        # push/pop rather than assumptions: z3 keeps what it learns about
        # each assumption, and the solver slows down run after run.
        if self.solve_ctx is not None:
            formulas = tuple(f.translate(self.solve_ctx) for f in formulas)
        solver.push()
        try:
            solver.add(*formulas)
            result = solver.check()
            found = solver.model() if model and result == z3.sat else None
        finally:
            solver.pop()
        if result == z3.sat:
            return "sat", found
        return ("unsat" if result == z3.unsat else "unknown"), None

    def confirm(
        self, formulas: Sequence[z3.BoolRef], claim: Callable[[Observation], bool]
    ) -> dict[str, Any] | None:
        """A request satisfying `formulas` under every axiom, kept only when
        the reference engine shows `claim`."""
        status, model = self.check(*formulas, chain=True, model=True)
        if status != "sat" or model is None:
            return None
        return self.confirm_model(model, claim)

    def confirm_model(
        self, model: z3.ModelRef, claim: Callable[[Observation], bool]
    ) -> dict[str, Any] | None:
        """The request a model of the full axioms describes, if it shows `claim`."""
        request = self.builder.build(model)
        observation = self.observer.observe(request)
        if observation is not None and observation.chain_ok and claim(observation):
            return request
        self.unconfirmed += 1
        log.warning("a witness did not reproduce in the engine: %s", request)
        return None

    def observe(self, request: Mapping[str, Any]) -> Observation | None:
        return self.observer.observe(request)

    def observe_point(
        self, region: Region, claim: Callable[[Observation], bool]
    ) -> tuple[dict[str, Any], Observation] | None:
        """A request at one point of a (non-empty) box region, built without
        the solver, and what the engine shows for it, when that is `claim`.
        None when it is not (the caller asks the solver instead)."""
        values = self._point(region)
        if values is None:
            return None
        request = self.builder.build_from(values)
        observation = self.observer.observe(request)
        if observation is not None and observation.chain_ok and claim(observation):
            return request, observation
        self.point_misses += 1
        log.debug("a request built from a region did not show the claim: %s", request)
        return None

    def _point(self, region: Region) -> PointValues | None:
        """The variables a point of `region` fixes; a non-human principal gets
        a chain of one link from a human root (none: no point)."""
        v, d = self.v, self.domain
        values: dict[str, Any] = {}

        def put(term: Any, value: Any) -> None:
            values[v.names[id(term)][0]] = value

        for dim, allowed in region.items():
            chosen = pick(allowed)
            if dim == ("action",):
                put(v.action, d.action_index(str(chosen)))
            elif dim[0] == "type":
                put(v.slot_types[str(dim[1])], d.type_index(str(chosen)))
            else:
                put(self._dim_term(dim), chosen)
        principal = d.types[values.get(v.names[id(v.ptype)][0], 0)]
        if d.kinds.get(principal) in NON_HUMAN:
            if not self.humans:
                return None
            put(v.depth, 1)
            if ("type", "root") not in region:
                put(v.slot_types["root"], d.type_index(min(self.humans)))
        for slot in v.used_ids:
            put(v.ids[slot], FRESH_IDS[slot])
        return PointValues(values, v.names)

    def _dim_term(self, dim: Dim) -> z3.ExprRef:
        _, slot, path, kind = dim
        assert isinstance(slot, str) and isinstance(path, tuple)
        assert isinstance(kind, str)
        typ: ir.Type
        if kind.startswith("label:"):
            typ = ir.LabelType(kind[len("label:") :])
        else:
            typ = KIND_TYPES[kind]
        return self.v.value(slot, path, typ)

    def exact(self, *rules: ir.Rule) -> bool:
        return all(self.own[r.id].exact for r in rules)

    def ref(self, rule: ir.Rule) -> RuleRef:
        return RuleRef(rule.id, rule.span)

    def finding(
        self,
        code: str,
        message: str,
        rules: Sequence[ir.Rule],
        *,
        witness: Mapping[str, Any] | None = None,
        hint: str | None = None,
        notes: Sequence[tuple[str, Any]] = (),
        decision: str | None = None,
        exact: bool | None = None,
    ) -> Finding:
        return Finding(
            code,
            message,
            tuple(self.ref(r) for r in rules),
            KINDS[code].severity,
            self.exact(*rules) if exact is None else exact,
            witness,
            decision,
            hint,
            tuple(notes),
        )

    # ---- the whole run ------------------------------------------------------------

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        results, self.processes = run_chunks(self, self.workers, self.progress)
        for result in results:
            findings.extend(result.findings)
            for key, value in result.answers:
                self.shared_cache.put(key, value)
            self.shared_cache.hits += result.hits
            self.shared_cache.misses += result.misses
            self.checks += result.checks
            self.unconfirmed += result.unconfirmed
            self.point_misses += result.point_misses
        findings.extend(self.declared_findings())
        log.debug(
            "analysis: %d findings, cache %d hits / %d misses, %d "
            "unconfirmed witnesses",
            len(findings),
            self.shared_cache.hits,
            self.shared_cache.misses,
            self.unconfirmed,
        )
        return sort_findings(findings)

    def declared_findings(self) -> list[Finding]:
        """`beyond-scope` for each grant naming actions outside the declared
        scopes of a principal type it applies to; the witness is denied by
        that ceiling (`scope_not_declared`) in the engine."""
        out = []
        schema = self.original.schema
        for rule, name, outside in beyond_declared(self.original):
            witness = self._ceiling_witness(rule, name, outside[0])
            declared = ", ".join(
                f"`{s}`" for s in sorted(schema.entities[name].scopes or ())
            )
            out.append(
                self.finding(
                    "beyond-scope",
                    f"rule `{rule.id}` grants {shown(outside)} to `{name}`, outside "
                    f"the scopes declared for `{name}` ({declared}); that part "
                    "never takes effect",
                    [rule],
                    witness=witness,
                    decision="deny" if witness is not None else None,
                    hint=f"narrow the rule's actions, or declare the scope on `{name}`",
                    exact=True,
                )
            )
        return out

    def _ceiling_witness(
        self, rule: ir.Rule, name: str, action: str
    ) -> dict[str, Any] | None:
        schema = self.original.schema
        plain = sorted(n for n, e in schema.entities.items() if e.kind is None)
        resources = (
            sorted(rule.resource_types or ()) or plain or sorted(schema.entities)
        )
        request: dict[str, Any] = {
            "principal": {"type": name, "id": "witness"},
            "action": action,
            "resource": {"type": resources[0], "id": "witness-resource"},
            "now": "2026-01-01T00:00:00Z",
        }
        observation = self.observer.observe(request)
        if observation is None or "scope_not_declared" not in (
            observation.decision.reason_codes
        ):
            self.unconfirmed += 1
            log.warning("a declared-scope witness did not reproduce: %s", request)
            return None
        return request

    def run_chunk(self, index: int, *, report: bool) -> ChunkResult:
        """The findings about one chunk's rules, from fresh solvers and a
        fresh view of the cache, and when there are several chunks in a
        fresh z3 context too, so they do not depend on where or after what
        the chunk runs (z3's models depend on every term a context has
        seen). A lone chunk uses the context the encoding lives in, as a
        run without chunks would. `report`: call `progress` (not in a
        worker)."""
        saved = (self.checks, self.unconfirmed, self.point_misses)
        solvers = (self.core, self.full)
        self.checks = self.unconfirmed = self.point_misses = 0
        view = CacheView(self.shared_cache)
        self.cache = view
        self.solve_ctx = z3.Context() if len(self.chunks) > 1 else None
        self.core, self.full = self._solvers(self.solve_ctx)
        offset = sum(len(c) for c in self.chunks[:index])
        total = len(self.rules)
        findings: list[Finding] = []
        try:
            for done, rule_id in enumerate(self.chunks[index], offset + 1):
                findings.extend(self.rule_findings(self.by_id[rule_id]))
                if report and self.progress is not None:
                    self.progress(done, total)
            return ChunkResult(
                tuple(findings),
                tuple(view.answers.items()),
                view.hits,
                view.misses,
                self.checks,
                self.unconfirmed,
                self.point_misses,
                len(self.chunks[index]),
            )
        finally:
            self.cache = self.shared_cache
            self.solve_ctx = None
            self.core, self.full = solvers
            self.checks, self.unconfirmed, self.point_misses = saved

    def rule_findings(self, rule: ir.Rule) -> list[Finding]:
        terms = self.own[rule.id]
        chain = terms.chain
        key = ("sat", self.schema_hash, self.hash[rule.id])
        status = self.cache.get(key)
        if status is None:
            region = self.regions.get(rule.id)
            if region is not None:
                status = "unsat" if self.space.empty(region) else "sat"
            else:
                status, _ = self.check(terms.matches, chain=chain)
            self.cache.put(key, status)
        if status == "unsat":
            return [self.finding("unsatisfiable", self._unsat_message(rule), [rule])]
        if status != "sat":
            return []
        out: list[Finding] = []
        out.extend(self.always_true(rule))
        if rule.effect != "allow":
            out.extend(self.unguarded(rule))
        shadow = self.shadowed(rule)
        if shadow is not None:
            return [*out, shadow]
        if rule.effect in GRANTS:
            out.extend(self.conflicts(rule))
        redundant = self.redundant(rule)
        if redundant is not None:
            out.append(redundant)
        if rule.effect in GRANTS and self.non_human(self.reach[rule.id]):
            out.extend(drift(self, rule))
        return out

    def non_human(self, reach: Reach) -> frozenset[str]:
        return frozenset(
            t for t in reach.principals if self.domain.kinds.get(t) in NON_HUMAN
        )

    # ---- single-rule questions ---------------------------------------------------

    def _unsat_message(self, rule: ir.Rule) -> str:
        target = f"rule `{rule.id}` can never match: its target admits no request"
        if rule.condition is None:
            return target
        if self.space.empty(self.target_region(rule)):
            return target
        return f"rule `{rule.id}` can never match: its condition never holds"

    def always_true(self, rule: ir.Rule) -> list[Finding]:
        terms = self.own[rule.id]
        if rule.condition is None:
            unconstrained = (rule.actions, rule.principal_types, rule.resource_types)
            if unconstrained != (None, None, None):
                return []
            return [
                self.finding(
                    "always-true",
                    f"rule `{rule.id}` ({rule.effect}) applies to every request: "
                    "it has no target and no condition",
                    [rule],
                    hint="name the principals, actions or resources it is for",
                )
            ]
        key = ("always", self.schema_hash, self.hash[rule.id])
        answer = self.cache.get(key)
        if answer is None:
            answer = self.always_by_regions(rule)
            if answer is None:
                answer, _ = self.check(
                    terms.target, negate(terms.matches), chain=terms.chain
                )
            self.cache.put(key, answer)
        if answer != "unsat":
            return []
        return [
            self.finding(
                "always-true",
                f"the condition of rule `{rule.id}` ({rule.effect}) always holds "
                "where its target applies",
                [rule],
                hint="the condition tests nothing; drop it or say what was meant",
            )
        ]

    def always_by_regions(self, rule: ir.Rule) -> str | None:
        """The solver's answer to "target and not matches" for a box rule."""
        region = self.regions.get(rule.id)
        if region is None:
            return None
        escapes = self.uncovered(self.target_region(rule), [region])
        if escapes is None:
            return None
        return "sat" if escapes else "unsat"

    def unguarded(self, rule: ir.Rule) -> list[Finding]:
        if rule.id in self.regions:
            # A box reads only required attributes of the types it admits:
            # it never errs.
            return []
        terms = self.own[rule.id]
        status, _ = self.check(terms.errs, chain=terms.chain)
        if status != "sat":
            return []
        witness = self.confirm(
            [terms.errs], lambda o: o.erred(rule.id) and o.effect == "deny"
        )
        if witness is None:
            return []
        observation = self.observe(witness)
        why = observation.errors.get(rule.id, "") if observation else ""
        return [
            self.finding(
                "unguarded-optional",
                f"{rule.effect} rule `{rule.id}` errs when "
                f"{why or 'a value is absent'}, and an erring rule makes the "
                "decision deny",
                [rule],
                witness=witness,
                decision="deny",
                hint="guard the read with `has`, e.g. `resource has x and "
                "resource.x …`, or make the attribute required",
            )
        ]

    # ---- against the overlapping rules ------------------------------------------

    def shadowed(self, rule: ir.Rule) -> Finding | None:
        if rule.effect == "deny":
            return None
        others = self.overlapping(rule.id)
        over = [o for o in others if stronger(o, rule)]
        blockers = [o for o in others if o.effect != "allow"]
        if not over and not blockers:
            return None
        involved = [rule, *over, *blockers]
        chain = self.needs_chain(*involved)
        overridden = any_of(
            [
                *(self.own[o.id].matches for o in over),
                *(self.own[o.id].errs for o in blockers),
            ]
        )
        key = (
            "shadow",
            self.schema_hash,
            self.hash[rule.id],
            *sorted({self.hash[o.id] + o.effect for o in involved[1:]}),
        )
        answer = self.cache.get(key)
        if answer is None:
            answer = self.shadow_by_regions(rule, over, blockers)
            if answer is None:
                answer, _ = self.check(
                    self.own[rule.id].matches, negate(overridden), chain=chain
                )
            self.cache.put(key, answer)
        if answer != "unsat":
            return None
        mine = self.own[rule.id].matches
        status, model = self.check(mine, chain=True, model=True)
        witness = None
        winners: list[ir.Rule] = []
        if status == "sat" and model is not None:
            winners = [o for o in over if holds(model, self.own[o.id].matches)]
            winners += [
                o
                for o in blockers
                if o not in winners and holds(model, self.own[o.id].errs)
            ]
            rank = EFFECT_RANK[rule.effect]
            witness = self.confirm(
                [mine],
                lambda o: (
                    o.matched(rule.id)
                    and o.own_effect is not None
                    and EFFECT_RANK[o.own_effect] > rank
                ),
            )
        shown = (winners or over or blockers)[:3]
        names = ", ".join(f"`{o.id}`" for o in shown)
        return self.finding(
            "shadowed",
            f"rule `{rule.id}` ({rule.effect}) can never change a decision: "
            f"wherever it matches, a stronger rule decides ({names})",
            [rule, *shown],
            witness=witness,
            notes=[(f"`{o.id}` ({o.effect}) overrides it", o.span) for o in shown],
            hint="remove the rule, or narrow the rule that overrides it",
        )

    def shadow_by_regions(
        self, rule: ir.Rule, over: Sequence[ir.Rule], blockers: Sequence[ir.Rule]
    ) -> str | None:
        """The solver's answer to "matches and nothing overrides" when every
        rule involved is a box (boxes never err, so blockers only count as
        boxes, for their matches when they are stronger)."""
        mine = self.regions.get(rule.id)
        overs = self.regions_of(over)
        if mine is None or overs is None or self.regions_of(blockers) is None:
            return None
        escapes = self.uncovered(mine, overs)
        if escapes is None:
            return None
        return "sat" if escapes else "unsat"

    def conflicts(self, rule: ir.Rule) -> list[Finding]:
        """One finding per granting rule, naming every deny or step_up rule
        that matches some request it matches, with one witness."""
        region = self.regions.get(rule.id)
        hits: list[ir.Rule] = []
        remaining: list[ir.Rule] = []
        for other in self.overlapping(rule.id):
            if other.effect not in ("deny", "step_up"):
                continue
            theirs = None if region is None else self.regions.get(other.id)
            if region is not None and theirs is not None:
                if self.space.meets(region, theirs):
                    hits.append(other)
                continue
            if not self.boxes.may_meet(rule.id, other.id):
                continue
            meets = self.boxes.meet(rule.id, other.id)
            if meets is None:
                remaining.append(other)
            elif meets:
                hits.append(other)
        mine = self.own[rule.id].matches
        chain = self.needs_chain(rule, *remaining)
        while remaining:
            status, model = self.check(
                mine,
                any_of(self.own[o.id].matches for o in remaining),
                chain=chain,
                model=True,
            )
            if status != "sat" or model is None:
                break
            found = holding(model, remaining, lambda o: self.own[o.id].matches)
            if not found:
                break
            hits.extend(found)
            remaining = [o for o in remaining if o not in found]
        if not hits:
            return []
        hits.sort(key=lambda o: self.rules_order[o.id])
        witness, observation = self._conflict_witness(rule, hits)
        if witness is None:
            hits = [o for o in hits if not self.exact(rule, o)]
            if not hits:
                return []
        shown = [
            o for o in hits if observation is not None and observation.matched(o.id)
        ]
        winner = (shown or hits)[0]
        if len(hits) == 1:
            message = (
                f"rules `{rule.id}` ({rule.effect}) and `{winner.id}` "
                f"({winner.effect}) both match some requests; `{winner.id}` wins "
                "there"
            )
        else:
            names = ", ".join(f"`{o.id}`" for o in hits[:5])
            more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
            message = (
                f"rule `{rule.id}` ({rule.effect}) meets {len(hits)} stronger "
                f"rules ({names}{more}) on some requests; each wins where both "
                "match"
            )
        decision = observation.effect if observation is not None else winner.effect
        return [
            self.finding(
                "conflict",
                message,
                [rule, *hits],
                witness=witness,
                decision=decision,
                notes=[(f"`{o.id}` ({o.effect}) is here", o.span) for o in hits],
            )
        ]

    def _conflict_witness(
        self, rule: ir.Rule, hits: Sequence[ir.Rule]
    ) -> tuple[dict[str, Any] | None, Observation | None]:
        """A request both `rule` and one of `hits` match, as the engine shows:
        first one model for all of them, then one per rule."""
        region = self.regions.get(rule.id)
        first = self.regions.get(hits[0].id)
        if region is not None and first is not None:
            found = self.observe_point(
                self.space.meet(region, first),
                lambda o: o.matched(rule.id) and any(o.matched(h.id) for h in hits),
            )
            if found is not None:
                return found
        mine = self.own[rule.id].matches
        tries = [list(hits), *([o] for o in hits[:3] if len(hits) > 1)]
        for group in tries:
            status, model = self.check(
                mine,
                any_of(self.own[o.id].matches for o in group),
                chain=True,
                model=True,
            )
            if status != "sat" or model is None:
                continue
            request = self.builder.build(model)
            observation = self.observer.observe(request)
            if (
                observation is not None
                and observation.chain_ok
                and observation.matched(rule.id)
                and any(observation.matched(o.id) for o in group)
            ):
                return request, observation
            self.unconfirmed += 1
            log.warning("a witness did not reproduce in the engine: %s", request)
        return None, None

    def redundant(self, rule: ir.Rule) -> Finding | None:
        reach = self.reach[rule.id]
        candidates = [
            o
            for o in self.overlapping(rule.id)
            if same_contribution(rule, o) and reach.within(self.reach[o.id])
        ]
        if not candidates:
            return None
        key = (
            "redundant",
            self.schema_hash,
            self.hash[rule.id],
            *sorted({self.hash[o.id] for o in candidates}),
        )
        covering: list[str] | None = self.cache.get(key)
        if covering is None:
            covering = self._covering(rule, candidates)
            self.cache.put(key, covering)
        covers_ = [o for o in candidates if self.hash[o.id] in covering]
        if not covers_:
            return None
        cover = sorted(covers_, key=lambda o: o.id)[0]
        mutual = self.reach[cover.id].within(reach) and bool(
            self._covering(cover, [rule])
        )
        if mutual and rule.id < cover.id:
            return None
        if mutual:
            message = (
                f"rules `{cover.id}` and `{rule.id}` ({rule.effect}) match exactly "
                f"the same requests; `{rule.id}` is redundant"
            )
        else:
            message = (
                f"rule `{rule.id}` ({rule.effect}) is redundant: every request it "
                f"matches is also matched by `{cover.id}`"
            )
        return self.finding(
            "redundant",
            message,
            [rule, cover],
            notes=[(f"`{cover.id}` covers it", cover.span)],
            hint="remove one of the two rules",
        )

    def _covering(self, rule: ir.Rule, candidates: Sequence[ir.Rule]) -> list[str]:
        """Content hashes of the candidates that match wherever `rule` does
        (`rule` matches some request)."""
        covering: list[str] = []
        remaining: list[ir.Rule] = []
        region = self.regions.get(rule.id)
        for other in candidates:
            theirs = None if region is None else self.regions.get(other.id)
            if region is not None and theirs is not None:
                if self.space.within(region, theirs):
                    covering.append(self.hash[other.id])
                continue
            if not self.boxes.may_meet(rule.id, other.id):
                continue
            decided = self.boxes.covers(other.id, rule.id)
            if decided is None:
                remaining.append(other)
            elif decided:
                covering.append(self.hash[other.id])
        mine = self.own[rule.id].matches
        chain = self.needs_chain(rule, *remaining)
        while remaining:
            status, model = self.check(
                mine,
                any_of(self.not_matches(o) for o in remaining),
                chain=chain,
                model=True,
            )
            if status == "unsat":
                return [*covering, *(self.hash[o.id] for o in remaining)]
            if status != "sat" or model is None:
                break
            remaining = holding(model, remaining, lambda o: self.own[o.id].matches)
        return covering


def analyze_policy(
    policy: ir.PolicySet,
    *,
    cache: SolverCache | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> list[Finding]:
    return Analysis(policy, cache=cache, progress=progress, workers=workers).run()


def rules_of(findings: Iterable[Finding]) -> set[str]:
    return {r.id for f in findings for r in f.rules}
