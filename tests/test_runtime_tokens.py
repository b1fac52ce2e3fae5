from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ripl.runtime import (
    MAX_LINKS,
    AttenuationError,
    ConfigurationError,
    DelegationChain,
    DelegationError,
    Identity,
    MalformedTokenError,
    MemoryRevocationStore,
    RejectedChain,
    SqliteRevocationStore,
    StaticKeyResolver,
    TokenExchangeError,
    VerifiedChain,
    attenuate,
    canonical_json,
    chain_from_token_exchange,
    covers,
    grant,
    parse_chain,
    typed_subject,
    verify,
)

H = Identity("User", "h")
A = Identity("Agent", "a")
B = Identity("Agent", "b")
T = Identity("Tool", "t")
E = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)

KEYS = {ident: Ed25519PrivateKey.generate() for ident in (H, A, B, T)}
RESOLVER = StaticKeyResolver({ident: key.public_key() for ident, key in KEYS.items()})


def three_hop(scopes: tuple[str, ...] = ("repo.read",)) -> DelegationChain:
    chain = grant(H, A, ["repo.read", "repo.write"], E, key=KEYS[H], link_id="d-0")
    return attenuate(chain, T, list(scopes), E, key=KEYS[A], link_id="d-1")


def rejected(result: VerifiedChain | RejectedChain) -> RejectedChain:
    assert isinstance(result, RejectedChain), result
    return result


def verified(result: VerifiedChain | RejectedChain) -> VerifiedChain:
    assert isinstance(result, VerifiedChain), result
    return result


# Hand-built links follow the documented wire format, so the verifier is
# tested against links that `attenuate` would refuse to write.


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment_digest(segment: str) -> str:
    return b64(hashlib.sha256(segment.encode("ascii")).digest())


def raw_segment(payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    body = canonical_json(payload).encode("ascii")
    return f"{b64(body)}.{b64(key.sign(body))}"


def raw_payload(
    from_: Identity,
    to: Identity,
    scopes: list[str],
    link_id: str,
    prev: str | None = None,
    expires: datetime = E,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": 1,
        "id": link_id,
        "from": from_.as_dict(),
        "to": to.as_dict(),
        "scopes": scopes,
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }
    if prev is not None:
        payload["prev"] = prev
    return payload


def token_of(*segments: str) -> str:
    return ".".join(["rd1", *segments])


def extend(
    chain: DelegationChain, payload: dict[str, Any], key: Ed25519PrivateKey
) -> str:
    """Append a hand-built link to a real chain, with a correct `prev`."""
    segments = [signed.segment for signed in chain.links]
    payload["prev"] = segment_digest(segments[-1])
    return token_of(*segments, raw_segment(payload, key))


# -- the positive control and the format ---------------------------------------


def test_valid_three_hop_chain_verifies_into_request_delegation_shape() -> None:
    result = verified(verify(three_hop().serialize(), RESOLVER, NOW))

    assert result.delegation() == [
        {
            "from": {"type": "User", "id": "h"},
            "to": {"type": "Agent", "id": "a"},
            "scopes": ["repo.read", "repo.write"],
            "expires": "2026-12-04T10:00:00Z",
            "id": "d-0",
        },
        {
            "from": {"type": "Agent", "id": "a"},
            "to": {"type": "Tool", "id": "t"},
            "scopes": ["repo.read"],
            "expires": "2026-12-04T10:00:00Z",
            "id": "d-1",
        },
    ]
    assert result.root == H
    assert result.ok is True


def test_purpose_and_limits_appear_in_delegation_only_when_set() -> None:
    chain = grant(
        H,
        A,
        ["payments"],
        E,
        purpose="refund",
        limits={"amount": 100},
        key=KEYS[H],
        link_id="d-0",
    )
    chain = attenuate(
        chain,
        T,
        ["payments.refund"],
        E,
        {"amount": Decimal("12.50")},
        key=KEYS[A],
        link_id="d-1",
    )

    links = verified(verify(chain.serialize(), RESOLVER, NOW)).delegation()

    assert links[0]["purpose"] == "refund"
    assert links[0]["limits"] == {"amount": 100}
    assert isinstance(links[0]["limits"]["amount"], int)
    assert links[1]["purpose"] == "refund"  # inherited, not dropped
    assert links[1]["limits"] == {"amount": Decimal("12.5")}


def test_token_is_url_safe_and_parses_back_to_the_same_links() -> None:
    chain = three_hop()
    token = chain.serialize()

    assert re.fullmatch(r"rd1(\.[A-Za-z0-9_-]+){4}", token)
    assert parse_chain(token) == chain
    assert parse_chain(token).delegation() == chain.delegation()


def test_verify_accepts_a_parsed_chain_object() -> None:
    assert verify(three_hop(), RESOLVER, NOW).ok


def test_link_ids_are_generated_and_distinct_when_not_given() -> None:
    chain = grant(H, A, ["repo"], E, key=KEYS[H])
    chain = attenuate(chain, T, ["repo.read"], E, key=KEYS[A])

    first, second = (link["id"] for link in chain.delegation())

    assert first != second
    assert first.startswith("dl-")


@pytest.mark.parametrize(
    ("granted", "wanted", "expected"),
    [
        ("payments", "payments.refund", True),
        ("payments", "payments", True),
        ("payments.refund", "payments", False),
        ("payments", "paymentsx.refund", False),
        ("pay", "payments", False),
    ],
)
def test_scope_covers_itself_and_dotted_descendants_only(
    granted: str, wanted: str, expected: bool
) -> None:
    assert covers(granted, wanted) is expected


# -- forged -------------------------------------------------------------------


def test_forged_middle_link_is_invalid_at_position_1() -> None:
    """PEER R1.2: a link claiming to come from `A` but signed by another key."""
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H], link_id="d-0")
    forger = Ed25519PrivateKey.generate()
    forged = attenuate(chain, T, ["repo.read"], E, key=forger, link_id="d-1")

    result = rejected(verify(forged.serialize(), RESOLVER, NOW))

    assert result.failures == (
        "invalid_signature: invalid link at position 1: it is not signed by its "
        "grantor `Agent::a`",
    )


