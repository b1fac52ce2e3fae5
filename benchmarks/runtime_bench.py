"""What the runtime layer adds to one decision: verifying a signed delegation
chain, consulting a SQLite revocation store, writing an audit record, and a
whole guarded tool call.

    python -m benchmarks.runtime_bench             # 2 000 samples per row
    python -m benchmarks.runtime_bench --samples 500

Each row times `time.perf_counter_ns` around one operation, after warm-up,
on the refunds example's small-refund request (one delegation link; the
three-link rows attenuate it to a tool and a connector). The audit log is a
fresh SQLite file in a temporary folder, WAL mode, `synchronous=FULL`, one
committed transaction per record, so its figure is dominated by the disk's
fsync and differs most between machines.

Measured on the development container (Python 3.11, 2 cores, ext4), two
runs of 2 000 and 1 000 samples, p50 / p99 in µs:

    decide (delegation as a list)             51 / 110-200
    verify a 1-link token                    137 / 190
    verify a 3-link token                    420 / 510-690
    request_with_chain + decide              222 / 310-370
    decide, engine with a SQLite store        70 / 120-150
    audit append (one record)           2 400-4 000 / 8 000   (fsync-bound)
    guarded call: token + decide + audit  800-4 000 / 7 000-8 000

So verifying a signed chain costs about 130 µs a link (mostly Ed25519 and
canonical JSON), more than the decision itself (~50 µs); a SQLite revocation
store adds ~20 µs (its version and one lookup per link); the audit record,
one fsync'd SQLite transaction, costs milliseconds and dominates a guarded
call. Run the script for this machine's figures; the numbers above are a
note, not a contract.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ripl
from ripl.runtime import (
    AuditLog,
    Guard,
    Identity,
    SqliteRevocationStore,
    StaticKeyResolver,
    attenuate,
    grant,
    request_with_chain,
    verify,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "refunds"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def timed(operation: Callable[[], object], samples: int) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    for _ in range(min(200, samples)):
        operation()
    durations: list[int] = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        operation()
        durations.append(time.perf_counter_ns() - start)
    durations.sort()
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
    return statistics.median(durations) / 1000, p99 / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args(argv)

    alice = Identity("SupportAgent", "alice")
    bot = Identity("RefundBot", "rb-7")
    tool = Identity("PaymentsService", "pay-1")
    connector = Identity("StripeConnector", "sc-1")
    keys = {who: Ed25519PrivateKey.generate() for who in (alice, bot, tool)}
    resolver = StaticKeyResolver({who: k.public_key() for who, k in keys.items()})
    expires = NOW + timedelta(hours=1)
    one = grant(
        alice,
        bot,
        ["payments.refund", "invoices.read"],
        expires,
        purpose="customer-refund",
        key=keys[alice],
        link_id="d-1",
    )
    three = attenuate(
        attenuate(one, tool, ["payments.refund"], expires, key=keys[bot]),
        connector,
        ["payments.refund"],
        expires,
        key=keys[tool],
    )
    token, long_token = one.serialize(), three.serialize()

    request = json.loads((EXAMPLE / "requests" / "small-refund.json").read_text())
    engine = ripl.load(EXAMPLE)
    bare = {k: v for k, v in request.items() if k != "delegation"}
    chained = request_with_chain(bare, token, resolver, NOW)
    assert engine.decide(chained).effect == "allow"

    rows: list[tuple[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteRevocationStore(Path(folder) / "revoked.db")
        stored = ripl.Engine(engine.policy, revocations=store)
        audit = AuditLog(Path(folder) / "audit.db")
        decision_json = engine.decide(chained).to_json()
        session = {k: v for k, v in bare.items() if k not in ("action", "resource")}
        session["delegation_token"] = token
        guard = Guard(engine, audit=audit, session=session, keys=resolver)

        def refund(invoice_id: str) -> str:
            return invoice_id

        guarded = guard.tool(
            refund, action="payments.refund", resource=_invoice(request)
        )
        operations: list[tuple[str, Callable[[], Any]]] = [
            ("decide (delegation as a list)", lambda: engine.decide(chained)),
            ("verify a 1-link token", lambda: verify(token, resolver, NOW)),
            ("verify a 3-link token", lambda: verify(long_token, resolver, NOW)),
            (
                "request_with_chain + decide",
                lambda: engine.decide(request_with_chain(bare, token, resolver, NOW)),
            ),
            ("decide, engine with a SQLite store", lambda: stored.decide(chained)),
            ("audit append (one record)", lambda: audit.append(chained, decision_json)),
            ("guarded call: token + decide + audit", lambda: guarded("inv-42")),
        ]
        for label, operation in operations:
            rows.append((label, timed(operation, args.samples)))
        assert audit.verify().ok
        audit.close()
        store.close()

    width = max(len(label) for label, _ in rows)
    print(f"{'operation':<{width}}  {'p50 µs':>9}  {'p99 µs':>9}")
    for label, (p50, p99) in rows:
        print(f"{label:<{width}}  {p50:>9.1f}  {p99:>9.1f}")
    return 0


def _invoice(request: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = request["resource"]
    return resource


if __name__ == "__main__":
    raise SystemExit(main())
