"""Delegation chains as signed tokens, and their verification.

Input: a grantor's Ed25519 private key and what it grants (`grant`,
`attenuate`), or a serialized chain and a way to find public keys (`verify`).
Output: a token an agent can pass along, or the `delegation` list of a request.

Token format, version 1: `rd1.` followed by one `PAYLOAD.SIGNATURE` pair per
link, all dot-joined, each part base64url without padding. A payload is the
canonical JSON (see `ripl.runtime.encoding`) of one link, signed as those exact
bytes by the private key of the link's `from` identity. From the second link
on, the payload's `prev` holds the sha256 of the previous pair's text, so a
link cannot be moved to another position or grafted onto another chain.

`verify` rejects, each with its own reason starting with a stable code:

- `malformed_link`: an unreadable token or link, a missing or ill-typed field,
  a payload not in canonical form, a chain longer than `MAX_LINKS` links;
- `invalid_signature`: no key known for a link's `from`, or a bad signature;
- `broken_chain`: a link's `from` is not the previous link's `to`, `prev` does
  not name the previous link, an identity appears twice (a loop), or the last
  link does not end at the expected principal;
- `chain_widens`: a scope not covered by every earlier link, a limit above an
  earlier one, a purpose other than the earlier one;
- `expired_link`: `now >= expires + leeway`, or `now < not_before - leeway`
  (a link outside its validity window, on either side);
- `revoked_link`: the revocation check says so.

A later link may carry a later `expires` than an earlier one without being
rejected; the chain simply ends at the earliest expiry, because every link is
checked on its own. `attenuate` still refuses to write such a link, since it
would promise what it cannot give.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ripl.runtime.encoding import (
    as_utc,
    canonical_json,
    format_time,
    parse_json,
    parse_time,
)
from ripl.runtime.errors import (
    AttenuationError,
    ConfigurationError,
    DelegationError,
    MalformedTokenError,
    TokenExchangeError,
)
from ripl.runtime.identity import Identity, IdentityLike
from ripl.runtime.revocation import RevocationCheck

log = logging.getLogger(__name__)

TOKEN_PREFIX = "rd1"
MAX_LINKS = 32
MAX_TOKEN_CHARS = 256 * 1024
MAX_LEEWAY = timedelta(minutes=5)

_SCOPE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_PAYLOAD_KEYS = frozenset(
    {"v", "id", "from", "to", "scopes", "expires", "not_before", "purpose"}
    | {"limits", "prev"}
)

Limit = int | Decimal


class KeyResolver(Protocol):
    """Finds the public key of an identity; `None` when it has none."""

    def public_key(self, identity: Identity) -> Ed25519PublicKey | None: ...


class StaticKeyResolver:
    """A fixed table of public keys, for tests and small deployments."""

    def __init__(self, keys: Mapping[Identity, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    def public_key(self, identity: Identity) -> Ed25519PublicKey | None:
        return self._keys.get(identity)


def covers(granted: str, wanted: str) -> bool:
    """A scope covers itself and every dotted name under it."""
    return wanted == granted or wanted.startswith(granted + ".")


@attrs.frozen
class Link:
    """One delegation link, as it is signed. `from_` is the grantor."""

    from_: Identity
    to: Identity
    scopes: tuple[str, ...]
    expires: datetime
    id: str
    purpose: str | None = None
    limits: tuple[tuple[str, Limit], ...] = ()
    not_before: datetime | None = None
    prev: str | None = None

    def limit_map(self) -> dict[str, Limit]:
        return dict(self.limits)

    def to_request(self) -> dict[str, Any]:
        """The link in the request contract's `delegation` shape; `purpose`
        and `limits` appear only when the link has them."""
        data: dict[str, Any] = {
            "from": self.from_.as_dict(),
            "to": self.to.as_dict(),
            "scopes": list(self.scopes),
            "expires": format_time(self.expires),
            "id": self.id,
        }
        if self.purpose is not None:
            data["purpose"] = self.purpose
        if self.limits:
            data["limits"] = self.limit_map()
        return data

    def payload(self) -> dict[str, Any]:
        data = self.to_request()
        data["v"] = 1
        if self.not_before is not None:
            data["not_before"] = format_time(self.not_before)
        if self.prev is not None:
            data["prev"] = self.prev
        return data


@attrs.frozen
class SignedLink:
    link: Link
    segment: str

    @property
    def digest(self) -> str:
        return _digest(self.segment)


@attrs.frozen
class DelegationChain:
    """A chain as built or parsed; nothing here is verified."""

    links: tuple[SignedLink, ...]

    @property
    def last(self) -> Link:
        return self.links[-1].link

    def serialize(self) -> str:
        return ".".join([TOKEN_PREFIX, *(signed.segment for signed in self.links)])

    def delegation(self) -> list[dict[str, Any]]:
        """The unverified links in request shape; pass a token through `verify`
        before trusting these."""
        return [signed.link.to_request() for signed in self.links]


@attrs.frozen
class VerifiedChain:
    links: tuple[Link, ...]

    ok = True

    def delegation(self) -> list[dict[str, Any]]:
        """Fresh dicts in the request contract's `delegation` shape."""
        return [link.to_request() for link in self.links]

    @property
    def root(self) -> Identity:
        return self.links[0].from_

    @property
    def expires(self) -> datetime:
        return min(link.expires for link in self.links)


