"""Evidence of misbehaviour (DESIGN §4): only real signatures and real proofs make it valid.

Every case is built from real keys, real RFC 9162 trees and real signed checkpoints, and each
invalid case changes exactly one thing about a valid one, so each test can fail only for the
reason it names.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import merkle_reference
from trustix_p2p import cli
from trustix_p2p.core import evidence, merkle, wire
from trustix_p2p.core.checkpoint import (
    Checkpoint,
    add_cosignatures,
    cosign,
    origin_for,
    sign_checkpoint,
    verify_checkpoint,
)
from trustix_p2p.core.evidence import (
    EvidenceMessage,
    InconsistentHistory,
    SplitView,
    describe_evidence,
    evidence_id,
    evidence_log_id,
    from_document,
    from_json,
    from_message,
    inconsistent_history,
    split_view,
    to_document,
    to_json,
    to_message,
    verify_evidence,
)
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.note import sign_note
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

LOG = PrivateKey.from_seed(hashlib.sha256(b"evidence test log").digest())
OTHER = PrivateKey.from_seed(hashlib.sha256(b"evidence test other log").digest())
WITNESS = PrivateKey.from_seed(hashlib.sha256(b"evidence test witness").digest())
WITNESS_2 = PrivateKey.from_seed(hashlib.sha256(b"evidence test witness 2").digest())
PK = LOG.public_key
T0 = 1_700_000_000


class Tree:
    """An in-memory RFC 9162 tree over a list of leaves; nodes via the naive reference MTH."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves

    def node(self, level: int, index: int) -> bytes:
        return merkle_reference.mth(self.leaves[index << level : (index + 1) << level])

    def root(self, size: int) -> bytes:
        root = merkle.root_hash(size, self.node)
        assert root == merkle_reference.mth(self.leaves[:size])
        return root

    def proof(self, m: int, n: int) -> list[bytes]:
        proof = merkle.consistency_proof(m, n, self.node)
        assert proof == merkle_reference.proof(m, self.leaves[:n])
        return proof


HONEST = Tree([b"honest leaf %d" % i for i in range(40)])
FORKED = Tree([b"forked leaf %d" % i for i in range(40)])


def note(size: int, root: bytes, time: int = T0, key: PrivateKey = LOG) -> bytes:
    cp = Checkpoint(origin_for(key.public_key.log_id()), size, root, time)
    return sign_checkpoint(cp, key).note


def cosigned(note_bytes: bytes, *witnesses: PrivateKey) -> bytes:
    signed = verify_checkpoint(note_bytes, PK)
    cosigs = [
        cosign(signed.checkpoint, f"witness.example/w{i}", w, T0 + 50 + i)
        for i, w in enumerate(witnesses)
    ]
    return add_cosignatures(signed, cosigs)


A5 = note(5, HONEST.root(5))
B5 = note(5, FORKED.root(5), T0 + 10)


def fork(m: int, n: int) -> InconsistentHistory:
    """The log signed FORKED's size-m tree, then HONEST's size-n tree: a forked history."""
    return inconsistent_history(
        PK,
        note(m, FORKED.root(m)),
        note(n, HONEST.root(n), T0 + 60),
        HONEST.root(m),
        HONEST.proof(m, n),
    )


def replace(ev: InconsistentHistory, **changes: Any) -> InconsistentHistory:
    """`ev` with some fields changed and NOT re-verified (that is what the tests do next)."""
    return attrs.evolve(ev, **changes)