def test_first_link_signed_by_the_grantee_instead_of_the_grantor_is_forged() -> None:
    forged = grant(H, A, ["repo"], E, key=KEYS[A])

    result = rejected(verify(forged.serialize(), RESOLVER, NOW))

    assert result.codes == ("invalid_signature",)
    assert "position 0" in result.failures[0]


def test_grantor_without_a_known_key_is_invalid_signature() -> None:
    stranger = Identity("User", "mallory")
    chain = grant(stranger, A, ["repo"], E, key=Ed25519PrivateKey.generate())

    result = rejected(verify(chain.serialize(), RESOLVER, NOW))

    assert result.failures == (
        "invalid_signature: invalid link at position 0: no key is known for its "
        "grantor `User::mallory`",
    )


def test_payload_edited_after_signing_is_invalid_signature() -> None:
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H], link_id="d-0")
    payload_text, signature = chain.links[0].segment.split(".")
    payload = chain.links[0].link.payload()
    payload["scopes"] = ["repo"]
    edited = b64(canonical_json(payload).encode("ascii"))

    result = rejected(verify(token_of(f"{edited}.{signature}"), RESOLVER, NOW))

    assert result.codes == ("invalid_signature",)
    assert payload_text != edited


# -- reordered and spliced ---------------------------------------------------


def test_reordered_links_break_the_chain_from_position_0() -> None:
    segments = [signed.segment for signed in three_hop().links]

    result = rejected(verify(token_of(*reversed(segments)), RESOLVER, NOW))

    # The old first link also grants more than the new first link did.
    assert set(result.codes) == {"broken_chain", "chain_widens"}
    assert result.failures[0] == (
        "broken_chain: invalid link at position 0: it continues another chain"
    )
    assert (
        "broken_chain: invalid link at position 1: it was not issued under the "
        "link at position 0" in result.failures
    )


def test_link_grafted_from_another_chain_is_broken_chain() -> None:
    """Same identities, valid signatures, but `A→T` was issued under another
    `H→A` link, so it cannot ride on this one."""
    other = three_hop()
    mine = grant(H, A, ["repo.read", "repo.write"], E, key=KEYS[H], link_id="d-9")
    token = token_of(mine.links[0].segment, other.links[1].segment)

    result = rejected(verify(token, RESOLVER, NOW))

    assert result.failures == (
        "broken_chain: invalid link at position 1: it was not issued under the "
        "link at position 0",
    )


