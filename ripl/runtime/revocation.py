"""Revocation of delegation links, in memory or in SQLite.

A store answers one question, `is_revoked(link)`, for a link in the request
contract's shape (`id`, `from`, `to`). A link is revoked when its id was
revoked, or when its `from` or its `to` is an identity revoked as a whole.
Revocations are permanent: there is no un-revoke, so a revoked identity needs a
new id to be trusted again.

`version` grows by one each time the set of revocations changes, never
otherwise, so a decision cache keyed on it can never serve a decision made
before a revocation it has not seen. Both stores are safe to share between
threads; the SQLite store is also safe to share between processes, and its
version is the one in the database, so every process sees every revocation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ripl.runtime.errors import RevocationError
from ripl.runtime.identity import Identity, IdentityLike

log = logging.getLogger(__name__)


@runtime_checkable
class RevocationCheck(Protocol):
    """What chain verification needs: the read side of a store."""

    def is_revoked(self, link: Mapping[str, Any]) -> bool: ...


class RevocationStore(RevocationCheck, Protocol):
    @property
    def version(self) -> int: ...

    def revoke_link(self, link_id: str) -> bool:
        """Revoke one link by id; true when this changed the store."""
        ...

    def revoke_principal(self, identity: IdentityLike) -> bool:
        """Revoke every link from or to `identity`, now and later."""
        ...


def _link_id(link_id: object) -> str:
    if not isinstance(link_id, str) or not link_id:
        raise RevocationError("a link id must be a non-empty string")
    return link_id


def _identity(identity: IdentityLike) -> Identity:
    try:
        return Identity.of(identity)
    except ValueError as exc:
        raise RevocationError(str(exc)) from exc


def _link_parts(link: Mapping[str, Any]) -> tuple[str, Identity, Identity] | None:
    """The id and both ends of a link, or `None` when any is unusable."""
    if not isinstance(link, Mapping):
        return None
    link_id = link.get("id")
    try:
        grantor = Identity.of(link.get("from"))  # type: ignore[arg-type]
        grantee = Identity.of(link.get("to"))  # type: ignore[arg-type]
    except ValueError:
        return None
    if not isinstance(link_id, str) or not link_id:
        return None
    return link_id, grantor, grantee


class MemoryRevocationStore:
    """Revocations held in this process only; lost when it exits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: set[str] = set()
        self._principals: set[Identity] = set()
        self._version = 0

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def revoke_link(self, link_id: str) -> bool:
        link_id = _link_id(link_id)
        with self._lock:
            if link_id in self._links:
                return False
            self._links.add(link_id)
            self._version += 1
        log.debug("revoked delegation link %r", link_id)
        return True

    def revoke_principal(self, identity: IdentityLike) -> bool:
        ident = _identity(identity)
        with self._lock:
            if ident in self._principals:
                return False
            self._principals.add(ident)
            self._version += 1
        log.debug("revoked every link of %s", ident.show())
        return True

    def is_revoked(self, link: Mapping[str, Any]) -> bool:
        """A link that has no usable id, `from` or `to` counts as revoked:
        a store that cannot tell must not let it through."""
        parts = _link_parts(link)
        if parts is None:
            return True
        link_id, grantor, grantee = parts
        with self._lock:
            return (
                link_id in self._links
                or grantor in self._principals
                or grantee in self._principals
            )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_links (link_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked_principals (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocation_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO revocation_meta (key, value) VALUES ('version', 0);
"""


class SqliteRevocationStore:
    """Revocations in a SQLite file, shared by every process that opens it.

    Every write is one `BEGIN IMMEDIATE` transaction that changes the
    revocation and bumps the version together, so no reader can see one
    without the other.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self._path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteRevocationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM revocation_meta WHERE key = 'version'"
            ).fetchone()
        return int(row[0])

    def revoke_link(self, link_id: str) -> bool:
        link_id = _link_id(link_id)
        changed = self._write(
            "INSERT OR IGNORE INTO revoked_links (link_id) VALUES (?)", (link_id,)
        )
        if changed:
            log.debug("revoked delegation link %r", link_id)
        return changed

    def revoke_principal(self, identity: IdentityLike) -> bool:
        ident = _identity(identity)
        changed = self._write(
            "INSERT OR IGNORE INTO revoked_principals (type, id) VALUES (?, ?)",
            (ident.type, ident.id),
        )
        if changed:
            log.debug("revoked every link of %s", ident.show())
        return changed

    def _write(self, statement: str, params: tuple[str, ...]) -> bool:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                changed = self._conn.execute(statement, params).rowcount > 0
                if changed:
                    self._conn.execute(
                        "UPDATE revocation_meta SET value = value + 1"
                        " WHERE key = 'version'"
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return changed

    def is_revoked(self, link: Mapping[str, Any]) -> bool:
        """As for the memory store, an unusable link counts as revoked."""
        parts = _link_parts(link)
        if parts is None:
            return True
        link_id, grantor, grantee = parts
        with self._lock:
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM revoked_links WHERE link_id = ?)"
                " OR EXISTS (SELECT 1 FROM revoked_principals"
                "   WHERE (type = ? AND id = ?) OR (type = ? AND id = ?))",
                (link_id, grantor.type, grantor.id, grantee.type, grantee.id),
            ).fetchone()
        return bool(row[0])