def invalid(ev: SplitView | InconsistentHistory, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_evidence(ev)


# --- split view --------------------------------------------------------------------------------


def test_a_split_view_of_two_signed_roots_of_one_size_is_valid_in_either_order() -> None:
    ab, ba = split_view(PK, A5, B5), split_view(PK, B5, A5)
    assert ab.checkpoints == (A5, B5) and ba.checkpoints == (B5, A5)
    assert evidence_id(ab) == evidence_id(ba)
    assert evidence_log_id(ab) == hashlib.sha256(PK.raw).digest()
    assert describe_evidence(ab) == (
        f"split-view evidence against log {PK.log_id_hex()} (key {PK.to_base64()}): "
        "two checkpoints of size 5 with different roots"
    )


def test_cosignature_lines_neither_break_a_split_view_nor_change_its_id() -> None:
    plain = split_view(PK, A5, B5)
    a_cosigned = cosigned(A5, WITNESS, WITNESS_2)
    assert a_cosigned.startswith(A5) and a_cosigned != A5
    for other in (
        split_view(PK, a_cosigned, B5),
        split_view(PK, B5, a_cosigned),
        split_view(PK, cosigned(A5, WITNESS), cosigned(B5, WITNESS_2)),
    ):
        assert evidence_id(other) == evidence_id(plain)
    # The notes travel exactly as signed, cosignatures and all.
    assert to_document(split_view(PK, a_cosigned, B5))["checkpoints"][0] == a_cosigned.decode()


def test_evidence_id_is_sha256_of_the_documented_msgpack_array() -> None:
    ev = split_view(PK, B5, A5)
    packed: bytes = msgpack.packb(
        [1, "split-view", PK.raw, sorted([A5, B5]), None, []], use_bin_type=True
    )
    assert evidence_id(ev) == hashlib.sha256(packed).hexdigest()
    ih = fork(3, 7)
    packed = msgpack.packb(
        [
            1,
            "inconsistent-history",
            PK.raw,
            list(ih.checkpoints),
            ih.prefix_root,
            HONEST.proof(3, 7),
        ],
        use_bin_type=True,
    )
    assert evidence_id(ih) == hashlib.sha256(packed).hexdigest()
    ids = {evidence_id(ev), evidence_id(ih), evidence_id(fork(3, 8)), evidence_id(fork(4, 7))}
    assert len(ids) == 4 and all(len(i) == 64 and i == i.lower() for i in ids)


def test_split_view_with_a_key_of_another_log_is_invalid() -> None:
    with pytest.raises(
        VerificationError, match=r"checkpoints\[0\] has origin .* not this key's log"
    ):
        split_view(OTHER.public_key, A5, B5)


def test_split_view_with_a_checkpoint_of_another_log_is_invalid() -> None:
    other_log = note(5, FORKED.root(5), key=OTHER)
    invalid(SplitView(PK, (A5, other_log)), r"checkpoints\[1\] has origin")
    # The log's key signing a note with another log's origin proves nothing about its own log.
    other_origin = Checkpoint(origin_for(OTHER.public_key.log_id()), 5, FORKED.root(5), T0)
    foreign = sign_note(other_origin.body_text(), origin_for(PK.log_id()), LOG)
    invalid(SplitView(PK, (A5, foreign)), r"checkpoints\[1\] has origin")


def test_split_view_with_a_tampered_signature_is_invalid() -> None:
    body_a, _ = A5.split(b"\n\n")
    _, sig_b = B5.split(b"\n\n")
    invalid(
        SplitView(PK, (A5, body_a + b"\n\n" + sig_b)), r"checkpoints\[1\] is not validly signed"
    )
    # A signature under the log's name by some other key does not count either.
    cp = Checkpoint(origin_for(PK.log_id()), 5, FORKED.root(5), T0)
    forged = sign_note(cp.body_text(), cp.origin, OTHER)
    invalid(SplitView(PK, (forged, A5)), r"checkpoints\[0\] is not validly signed")


def test_split_view_of_a_note_that_is_not_a_checkpoint_is_invalid() -> None:
    invalid(SplitView(PK, (A5, b"not a note")), r"checkpoints\[1\] is not a checkpoint note")


def test_identical_checkpoints_are_no_split_view_even_with_other_cosignatures() -> None:
    with pytest.raises(VerificationError, match="identical bodies"):
        split_view(PK, A5, A5)
    invalid(SplitView(PK, (A5, cosigned(A5, WITNESS))), "identical bodies")


def test_equal_roots_signed_at_different_times_are_no_split_view() -> None:
    invalid(SplitView(PK, (A5, note(5, HONEST.root(5), T0 + 99))), "same root")


def test_a_split_view_needs_equal_sizes() -> None:
    invalid(SplitView(PK, (A5, note(6, FORKED.root(6)))), r"differ in size \(5 and 6\)")


# --- inconsistent history ----------------------------------------------------------------------

SIZES = [(1, 2), (1, 5), (2, 3), (2, 9), (3, 4), (3, 8), (4, 5), (4, 7), (4, 8), (5, 13)]
SIZES += [(6, 7), (7, 16), (8, 9), (8, 33), (16, 17), (13, 40)]


@pytest.mark.parametrize(("m", "n"), SIZES)
def test_a_forked_history_is_valid_inconsistent_history_evidence(m: int, n: int) -> None:
    ev = fork(m, n)
    assert ev.prefix_root != FORKED.root(m)
    assert describe_evidence(ev).startswith(
        f"inconsistent-history evidence against log {PK.log_id_hex()} (key {PK.to_base64()}): "
        f"the size-{n} checkpoint's tree does not extend the size-{m} checkpoint"
    )


@pytest.mark.parametrize(("m", "n"), [(1, 2), (2, 9), (4, 7), (8, 33), (16, 17)])
def test_for_m_a_power_of_two_prefix_root_is_what_the_proof_checks(m: int, n: int) -> None:
    # The RFC proof omits the old root here, so the proof is the same whichever size-m root
    # one claims; only prefix_root ties it to the newer tree.  Any other prefix_root fails.
    ev = fork(m, n)
    assert len(ev.consistency_proof) == len(HONEST.proof(m, n))
    invalid(replace(ev, prefix_root=hashlib.sha256(b"made up").digest()), "does not verify")
    # ... and claiming the older checkpoint's own root as prefix_root is refused outright.
    invalid(replace(ev, prefix_root=FORKED.root(m)), "history is consistent")


def test_a_rollback_is_inconsistent_history_ordered_by_size() -> None:
    bigger = note(8, HONEST.root(8), T0)
    smaller_later = note(5, FORKED.root(5), T0 + 3600)  # signed an hour later, a different past
    ev = inconsistent_history(PK, smaller_later, bigger, HONEST.root(5), HONEST.proof(5, 8))
    assert to_document(ev)["checkpoints"] == [smaller_later.decode(), bigger.decode()]
    # Ordering by signing time instead is refused.
    invalid(replace(ev, checkpoints=(bigger, smaller_later)), r"\(size 8\) must be smaller")


def test_an_honest_history_is_no_evidence() -> None:
    older, newer = note(5, HONEST.root(5)), note(9, HONEST.root(9), T0 + 5)
    with pytest.raises(VerificationError, match="prefix_root equals the size-5 checkpoint's root"):
        inconsistent_history(PK, older, newer, HONEST.root(5), HONEST.proof(5, 9))


def test_m_at_least_n_is_invalid() -> None:
    ev = fork(5, 9)
    invalid(replace(ev, checkpoints=ev.checkpoints[::-1]), r"\(size 9\) must be smaller")
    same = (note(5, FORKED.root(5)), note(5, HONEST.root(5), T0 + 1))
    invalid(replace(ev, checkpoints=same), r"\(size 5\) must be smaller .* \(size 5\)")


def test_a_size_0_older_checkpoint_is_never_evidence() -> None:
    empty = note(0, merkle.EMPTY_ROOT)
    invalid(InconsistentHistory(PK, (empty, note(3, HONEST.root(3))), HONEST.root(1), ()), "size 0")


def test_a_bogus_proof_is_invalid() -> None:
    ev = fork(5, 13)
    proof = list(ev.consistency_proof)
    flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    for bogus in (
        [flipped, *proof[1:]],
        proof[:-1],
        [*proof, proof[0]],
        [],
        HONEST.proof(5, 12),
        proof[::-1],
        [h[:31] for h in proof],
    ):
        invalid(replace(ev, consistency_proof=tuple(bogus)), "consistency proof .* does not verify")
    # A proof of a different newer tree does not verify against the signed newer root.
    invalid(replace(ev, consistency_proof=tuple(FORKED.proof(5, 13))), "does not verify")


def test_a_proof_too_long_or_a_bad_prefix_root_is_invalid() -> None:
    ev = fork(5, 13)
    invalid(replace(ev, consistency_proof=(ev.prefix_root,) * 65), "65 hashes, more than 64")
    invalid(replace(ev, prefix_root=ev.prefix_root[:31]), "prefix_root must be 32 bytes")


def test_inconsistent_history_checks_both_signatures_and_origins() -> None:
    ev = fork(3, 6)
    older, newer = ev.checkpoints
    body, _ = newer.split(b"\n\n")
    _, other_sig = older.split(b"\n\n")
    invalid(
        replace(ev, checkpoints=(older, body + b"\n\n" + other_sig)), r"checkpoints\[1\] is not"
    )
    invalid(replace(ev, public_key=OTHER.public_key), r"checkpoints\[0\] has origin")
    other_log = note(3, FORKED.root(3), key=OTHER)
    invalid(replace(ev, checkpoints=(other_log, newer)), r"checkpoints\[0\] has origin")


# --- the JSON document -------------------------------------------------------------------------


def test_split_view_document_is_exactly_design_section_4() -> None:
    ev = split_view(PK, A5, B5)
    expected = {
        "version": 1,
        "kind": "split-view",
        "public_key": base64.b64encode(PK.raw).decode(),
        "checkpoints": [A5.decode(), B5.decode()],
    }
    doc = to_document(ev)
    assert doc == expected and list(doc) == list(expected)
    assert to_json(ev) == json.dumps(expected, indent=2) + "\n"
    assert from_json(to_json(ev)) == ev
    assert from_json(to_json(ev).encode()) == ev
    # The one-line spelling of DESIGN §4 reads the same.
    assert from_json(json.dumps(expected)) == ev


def test_inconsistent_history_document_is_exactly_design_section_4() -> None:
    ev = fork(4, 7)
    doc = to_document(ev)
    assert list(doc) == [
        "version",
        "kind",
        "public_key",
        "checkpoints",
        "prefix_root",
        "consistency_proof",
    ]
    assert doc["kind"] == "inconsistent-history"
    assert doc["prefix_root"] == base64.b64encode(HONEST.root(4)).decode()
    assert doc["consistency_proof"] == [base64.b64encode(h).decode() for h in HONEST.proof(4, 7)]
    assert doc["checkpoints"] == [c.decode() for c in ev.checkpoints]
    assert from_document(json.loads(to_json(ev))) == ev
    verify_evidence(from_json(to_json(ev)))


def good_split_doc() -> dict[str, Any]:
    return to_document(split_view(PK, A5, B5))


def good_history_doc() -> dict[str, Any]:
    return to_document(fork(3, 7))


B64_31 = base64.b64encode(b"x" * 31).decode()
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# 32 bytes leave 2 unused bits in the last base64 character: set one, same bytes, other text.
NOT_CANONICAL = PK.to_base64()[:-2] + _ALPHABET[_ALPHABET.index(PK.to_base64()[-2]) ^ 1] + "="


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"version": True}, "version: expected the integer 1"),
        ({"version": "1"}, "version: expected the integer 1"),
        ({"version": 1.0}, "version: expected the integer 1"),
        ({"kind": "fork"}, "kind 'fork' is not one of"),
        ({"kind": None}, "kind NoneType is not one of"),
        ({"extra": 1}, "unknown key 'extra'"),
        ({"prefix_root": B64_31}, "unknown key 'prefix_root' for kind split-view"),
        ({"public_key": 5}, "public_key: expected a string"),
        ({"public_key": "not base64!"}, "public_key: invalid base64"),
        ({"public_key": " " + PK.to_base64()}, "public_key: invalid base64"),
        ({"public_key": NOT_CANONICAL}, "public_key: non-canonical base64"),
        ({"public_key": B64_31}, "public_key: expected 32 bytes, got 31"),
        ({"checkpoints": A5.decode()}, "checkpoints: expected a list"),
        ({"checkpoints": [A5.decode()]}, "checkpoints: expected 2 notes, got 1"),
        ({"checkpoints": [A5.decode()] * 3}, "checkpoints: expected 2 notes, got 3"),
        ({"checkpoints": [A5.decode(), 5]}, r"checkpoints\[1\]: expected note text"),
        ({"checkpoints": [A5.decode(), "\ud800"]}, r"checkpoints\[1\]: note is not valid UTF-8"),
        ({"checkpoints": ["hello\n", A5.decode()]}, r"checkpoints\[0\]: note has no blank line"),
        ({"checkpoints": [A5.decode(), "x" * 20000]}, r"checkpoints\[1\]: note is 20000 bytes"),
    ],
)
def test_from_document_refuses_a_malformed_split_view_naming_the_field(
    change: dict[str, Any], match: str
) -> None:
    doc = good_split_doc()
    doc.update(change)
    with pytest.raises(DecodeError, match=match):
        from_document(doc)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"prefix_root": None}, "prefix_root: expected a base64 string"),
        ({"prefix_root": B64_31}, "prefix_root: expected 32 bytes, got 31"),
        ({"prefix_root": "@@@@"}, "prefix_root: invalid base64"),
        ({"consistency_proof": "x"}, "consistency_proof: expected a list"),
        ({"consistency_proof": [B64_31]}, r"consistency_proof\[0\]: expected 32 bytes"),
        ({"consistency_proof": [1]}, r"consistency_proof\[0\]: expected a base64 string"),
        (
            {"consistency_proof": [base64.b64encode(bytes(32)).decode()] * 65},
            "consistency_proof: 65 hashes, more than 64",
        ),
    ],
)
def test_from_document_refuses_a_malformed_inconsistent_history_naming_the_field(
    change: dict[str, Any], match: str
) -> None:
    doc = good_history_doc()
    doc.update(change)
    with pytest.raises(DecodeError, match=match):
        from_document(doc)