@attrs.frozen
class RejectedChain:
    """Every failed check, in link order, each `code: text`."""

    failures: tuple[str, ...]

    ok = False

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(failure.split(":", 1)[0] for failure in self.failures)


# -- building --------------------------------------------------------------


def grant(
    from_: IdentityLike,
    to: IdentityLike,
    scopes: Iterable[str],
    expires: datetime,
    purpose: str | None = None,
    limits: Mapping[str, Limit] | None = None,
    not_before: datetime | None = None,
    *,
    key: Ed25519PrivateKey,
    link_id: str | None = None,
) -> DelegationChain:
    """Start a chain: `from_` (usually a human) grants `to`.

    `key` must be the private key of `from_`; a wrong key is not noticed here
    but makes `verify` report `invalid_signature`.
    """
    link = _new_link(
        _identity(from_),
        _identity(to),
        scopes,
        expires,
        purpose,
        limits,
        not_before,
        link_id,
        prev=None,
    )
    if link.from_ == link.to:
        raise DelegationError("broken_chain", "a link cannot grant to its grantor")
    return DelegationChain((_sign(link, key),))


def attenuate(
    chain: DelegationChain,
    to: IdentityLike,
    scopes: Iterable[str],
    expires: datetime,
    limits: Mapping[str, Limit] | None = None,
    *,
    key: Ed25519PrivateKey,
    purpose: str | None = None,
    not_before: datetime | None = None,
    link_id: str | None = None,
) -> DelegationChain:
    """Append a link from the chain's last grantee to `to`.

    The new link may only narrow: each scope covered by every earlier link's
    scopes, `expires` no later than any earlier one, each limit no higher than
    the lowest earlier value (a limit left out is inherited). `purpose=None`
    keeps the chain's purpose; another purpose is widening too.

    Raises:
        AttenuationError: when the link would widen anything.
        DelegationError: `broken_chain` when `to` is already in the chain.
    """
    if len(chain.links) >= MAX_LINKS:
        raise DelegationError("broken_chain", f"a chain has at most {MAX_LINKS} links")
    earlier = [signed.link for signed in chain.links]
    inherited = next((ln.purpose for ln in earlier if ln.purpose is not None), None)
    if purpose is None:
        purpose = inherited
    link = _new_link(
        chain.last.to,
        _identity(to),
        scopes,
        expires,
        purpose,
        limits,
        not_before,
        link_id,
        prev=chain.links[-1].digest,
    )
    problems = _widenings(earlier, link, len(earlier))
    if problems:
        raise AttenuationError(problems[0])
    soonest = min(ln.expires for ln in earlier)
    if link.expires > soonest:
        raise AttenuationError(
            f"link expires at {format_time(link.expires)}, after the chain's "
            f"expiry {format_time(soonest)}"
        )
    visited = {earlier[0].from_, *(ln.to for ln in earlier)}
    if link.to in visited:
        raise DelegationError(
            "broken_chain", f"{link.to.show()} is already in the chain"
        )
    return DelegationChain((*chain.links, _sign(link, key)))