def test_link_whose_grantor_is_not_the_previous_grantee_is_broken_chain() -> None:
    chain = grant(H, A, ["repo"], E, key=KEYS[H], link_id="d-0")
    token = extend(chain, raw_payload(B, T, ["repo"], "d-1"), KEYS[B])

    result = rejected(verify(token, RESOLVER, NOW))

    assert result.failures == (
        "broken_chain: invalid link at position 1: its grantor `Agent::b` is not "
        "`Agent::a`, who received the link at position 0",
    )


def test_last_link_must_end_at_the_expected_principal() -> None:
    result = rejected(verify(three_hop().serialize(), RESOLVER, NOW, principal=B))

    assert result.failures == (
        "broken_chain: the last link grants to `Tool::t`, not to the principal "
        "`Agent::b`",
    )
    assert verify(three_hop().serialize(), RESOLVER, NOW, principal=T).ok


# -- widened -------------------------------------------------------------------


def test_attenuate_refuses_a_scope_the_parent_lacks() -> None:
    """PEER R1.1: `A` holds only `read` and cannot hand `write` on."""
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H])

    with pytest.raises(AttenuationError) as info:
        attenuate(chain, T, ["repo.read", "repo.write"], E, key=KEYS[A])

    assert info.value.code == "chain_widens"
    assert str(info.value) == (
        "chain_widens: link at position 1 widens scope `repo.write` beyond the "
        "link at position 0"
    )


def test_attenuate_refuses_a_parent_scope_when_child_holds_a_subscope() -> None:
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H])

    with pytest.raises(AttenuationError):
        attenuate(chain, T, ["repo"], E, key=KEYS[A])


def test_widening_link_presented_anyway_rejects_the_whole_chain() -> None:
    """PEER R1.1: ripl does not trim to the intersection; the chain is invalid,
    so neither `read` nor `write` can be claimed through it."""
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H], link_id="d-0")
    payload = raw_payload(A, T, ["repo.read", "repo.write"], "d-1")

    result = rejected(verify(extend(chain, payload, KEYS[A]), RESOLVER, NOW))

    assert result.failures == (
        "chain_widens: link at position 1 widens scope `repo.write` beyond the "
        "link at position 0",
    )


def test_scope_must_be_covered_by_every_earlier_link_not_just_the_last() -> None:
    chain = grant(H, A, ["repo.read"], E, key=KEYS[H], link_id="d-0")
    second = raw_payload(A, B, ["repo.read"], "d-1")
    token = extend(chain, second, KEYS[A])
    parsed = parse_chain(token)
    third = raw_payload(B, T, ["repo.write"], "d-2")

    result = rejected(verify(extend(parsed, third, KEYS[B]), RESOLVER, NOW))

    assert result.codes == ("chain_widens",)
    assert "position 2" in result.failures[0]


def test_attenuate_refuses_a_higher_limit() -> None:
    chain = grant(H, A, ["payments"], E, limits={"amount": 100}, key=KEYS[H])

    with pytest.raises(AttenuationError) as info:
        attenuate(chain, T, ["payments"], E, {"amount": 101}, key=KEYS[A])

    assert "raises limit `amount` to 101 above 100" in str(info.value)


def test_omitted_limit_is_inherited_so_a_later_higher_limit_still_widens() -> None:
    chain = grant(H, A, ["payments"], E, limits={"amount": 100}, key=KEYS[H])
    chain = attenuate(chain, B, ["payments"], E, key=KEYS[A])
    payload = raw_payload(B, T, ["payments"], "d-2", limits={"amount": 150})

    result = rejected(verify(extend(chain, payload, KEYS[B]), RESOLVER, NOW))

    assert result.failures == (
        "chain_widens: link at position 2 raises limit `amount` to 150 above 100 "
        "set at position 0",
    )
    with pytest.raises(AttenuationError):
        attenuate(chain, T, ["payments"], E, {"amount": 150}, key=KEYS[B])


