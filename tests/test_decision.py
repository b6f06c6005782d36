"""Every branch of the M-of-N decision (DESIGN §5), with the prior art's failure cases."""

from __future__ import annotations

import hashlib

from tests import factories as f
from trustix_p2p.core import nix32
from trustix_p2p.core.decision import Builder, decide
from trustix_p2p.core.entry import Entry

PATH = f.entry(1).out_path
GOOD = f.entry(1)
BAD = f.entry(1, nar_seed="evil")


def builders(*names: str) -> list[Builder]:
    return [Builder(n, hashlib.sha256(n.encode()).digest()) for n in names]


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def votes(**by_name: list[Entry]) -> dict[bytes, list[Entry]]:
    return {key(n): v for n, v in by_name.items()}


def test_three_of_four_agreeing_is_trusted_and_the_fourth_dissents() -> None:
    d = decide(PATH, builders("a", "b", "c", "d"), 3, votes(a=[GOOD], b=[GOOD], c=[BAD], d=[GOOD]))
    assert d.trusted and d.nar_hash == GOOD.nar_hash and d.entry == GOOD
    assert d.agreed == ("a", "b", "d")
    assert d.dissented == (("c", BAD.nar_hash),)
    assert d.missing == () and d.excluded == () and d.conflicting == ()


def test_one_of_four_answering_with_m_3_is_not_trusted() -> None:
    # The prior art counted a percentage over the builders that answered: 1/1 = "100 %".
    d = decide(PATH, builders("a", "b", "c", "d"), 3, votes(a=[GOOD]))
    assert not d.trusted and d.nar_hash is None and d.entry is None
    assert d.agreed == ("a",) and d.missing == ("b", "c", "d")


def test_three_of_three_agreeing_is_exactly_three_votes() -> None:
    bs = builders("a", "b", "c")
    assert decide(PATH, bs, 3, votes(a=[GOOD], b=[GOOD], c=[GOOD])).trusted
    assert not decide(PATH, bs, 4, votes(a=[GOOD], b=[GOOD], c=[GOOD])).trusted


def test_a_tie_at_m_2_of_4_is_a_conflict_and_not_trusted() -> None:
    d = decide(PATH, builders("a", "b", "c", "d"), 2, votes(a=[GOOD], b=[BAD], c=[GOOD], d=[BAD]))
    assert not d.trusted and d.nar_hash is None
    assert d.agreed == ("a", "c") and {n for n, _ in d.dissented} == {"b", "d"}


def test_a_builder_listed_twice_under_two_names_counts_once() -> None:
    twice = [Builder("a", key("a")), Builder("a-again", key("a")), *builders("b")]
    d = decide(PATH, twice, 2, votes(a=[GOOD]))
    assert not d.trusted and d.agreed == ("a",) and d.missing == ("b",)


def test_an_excluded_builders_vote_is_not_counted() -> None:
    d = decide(
        PATH,
        builders("a", "b", "c"),
        2,
        votes(a=[GOOD], b=[GOOD], c=[GOOD]),
        excluded={key("a"): "evidence: split-view", key("b"): "evidence: split-view"},
    )
    assert not d.trusted
    assert d.excluded == (("a", "evidence: split-view"), ("b", "evidence: split-view"))
    assert d.agreed == ("c",)


def test_a_builder_with_two_hashes_for_the_path_casts_no_vote() -> None:
    d = decide(PATH, builders("a", "b", "c"), 2, votes(a=[GOOD, BAD], b=[GOOD], c=[GOOD]))
    assert d.trusted and d.conflicting == ("a",) and d.agreed == ("b", "c")
    # The same entry logged twice is one vote, not a conflict.
    d = decide(PATH, builders("a", "b"), 2, votes(a=[GOOD, GOOD], b=[GOOD]))
    assert d.trusted and d.conflicting == ()


def test_entries_about_other_paths_are_ignored() -> None:
    other = f.entry(2)
    d = decide(PATH, builders("a", "b"), 1, votes(a=[other], b=[GOOD]))
    assert d.trusted and d.missing == ("a",)


def test_nobody_answering_is_not_trusted() -> None:
    d = decide(PATH, builders("a", "b"), 1, {})
    assert not d.trusted and d.agreed == () and d.missing == ("a", "b")


def test_the_json_form_has_exactly_the_documented_keys() -> None:
    d = decide(PATH, builders("a", "b", "c"), 2, votes(a=[GOOD], b=[GOOD], c=[BAD]))
    assert d.to_json() == {
        "store_path": PATH,
        "trusted": True,
        "nar_hash": "sha256:" + nix32.encode(GOOD.nar_hash),
        "agreed": ["a", "b"],
        "dissented": [{"name": "c", "nar_hash": "sha256:" + nix32.encode(BAD.nar_hash)}],
        "missing": [],
        "excluded": [],
        "conflicting": [],
    }