def _new_link(
    from_: Identity,
    to: Identity,
    scopes: Iterable[str],
    expires: datetime,
    purpose: str | None,
    limits: Mapping[str, Limit] | None,
    not_before: datetime | None,
    link_id: str | None,
    prev: str | None,
) -> Link:
    if isinstance(scopes, str):
        raise DelegationError("malformed_link", "scopes must be a list, not a string")
    scope_list = tuple(dict.fromkeys(scopes))
    if not scope_list:
        raise DelegationError("malformed_link", "a link must grant at least one scope")
    for scope in scope_list:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise DelegationError("malformed_link", f"not a scope name: {scope!r}")
    if purpose is not None and not isinstance(purpose, str):
        raise DelegationError("malformed_link", "purpose must be a string")
    expires = as_utc(expires)
    if not_before is not None:
        not_before = as_utc(not_before)
        if not_before >= expires:
            raise DelegationError("malformed_link", "not_before must precede expires")
    return Link(
        from_=from_,
        to=to,
        scopes=scope_list,
        expires=expires,
        id=link_id if link_id is not None else "dl-" + secrets.token_urlsafe(12),
        purpose=purpose,
        limits=_limits(limits or {}),
        not_before=not_before,
        prev=prev,
    )


def _limits(limits: Mapping[str, object]) -> tuple[tuple[str, Limit], ...]:
    out: list[tuple[str, Limit]] = []
    for name in sorted(limits):
        value = limits[name]
        if not isinstance(name, str) or not name:
            raise DelegationError("malformed_link", "limit names must be strings")
        number: Limit
        if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
            raise DelegationError("malformed_link", f"limit `{name}` is not a number")
        if isinstance(value, float):
            number = Decimal(repr(value))
        else:
            number = value
        if isinstance(number, Decimal):
            if not number.is_finite():
                raise DelegationError("malformed_link", f"limit `{name}` is not finite")
            if number == number.to_integral_value():
                number = int(number)
        out.append((name, number))
    return tuple(out)


def _identity(value: IdentityLike) -> Identity:
    try:
        return Identity.of(value)
    except ValueError as exc:
        raise DelegationError("malformed_link", str(exc)) from exc


def _sign(link: Link, key: Ed25519PrivateKey) -> SignedLink:
    payload = canonical_json(link.payload()).encode("ascii")
    signature = key.sign(payload)
    return SignedLink(link, f"{_b64encode(payload)}.{_b64encode(signature)}")


def _widenings(earlier: Sequence[Link], link: Link, position: int) -> list[str]:
    """Every way `link` grants more than the links before it."""
    problems: list[str] = []
    for scope in link.scopes:
        for index, before in enumerate(earlier):
            if not any(covers(granted, scope) for granted in before.scopes):
                problems.append(
                    f"link at position {position} widens scope `{scope}` beyond "
                    f"the link at position {index}"
                )
                break
    for name, value in link.limits:
        for index, before in enumerate(earlier):
            bound = before.limit_map().get(name)
            if bound is not None and value > bound:
                problems.append(
                    f"link at position {position} raises limit `{name}` to {value}"
                    f" above {bound} set at position {index}"
                )
                break
    for index, before in enumerate(earlier):
        if before.purpose is not None and link.purpose != before.purpose:
            problems.append(
                f"link at position {position} changes the purpose set at "
                f"position {index}"
            )
            break
    return problems


# -- reading ---------------------------------------------------------------


def parse_chain(token: str) -> DelegationChain:
    """Read a serialized chain without checking signatures or meaning.

    Raises:
        MalformedTokenError: on the first link that cannot be read.
    """
    segments = _split(token)
    if isinstance(segments, str):
        raise MalformedTokenError(segments)
    links: list[SignedLink] = []
    for index, segment in enumerate(segments):
        decoded = _decode_segment(segment)
        if isinstance(decoded, str):
            raise MalformedTokenError(f"invalid link at position {index}: {decoded}")
        links.append(SignedLink(decoded[0], segment))
    return DelegationChain(tuple(links))


def _split(token: object) -> list[str] | str:
    """The link segments of a token, or what is wrong with it."""
    if not isinstance(token, str):
        return "a delegation token must be a string"
    if len(token) > MAX_TOKEN_CHARS:
        return f"delegation token is longer than {MAX_TOKEN_CHARS} characters"
    parts = token.split(".")
    if parts[0] != TOKEN_PREFIX:
        return f"delegation token does not start with `{TOKEN_PREFIX}.`"
    body = parts[1:]
    if not body or len(body) % 2:
        return "delegation token must hold payload and signature pairs"
    if len(body) // 2 > MAX_LINKS:
        return f"delegation token has more than {MAX_LINKS} links"
    return [f"{body[i]}.{body[i + 1]}" for i in range(0, len(body), 2)]