def test_lower_or_new_limit_narrows_and_verifies() -> None:
    chain = grant(H, A, ["payments"], E, limits={"amount": 100}, key=KEYS[H])
    chain = attenuate(
        chain, T, ["payments.refund"], E, {"amount": 100, "count": 3}, key=KEYS[A]
    )

    assert verify(chain, RESOLVER, NOW).ok


def test_attenuate_refuses_another_purpose_and_verify_rejects_one() -> None:
    chain = grant(H, A, ["repo"], E, purpose="triage", key=KEYS[H], link_id="d-0")
    with pytest.raises(AttenuationError):
        attenuate(chain, T, ["repo"], E, key=KEYS[A], purpose="exfiltrate")

    payload = raw_payload(A, T, ["repo"], "d-1", purpose="exfiltrate")
    result = rejected(verify(extend(chain, payload, KEYS[A]), RESOLVER, NOW))
    assert result.codes == ("chain_widens",)


def test_attenuate_refuses_a_later_expiry() -> None:
    chain = grant(H, A, ["repo"], E, key=KEYS[H])

    with pytest.raises(AttenuationError):
        attenuate(chain, T, ["repo"], E + SECOND, key=KEYS[A])


# -- expired and not yet valid -----------------------------------------------


def test_link_is_expired_exactly_at_its_expiry() -> None:
    token = three_hop().serialize()

    at_expiry = rejected(verify(token, RESOLVER, E))

    assert at_expiry.failures == (
        "expired_link: link at position 0 expired at 2026-12-04T10:00:00Z",
        "expired_link: link at position 1 expired at 2026-12-04T10:00:00Z",
    )
    assert verify(token, RESOLVER, E - timedelta(microseconds=1)).ok


def test_expired_ancestor_rejects_a_still_valid_descendant() -> None:
    """PEER R1.4: `H→A` expired a second ago, `A→T` would still be valid."""
    chain = grant(H, A, ["repo.read"], NOW - SECOND, key=KEYS[H], link_id="d-0")
    payload = raw_payload(A, T, ["repo.read"], "d-1", expires=E)

    result = rejected(verify(extend(chain, payload, KEYS[A]), RESOLVER, NOW))

    assert result.failures == (
        "expired_link: link at position 0 expired at 2026-12-04T08:59:59Z",
    )


def test_chain_is_valid_until_its_earliest_expiry() -> None:
    """PEER R12.7: a later link that outlives its parent does not extend it."""
    e1 = NOW + timedelta(minutes=10)
    chain = grant(H, A, ["repo"], e1, key=KEYS[H], link_id="d-0")
    payload = raw_payload(A, T, ["repo"], "d-1", expires=E)
    token = extend(chain, payload, KEYS[A])

    assert verified(verify(token, RESOLVER, NOW)).expires == e1
    late = e1 + timedelta(seconds=31)
    result = rejected(verify(token, RESOLVER, late, leeway=timedelta(seconds=30)))
    assert result.codes == ("expired_link",)
    assert "position 0" in result.failures[0]


N = datetime(2026, 12, 4, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "leeway_s", "ok"),
    [
        (E - SECOND, 0, True),
        (E - SECOND, 30, True),
        (E + 10 * SECOND, 0, False),
        (E + 10 * SECOND, 30, True),
        (E + 30 * SECOND, 30, False),
        (E + 31 * SECOND, 0, False),
        (E + 31 * SECOND, 30, False),
        (N - 10 * SECOND, 0, False),
        (N - 10 * SECOND, 30, True),
        (N - 31 * SECOND, 30, False),
        (N, 0, True),
        (E, 0, False),
    ],
)
def test_leeway_widens_the_validity_window_and_never_disables_it(
    now: datetime, leeway_s: int, ok: bool
) -> None:
    """PEER R12, rows 1 to 5."""
    chain = grant(H, A, ["repo"], E, not_before=N, key=KEYS[H])

    result = verify(chain, RESOLVER, now, leeway=timedelta(seconds=leeway_s))

    assert result.ok is ok
    if not ok:
        assert rejected(result).codes == ("expired_link",)


def test_not_yet_valid_link_names_its_start() -> None:
    chain = grant(H, A, ["repo"], E, not_before=N, key=KEYS[H])

    result = rejected(verify(chain, RESOLVER, N - SECOND))

    assert result.failures == (
        "expired_link: link at position 0 is not valid before 2026-12-04T08:00:00Z",
    )


