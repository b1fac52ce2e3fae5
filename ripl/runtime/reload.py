"""Hot reload: an engine whose policy set is swapped whole while it serves.

Input: policy paths (files or folders), read again on `reload()` or by an
optional polling watcher. Output: decisions, each made entirely by one policy
set (its `policy_hash` says which), and a `ReloadStatus` for every attempt.

A reload that cannot read, parse or type-check every file keeps the old set
serving and says why; it never reports success for a set it did not install,
and never serves part of a set. A file that changes while it is read, or
within `settle` seconds after (a writer that is not done), fails the attempt
too, so the next one retries.
Every attempt that changes nothing or fails is written to the audit log
(tag `reload`) with the hash that stays in force.

Writers should replace policy files atomically (write a temporary file, then
rename it over the old one). A writer that rewrites a file in place can be
caught between two writes with a prefix that happens to parse and check (a
file cut after a complete rule drops every rule after it). Two defences
narrow that window: a file modified less than `settle` seconds ago is looked
at again after `settle` seconds, and the watcher reloads only once the files
have looked the same for a whole poll. A writer that pauses longer than both
can still be caught; only an atomic rename rules it out.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from ripl import ir
from ripl.decision import Decision, deny
from ripl.engine import Engine, Mode, RevocationSource, load_policy
from ripl.errors import SourceError
from ripl.runtime.errors import ConfigurationError
from ripl.runtime.interfaces import AuditSink

log = logging.getLogger(__name__)

UNLOADED = "unloaded"
Fingerprint = tuple[tuple[str, int, int], ...]


@attrs.frozen
class ReloadStatus:
    """The outcome of one reload attempt.

    `ok` is true only when a set was read, checked and installed (or found
    identical to the one serving: `changed` false). On failure `error` says
    why, naming the file, and `policy_hash` is the hash still serving.
    """

    ok: bool
    changed: bool
    policy_hash: str
    previous_hash: str
    error: str | None
    at: datetime
    attempted: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "policy_hash": self.policy_hash,
            "previous_hash": self.previous_hash,
            "error": self.error,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "attempted": self.attempted,
        }


class ReloadingEngine:
    """An `Engine` over policy paths that can be reloaded while it decides.

    `pinned_hash` makes the engine serve only that exact policy set; it cannot
    be combined with `watch`, since a pinned engine could never take a change
    (that pairing is refused rather than left never reloading).
    `require_loaded=False` lets an app start even when the first load fails:
    it then denies everything with `policy_not_loaded` until a reload works.
    """

    def __init__(
        self,
        *paths: str | Path,
        audit: AuditSink | None = None,
        mode: Mode = "compiled",
        clock: Callable[[], datetime] | None = None,
        revocations: RevocationSource | None = None,
        pinned_hash: str | None = None,
        watch: bool = False,
        poll_interval: float = 2.0,
        min_retry_interval: float | None = None,
        require_loaded: bool = True,
        settle: float = 0.5,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        loader: Callable[[Sequence[Path]], ir.PolicySet] | None = None,
    ) -> None:
        if not paths:
            raise ConfigurationError("a reloading engine needs at least one path")
        if pinned_hash is not None and watch:
            raise ConfigurationError(
                "a pinned policy hash and watching for changes contradict each "
                "other: a watched change could never be installed"
            )
        if poll_interval <= 0:
            raise ConfigurationError("poll_interval must be positive")
        retry = poll_interval if min_retry_interval is None else min_retry_interval
        if retry < 0 or settle < 0:
            raise ConfigurationError(
                "min_retry_interval and settle must not be negative"
            )
        self.paths = tuple(Path(p) for p in paths)
        self.pinned_hash = pinned_hash
        self.poll_interval = poll_interval
        self.min_retry_interval = retry
        self._audit = audit
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic or time.monotonic
        self._sleep = sleep or time.sleep
        self.settle = settle
        self._load = loader or (lambda ps: load_policy(*ps))
        self._reload_lock = threading.Lock()
        self._engine: Engine | None = None
        self._mode: Mode = mode
        self._revocations = revocations
        self._last_failure_at: float | None = None
        self._last_failed_fingerprint: Fingerprint | None = None
        self._seen: Fingerprint | None = None
        self._pending: Fingerprint | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reads = 0
        self.counts = {"ok": 0, "unchanged": 0, "failed": 0, "skipped": 0}

        self.last_status = self.reload(force=True)
        if not self.last_status.ok and require_loaded:
            raise ConfigurationError(f"policy not loaded: {self.last_status.error}")
        if watch:
            self.start_watching()

    # -- serving ------------------------------------------------------------

    @property
    def policy_hash(self) -> str:
        engine = self._engine
        return engine.policy_hash if engine is not None else UNLOADED

    @property
    def policy(self) -> ir.PolicySet | None:
        engine = self._engine
        return engine.policy if engine is not None else None

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def decide(self, request: Any) -> Decision:
        """Never raises. The engine reads its policy state once per decision,
        so a decision is made by one set from start to end."""
        engine = self._engine
        if engine is None:
            return Decision.from_verdict(
                deny("policy_not_loaded: no policy set could be loaded; deny all"),
                UNLOADED,
                self._clock(),
            )
        return engine.decide(request)

    # -- reloading ----------------------------------------------------------

    def reload(self, *, force: bool = False) -> ReloadStatus:
        """Read the paths again and install the set if it loads and checks.

        Without `force`, an attempt within `min_retry_interval` of a failed
        one on the same unchanged files is skipped (and says so), so a broken
        file is not re-read on every call.
        """
        with self._reload_lock:
            return self._reload(force)

    def replace(self, policy: ir.PolicySet) -> ReloadStatus:
        """Install an already checked set (e.g. built from text)."""
        with self._reload_lock:
            previous = self.policy_hash
            refusal = self._pin_refusal(policy)
            if refusal is not None:
                return self._failed(previous, refusal)
            return self._install(policy, previous)

    def _reload(self, force: bool) -> ReloadStatus:
        previous = self.policy_hash
        before = _fingerprint(self.paths)
        now = self._monotonic()
        if (
            not force
            and self._last_failure_at is not None
            and before == self._last_failed_fingerprint
            and now - self._last_failure_at < self.min_retry_interval
        ):
            self.counts["skipped"] += 1
            status = ReloadStatus(
                ok=False,
                changed=False,
                policy_hash=previous,
                previous_hash=previous,
                error="skipped: the last attempt failed and nothing changed since",
                at=self._clock(),
                attempted=False,
            )
            self.last_status = status
            return status

        self.reads += 1
        try:
            policy = self._load(self.paths)
        except SourceError as exc:
            return self._failed(previous, _describe(exc), before)
        except (OSError, ValueError) as exc:
            return self._failed(previous, f"cannot load the policy set: {exc}", before)
        after = _fingerprint(self.paths)
        if after == before and self.settle > 0 and _fresh(after, self.settle):
            self._sleep(self.settle)
            if _fingerprint(self.paths) != after:
                after = _fingerprint(self.paths)
                before = ()
        if after != before or _changed_on_disk(policy):
            # What changed was never read, so the next attempt must not be
            # skipped as a repeat of this one: no fingerprint is kept.
            return self._failed(
                previous,
                "a policy file changed while it was being read; retrying later",
            )
        self._seen = after
        refusal = self._pin_refusal(policy)
        if refusal is not None:
            return self._failed(previous, refusal, after)
        return self._install(policy, previous)

    def _pin_refusal(self, policy: ir.PolicySet) -> str | None:
        if self.pinned_hash is None or policy.policy_hash == self.pinned_hash:
            return None
        return (
            f"the policy set hashes to {policy.policy_hash}, not the pinned "
            f"{self.pinned_hash}"
        )

    def _install(self, policy: ir.PolicySet, previous: str) -> ReloadStatus:
        self._last_failure_at = None
        self._last_failed_fingerprint = None
        changed = policy.policy_hash != previous
        if self._engine is None:
            self._engine = Engine(
                policy,
                mode=self._mode,
                clock=self._clock,
                revocations=self._revocations,
            )
        elif changed:
            self._engine.replace(policy)
        self.counts["ok" if changed else "unchanged"] += 1
        status = ReloadStatus(
            ok=True,
            changed=changed,
            policy_hash=policy.policy_hash,
            previous_hash=previous,
            error=None,
            at=self._clock(),
        )
        self.last_status = status
        log.debug("reload: %s -> %s", previous, policy.policy_hash)
        self._record(status)
        return status

    def _failed(
        self, previous: str, error: str, fingerprint: Fingerprint | None = None
    ) -> ReloadStatus:
        self._last_failure_at = self._monotonic()
        self._last_failed_fingerprint = fingerprint
        self.counts["failed"] += 1
        status = ReloadStatus(
            ok=False,
            changed=False,
            policy_hash=previous,
            previous_hash=previous,
            error=error,
            at=self._clock(),
        )
        self.last_status = status
        log.warning("policy reload failed, %s still serving: %s", previous, error)
        self._record(status)
        return status

    def _record(self, status: ReloadStatus) -> None:
        """A reload event as an audit record: the request names the paths, the
        decision says what serves now. A failing audit log does not undo a
        reload (decisions are audited on their own); it is logged."""
        if self._audit is None:
            return
        outcome = "installed" if status.changed else "unchanged"
        reason = (
            f"reload_failed: {status.error}; {status.policy_hash} retained"
            if not status.ok
            else f"reload_ok: {outcome} {status.policy_hash}"
        )
        request = {
            "action": "ripl.reload",
            "paths": [str(p) for p in self.paths],
            "status": status.to_json(),
        }
        decision = {
            "effect": None,
            "rules": [],
            "reasons": [reason],
            "policy_hash": status.policy_hash,
            "previous_hash": status.previous_hash,
            "evaluated_at": status.to_json()["at"],
        }
        try:
            self._audit.append(request, decision, tag="reload")
        except Exception as exc:
            log.error("could not audit a policy reload: %s", exc)

    # -- watching ---------------------------------------------------------

    def poll(self) -> ReloadStatus | None:
        """One watcher step: reload when the files changed and have stayed the
        same since the previous poll; `None` when there was nothing to do."""
        current = _fingerprint(self.paths)
        if current == self._seen:
            return None
        pending, self._pending = self._pending, current
        if pending != current:
            return None  # still changing, or first sight: wait one poll
        self._pending = None
        return self.reload()

    def start_watching(self) -> None:
        if self.pinned_hash is not None:
            raise ConfigurationError(
                "a pinned policy hash and watching for changes contradict each other"
            )
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name="ripl-policy-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def __enter__(self) -> ReloadingEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad poll
                log.error(
                    "policy watcher poll failed: %r",
                    sys.exc_info()[1],
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )


def _files(paths: Sequence[Path]) -> list[Path]:
    """Every file the set may be read from, and the folders holding them: a
    file's imports resolve in its folder, so that whole folder is watched, and
    a folder's own time moves when a file in it is removed or renamed."""
    out: list[Path] = []
    for path in paths:
        folder = path if path.is_dir() else path.parent
        out.append(folder)
        out.extend(sorted(p for p in folder.rglob("*.ripl") if p != folder))
        if not path.is_dir() and path not in out:
            out.append(path)
    return out


def _fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """Name, size and modification time of every policy file; a missing or
    unreadable one shows as size -1."""
    marks: list[tuple[str, int, int]] = []
    for file in _files(paths):
        try:
            stat = file.stat()
        except OSError:
            marks.append((str(file), -1, -1))
        else:
            marks.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(marks)


def _fresh(fingerprint: Fingerprint, settle: float) -> bool:
    """Whether any file was modified less than `settle` seconds ago."""
    newest = max((mtime for _, _, mtime in fingerprint), default=0)
    return newest / 1e9 > time.time() - settle


def _changed_on_disk(policy: ir.PolicySet) -> bool:
    """True when a file the set was read from no longer holds that text
    (the standard library, read from the package, is left out)."""
    for name, text in policy.sources.items():
        path = Path(name)
        if not path.is_file() or "stdlib" in path.parts:
            continue
        try:
            current = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return True
        if current != text:
            return True
    return False


def _describe(exc: SourceError) -> str:
    diagnostics = getattr(exc, "diagnostics", None) or []
    parts = []
    for diagnostic in diagnostics[:5]:
        parts.append(f"{diagnostic.span.location()}: {diagnostic.message}")
    if not parts:
        return str(exc)
    more = len(diagnostics) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