def _decode_segment(segment: str) -> tuple[Link, bytes, bytes] | str:
    """The link, its signed bytes and its signature, or what is wrong."""
    payload_text, signature_text = segment.split(".")
    try:
        payload = _b64decode(payload_text)
        signature = _b64decode(signature_text)
        data = parse_json(payload.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return "not base64url-encoded JSON"
    if not isinstance(data, dict):
        return "payload is not a JSON object"
    try:
        if canonical_json(data).encode("ascii") != payload:
            return "payload is not in canonical form"
    except TypeError:
        return "payload holds a value with no JSON form"
    link = _link_from_payload(data)
    if isinstance(link, str):
        return link
    return link, payload, signature


def _link_from_payload(data: dict[str, Any]) -> Link | str:
    unknown = set(data) - _PAYLOAD_KEYS
    if unknown:
        return f"unknown field `{sorted(unknown)[0]}`"
    if data.get("v") != 1:
        return "unsupported link version"
    try:
        from_ = Identity.of(data.get("from"))  # type: ignore[arg-type]
        to = Identity.of(data.get("to"))  # type: ignore[arg-type]
    except ValueError as exc:
        return str(exc)
    link_id = data.get("id")
    if not isinstance(link_id, str) or not link_id:
        return "missing link `id`"
    scopes = data.get("scopes")
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and _SCOPE.fullmatch(s) for s in scopes)
        or len(set(scopes)) != len(scopes)
    ):
        return "`scopes` must be a non-empty list of distinct scope names"
    try:
        expires = parse_time(data.get("expires"))  # type: ignore[arg-type]
        raw_nbf = data.get("not_before")
        not_before = None if raw_nbf is None else parse_time(raw_nbf)
    except ValueError:
        return "`expires` and `not_before` must be RFC 3339 timestamps"
    purpose = data.get("purpose")
    if purpose is not None and not isinstance(purpose, str):
        return "`purpose` must be a string"
    prev = data.get("prev")
    if prev is not None and not isinstance(prev, str):
        return "`prev` must be a string"
    raw_limits = data.get("limits", {})
    if not isinstance(raw_limits, dict) or ("limits" in data and not raw_limits):
        # The writer leaves out empty limits, so `{}` is not canonical.
        return "`limits` must be a non-empty object of numbers"
    try:
        limits = _limits(raw_limits)
    except DelegationError as exc:
        return exc.message
    return Link(
        from_=from_,
        to=to,
        scopes=tuple(scopes),
        expires=expires,
        id=link_id,
        purpose=purpose,
        limits=limits,
        not_before=not_before,
        prev=prev,
    )


# -- verifying -------------------------------------------------------------


def verify(
    token: str | DelegationChain,
    keys: KeyResolver,
    now: datetime,
    revoked: RevocationCheck | None = None,
    *,
    leeway: timedelta = timedelta(0),
    principal: IdentityLike | None = None,
) -> VerifiedChain | RejectedChain:
    """Check every link of a chain and return it in request shape, or every
    reason it is refused.

    `leeway` widens each validity window by that much on both sides and never
    switches a check off; it must lie between zero and `MAX_LEEWAY`. When
    `principal` is given, the last link must grant to it.

    Raises:
        ConfigurationError: for a leeway out of range.
    """
    if leeway < timedelta(0) or leeway > MAX_LEEWAY:
        raise ConfigurationError(
            f"clock-skew leeway must lie between 0 and {MAX_LEEWAY}, not {leeway}"
        )
    text = token.serialize() if isinstance(token, DelegationChain) else token
    segments = _split(text)
    if isinstance(segments, str):
        return RejectedChain((f"malformed_link: {segments}",))

    decoded = [_decode_segment(segment) for segment in segments]
    failures: list[str] = []
    for index, item in enumerate(decoded):
        if isinstance(item, str):
            failures.append(f"malformed_link: invalid link at position {index}: {item}")
    if failures:
        return RejectedChain(tuple(failures))

    readable = [item for item in decoded if not isinstance(item, str)]
    links = [item[0] for item in readable]
    now = as_utc(now)
    for index, (link, payload, signature) in enumerate(readable):
        failures.extend(_signature_failures(index, link, payload, signature, keys))
        failures.extend(_link_failures(index, links, segments, now, leeway, revoked))
    if principal is not None:
        expected = _identity(principal)
        if links[-1].to != expected:
            failures.append(
                f"broken_chain: the last link grants to {links[-1].to.show()}, "
                f"not to the principal {expected.show()}"
            )
    if failures:
        log.debug("delegation chain of %d links refused", len(links))
        return RejectedChain(tuple(failures))
    log.debug("delegation chain of %d links verified", len(links))
    return VerifiedChain(tuple(links))


