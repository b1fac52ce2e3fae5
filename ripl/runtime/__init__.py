"""The runtime layer around the engine: signed delegation chains, revocation,
short-lived credentials and the tamper-evident audit log.

Nothing here evaluates policy; these pieces produce what a request carries
(`delegation`) and keep what a decision leaves behind (audit records).
"""

from __future__ import annotations

from ripl.runtime.audit import (
    GENESIS,
    AuditLog,
    AuditRecord,
    AuditVerification,
    Checkpoint,
    render_record,
)
from ripl.runtime.credentials import (
    Credential,
    CredentialBroker,
    MemoryCredentialBroker,
    Redemption,
)
from ripl.runtime.encoding import canonical_json, format_time, parse_json, parse_time
from ripl.runtime.errors import (
    AttenuationError,
    AuditError,
    ConfigurationError,
    CredentialError,
    CredentialExpiredError,
    CredentialReusedError,
    CredentialScopeError,
    DelegationError,
    MalformedTokenError,
    RevocationError,
    RiplRuntimeError,
    TokenExchangeError,
    UnknownCredentialError,
)
from ripl.runtime.identity import Identity, IdentityLike, escape_text
from ripl.runtime.revocation import (
    MemoryRevocationStore,
    RevocationCheck,
    RevocationStore,
    SqliteRevocationStore,
)
from ripl.runtime.tokens import (
    MAX_LEEWAY,
    MAX_LINKS,
    DelegationChain,
    KeyResolver,
    Link,
    RejectedChain,
    StaticKeyResolver,
    SubjectResolver,
    VerifiedChain,
    attenuate,
    chain_from_token_exchange,
    covers,
    grant,
    parse_chain,
    typed_subject,
    verify,
)

__all__ = [
    "GENESIS",
    "MAX_LEEWAY",
    "MAX_LINKS",
    "AttenuationError",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "Checkpoint",
    "ConfigurationError",
    "Credential",
    "CredentialBroker",
    "CredentialError",
    "CredentialExpiredError",
    "CredentialReusedError",
    "CredentialScopeError",
    "DelegationChain",
    "DelegationError",
    "Identity",
    "IdentityLike",
    "KeyResolver",
    "Link",
    "MalformedTokenError",
    "MemoryCredentialBroker",
    "MemoryRevocationStore",
    "Redemption",
    "RejectedChain",
    "RevocationCheck",
    "RevocationError",
    "RevocationStore",
    "RiplRuntimeError",
    "SqliteRevocationStore",
    "StaticKeyResolver",
    "SubjectResolver",
    "TokenExchangeError",
    "UnknownCredentialError",
    "VerifiedChain",
    "attenuate",
    "canonical_json",
    "chain_from_token_exchange",
    "covers",
    "escape_text",
    "format_time",
    "grant",
    "parse_chain",
    "parse_json",
    "parse_time",
    "render_record",
    "typed_subject",
    "verify",
]