@pytest.mark.parametrize("key", ["version", "kind", "public_key", "checkpoints"])
def test_from_document_refuses_a_missing_key(key: str) -> None:
    for doc in (good_split_doc(), good_history_doc()):
        del doc[key]
        with pytest.raises(DecodeError, match=key if key in ("version", "kind") else "missing"):
            from_document(doc)


@pytest.mark.parametrize("key", ["prefix_root", "consistency_proof"])
def test_from_document_refuses_inconsistent_history_without_its_proof(key: str) -> None:
    doc = good_history_doc()
    del doc[key]
    with pytest.raises(DecodeError, match=f"missing key '{key}'"):
        from_document(doc)


def test_from_document_does_not_verify() -> None:
    # Malformed is a DecodeError; well-formed but false is only found by verify_evidence.
    doc = good_split_doc()
    doc["public_key"] = OTHER.public_key.to_base64()
    ev = from_document(doc)
    with pytest.raises(VerificationError):
        verify_evidence(ev)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ('{"version": NaN}', "NaN is not JSON"),
        ('{"version": Infinity}', "Infinity is not JSON"),
        ('{"version": 1, "version": 1}', "duplicate key 'version'"),
        ("[]", "must be a JSON object, got list"),
        ("null", "must be a JSON object, got NoneType"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid JSON"),
        (" " * (1 << 20) + "{}", "larger than 1048576 bytes"),
    ],
)
def test_from_json_refuses_what_is_not_one_evidence_object(text: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        from_json(text)


def test_from_json_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(DecodeError, match="not UTF-8"):
        from_json(b'{"kind": "\xff"}')


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["split-view", "inconsistent-history", PK.to_base64(), A5.decode()]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*evidence.to_document(fork(2, 3)), "other"]) | st.text(max_size=5),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