def _signature_failures(
    index: int, link: Link, payload: bytes, signature: bytes, keys: KeyResolver
) -> list[str]:
    public_key = keys.public_key(link.from_)
    if public_key is None:
        return [
            f"invalid_signature: invalid link at position {index}: no key is known "
            f"for its grantor {link.from_.show()}"
        ]
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        return [
            f"invalid_signature: invalid link at position {index}: it is not "
            f"signed by its grantor {link.from_.show()}"
        ]
    return []


def _link_failures(
    index: int,
    links: Sequence[Link],
    segments: Sequence[str],
    now: datetime,
    leeway: timedelta,
    revoked: RevocationCheck | None,
) -> list[str]:
    link = links[index]
    failures = _continuity_failures(index, links, segments)
    failures.extend(
        f"chain_widens: {problem}" for problem in _widenings(links[:index], link, index)
    )
    if now >= link.expires + leeway:
        failures.append(
            f"expired_link: link at position {index} expired at "
            f"{format_time(link.expires)}"
        )
    if link.not_before is not None and now < link.not_before - leeway:
        failures.append(
            f"expired_link: link at position {index} is not valid before "
            f"{format_time(link.not_before)}"
        )
    if revoked is not None and revoked.is_revoked(link.to_request()):
        failures.append(f"revoked_link: link at position {index} is revoked")
    return failures


def _continuity_failures(
    index: int, links: Sequence[Link], segments: Sequence[str]
) -> list[str]:
    link = links[index]
    failures: list[str] = []
    if index == 0:
        if link.prev is not None:
            failures.append(
                "broken_chain: invalid link at position 0: it continues another chain"
            )
    else:
        before = links[index - 1]
        if link.from_ != before.to:
            failures.append(
                f"broken_chain: invalid link at position {index}: its grantor "
                f"{link.from_.show()} is not {before.to.show()}, who received "
                f"the link at position {index - 1}"
            )
        if link.prev != _digest(segments[index - 1]):
            failures.append(
                f"broken_chain: invalid link at position {index}: it was not "
                f"issued under the link at position {index - 1}"
            )
    path = [links[0].from_]
    for before in links[:index]:
        path.append(before.to)
    if index and link.from_ != links[index - 1].to:
        path.append(link.from_)
    if link.to in path:
        failures.append(
            f"broken_chain: link at position {index} returns to {link.to.show()}, "
            "which the chain already visited"
        )
    if any(before.id == link.id for before in links[:index]):
        failures.append(
            f"broken_chain: link at position {index} reuses the id of an earlier link"
        )
    return failures


# -- OAuth 2.0 token exchange ----------------------------------------------

SubjectResolver = Callable[[str, str | None], IdentityLike]


def typed_subject(subject: str, issuer: str | None) -> Identity:
    """A ready-made `SubjectResolver` for subjects spelled `Type::id`."""
    kind, sep, ident = subject.partition("::")
    if not sep or not kind or not ident:
        raise TokenExchangeError(
            "malformed_link", "subject is not of the form `Type::id`"
        )
    return Identity(kind, ident)