@pytest.mark.parametrize(
    "leeway", [timedelta(seconds=-1), timedelta(minutes=5, seconds=1)]
)
def test_leeway_out_of_range_is_refused(leeway: timedelta) -> None:
    """PEER R12.6: a negative or oversized leeway is a configuration error."""
    with pytest.raises(ConfigurationError):
        verify(three_hop(), RESOLVER, NOW, leeway=leeway)


def test_naive_times_are_taken_as_utc() -> None:
    chain = grant(H, A, ["repo"], datetime(2026, 12, 4, 10), key=KEYS[H])

    assert chain.delegation()[0]["expires"] == "2026-12-04T10:00:00Z"
    assert not verify(chain, RESOLVER, datetime(2026, 12, 4, 10)).ok


# -- revoked -------------------------------------------------------------------


def test_revoked_ancestor_invalidates_its_descendants() -> None:
    """PEER R1.3: revoking `H→A` stops `T`, who holds only `A→T`."""
    store = MemoryRevocationStore()
    store.revoke_link("d-0")

    result = rejected(verify(three_hop(), RESOLVER, NOW, revoked=store))

    assert result.failures == ("revoked_link: link at position 0 is revoked",)


def test_revoking_a_principal_revokes_every_link_from_or_to_it(
    tmp_path: Path,
) -> None:
    with SqliteRevocationStore(tmp_path / "revoked.db") as store:
        assert verify(three_hop(), RESOLVER, NOW, revoked=store).ok
        store.revoke_principal(A)

        result = rejected(verify(three_hop(), RESOLVER, NOW, revoked=store))

    assert result.failures == (
        "revoked_link: link at position 0 is revoked",
        "revoked_link: link at position 1 is revoked",
    )


def test_every_failed_check_is_listed_in_link_order() -> None:
    store = MemoryRevocationStore()
    store.revoke_link("d-1")
    chain = grant(H, A, ["repo.read"], NOW, key=KEYS[H], link_id="d-0")
    payload = raw_payload(A, T, ["repo.write"], "d-1")

    result = rejected(
        verify(extend(chain, payload, KEYS[A]), RESOLVER, NOW, revoked=store)
    )

    assert result.codes == ("expired_link", "chain_widens", "revoked_link")


# -- looped -------------------------------------------------------------------


def test_looping_chain_is_broken_chain() -> None:
    """PEER R1.5: `A→B` then `B→A` terminates and is refused."""
    chain = grant(A, B, ["repo"], E, key=KEYS[A], link_id="d-0")
    with pytest.raises(DelegationError) as info:
        attenuate(chain, A, ["repo"], E, key=KEYS[B])
    assert info.value.code == "broken_chain"

    token = extend(chain, raw_payload(B, A, ["repo"], "d-1"), KEYS[B])
    result = rejected(verify(token, RESOLVER, NOW))
    assert result.failures == (
        "broken_chain: link at position 1 returns to `Agent::a`, which the chain "
        "already visited",
    )


def test_link_granting_to_its_own_grantor_is_refused() -> None:
    with pytest.raises(DelegationError):
        grant(A, A, ["repo"], E, key=KEYS[A])
    token = token_of(raw_segment(raw_payload(A, A, ["repo"], "d-0"), KEYS[A]))

    assert rejected(verify(token, RESOLVER, NOW)).codes == ("broken_chain",)


def test_chain_longer_than_the_limit_is_malformed() -> None:
    segment = three_hop().links[0].segment
    token = token_of(*[segment] * (MAX_LINKS + 1))

    result = rejected(verify(token, RESOLVER, NOW))

    assert result.failures == (
        "malformed_link: delegation token has more than 32 links",
    )


def test_attenuate_stops_at_the_link_limit() -> None:
    people = [Identity("Agent", f"a{i}") for i in range(MAX_LINKS + 1)]
    key = Ed25519PrivateKey.generate()
    chain = grant(H, people[0], ["repo"], E, key=KEYS[H])
    for person in people[1:MAX_LINKS]:
        chain = attenuate(chain, person, ["repo"], E, key=key)
    assert len(chain.links) == MAX_LINKS

    with pytest.raises(DelegationError):
        attenuate(chain, people[MAX_LINKS], ["repo"], E, key=key)


