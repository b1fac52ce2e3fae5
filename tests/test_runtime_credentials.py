from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ripl.runtime import (
    ConfigurationError,
    Credential,
    CredentialError,
    CredentialExpiredError,
    CredentialReusedError,
    CredentialScopeError,
    Identity,
    MemoryCredentialBroker,
    Redemption,
    UnknownCredentialError,
)

NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)
INVOICE = {"type": "Invoice", "id": "inv-42"}
ACTION = "payments.refund"


@pytest.fixture
def broker() -> MemoryCredentialBroker:
    return MemoryCredentialBroker(max_ttl_seconds=600)


def test_issued_credential_is_scoped_to_one_action_and_resource(
    broker: MemoryCredentialBroker,
) -> None:
    credential = broker.issue(ACTION, INVOICE, 300, NOW)

    assert credential.action == ACTION
    assert credential.resource == Identity("Invoice", "inv-42")
    assert credential.expires_at == NOW + timedelta(seconds=300)
    assert credential.secret.startswith("rcred_")
    assert len(credential.secret) > 40


def test_credential_redeems_once_for_its_own_scope(
    broker: MemoryCredentialBroker,
) -> None:
    credential = broker.issue(ACTION, INVOICE, 300, NOW)

    redemption = broker.redeem(credential, ACTION, INVOICE, NOW + timedelta(seconds=1))

    assert redemption == Redemption(
        ACTION, Identity("Invoice", "inv-42"), NOW, NOW + timedelta(seconds=300)
    )


def test_reused_credential_fails(broker: MemoryCredentialBroker) -> None:
    credential = broker.issue(ACTION, INVOICE, 300, NOW)
    broker.redeem(credential, ACTION, INVOICE, NOW)

    with pytest.raises(CredentialReusedError):
        broker.redeem(credential, ACTION, INVOICE, NOW)


def test_credential_redeems_by_its_bare_secret_string(
    broker: MemoryCredentialBroker,
) -> None:
    credential = broker.issue(ACTION, INVOICE, 300, NOW)

    broker.redeem(credential.secret, ACTION, INVOICE, NOW)
    with pytest.raises(CredentialReusedError):
        broker.redeem(credential.secret, ACTION, INVOICE, NOW)


def test_credential_is_expired_exactly_at_its_expiry(
    broker: MemoryCredentialBroker,
) -> None:
    credential = broker.issue(ACTION, INVOICE, 60, NOW)

    with pytest.raises(CredentialExpiredError) as info:
        broker.redeem(credential, ACTION, INVOICE, NOW + timedelta(seconds=60))

    assert str(info.value) == "this credential expired at 2026-12-04T09:01:00Z"
    last_moment = NOW + timedelta(seconds=60) - timedelta(microseconds=1)
    assert broker.redeem(credential, ACTION, INVOICE, last_moment).action == ACTION


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("payments.charge", INVOICE),
        ("payments", INVOICE),
        ("payments.refund.all", INVOICE),
        (ACTION, {"type": "Invoice", "id": "inv-43"}),
        (ACTION, {"type": "Receipt", "id": "inv-42"}),
    ],
)
def test_credential_for_another_action_or_resource_fails_without_being_used_up(
    broker: MemoryCredentialBroker, action: str, resource: dict[str, str]
) -> None:
    credential = broker.issue(ACTION, INVOICE, 300, NOW)

    with pytest.raises(CredentialScopeError):
        broker.redeem(credential, action, resource, NOW)

    assert broker.redeem(credential, ACTION, INVOICE, NOW).action == ACTION


def test_credential_from_another_broker_is_unknown(
    broker: MemoryCredentialBroker,
) -> None:
    other = MemoryCredentialBroker().issue(ACTION, INVOICE, 300, NOW)

    with pytest.raises(UnknownCredentialError):
        broker.redeem(other, ACTION, INVOICE, NOW)
    with pytest.raises(UnknownCredentialError):
        broker.redeem("rcred_made-up", ACTION, INVOICE, NOW)


def test_every_refusal_is_a_credential_error(broker: MemoryCredentialBroker) -> None:
    assert issubclass(CredentialExpiredError, CredentialError)
    assert issubclass(CredentialReusedError, CredentialError)
    assert issubclass(CredentialScopeError, CredentialError)
    assert issubclass(UnknownCredentialError, CredentialError)


@pytest.mark.parametrize("ttl", [0, -5, 601, True])
def test_lifetime_outside_the_bounds_is_refused_not_clamped(
    broker: MemoryCredentialBroker, ttl: int
) -> None:
    with pytest.raises(ConfigurationError):
        broker.issue(ACTION, INVOICE, ttl, NOW)


def test_secret_never_appears_in_repr_str_errors_or_logs(
    broker: MemoryCredentialBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ripl.runtime")
    credential = broker.issue(ACTION, INVOICE, 60, NOW)
    messages = [repr(credential), str(credential), f"{credential}"]
    broker.redeem(credential, ACTION, INVOICE, NOW)
    for presented in (credential.secret, credential.secret + "x"):
        with pytest.raises(CredentialError) as info:
            broker.redeem(presented, ACTION, INVOICE, NOW)
        messages.append(str(info.value))

    messages.extend(record.getMessage() for record in caplog.records)
    assert caplog.records, "expected debug logging to have been captured"
    assert all(credential.secret not in message for message in messages)
    assert all(credential.secret[6:20] not in message for message in messages)
    assert "secret=<hidden>" in repr(credential)


def test_broker_keeps_no_secret_in_its_state(broker: MemoryCredentialBroker) -> None:
    credential = broker.issue(ACTION, INVOICE, 60, NOW)

    assert credential.secret not in repr(vars(broker))


def test_two_threads_redeeming_one_credential_succeed_exactly_once(
    broker: MemoryCredentialBroker,
) -> None:
    credentials = [broker.issue(ACTION, INVOICE, 60, NOW) for _ in range(200)]
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def redeem_all() -> None:
        start.wait()
        for credential in credentials:
            try:
                broker.redeem(credential, ACTION, INVOICE, NOW)
                outcome = "ok"
            except CredentialReusedError:
                outcome = "reused"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=redeem_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("ok") == 200
    assert outcomes.count("reused") == 7 * 200


def test_purge_forgets_used_and_expired_credentials(
    broker: MemoryCredentialBroker,
) -> None:
    used = broker.issue(ACTION, INVOICE, 60, NOW)
    broker.redeem(used, ACTION, INVOICE, NOW)
    broker.issue(ACTION, INVOICE, 10, NOW)
    live = broker.issue(ACTION, INVOICE, 600, NOW)

    assert broker.purge(NOW + timedelta(seconds=10)) == 2
    assert len(broker) == 1
    with pytest.raises(UnknownCredentialError):
        broker.redeem(used, ACTION, INVOICE, NOW)
    assert broker.redeem(live, ACTION, INVOICE, NOW).action == ACTION


def test_credential_compares_by_value_but_is_a_frozen_object() -> None:
    credential = MemoryCredentialBroker().issue(ACTION, INVOICE, 60, NOW)

    assert isinstance(credential, Credential)
    with pytest.raises(AttributeError):
        credential.action = "admin.delete"  # type: ignore[misc]