def chain_from_token_exchange(
    claims: Mapping[str, Any],
    resolve: SubjectResolver,
    *,
    actor: IdentityLike | None = None,
    audience: str | None = None,
) -> list[dict[str, Any]]:
    """Turn the claims of an RFC 8693 token-exchange JWT into a `delegation`.

    The JWT's signature, issuer and lifetime must already have been checked by
    the app's JWT library; this reads the decoded payload only. Mapping:

    - `sub` is the human subject and becomes the first link's `from`;
    - `act` nests actors: the outermost `act` is the current actor (the last
      link's `to`), each inner `act` the actor before it, so the chain runs
      `sub` → innermost actor → … → outermost actor;
    - each subject string goes through `resolve(sub, iss)` to become a
      `{"type", "id"}` identity; `iss` is the `act` object's own `iss` when it
      has one, else the token's (identity types come only from the resolver:
      ripl does not guess whether `sub` names a human or an agent);
    - `scope` (space-separated) gives every link's scopes and `exp` (seconds
      since the epoch) every link's `expires`;
    - link ids are `JTI#n` from the token's `jti`, or a digest of the claims
      when there is none, so the same token always yields the same ids and a
      revocation of one of them sticks.

    A token without `act` delegates nothing and yields `[]`. With `actor`, the
    current actor must be that identity, and with `audience`, `aud` must name
    it: holding a human's token is never enough to act for that human.

    Raises:
        TokenExchangeError: `malformed_link` for missing or ill-typed claims,
            `broken_chain` for a wrong actor or audience or a loop.
    """
    if audience is not None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or audience not in audiences:
            raise TokenExchangeError(
                "broken_chain", f"the token was not issued for audience `{audience}`"
            )
    path = _exchange_path(claims, resolve)
    if len(path) == 1:
        return []
    if actor is not None and path[-1] != _identity(actor):
        raise TokenExchangeError(
            "broken_chain",
            f"the token's current actor is {path[-1].show()}, "
            f"not {_identity(actor).show()}",
        )
    if len(set(path)) != len(path):
        raise TokenExchangeError(
            "broken_chain", "the actor chain visits an identity twice"
        )

    scope = claims.get("scope")
    if not isinstance(scope, str) or not scope.split():
        raise TokenExchangeError("malformed_link", "the token has no `scope` claim")
    scopes = list(dict.fromkeys(scope.split()))
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float | Decimal):
        raise TokenExchangeError("malformed_link", "the token has no numeric `exp`")
    try:
        expires = format_time(datetime.fromtimestamp(float(exp), UTC))
    except (OverflowError, OSError, ValueError) as exc:
        raise TokenExchangeError("malformed_link", "`exp` is out of range") from exc

    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        jti = "tx-" + _digest(canonical_json(_jsonable(claims)))[:22]
    return [
        {
            "from": path[index].as_dict(),
            "to": path[index + 1].as_dict(),
            "scopes": list(scopes),
            "expires": expires,
            "id": f"{jti}#{index}",
        }
        for index in range(len(path) - 1)
    ]


def _exchange_path(
    claims: Mapping[str, Any], resolve: SubjectResolver
) -> list[Identity]:
    """Subject first, then actors from the innermost to the current one."""
    issuer = claims.get("iss") if isinstance(claims.get("iss"), str) else None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenExchangeError("malformed_link", "the token has no `sub` claim")
    actors: list[Identity] = []
    node = claims.get("act")
    while node is not None:
        if len(actors) >= MAX_LINKS:
            raise TokenExchangeError(
                "malformed_link", f"`act` nests deeper than {MAX_LINKS} actors"
            )
        if not isinstance(node, Mapping) or not isinstance(node.get("sub"), str):
            raise TokenExchangeError("malformed_link", "an `act` claim has no `sub`")
        own_issuer = node.get("iss")
        actor_issuer = own_issuer if isinstance(own_issuer, str) else issuer
        actors.append(_resolved(resolve, node["sub"], actor_issuer))
        node = node.get("act")
    return [_resolved(resolve, subject, issuer), *reversed(actors)]


def _resolved(resolve: SubjectResolver, subject: str, issuer: str | None) -> Identity:
    try:
        return Identity.of(resolve(subject, issuer))
    except ValueError as exc:
        if isinstance(exc, TokenExchangeError):
            raise
        raise TokenExchangeError("malformed_link", str(exc)) from exc


def _jsonable(value: object) -> object:
    """Claims reduced to what canonical JSON can hold, for a stable digest."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | Decimal):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    return str(value)


# -- helpers ---------------------------------------------------------------


def _digest(text: str) -> str:
    return _b64encode(hashlib.sha256(text.encode("ascii")).digest())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if _b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data