# -- malformed ------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "rd2.abc.def",
        "rd1",
        "rd1.abc",
        "rd1.@@@.def",
        "rd1.e30.AA",  # `{}` with a bogus signature: no fields at all
    ],
)
def test_unreadable_tokens_are_malformed(token: str) -> None:
    result = rejected(verify(token, RESOLVER, NOW))

    assert result.codes == ("malformed_link",)
    with pytest.raises(MalformedTokenError):
        parse_chain(token)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expires": None}, "`expires` and `not_before` must be RFC 3339"),
        ({"expires": "2026-12-04"}, "`expires` and `not_before` must be RFC 3339"),
        ({"scopes": []}, "`scopes` must be a non-empty list"),
        ({"scopes": ["repo", "repo"]}, "`scopes` must be a non-empty list"),
        ({"scopes": ["has space"]}, "`scopes` must be a non-empty list"),
        ({"id": ""}, "missing link `id`"),
        ({"to": {"type": "Agent"}}, "an identity needs a non-empty string `id`"),
        ({"v": 2}, "unsupported link version"),
        ({"admin": True}, "unknown field `admin`"),
        ({"limits": {"amount": "lots"}}, "limit `amount` is not a number"),
        ({"limits": {}}, "`limits` must be a non-empty object"),
    ],
)
def test_link_with_a_missing_or_bad_field_is_malformed_at_its_position(
    change: dict[str, Any], reason: str
) -> None:
    chain = grant(H, A, ["repo"], E, key=KEYS[H], link_id="d-0")
    payload = {**raw_payload(A, T, ["repo"], "d-1"), **change}

    result = rejected(verify(extend(chain, payload, KEYS[A]), RESOLVER, NOW))

    assert len(result.failures) == 1
    assert result.failures[0].startswith(
        f"malformed_link: invalid link at position 1: {reason}"
    )


def test_correctly_signed_but_non_canonical_payload_is_malformed() -> None:
    body = b'{"v": 1}'
    token = token_of(f"{b64(body)}.{b64(KEYS[H].sign(body))}")

    result = rejected(verify(token, RESOLVER, NOW))

    assert result.failures == (
        "malformed_link: invalid link at position 0: payload is not in canonical form",
    )


@pytest.mark.parametrize("scopes", [[], ["a b"], ["payments."], [".x"], "payments"])
def test_grant_refuses_bad_scopes(scopes: Any) -> None:
    with pytest.raises(DelegationError) as info:
        grant(H, A, scopes, E, key=KEYS[H])
    assert info.value.code == "malformed_link"


def test_grant_refuses_a_validity_window_that_ends_before_it_starts() -> None:
    with pytest.raises(DelegationError):
        grant(H, A, ["repo"], E, not_before=E, key=KEYS[H])


def test_grant_refuses_a_boolean_limit() -> None:
    with pytest.raises(DelegationError):
        grant(H, A, ["repo"], E, limits={"amount": True}, key=KEYS[H])


def test_hostile_ids_survive_signing_byte_exact() -> None:
    odd = Identity("Agent", 'x\n"DECISION allow"\x00\u2028\x1b[31m')
    chain = grant(H, odd, ["repo"], E, key=KEYS[H])

    links = verified(verify(chain.serialize(), RESOLVER, NOW)).delegation()

    assert links[0]["to"] == {
        "type": "Agent",
        "id": 'x\n"DECISION allow"\x00\u2028\x1b[31m',
    }


# -- OAuth 2.0 token exchange (RFC 8693) ---------------------------------------

EXP = int(E.timestamp())


def exchange_claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "https://idp.example",
        "sub": "User::alice",
        "aud": ["calendar-api"],
        "scope": "calendar.create calendar.read",
        "exp": EXP,
        "jti": "tx-1",
        "act": {"sub": "Agent::planner", "act": {"sub": "Service::gateway"}},
        **extra,
    }


