"""The benchmark's workload and peers decide the same questions the same way.

No timing is asserted here; these tests keep the benchmark honest, so that a
speed comparison is never between engines that answer different questions.
"""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.check import compare
from benchmarks.peers import SEMANTIC_DIFFERENCES, NaivePeer, Outcome, Peer
from benchmarks.ripl_peer import ripl_request, ripl_source
from benchmarks.workload import Workload, generate_workload


def _answers(peer: Peer, workload: Workload) -> dict[int, bool]:
    peer.translate(workload)
    peer.load()
    return dict(enumerate(peer.decide_batch(peer.prepare(workload.requests))))


def _reference(workload: Workload) -> list[Outcome]:
    naive = NaivePeer()
    naive.translate(workload)
    naive.load()
    return [naive.evaluate(request) for request in workload.requests]


def test_same_seed_gives_the_same_workload() -> None:
    assert generate_workload(200, 300, seed=3) == generate_workload(200, 300, seed=3)


def test_different_seeds_give_different_rules() -> None:
    first = generate_workload(200, 10, seed=3)
    second = generate_workload(200, 10, seed=4)
    assert first.rules != second.rules


def test_entity_pool_does_not_depend_on_rule_count() -> None:
    assert generate_workload(10, 5).entities == generate_workload(1_000, 5).entities


@pytest.mark.parametrize("n_rules", [10, 100, 1_000])
def test_workload_has_the_requested_shape(n_rules: int) -> None:
    workload = generate_workload(n_rules, 400)
    effects = Counter(rule.effect for rule in workload.rules)
    assert len(workload.rules) == n_rules
    assert len(workload.requests) == 400
    assert effects["allow"] > effects["deny"]
    assert all(1 <= len(rule.conditions) <= 3 for rule in workload.rules)
    assert len(workload.groups) == 20
    assert all(len(actions) == 10 for actions in workload.groups.values())


def test_reference_outcomes_cover_allow_deny_and_delegation_failures() -> None:
    codes = Counter(
        outcome.code for outcome in _reference(generate_workload(300, 1_000))
    )
    for code in (
        "matched",
        "no_rule",
        "deny_rule",
        "escalation",
        "scope_not_delegated",
    ):
        assert codes[code] > 0, code


def test_naive_decide_and_batch_agree() -> None:
    workload = generate_workload(100, 300)
    peer = NaivePeer()
    peer.translate(workload)
    peer.load()
    items = peer.prepare(workload.requests)
    assert peer.decide_batch(items) == [peer.decide(item) for item in items]


def test_cedar_agrees_with_naive_loop_without_missing_attributes() -> None:
    pytest.importorskip("cedarpy")
    from benchmarks.peers import CedarPeer

    workload = generate_workload(150, 600, missing_rate=0.0)
    report = compare("cedarpy", _reference(workload), _answers(CedarPeer(), workload))
    assert report.checked == 600
    assert report.mismatches == ()


def test_cedar_mismatches_are_only_documented_ones() -> None:
    pytest.importorskip("cedarpy")
    from benchmarks.peers import CedarPeer

    workload = generate_workload(300, 600, seed=11, missing_rate=0.3)
    report = compare("cedarpy", _reference(workload), _answers(CedarPeer(), workload))
    assert report.unexplained == ()
    assert set(report.explained) == {"cedar_skips_erroring_forbid"}


def test_casbin_mismatches_are_only_documented_ones() -> None:
    pytest.importorskip("casbin")
    from benchmarks.peers import CasbinPeer

    workload = generate_workload(30, 300, seed=5, missing_rate=0.3)
    report = compare("pycasbin", _reference(workload), _answers(CasbinPeer(), workload))
    assert report.unexplained == ()
    assert set(report.explained) == {"casbin_raises_on_missing_attribute"}


def test_ripl_agrees_with_naive_loop_including_missing_attributes() -> None:
    ripl = pytest.importorskip("ripl")
    if not hasattr(ripl, "load"):
        pytest.skip("ripl.load does not exist yet")
    from benchmarks.ripl_peer import RiplPeer

    workload = generate_workload(120, 400, seed=13, missing_rate=0.2)
    report = compare("ripl", _reference(workload), _answers(RiplPeer(), workload))
    assert report.mismatches == ()


def test_every_explanation_is_documented() -> None:
    assert {"cedar_skips_erroring_forbid", "casbin_raises_on_missing_attribute"} <= set(
        SEMANTIC_DIFFERENCES
    )


def test_ripl_translation_declares_every_action_and_rule() -> None:
    workload = generate_workload(50, 20)
    source = ripl_source(workload)
    assert all(f" {rule.id}:" in source for rule in workload.rules)
    assert all(f"actions {group} {{" in source for group in workload.groups)


def test_ripl_request_carries_chain_and_owners() -> None:
    workload = generate_workload(50, 200)
    request = next(r for r in workload.requests if len(r.chain) == 2)
    as_dict = ripl_request(request, workload.entities)
    assert len(as_dict["delegation"]) == 2
    assert as_dict["delegation"][0]["from"]["type"] == "User"
    listed = {(e["type"], e["id"]) for e in as_dict["entities"]}
    assert (request.chain[0].source.type, request.chain[0].source.id) in listed
