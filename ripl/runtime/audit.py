"""The append-only, hash-chained audit log of decisions, in SQLite.

Input: a request and its decision, both in the JSON shapes of the design's
fixed contracts. Output: one record per `append`, with a sequence number
(1, 2, 3, ... without gaps), the previous record's hash and its own:

    hash = "sha256:" + hex(sha256(canonical_json(every other field)))

where the fields include `seq` and `prev_hash`, and the decision is included as
its canonical JSON text. The first record's `prev_hash` is `GENESIS`.

What a record takes from the request (none of it is required):

- `principal`: the request's `principal` `{"type", "id"}`;
- `root`: the first delegation link's `from`; without a chain, the principal's
  `owner`; without an owner, the principal itself. The engine knows entity
  kinds and may pass `root=` to `append` instead;
- `organisation`: `context["organisation"]`, else `context["organization"]`,
  else `context["org"]`; `workflow`: `context["workflow"]`. A string is kept
  as it is, an object with a string `id` gives that id, any other value its
  canonical JSON;
- `delegation_ids`: the `id` of each link of `delegation`, in order;
- `request_digest`: the sha256 of the whole request's canonical JSON.

From the decision: `effect`, the ids of `rules` and `policy_hash`. Every id
is stored exactly as given (newlines, quotes, NUL, U+2028, escape sequences):
escaping is the job of `render_record`, which always gives one line of
printable ASCII.

Writes are synchronous: `append` returns once its record is committed, and
there is no buffer, so no record is ever dropped and no gap record is ever
needed. Each append is one `BEGIN IMMEDIATE` transaction that reads the head
and inserts after it, so concurrent writers in threads or processes queue on
SQLite's write lock (waiting up to `busy_timeout`) and can never fork the
chain. A crash mid-append leaves the transaction uncommitted, which SQLite
rolls back: the log then ends at the last whole record and still verifies.

`verify` finds an edited, deleted, inserted or reordered record. Someone who
can write the file can also recompute every hash after a change; a signed
checkpoint of the head, kept out of the writer's reach, catches that and
truncation too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ripl.runtime.encoding import (
    canonical_json,
    format_time_fixed,
    parse_json,
)
from ripl.runtime.errors import AuditError, ConfigurationError
from ripl.runtime.identity import Identity, IdentityLike, escape_text

log = logging.getLogger(__name__)

GENESIS = "sha256:" + "0" * 64
_BARE = re.compile(r"[A-Za-z0-9:._+-]+")
CHECKPOINT_PREFIX = "rcp1"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        tag TEXT,
        decision TEXT NOT NULL,
        request_digest TEXT NOT NULL,
        principal_type TEXT,
        principal_id TEXT,
        root_type TEXT,
        root_id TEXT,
        organisation TEXT,
        workflow TEXT,
        delegation_ids TEXT NOT NULL,
        effect TEXT,
        rules TEXT NOT NULL,
        policy_hash TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_by_root ON audit_records (root_id)",
    "CREATE INDEX IF NOT EXISTS audit_by_principal ON audit_records (principal_id)",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_records (time)",
    """CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq INTEGER NOT NULL,
        token TEXT NOT NULL
    )""",
)

_COLUMNS = (
    "seq, time, tag, decision, request_digest, principal_type, principal_id,"
    " root_type, root_id, organisation, workflow, delegation_ids, effect, rules,"
    " policy_hash, prev_hash, hash"
)


@attrs.frozen
class AuditRecord:
    seq: int
    time: str
    tag: str | None
    decision_json: str
    request_digest: str
    principal: Identity | None
    root: Identity | None
    organisation: str | None
    workflow: str | None
    delegation_ids: tuple[str, ...]
    effect: str | None
    rules: tuple[str, ...]
    policy_hash: str | None
    prev_hash: str
    hash: str

    @property
    def decision(self) -> dict[str, Any]:
        """A fresh copy of the stored decision; decimals come back exact."""
        value: dict[str, Any] = parse_json(self.decision_json)
        return value

    def hashed_fields(self) -> dict[str, Any]:
        """Everything the record's hash covers: all fields but `hash`."""
        return {
            "v": 1,
            "seq": self.seq,
            "time": self.time,
            "tag": self.tag,
            "decision": self.decision_json,
            "request_digest": self.request_digest,
            "principal": self.principal.as_dict() if self.principal else None,
            "root": self.root.as_dict() if self.root else None,
            "organisation": self.organisation,
            "workflow": self.workflow,
            "delegation_ids": list(self.delegation_ids),
            "effect": self.effect,
            "rules": list(self.rules),
            "policy_hash": self.policy_hash,
            "prev_hash": self.prev_hash,
        }

    def computed_hash(self) -> str:
        return _sha256(canonical_json(self.hashed_fields()))