def only_decode_errors(obj: object) -> None:
    try:
        ev = from_document(obj)
    except DecodeError:
        return
    # Whatever decodes can be identified and verified without any other error.
    evidence_id(ev)
    with contextlib.suppress(VerificationError):
        verify_evidence(ev)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_from_document_of_random_json_only_raises_decode_error(obj: object) -> None:
    only_decode_errors(obj)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([good_split_doc(), good_history_doc()]),
    st.sampled_from([*good_history_doc(), "other"]),
    JSONISH,
)
def test_from_document_of_a_mutated_document_only_raises_decode_error(
    doc: dict[str, Any], key: str, value: object
) -> None:
    mutated = dict(doc)
    mutated[key] = value
    only_decode_errors(mutated)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_from_json_of_random_input_only_raises_decode_error(data: str | bytes) -> None:
    with pytest.raises(DecodeError):
        from_json(data)


# --- the wire message --------------------------------------------------------------------------


def test_evidence_message_is_registered_as_type_24() -> None:
    assert wire.REGISTRY.types()[24] is EvidenceMessage
    assert EvidenceMessage.wire_type == 24


@pytest.mark.parametrize(
    "ev",
    [split_view(PK, A5, cosigned(B5, WITNESS)), fork(1, 2), fork(4, 8), fork(13, 40)],
    ids=["split-view", "ih-1-2", "ih-4-8", "ih-13-40"],
)
def test_evidence_round_trips_through_the_wire(ev: SplitView | InconsistentHistory) -> None:
    framed = wire.encode_message(to_message(ev))
    fields = msgpack.unpackb(framed[4:])
    prefix = ev.prefix_root if isinstance(ev, InconsistentHistory) else None
    proof = list(ev.consistency_proof) if isinstance(ev, InconsistentHistory) else []
    assert fields == [24, ev.kind, PK.raw, list(ev.checkpoints), prefix, proof]
    decoded = wire.decode_body(framed[4:])
    assert isinstance(decoded, EvidenceMessage)
    back = from_message(decoded)
    assert back == ev
    verify_evidence(back)
    assert evidence_id(back) == evidence_id(ev)


