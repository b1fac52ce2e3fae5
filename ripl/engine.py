"""The embedding API: load a policy set, build an engine, decide requests.

`decide` never raises. A malformed request, an invalid delegation chain, an
erring rule or a bug inside ripl all come back as a deny that says why.
Loading is where malformed policies are reported, as `SourceError`s with
spans, before any request is seen.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ripl import ir
from ripl.ast import Duration
from ripl.check import check_modules
from ripl.compile import compile_policy
from ripl.decision import (
    Decision,
    Outcome,
    Pending,
    Verdict,
    cap_pending,
    combine,
    deny,
)
from ripl.delegation import NO_CHAIN, Facts, check_chain, find_root, owner_types
from ripl.errors import RiplError
from ripl.interpret import Interpreter
from ripl.modules import load_modules
from ripl.request import BadRequest, Link, Parsed, parse_request

if TYPE_CHECKING:
    from ripl.cache import CacheStats, DecisionCache

log = logging.getLogger(__name__)

Mode = Literal["compiled", "reference"]
PolicySource = str | Path


class RuleEvaluator(Protocol):
    def outcome(self, request: Parsed, facts: Facts) -> Outcome: ...


class RevocationSource(Protocol):
    """The read side of a revocation store (`ripl.runtime.revocation`): asked
    about each link as `{"id", "from", "to"}`. A store may also offer an
    integer `version` that grows with every revocation."""

    def is_revoked(self, link: Mapping[str, Any]) -> bool: ...


def load_policy(
    *sources: PolicySource, text: str | None = None, name: str = "<text>"
) -> ir.PolicySet:
    """Parse and check a policy set from paths (files or folders) and/or text.

    A `str` holding a newline is taken as policy text, any other `str` or a
    `Path` as a path. Raises `ParseError` or `CheckError` with every problem.
    """
    paths: list[Path] = []
    texts: list[tuple[str, str]] = []
    for source in sources:
        if isinstance(source, str) and "\n" in source:
            texts.append((name if not texts else f"{name}#{len(texts)}", source))
        else:
            paths.append(Path(source))
    if text is not None:
        texts.append((name, text))
    if not paths and not texts:
        raise ValueError("load needs at least one policy path or text")
    with collection_paused():
        return check_modules(load_modules(paths, texts))


_PAUSE_LOCK = threading.Lock()
_pauses = 0
_resume = False


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Loading builds millions of objects and frees few of them, so the
    cyclic collector would walk the growing heap again and again for almost
    nothing (about 40% of a 10 000-rule load). It is paused while any load
    runs, and resumed after the last one if it was on before."""
    global _pauses, _resume
    with _PAUSE_LOCK:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def load(
    *sources: PolicySource,
    text: str | None = None,
    mode: Mode = "compiled",
    **options: Any,
) -> Engine:
    """Load a policy set and build an `Engine` for it."""
    return Engine(load_policy(*sources, text=text), mode=mode, **options)


def load_or_deny(*sources: PolicySource, **options: Any) -> Engine:
    """Like `load`, for an application that must start anyway: when the policy
    set cannot be read, parsed or checked, the error is logged and the engine
    denies everything (`policy_not_loaded`). A broken file never means that
    the rest of the set, or nothing at all, is enforced."""
    try:
        return load(*sources, **options)
    except (RiplError, OSError, ValueError) as exc:
        log.error("policy set not loaded, denying every request: %s", exc)
        mode = options.get("mode", "compiled")
        return Engine.failed(str(exc), mode=mode)


