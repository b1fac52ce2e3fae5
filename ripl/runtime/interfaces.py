"""What the runtime layer needs from its collaborators, as protocols, so a
guard, a shadow engine or a reloader accepts any engine and any audit sink
that fits, not one class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ripl.decision import Decision


class Decider(Protocol):
    """An engine: `Engine`, `ReloadingEngine`, `ShadowEngine`."""

    @property
    def policy_hash(self) -> str: ...

    def decide(self, request: Any) -> Decision: ...


class AuditSink(Protocol):
    """Where decision records go: `AuditLog`, or an app's own sink."""

    def append(
        self,
        request: Mapping[str, Any],
        decision: Mapping[str, Any],
        tag: str | None = None,
    ) -> object: ...