def wire_body(*fields: object) -> bytes:
    body: bytes = msgpack.packb([24, *fields], use_bin_type=True)
    return body


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (["split-view", PK.raw[:31], [A5, B5], None, []], r"public_key: expected exactly 32"),
        (["split-view", PK.raw, [A5], None, []], r"checkpoints: list of 1 items outside \[2, 2\]"),
        (["split-view", PK.raw, [A5, B5, A5], None, []], "list of 3 items"),
        (["split-view", PK.raw, [A5, b""], None, []], r"checkpoints\[1\]: 0 bytes outside"),
        (["split-view", PK.raw, [A5, "text"], None, []], r"checkpoints\[1\]: expected bytes"),
        (["split-view", PK.raw, [A5, B5], bytes(31), []], "prefix_root: expected exactly 32"),
        (["x" * 33, PK.raw, [A5, B5], None, []], "kind: string of 33 characters"),
        (["inconsistent-history", PK.raw, [A5, B5], bytes(32), [bytes(32)] * 65], "65 items"),
        (["inconsistent-history", PK.raw, [A5, B5], bytes(32), [bytes(31)]], r"proof\[0\]"),
        (["split-view", PK.raw, [A5, B5], None], "expected 5 fields, got 4"),
    ],
)
def test_the_wire_decoder_refuses_evidence_of_the_wrong_shape(
    fields: list[object], match: str
) -> None:
    with pytest.raises(DecodeError, match=match):
        wire.decode_body(wire_body(*fields))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (EvidenceMessage("forgery", PK.raw, (A5, B5), None, ()), "unknown evidence kind"),
        (EvidenceMessage("split-view", PK.raw, (A5, B5), bytes(32), ()), "split view carries"),
        (EvidenceMessage("split-view", PK.raw, (A5, B5), None, (bytes(32),)), "split view"),
        (EvidenceMessage("inconsistent-history", PK.raw, (A5, B5), None, ()), "needs one"),
        (EvidenceMessage("split-view", PK.raw, (A5, b"junk"), None, ()), r"checkpoints\[1\]"),
    ],
)
def test_from_message_refuses_fields_that_do_not_fit_the_kind(
    message: EvidenceMessage, match: str
) -> None:
    decoded = wire.decode_body(wire.encode_message(message)[4:])
    assert isinstance(decoded, EvidenceMessage)
    with pytest.raises(DecodeError, match=match):
        from_message(decoded)