def test_nested_act_claims_become_a_chain_from_subject_to_current_actor() -> None:
    links = chain_from_token_exchange(exchange_claims(), typed_subject)

    scopes = ["calendar.create", "calendar.read"]
    assert links == [
        {
            "from": {"type": "User", "id": "alice"},
            "to": {"type": "Service", "id": "gateway"},
            "scopes": scopes,
            "expires": "2026-12-04T10:00:00Z",
            "id": "tx-1#0",
        },
        {
            "from": {"type": "Service", "id": "gateway"},
            "to": {"type": "Agent", "id": "planner"},
            "scopes": scopes,
            "expires": "2026-12-04T10:00:00Z",
            "id": "tx-1#1",
        },
    ]


def test_resolver_receives_each_subject_with_its_issuer() -> None:
    seen: list[tuple[str, str | None]] = []

    def resolve(subject: str, issuer: str | None) -> dict[str, str]:
        seen.append((subject, issuer))
        kind = "User" if subject == "alice" else "Agent"
        return {"type": kind, "id": subject}

    claims = exchange_claims(
        sub="alice", act={"sub": "planner", "iss": "https://agents.example"}
    )
    links = chain_from_token_exchange(claims, resolve)

    assert seen == [
        ("planner", "https://agents.example"),
        ("alice", "https://idp.example"),
    ]
    assert links[0]["from"] == {"type": "User", "id": "alice"}
    assert links[0]["to"] == {"type": "Agent", "id": "planner"}


def test_token_without_act_delegates_nothing() -> None:
    claims = exchange_claims()
    del claims["act"]

    assert chain_from_token_exchange(claims, typed_subject) == []


def test_token_exchange_ids_are_stable_without_jti() -> None:
    claims = exchange_claims()
    del claims["jti"]

    first = chain_from_token_exchange(claims, typed_subject)
    second = chain_from_token_exchange(dict(claims), typed_subject)

    assert [link["id"] for link in first] == [link["id"] for link in second]
    assert first[0]["id"].startswith("tx-") and first[0]["id"].endswith("#0")


def test_token_for_another_actor_is_refused() -> None:
    """PEER R2.2: `mailer` holding a token in which `planner` acts for alice."""
    with pytest.raises(TokenExchangeError) as info:
        chain_from_token_exchange(
            exchange_claims(), typed_subject, actor=Identity("Agent", "mailer")
        )

    assert info.value.code == "broken_chain"
    assert str(info.value) == (
        "broken_chain: the token's current actor is `Agent::planner`, not "
        "`Agent::mailer`"
    )
    planner = {"type": "Agent", "id": "planner"}
    assert chain_from_token_exchange(exchange_claims(), typed_subject, actor=planner)


def test_token_for_another_audience_is_refused() -> None:
    """PEER R2.4."""
    with pytest.raises(TokenExchangeError) as info:
        chain_from_token_exchange(exchange_claims(), typed_subject, audience="mail-api")
    assert info.value.code == "broken_chain"

    claims = exchange_claims(aud="calendar-api")
    assert chain_from_token_exchange(claims, typed_subject, audience="calendar-api")


@pytest.mark.parametrize(
    "change",
    [
        {"scope": ""},
        {"scope": ["calendar.read"]},
        {"exp": "tomorrow"},
        {"exp": True},
        {"sub": None},
        {"act": {"iss": "x"}},
        {"act": "Agent::planner"},
        {"sub": "alice"},
    ],
)
def test_malformed_token_exchange_claims_are_malformed_link(
    change: dict[str, Any],
) -> None:
    with pytest.raises(TokenExchangeError) as info:
        chain_from_token_exchange(exchange_claims(**change), typed_subject)
    assert info.value.code == "malformed_link"


def test_token_exchange_loop_is_broken_chain() -> None:
    claims = exchange_claims(act={"sub": "Agent::a", "act": {"sub": "User::alice"}})

    with pytest.raises(TokenExchangeError) as info:
        chain_from_token_exchange(claims, typed_subject)
    assert info.value.code == "broken_chain"


def test_token_exchange_nesting_is_bounded() -> None:
    act: dict[str, Any] = {"sub": "Agent::a0"}
    for index in range(1, 200):
        act = {"sub": f"Agent::a{index}", "act": act}

    with pytest.raises(TokenExchangeError):
        chain_from_token_exchange(exchange_claims(act=act), typed_subject)