@attrs.frozen
class Checkpoint:
    """A signed statement that the log's record `seq` has hash `head_hash`.

    Keep it where the log's writer cannot change it: a verifier given it can
    tell a truncated or rewritten log from a genuine one.
    """

    seq: int
    head_hash: str
    time: str
    signature: bytes = attrs.field(repr=False)

    def payload(self) -> bytes:
        data = {"v": 1, "seq": self.seq, "head_hash": self.head_hash, "time": self.time}
        return canonical_json(data).encode("ascii")

    def serialize(self) -> str:
        return ".".join([CHECKPOINT_PREFIX, _b64(self.payload()), _b64(self.signature)])

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Raises `AuditError` for text that `serialize` did not write."""
        parts = text.split(".") if isinstance(text, str) else []
        try:
            if len(parts) != 3 or parts[0] != CHECKPOINT_PREFIX:
                raise ValueError(text)
            data = parse_json(_unb64(parts[1]))
            seq, head_hash, moment = data["seq"], data["head_hash"], data["time"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError(text)
            if not isinstance(head_hash, str) or not isinstance(moment, str):
                raise ValueError(text)
            checkpoint = cls(seq, head_hash, moment, _unb64(parts[2]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise AuditError("not an audit checkpoint") from exc
        if checkpoint.payload() != _unb64(parts[1]):
            raise AuditError("not an audit checkpoint")
        return checkpoint

    def is_signed_by(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, self.payload())
        except InvalidSignature:
            return False
        return True


@attrs.frozen
class AuditVerification:
    """`first_bad` is the sequence number of the first record that fails, or
    that is missing; `problems` lists every break found, in log order."""

    records: int
    head_hash: str
    problems: tuple[tuple[int, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        return self.problems[0][0] if self.problems else None

    @property
    def problem(self) -> str | None:
        return self.problems[0][1] if self.problems else None


class AuditLog:
    """One SQLite file; open it from as many threads and processes as needed.

    An instance is safe to share between threads (its connection is used under
    a lock); several instances, in this process or others, are safe on the same
    file. Creating the file switches it to WAL mode, which persists.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path),
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA:
                    self._conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------

    def append(
        self,
        request: Mapping[str, Any],
        decision: Mapping[str, Any],
        tag: str | None = None,
        *,
        root: IdentityLike | None = None,
        now: datetime | None = None,
    ) -> AuditRecord:
        """Record one decision; returns the committed record.

        Raises:
            AuditError: when the request or decision has no JSON form, or holds
                text that is not valid Unicode; nothing is written then.
        """
        fields = _fields_from(request, decision, tag, root, now)
        with self._lock, self._transaction():
            head = self._conn.execute(
                "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
            draft = AuditRecord(seq=seq, prev_hash=prev, hash="", **fields)
            record = attrs.evolve(draft, hash=draft.computed_hash())
            self._insert(record)
        log.debug("audit record %d appended", record.seq)
        return record

    def _insert(self, record: AuditRecord) -> None:
        principal = record.principal
        root = record.root
        values = (
            record.seq,
            record.time,
            record.tag,
            record.decision_json,
            record.request_digest,
            principal.type if principal else None,
            principal.id if principal else None,
            root.type if root else None,
            root.id if root else None,
            record.organisation,
            record.workflow,
            canonical_json(list(record.delegation_ids)),
            record.effect,
            canonical_json(list(record.rules)),
            record.policy_hash,
            record.prev_hash,
            record.hash,
        )
        try:
            cursor = self._conn.execute(
                f"INSERT INTO audit_records ({_COLUMNS}) VALUES"
                f" ({', '.join('?' * len(values))})",
                values,
            )
        except UnicodeEncodeError as exc:
            raise AuditError("an id in the request is not valid Unicode text") from exc
        stored = self._conn.execute(
            "SELECT hash FROM audit_records WHERE seq = ?", (record.seq,)
        ).fetchone()
        if cursor.rowcount != 1 or stored is None or stored[0] != record.hash:
            # A trigger or rule added to the file can swallow an insert; the
            # record must be there, as written, or the append fails.
            raise AuditError(f"record {record.seq} was not stored as written")

    def checkpoint(
        self, key: Ed25519PrivateKey, *, now: datetime | None = None
    ) -> Checkpoint:
        """Sign the current head, store the checkpoint in the log, return it.

        The stored copy helps only against accidents; against a writer who
        edits the file, keep the returned one elsewhere and pass it to `verify`.
        """
        moment = format_time_fixed(now or datetime.now(UTC))
        with self._lock, self._transaction():
            head = self._conn.execute(
                "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, head_hash = (head[0], head[1]) if head else (0, GENESIS)
            unsigned = Checkpoint(seq, head_hash, moment, b"")
            checkpoint = attrs.evolve(unsigned, signature=key.sign(unsigned.payload()))
            self._conn.execute(
                "INSERT INTO audit_checkpoints (seq, token) VALUES (?, ?)",
                (seq, checkpoint.serialize()),
            )
        log.debug("audit checkpoint at record %d", seq)
        return checkpoint

    # -- reading -----------------------------------------------------------

    def verify(
        self,
        checkpoints: Iterable[Checkpoint] = (),
        public_key: Ed25519PublicKey | None = None,
    ) -> AuditVerification:
        """Walk the whole chain; with `public_key`, also check the given
        checkpoints and those stored in the log.

        Raises:
            ConfigurationError: checkpoints given without a key to check them.
        """
        given = list(checkpoints)
        if given and public_key is None:
            raise ConfigurationError("checking checkpoints needs the public key")
        problems: list[tuple[int, str]] = []
        heads: dict[int, str] = {}
        with self._lock, self._transaction(write=False):
            problems.extend(self._foreign_objects())
            count, last_seq, head = self._walk(problems, heads)
            if public_key is not None:
                given.extend(self._stored_checkpoints(problems))
        for checkpoint in given:
            assert public_key is not None
            problem = _checkpoint_problem(checkpoint, public_key, heads, last_seq)
            if problem:
                problems.append(problem)
        problems.sort(key=lambda item: item[0])
        result = AuditVerification(count, head, tuple(dict.fromkeys(problems)))
        log.debug("audit log verified: %d records, %d problems", count, len(problems))
        return result

    def _foreign_objects(self) -> list[tuple[int, str]]:
        """Triggers and views nobody but an editor of the file would add: they
        can hide or rewrite records, so their presence is itself tampering."""
        rows = self._conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
        ).fetchall()
        return [
            (0, f"the log holds a {kind} `{name}` it never had") for kind, name in rows
        ]

    def _walk(
        self, problems: list[tuple[int, str]], heads: dict[int, str]
    ) -> tuple[int, int, str]:
        expected, prev, count = 1, GENESIS, 0
        for row in self._conn.execute(
            f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq"
        ):
            count += 1
            seq = row[0]
            record = _record_from_row(row)
            if seq != expected:
                problems.append(_sequence_problem(seq, expected))
            computed = _safe_hash(record) if record is not None else None
            if record is None or computed is None:
                problems.append((seq, f"record {seq} is unreadable"))
            elif computed != record.hash:
                problems.append(
                    (seq, f"record {seq} was altered: its hash does not match it")
                )
            elif record.prev_hash != prev:
                problems.append(
                    (seq, f"record {seq} does not follow the record before it")
                )
            heads[seq] = row[16]
            expected, prev = seq + 1, row[16]
        return count, expected - 1, prev

    def _stored_checkpoints(self, problems: list[tuple[int, str]]) -> list[Checkpoint]:
        out: list[Checkpoint] = []
        for seq, token in self._conn.execute(
            "SELECT seq, token FROM audit_checkpoints ORDER BY seq"
        ):
            try:
                out.append(Checkpoint.parse(token))
            except AuditError:
                problems.append((seq, f"the checkpoint stored at {seq} is unreadable"))
        return out

    def query(
        self,
        *,
        user: str | IdentityLike | None = None,
        agent: str | IdentityLike | None = None,
        effect: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tag: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records in log order matching every filter given.

        `user` matches the root, `agent` the principal: a string matches the
        id exactly (of any type), an identity both type and id. `since` is
        inclusive, `until` exclusive.
        """
        clauses: list[str] = []
        params: list[object] = []
        for value, column in ((user, "root"), (agent, "principal")):
            if value is None:
                continue
            if isinstance(value, str):
                clauses.append(f"{column}_id = ?")
                params.append(value)
            else:
                ident = Identity.of(value)
                clauses.append(f"{column}_type = ? AND {column}_id = ?")
                params.extend([ident.type, ident.id])
        if effect is not None:
            clauses.append("effect = ?")
            params.append(effect)
        if rule is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(audit_records.rules)"
                " WHERE json_each.value = ?)"
            )
            params.append(rule)
        if since is not None:
            clauses.append("time >= ?")
            params.append(format_time_fixed(since))
        if until is not None:
            clauses.append("time < ?")
            params.append(format_time_fixed(until))
        if tag is not None:
            clauses.append("tag = ?")
            params.append(tag)
        sql = f"SELECT {_COLUMNS} FROM audit_records"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_required_record(row) for row in rows]

    def records(self) -> Iterator[AuditRecord]:
        """Every record in log order (read in one snapshot)."""
        yield from self.query()

    def __len__(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM audit_records").fetchone()
        return int(row[0])

    # -- plumbing ----------------------------------------------------------

    def _transaction(self, *, write: bool = True) -> _Transaction:
        return _Transaction(self._conn, write)


class _Transaction:
    """`BEGIN IMMEDIATE` (or a plain read snapshot) committed on success and
    rolled back on any exception, including KeyboardInterrupt."""

    def __init__(self, conn: sqlite3.Connection, write: bool) -> None:
        self._conn = conn
        self._write = write

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def render_record(record: AuditRecord, *, max_field: int = 512) -> str:
    """One line of printable ASCII for one record, whatever its ids hold.

    Every text value is quoted and escaped (quotes, backslashes, control
    characters, line and paragraph separators, everything outside ASCII), so
    no value can end the line or pose as another field. A value longer than
    `max_field` characters is cut and marked `[truncated N more chars]`; the
    stored record and its hash keep the whole value.
    """
    parts = [f"seq={record.seq}", f"time={_bare(record.time, max_field)}"]
    fields: list[tuple[str, str | None]] = [
        ("effect", record.effect),
        ("principal.type", record.principal.type if record.principal else None),
        ("principal.id", record.principal.id if record.principal else None),
        ("root.type", record.root.type if record.root else None),
        ("root.id", record.root.id if record.root else None),
        ("organisation", record.organisation),
        ("workflow", record.workflow),
        ("tag", record.tag),
        ("policy_hash", record.policy_hash),
    ]
    for name, value in fields:
        if value is not None:
            parts.append(f"{name}={_quoted(value, max_field)}")
    for name, values in (
        ("rules", record.rules),
        ("delegation", record.delegation_ids),
    ):
        if values:
            items = ",".join(_quoted(value, max_field) for value in values)
            parts.append(f"{name}=[{items}]")
    parts.append(f"request={_bare(record.request_digest, max_field)}")
    parts.append(f"hash={_bare(record.hash, max_field)}")
    return " ".join(parts)


def _bare(value: str, max_field: int) -> str:
    """Values this module writes (times, digests) print unquoted; a stored
    value that is anything else, as after tampering, is quoted like the rest."""
    if _BARE.fullmatch(value) and len(value) <= max_field:
        return value
    return _quoted(value, max_field)


def _quoted(value: str, max_field: int) -> str:
    if len(value) <= max_field:
        return f'"{escape_text(value)}"'
    cut = len(value) - max_field
    return f'"{escape_text(value[:max_field])}"[truncated {cut} more chars]'


# -- building records --------------------------------------------------------


def _fields_from(
    request: Mapping[str, Any],
    decision: Mapping[str, Any],
    tag: str | None,
    root: IdentityLike | None,
    now: datetime | None,
) -> dict[str, Any]:
    request = _as_mapping(request, "request")
    decision = _as_mapping(decision, "decision")
    try:
        request_text = canonical_json(request)
        decision_json = canonical_json(decision)
    except TypeError as exc:
        raise AuditError(f"cannot record this decision: {exc}") from exc

    principal = _maybe_identity(request.get("principal"))
    context = request.get("context")
    context = context if isinstance(context, Mapping) else {}
    delegation = request.get("delegation")
    links = (
        [link for link in delegation if isinstance(link, Mapping)]
        if isinstance(delegation, list | tuple)
        else []
    )
    if root is not None:
        root_identity: Identity | None = Identity.of(root)
    else:
        root_identity = _root_of(request, links, principal)
    org = next(
        (context[k] for k in ("organisation", "organization", "org") if k in context),
        None,
    )
    rules = decision.get("rules")
    return {
        "time": format_time_fixed(now or datetime.now(UTC)),
        "tag": tag,
        "decision_json": decision_json,
        "request_digest": _sha256(request_text),
        "principal": principal,
        "root": root_identity,
        "organisation": _label(org),
        "workflow": _label(context.get("workflow")),
        "delegation_ids": tuple(
            _required_label(link["id"]) for link in links if link.get("id") is not None
        ),
        "effect": _text_or_none(decision.get("effect")),
        "rules": tuple(_rule_ids(rules)),
        "policy_hash": _text_or_none(decision.get("policy_hash")),
    }


def _as_mapping(value: object, what: str) -> Mapping[str, Any]:
    """Plain mappings, or objects that offer `to_json()` (as a decision
    object may), or attrs instances."""
    if isinstance(value, Mapping):
        return value
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        converted = to_json()
        if isinstance(converted, Mapping):
            return converted
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    raise AuditError(f"the {what} to record must be a JSON object")


def _root_of(
    request: Mapping[str, Any],
    links: list[Mapping[str, Any]],
    principal: Identity | None,
) -> Identity | None:
    if links:
        return _maybe_identity(links[0].get("from"))
    raw = request.get("principal")
    if isinstance(raw, Mapping):
        owner = _maybe_identity(raw.get("owner"))
        if owner is not None:
            return owner
    return principal


def _maybe_identity(value: object) -> Identity | None:
    if not isinstance(value, Mapping):
        return None
    try:
        return Identity.of(value)
    except ValueError:
        return None


def _label(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        ident: str = value["id"]
        return ident
    try:
        return canonical_json(value)
    except TypeError as exc:
        raise AuditError(f"cannot record this request: {exc}") from exc


def _required_label(value: object) -> str:
    label = _label(value)
    return "" if label is None else label


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _rule_ids(rules: object) -> list[str]:
    if not isinstance(rules, list | tuple):
        return []
    out: list[str] = []
    for rule in rules:
        if isinstance(rule, str):
            out.append(rule)
        elif isinstance(rule, Mapping) and isinstance(rule.get("id"), str):
            out.append(rule["id"])
    return out


def _record_from_row(row: tuple[Any, ...]) -> AuditRecord | None:
    """The record a row holds, or `None` when a column has been mangled."""
    try:
        delegation_ids = parse_json(row[11])
        rules = parse_json(row[13])
        if not isinstance(delegation_ids, list) or not isinstance(rules, list):
            return None
        return AuditRecord(
            seq=row[0],
            time=row[1],
            tag=row[2],
            decision_json=row[3],
            request_digest=row[4],
            principal=None if row[6] is None else Identity(row[5], row[6]),
            root=None if row[8] is None else Identity(row[7], row[8]),
            organisation=row[9],
            workflow=row[10],
            delegation_ids=tuple(delegation_ids),
            effect=row[12],
            rules=tuple(rules),
            policy_hash=row[14],
            prev_hash=row[15],
            hash=row[16],
        )
    except (TypeError, ValueError):
        return None


def _required_record(row: tuple[Any, ...]) -> AuditRecord:
    record = _record_from_row(row)
    if record is None:
        raise AuditError(f"audit record {row[0]} is unreadable; run verify")
    return record


def _sequence_problem(seq: int, expected: int) -> tuple[int, str]:
    if seq < expected:
        return (seq, f"record {seq} is out of sequence")
    if seq == expected + 1:
        return (expected, f"record {expected} is missing")
    return (expected, f"records {expected} to {seq - 1} are missing")


def _checkpoint_problem(
    checkpoint: Checkpoint,
    public_key: Ed25519PublicKey,
    heads: Mapping[int, str],
    last_seq: int,
) -> tuple[int, str] | None:
    seq = checkpoint.seq
    if not checkpoint.is_signed_by(public_key):
        return (seq, f"the checkpoint at record {seq} is not validly signed")
    if seq > last_seq:
        return (
            last_seq + 1,
            f"the log ends at record {last_seq}, but a signed checkpoint covers "
            f"record {seq}: the log was truncated",
        )
    if seq == 0:
        return None
    if heads.get(seq) != checkpoint.head_hash:
        return (
            seq,
            f"record {seq} or one before it was rewritten: the chain no longer "
            "matches the signed checkpoint",
        )
    return None


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _safe_hash(record: AuditRecord) -> str | None:
    """A record's hash, or None when an edited column cannot even be hashed."""
    try:
        return record.computed_hash()
    except (TypeError, ValueError, AuditError):
        return None