def test_the_wire_encoder_refuses_what_a_peer_would_refuse() -> None:
    with pytest.raises(LocalProtocolError, match="checkpoints"):
        wire.encode_message(EvidenceMessage("split-view", PK.raw, (A5, B5, A5), None, ()))


# --- the CLI -----------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_verify_prints_valid_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "sv.json", to_json(split_view(PK, A5, B5)))
    assert cli.main(["evidence", "verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"valid: split-view evidence against log {PK.log_id_hex()} (key {PK.to_base64()}): "
        "two checkpoints of size 5 with different roots\n"
    )
    assert err == ""
    path = write(tmp_path, "ih.json", to_json(fork(4, 7)))
    assert cli.main(["evidence", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("valid: inconsistent-history evidence against log")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "invalid: evidence document is not valid JSON"),
        (json.dumps({"version": 2}), "invalid: evidence version 2 is not supported"),
        (to_json(SplitView(PK, (A5, A5))), "invalid: the two checkpoints are the same"),
        (to_json(SplitView(OTHER.public_key, (A5, B5))), r"invalid: checkpoints\[0\] has origin"),
    ],
)
def test_cli_verify_prints_invalid_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, match: str
) -> None:
    path = write(tmp_path, "bad.json", text)
    assert cli.main(["evidence", "verify", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert re.match(match, out)
    assert err == ""


def test_cli_verify_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = to_json(fork(2, 3)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert cli.main(["evidence", "verify", "-"]) == 0
    assert capsys.readouterr().out.startswith("valid: inconsistent-history")


def test_cli_verify_of_an_unreadable_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert cli.main(["evidence", "verify", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == f"trustix-p2p: error: cannot read evidence file {missing}: No such file or directory\n"
    )
    assert cli.main(["evidence", "verify", str(tmp_path)]) == 2
    assert "Is a directory" in capsys.readouterr().err


def test_cli_verify_as_a_program(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", to_json(fork(8, 9)))
    bad = write(tmp_path, "bad.json", to_json(replace(fork(8, 9), consistency_proof=())))
    results = {}
    for name, path in (("good", good), ("bad", bad), ("missing", tmp_path / "nope.json")):
        proc = subprocess.run(
            [sys.executable, "-m", "trustix_p2p", "evidence", "verify", str(path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
        results[name] = (proc.returncode, proc.stdout, proc.stderr)
    assert results["good"][0] == 0 and results["good"][1].startswith("valid: inconsistent-history")
    assert results["bad"][0] == 1 and results["bad"][1].startswith("invalid: the consistency proof")
    assert results["missing"][0] == 2 and results["missing"][1] == ""
    assert results["missing"][2].startswith("trustix-p2p: error: cannot read evidence file")