class Engine:
    """Decides requests against one policy set. Thread-safe: the policy set
    is immutable and swapped whole by `replace`."""

    def __init__(
        self,
        policy: ir.PolicySet,
        *,
        mode: Mode = "compiled",
        clock: Callable[[], datetime] | None = None,
        revoked: Iterable[str] = (),
        revocations: RevocationSource | None = None,
        decision_cache: int = 0,
    ) -> None:
        if mode not in ("compiled", "reference"):
            raise ValueError(f"unknown mode {mode!r}; use 'compiled' or 'reference'")
        self.mode: Mode = mode
        self._clock = clock or (lambda: datetime.now(UTC))
        self._revoked: set[str] = set(revoked)
        self._revocations = revocations
        self._revocation_version = getattr(revocations, "version", None)
        if (
            decision_cache
            and revocations is not None
            and (getattr(revocations, "version", None) is None)
        ):
            # Without a version there is no way to see a revocation made
            # elsewhere, so a cached allow could outlive it: no cache.
            log.warning("revocation store has no version; decision cache is off")
            decision_cache = 0
        self._decision_cache_size = decision_cache  # 0: no decision cache
        self._lock = threading.Lock()
        self._unloaded: str | None = None  # why no policy set is loaded
        self._install(policy)

    @classmethod
    def failed(cls, reason: str, **options: Any) -> Engine:
        """An engine whose policy set could not be loaded: it denies every
        request with `policy_not_loaded`, never falls back to allowing."""
        engine = cls(_EMPTY_POLICY, **options)
        engine._unloaded = reason
        return engine

    # ---- the policy set -----------------------------------------------------

    def _install(self, policy: ir.PolicySet) -> None:
        evaluator: RuleEvaluator
        if self.mode == "reference":
            evaluator = Interpreter(policy)
        else:
            with collection_paused():
                evaluator = compile_policy(policy)
        leeway = policy.options.get("clock_leeway", Duration(0))
        assert isinstance(leeway, Duration)
        delta = timedelta(seconds=leeway.seconds)
        decisions = _decision_cache(evaluator, self._decision_cache_size, delta)
        # One tuple, replaced in a single assignment: a decision reads it once
        # and so never mixes two policy versions (the decision cache included).
        self._state = (policy, evaluator, delta, decisions)

    @property
    def policy(self) -> ir.PolicySet:
        return self._state[0]

    def snapshot(self) -> tuple[ir.PolicySet, RuleEvaluator]:
        """The policy set and its evaluator, read together, so a caller that
        needs both never pairs one version's policy with another's tree."""
        policy, evaluator = self._state[0], self._state[1]
        return policy, evaluator

    @property
    def policy_hash(self) -> str:
        return self._state[0].policy_hash

    def replace(self, policy: ir.PolicySet) -> None:
        """Swap in a new policy set atomically."""
        with self._lock:
            self._install(policy)
            self._unloaded = None
        log.debug("engine now serves %s", policy.policy_hash)

    # ---- revocation -----------------------------------------------------------

    def revoke(self, link_id: str) -> None:
        with self._lock:
            self._revoked = self._revoked | {link_id}
            decisions = self._state[3]
            if decisions is not None:
                decisions.clear()

    def revoked_ids(self) -> frozenset[str] | None:
        """The ids revoked through `revoke`, when they are all there is to
        this engine's revocations; None when a shared store is attached (it
        must then be asked link by link, through `is_revoked`)."""
        if self._revocations is not None:
            return None
        return frozenset(self._revoked)  # replaced whole by `revoke`: one state

    def now(self) -> datetime:
        """The engine's clock: the time a request without `now` is decided at."""
        return self._clock()

    def is_revoked(self, link: Link) -> bool:
        """Revoked here by `revoke`, or in the shared store. The store counts a
        link without an id as revoked: it cannot tell, so it does not pass it."""
        if link.id is not None and link.id in self._revoked:
            return True
        store = self._revocations
        if store is None:
            return False
        return store.is_revoked(
            {
                "id": link.id,
                "from": {"type": link.source.type, "id": link.source.id},
                "to": {"type": link.target.type, "id": link.target.id},
            }
        )

    def _sync_revocations(self, store: RevocationSource) -> None:
        """A shared store changes behind this engine's back (another engine or
        process revokes); when its `version` moves, cached decisions go."""
        version = getattr(store, "version", None)
        if version == self._revocation_version:
            return
        with self._lock:
            self._revocation_version = version
            decisions = self._state[3]
            if decisions is not None:
                decisions.clear()

    # ---- deciding ---------------------------------------------------------------

    def decide(self, request: Any) -> Decision:
        """Decide one request (the contract as a mapping or a typed object).
        Never raises: every failure is a deny that says why."""
        if self._revocations is not None:
            self._sync_revocations(self._revocations)
        policy, evaluator, leeway, decisions = self._state
        now = self._clock()
        if self._unloaded is not None:
            return Decision.from_verdict(
                deny(f"policy_not_loaded: {self._unloaded}"), policy.policy_hash, now
            )
        try:
            parsed = parse_request(request, policy.schema, now)
        except BadRequest as exc:
            return Decision.from_verdict(
                deny(f"bad_request: {exc.message}"), policy.policy_hash, now
            )
        except Exception:  # a bug in ripl must still fail closed
            log.error(
                "request could not be parsed: %r",
                sys.exc_info()[1],
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return Decision.from_verdict(
                deny("bad_request: the request could not be read"),
                policy.policy_hash,
                now,
            )
        try:
            if decisions is None:
                verdict = decide_parsed(
                    parsed, policy, evaluator, leeway, self.is_revoked
                )
            else:
                verdict = decisions.decide(
                    parsed,
                    lambda p: decide_parsed(
                        p, policy, evaluator, leeway, self.is_revoked
                    ),
                )
        except Exception:
            log.error(
                "internal error while deciding: %r",
                sys.exc_info()[1],
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            verdict = deny(
                "error_in_rule: internal error while evaluating; failing closed"
            )
        return Decision.from_verdict(verdict, policy.policy_hash, parsed.now)

    def decide_batch(self, requests: Iterable[Any]) -> list[Decision]:
        return [self.decide(r) for r in requests]

    def cache_stats(self) -> CacheStats | None:
        """Hit counters of the decision cache, or None when it is off."""
        decisions = self._state[3]
        return None if decisions is None else decisions.stats()

    def check_request(self, request: Any) -> Parsed:
        """Parse a request strictly, raising `BadRequest` (for the CLI)."""
        return parse_request(request, self.policy.schema, self._clock())


def decide_parsed(
    request: Parsed,
    policy: ir.PolicySet,
    evaluator: RuleEvaluator,
    leeway: timedelta = timedelta(0),
    is_revoked: Callable[[Link], bool] = lambda link: False,
) -> Verdict:
    """DESIGN.md's decision procedure: delegation first, then the rules, then
    the cap by the root human's own decision."""
    schema = policy.schema
    definitions = schema.obligations
    failures, facts = check_chain(request, schema, leeway=leeway, is_revoked=is_revoked)
    if schema.ceilings:
        failures.extend(beyond_declared(request, schema, facts))
    if failures:
        return deny(*failures)
    pending_of = getattr(evaluator, "pending", None)

    def pending(parsed: Parsed, facts: Facts) -> Pending:
        if pending_of is not None:
            found: Pending = pending_of(parsed, facts, definitions)
            return found
        return Pending.of(combine(evaluator.outcome(parsed, facts), definitions))

    own = pending(request, facts)
    if own.effect == "deny":
        return own.verdict()  # nothing the root gets can make a deny stricter
    root, missing = find_root(request, schema, facts)
    if missing is not None:
        return deny(missing, errors=own.errors)
    if root is None or root.ref == request.principal.ref:
        return own.verdict()
    as_root = Parsed(
        principal=root,
        action=request.action,
        resource=request.resource,
        context=request.context,
        chain=None,
        link_errors=(),
        entities=request.entities,
        now=request.now,
    )
    return cap_pending(own, pending(as_root, NO_CHAIN), str(root.ref), definitions)


def beyond_declared(request: Parsed, schema: ir.Schema, facts: Facts) -> list[str]:
    """`scope_not_declared` for each identity type the request acts through
    whose declared scopes do not cover the action: the principal and every
    member of its chain, or, without a chain, the principal and its owners up
    to the root human. Authority that passes through an identity never
    exceeds that identity's ceiling."""
    types = {request.principal.type}
    if facts.depth:
        types |= facts.members
    else:
        types.update(owner_types(request, schema))
    out = []
    for name in sorted(types & schema.ceilings):
        declared = schema.entities[name]
        if not declared.may_act(request.action):
            scopes = ", ".join(f"`{s}`" for s in sorted(declared.scopes or ()))
            out.append(
                f"scope_not_declared: `{request.action}` is outside the scopes "
                f"declared for `{name}` ({scopes})"
            )
    return out


def _decision_cache(
    evaluator: RuleEvaluator, size: int, leeway: timedelta
) -> DecisionCache | None:
    if size <= 0 or not hasattr(evaluator, "bucket"):
        return None  # the cache keys on the compiled tree's read sets
    from ripl.cache import DecisionCache

    return DecisionCache(evaluator, size, leeway)  # type: ignore[arg-type]


_EMPTY_POLICY = ir.PolicySet(
    schema=ir.Schema(
        entities={},
        actions=frozenset(),
        groups=frozenset(),
        labels={},
        context=ir.RecordType(()),
        obligations={},
        requirements=frozenset(),
    ),
    rules=(),
    risks={},
    tests=(),
    options={},
    sources={},
    policy_hash="sha256:" + "0" * 64,
)
