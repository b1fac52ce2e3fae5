"""Dry-run (shadow) mode: a candidate policy set decides beside the enforcing
one, and only the enforcing one's decision is returned.

Every request on which the two differ (effect, rules, obligations or
requirements; never the time) is written to the audit log tagged `shadow`,
with both decisions, so a team can see what a stricter set would break before
it blocks anything. The candidate can never change what is enforced: if it
fails, raises or cannot be audited, the enforcing decision still stands and
the failure is counted.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

import attrs

from ripl.decision import Decision, obligations_json
from ripl.runtime.interfaces import AuditSink, Decider

log = logging.getLogger(__name__)

SHADOW_TAG = "shadow"


@attrs.frozen
class ShadowStats:
    """`transitions` counts differing pairs by `enforced->candidate` effect,
    e.g. `allow->deny` for a request the candidate would newly block."""

    decided: int
    same: int
    different: int
    transitions: Mapping[str, int]
    candidate_failures: int
    audit_failures: int


def differs(enforced: Decision, candidate: Decision) -> bool:
    """Whether the two sets answer differently, ignoring time and hash."""
    return (
        enforced.effect != candidate.effect
        or enforced.rule_ids != candidate.rule_ids
        or obligations_json(enforced.obligations)
        != obligations_json(candidate.obligations)
        or enforced.requirements != candidate.requirements
    )


class ShadowEngine:
    """Enforces `enforcing`, runs `candidate` beside it, records differences.

    Both engines keep their own state: either may be a `ReloadingEngine`,
    so a candidate can be swapped while the enforcing set keeps serving.
    """

    def __init__(
        self,
        enforcing: Decider,
        candidate: Decider,
        *,
        audit: AuditSink | None,
        tag: str = SHADOW_TAG,
    ) -> None:
        self.enforcing = enforcing
        self.candidate = candidate
        self.tag = tag
        self._audit = audit
        self._lock = threading.Lock()
        self._decided = 0
        self._different = 0
        self._transitions: dict[str, int] = {}
        self._candidate_failures = 0
        self._audit_failures = 0

    @property
    def policy_hash(self) -> str:
        return self.enforcing.policy_hash

    def decide(self, request: Any) -> Decision:
        """The enforcing decision, always; the candidate only observes."""
        enforced = self.enforcing.decide(request)
        try:
            candidate = self.candidate.decide(request)
            if not isinstance(candidate, Decision):
                raise TypeError(f"the candidate returned {type(candidate).__name__}")
        except Exception:
            log.error(
                "shadow candidate failed: %r",
                sys.exc_info()[1],
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            with self._lock:
                self._decided += 1
                self._candidate_failures += 1
            return enforced
        different = differs(enforced, candidate)
        with self._lock:
            self._decided += 1
            if different:
                self._different += 1
                key = f"{enforced.effect}->{candidate.effect}"
                self._transitions[key] = self._transitions.get(key, 0) + 1
        if different:
            self._record(request, enforced, candidate)
        return enforced

    def _record(self, request: Any, enforced: Decision, candidate: Decision) -> None:
        if self._audit is None:
            return
        decision = enforced.to_json()
        decision["shadow"] = candidate.to_json()
        try:
            self._audit.append(_as_mapping(request), decision, tag=self.tag)
        except Exception as exc:
            with self._lock:
                self._audit_failures += 1
            log.warning("could not record a shadow difference: %s", exc)

    @property
    def stats(self) -> ShadowStats:
        with self._lock:
            return ShadowStats(
                decided=self._decided,
                same=self._decided - self._different - self._candidate_failures,
                different=self._different,
                transitions=dict(self._transitions),
                candidate_failures=self._candidate_failures,
                audit_failures=self._audit_failures,
            )


def _as_mapping(request: Any) -> Mapping[str, Any]:
    if isinstance(request, Mapping):
        return request
    if attrs.has(type(request)):
        return attrs.asdict(request)
    return {"request": repr(request)}
