from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ripl.runtime import (
    MemoryRevocationStore,
    RevocationCheck,
    RevocationError,
    RevocationStore,
    SqliteRevocationStore,
)

ALICE = {"type": "User", "id": "alice"}
BOT = {"type": "RefundBot", "id": "rb-7"}
TOOL = {"type": "Tool", "id": "ledger"}


def link(link_id: str, from_: dict[str, str], to: dict[str, str]) -> dict[str, Any]:
    return {
        "from": from_,
        "to": to,
        "scopes": ["payments.refund"],
        "expires": "2026-12-04T10:00:00Z",
        "id": link_id,
    }


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RevocationStore]:
    if request.param == "memory":
        yield MemoryRevocationStore()
    else:
        sqlite_store = SqliteRevocationStore(tmp_path / "revoked.db")
        yield sqlite_store
        sqlite_store.close()


def test_new_store_revokes_nothing_and_is_at_version_0(store: RevocationStore) -> None:
    assert store.version == 0
    assert store.is_revoked(link("d-1", ALICE, BOT)) is False


def test_both_stores_satisfy_the_check_protocol(store: RevocationStore) -> None:
    assert isinstance(store, RevocationCheck)


def test_revoking_a_link_id_revokes_only_that_link(store: RevocationStore) -> None:
    assert store.revoke_link("d-1") is True

    assert store.is_revoked(link("d-1", ALICE, BOT)) is True
    assert store.is_revoked(link("d-2", ALICE, BOT)) is False
    assert store.is_revoked(link("d-10", ALICE, BOT)) is False


def test_revoking_a_principal_revokes_links_from_and_to_it(
    store: RevocationStore,
) -> None:
    store.revoke_principal(BOT)

    assert store.is_revoked(link("d-1", ALICE, BOT)) is True
    assert store.is_revoked(link("d-2", BOT, TOOL)) is True
    assert store.is_revoked(link("d-3", ALICE, TOOL)) is False


def test_principal_match_needs_both_type_and_id(store: RevocationStore) -> None:
    store.revoke_principal({"type": "Agent", "id": "rb-7"})

    assert store.is_revoked(link("d-1", ALICE, BOT)) is False


def test_version_grows_once_per_change_and_not_on_repeats(
    store: RevocationStore,
) -> None:
    store.revoke_link("d-1")
    store.revoke_link("d-1")
    store.revoke_principal(BOT)
    assert store.revoke_principal(BOT) is False

    assert store.version == 2


def test_link_without_usable_id_or_ends_counts_as_revoked(
    store: RevocationStore,
) -> None:
    broken = link("d-1", ALICE, BOT)
    del broken["id"]

    assert store.is_revoked(broken) is True
    assert store.is_revoked({**link("d-2", ALICE, BOT), "to": "rb-7"}) is True


@pytest.mark.parametrize("bad", ["", None, 7])
def test_revoking_an_unusable_link_id_is_an_error(
    store: RevocationStore, bad: Any
) -> None:
    with pytest.raises(RevocationError):
        store.revoke_link(bad)


def test_revoking_an_unusable_identity_is_an_error(store: RevocationStore) -> None:
    with pytest.raises(RevocationError):
        store.revoke_principal({"type": "User"})


def test_ids_are_matched_exactly_even_with_control_characters(
    store: RevocationStore,
) -> None:
    odd = {"type": "Agent", "id": "x\x00y\n"}
    store.revoke_principal(odd)

    assert store.is_revoked(link("d-1", ALICE, odd)) is True
    assert store.is_revoked(link("d-1", ALICE, {"type": "Agent", "id": "x"})) is False


def test_sqlite_revocations_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "revoked.db"
    with SqliteRevocationStore(path) as first:
        first.revoke_link("d-1")
        first.revoke_principal(TOOL)

    with SqliteRevocationStore(path) as second:
        assert second.version == 2
        assert second.is_revoked(link("d-1", ALICE, BOT)) is True
        assert second.is_revoked(link("d-9", BOT, TOOL)) is True


def test_sqlite_store_sees_revocations_made_by_another_instance(
    tmp_path: Path,
) -> None:
    """A decision cache in one process keys on `version`; a revocation made
    elsewhere must move it."""
    path = tmp_path / "revoked.db"
    with SqliteRevocationStore(path) as reader, SqliteRevocationStore(path) as writer:
        before = reader.version
        writer.revoke_link("d-1")

        assert reader.version == before + 1
        assert reader.is_revoked(link("d-1", ALICE, BOT)) is True


def test_concurrent_revocations_from_threads_each_bump_the_version(
    store: RevocationStore,
) -> None:
    def revoke(worker: int) -> None:
        for index in range(50):
            store.revoke_link(f"w{worker}-{index}")

    threads = [threading.Thread(target=revoke, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.version == 400
    assert all(
        store.is_revoked(link(f"w{worker}-{index}", ALICE, BOT))
        for worker in range(8)
        for index in range(50)
    )


def _revoke_in_process(path: str, prefix: str) -> None:
    with SqliteRevocationStore(path) as store:
        for index in range(100):
            store.revoke_link(f"{prefix}-{index}")


def test_two_processes_revoking_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "revoked.db"
    SqliteRevocationStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_revoke_in_process, args=(str(path), name))
        for name in ("p1", "p2")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert [worker.exitcode for worker in workers] == [0, 0]
    with SqliteRevocationStore(path) as store:
        assert store.version == 200
        assert store.is_revoked(link("p1-99", ALICE, BOT))
        assert store.is_revoked(link("p2-0", ALICE, BOT))
