"""Exceptions raised by the runtime layer (tokens, revocation, credentials, audit).

They hang under `ripl.errors.RiplError`, so `except RiplError` catches them
with everything else ripl raises. Each one mixes in
`ValueError`, the builtin a caller that does not know ripl would catch: every
refusal here is about a value (a token, a credential, a record), and none is an
operating-system error.
"""

from __future__ import annotations

from ripl.errors import RiplError


class RiplRuntimeError(RiplError):
    """Root of every error the runtime layer raises."""


class ConfigurationError(RiplRuntimeError, ValueError):
    """A runtime component was configured with a value it refuses (a negative
    clock-skew leeway, a non-positive lifetime), rather than quietly running
    with some check switched off."""


class DelegationError(RiplRuntimeError, ValueError):
    """A delegation link or chain could not be built or read.

    `code` is one of the stable reason codes of the decision contract
    (`chain_widens`, `malformed_link`, `broken_chain`, ...), so an embedding app
    can turn the error into a deny reason without parsing the message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AttenuationError(DelegationError):
    """A new link would grant more than the link before it: wider scopes, a
    higher limit, a later expiry or another purpose. Never clamped silently."""

    def __init__(self, message: str) -> None:
        super().__init__("chain_widens", message)


class MalformedTokenError(DelegationError):
    """A serialized chain is not one this module wrote."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed_link", message)


class TokenExchangeError(DelegationError):
    """An OAuth 2.0 token-exchange payload cannot be read as a delegation chain."""


class RevocationError(RiplRuntimeError, ValueError):
    """A revocation request names no usable link or identity."""


class CredentialError(RiplRuntimeError, ValueError):
    """A short-lived credential was refused. Messages never contain the secret."""


class UnknownCredentialError(CredentialError):
    """The broker never issued this credential (or has forgotten it)."""


class CredentialExpiredError(CredentialError):
    """The credential's lifetime is over (`now >= expires_at`)."""


class CredentialReusedError(CredentialError):
    """The credential was already redeemed once."""


class CredentialScopeError(CredentialError):
    """The credential was presented for another action or resource."""


class AuditError(RiplRuntimeError, ValueError):
    """The audit log cannot record or read what it was given."""
