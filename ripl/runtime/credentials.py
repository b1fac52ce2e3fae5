"""Short-lived credentials, each good for one call of one action on one resource.

When a guard lets a `restrict`ed call through with a `credential_ttl`
obligation, it asks a broker for a credential, hands it to the tool for that
call only, and the tool redeems it. A credential redeems once; after its
lifetime (`now >= expires_at`), for another action or resource, or a second
time, it is refused with a typed error.

The in-memory broker keeps only a sha256 of each secret, so neither its state
nor its logs can give a secret back; `Credential` hides the secret from `repr`
and `str`, so it does not leak through a log line or a traceback by accident.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from ripl.runtime.encoding import as_utc, format_time
from ripl.runtime.errors import (
    ConfigurationError,
    CredentialExpiredError,
    CredentialReusedError,
    CredentialScopeError,
    UnknownCredentialError,
)
from ripl.runtime.identity import Identity, IdentityLike

log = logging.getLogger(__name__)

SECRET_PREFIX = "rcred_"


@attrs.frozen(repr=False)
class Credential:
    """What the tool receives. `secret` is the only part that grants anything."""

    secret: str
    action: str
    resource: Identity
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"Credential(action={self.action!r}, resource={self.resource.show()}, "
            f"expires_at={format_time(self.expires_at)}, secret=<hidden>)"
        )

    __str__ = __repr__


@attrs.frozen
class Redemption:
    """What a successful `redeem` confirms; it carries no secret."""

    action: str
    resource: Identity
    issued_at: datetime
    expires_at: datetime


class CredentialBroker(Protocol):
    def issue(
        self, action: str, resource: IdentityLike, ttl_seconds: int, now: datetime
    ) -> Credential: ...

    def redeem(
        self,
        credential: Credential | str,
        action: str,
        resource: IdentityLike,
        now: datetime,
    ) -> Redemption: ...


@attrs.define
class _Issued:
    action: str
    resource: Identity
    issued_at: datetime
    expires_at: datetime
    redeemed: bool = False


class MemoryCredentialBroker:
    """A broker for one process. Thread-safe: of two threads redeeming the
    same credential at once, exactly one succeeds.

    `max_ttl_seconds` bounds every lifetime asked for, so a caller that passes
    a wrong obligation cannot mint a long-lived credential.
    """

    def __init__(self, *, max_ttl_seconds: int = 3600) -> None:
        if max_ttl_seconds <= 0:
            raise ConfigurationError("max_ttl_seconds must be positive")
        self._max_ttl = max_ttl_seconds
        self._lock = threading.Lock()
        self._issued: dict[str, _Issued] = {}

    def issue(
        self, action: str, resource: IdentityLike, ttl_seconds: int, now: datetime
    ) -> Credential:
        """Raises `ConfigurationError` for a lifetime that is not a positive
        whole number of seconds within `max_ttl_seconds`; it never shortens or
        stretches the lifetime it was asked for."""
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise ConfigurationError("ttl_seconds must be a whole number of seconds")
        if not 0 < ttl_seconds <= self._max_ttl:
            raise ConfigurationError(
                f"ttl_seconds must lie between 1 and {self._max_ttl}, not {ttl_seconds}"
            )
        if not isinstance(action, str) or not action:
            raise ConfigurationError("a credential needs an action")
        target = Identity.of(resource)
        issued_at = as_utc(now)
        expires_at = issued_at + timedelta(seconds=ttl_seconds)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._issued[_fingerprint(secret)] = _Issued(
                action, target, issued_at, expires_at
            )
        log.debug("issued a credential for %s expiring %s", action, expires_at)
        return Credential(secret, action, target, expires_at)

    def redeem(
        self,
        credential: Credential | str,
        action: str,
        resource: IdentityLike,
        now: datetime,
    ) -> Redemption:
        """Check in this order: known, not yet redeemed, not expired, in scope.
        A wrong-scope attempt does not use the credential up.

        Raises:
            UnknownCredentialError, CredentialReusedError,
            CredentialExpiredError, CredentialScopeError
        """
        secret = credential.secret if isinstance(credential, Credential) else credential
        target = Identity.of(resource)
        moment = as_utc(now)
        with self._lock:
            issued = self._issued.get(_fingerprint(secret))
            if issued is None:
                raise UnknownCredentialError("this credential was never issued here")
            if issued.redeemed:
                raise CredentialReusedError("this credential was already used")
            if moment >= issued.expires_at:
                raise CredentialExpiredError(
                    f"this credential expired at {format_time(issued.expires_at)}"
                )
            if issued.action != action or issued.resource != target:
                raise CredentialScopeError(
                    f"this credential is for `{issued.action}` on "
                    f"{issued.resource.show()}, not for this call"
                )
            issued.redeemed = True
        log.debug("redeemed a credential for %s", action)
        return Redemption(action, target, issued.issued_at, issued.expires_at)

    def purge(self, now: datetime) -> int:
        """Forget credentials that expired or were used; returns how many.

        A purged credential then fails as unknown rather than as expired or
        reused: still refused, only with a vaguer reason.
        """
        moment = as_utc(now)
        with self._lock:
            stale = [
                key
                for key, issued in self._issued.items()
                if issued.redeemed or moment >= issued.expires_at
            ]
            for key in stale:
                del self._issued[key]
        return len(stale)

    def __len__(self) -> int:
        with self._lock:
            return len(self._issued)


def _fingerprint(secret: str) -> str:
    if not isinstance(secret, str):
        raise UnknownCredentialError("a credential must be a string")
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
