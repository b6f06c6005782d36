"""Control-socket codec: round trips, one frame reader, and arbitrary bytes only ever raise
DecodeError (or the node's own refusal)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.control import protocol as p
from trustix_p2p.core.lean import control as lean
from trustix_p2p.errors import (
    DecodeError,
    LocalProtocolError,
    NodeUnavailableError,
    RemoteProtocolError,
)

REQUESTS = [
    p.Submit((b"a", b"bc")),
    p.StatusRequest(),
    p.CheckpointRequest(None),
    p.CheckpointRequest(bytes(32)),
    p.LookupRequest("/nix/store/x"),
    p.RetireRequest(bytes(range(32))),
]


def one_frame(framed: bytes) -> bytes:
    reader = p.frame_reader()
    reader.feed(framed)
    body = reader.next_frame()
    assert body is not None and reader.at_boundary
    return bytes(body)


@pytest.mark.parametrize("request_", REQUESTS)
def test_requests_round_trip(request_: p.Request) -> None:
    assert p.decode_request(one_frame(p.encode_request(request_))) == request_


def test_the_hooks_submit_frame_is_the_declarative_one() -> None:
    leaves = [b"a", b"bc" * 100]
    assert lean.submit_request(leaves) == p.encode_request(p.Submit(tuple(leaves)))


STATUS = p.Status(bytes(32), None, 5, 4, 17, 0, 2, ("127.0.0.1:1",))
HIT = p.LookupHit(bytes(32), 3, b"leaf", b"note", (bytes(32),))


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (p.Submit((b"a",)), p.SubmitReply((7,))),
        (p.StatusRequest(), p.StatusReply(STATUS)),
        (p.CheckpointRequest(None), p.CheckpointReply(b"note\n")),
        (p.CheckpointRequest(None), p.CheckpointReply(None)),
        (p.LookupRequest("x"), p.LookupReply((HIT, p.LookupHit(bytes(32), 4, b"l", None, None)))),
        (p.LookupRequest("x"), p.Refused("nope")),
        (p.StatusRequest(), p.Unavailable("later")),
    ],
)
def test_replies_round_trip(request_: p.Request, reply: p.Reply) -> None:
    assert p.decode_reply(request_, one_frame(p.encode_reply(reply))) == reply


def test_refusals_raise_with_the_nodes_message() -> None:
    refused = one_frame(p.encode_reply(p.Refused("nope")))
    with pytest.raises(RemoteProtocolError, match="nope"):
        p.decode_ok(p.StatusRequest(), refused)
    with pytest.raises(RemoteProtocolError, match="nope"):
        lean.submit_indices(refused, 1)
    later = one_frame(p.encode_reply(p.Unavailable("full disk")))
    with pytest.raises(NodeUnavailableError, match="full disk"):
        p.decode_ok(p.StatusRequest(), later)
    with pytest.raises(NodeUnavailableError, match="full disk"):
        lean.submit_indices(later, 1)


def test_a_reply_to_one_request_is_not_read_as_another() -> None:
    body = one_frame(p.encode_reply(p.SubmitReply((1,))))
    with pytest.raises(DecodeError, match=r"control reply\.ok"):
        p.decode_reply(p.StatusRequest(), body)


def test_replies_that_break_their_spec_are_never_sent() -> None:
    with pytest.raises(LocalProtocolError):
        p.encode_reply(p.LookupReply((p.LookupHit(bytes(31), 0, b"l", None, None),)))
    # Long messages are cut to the limit rather than refused.
    assert len(p.Refused("x" * 10_000).message) == p.MAX_MESSAGE


def test_oversized_frames_are_refused_from_their_header() -> None:
    reader = p.frame_reader()
    reader.feed((p.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(DecodeError, match="control message of 16777217 bytes is above"):
        reader.next_frame()


def test_the_frame_reader_never_asks_for_bytes_of_the_next_frame() -> None:
    stream = p.encode_request(p.LookupRequest("a" * 50)) + p.encode_request(p.StatusRequest())
    reader = p.frame_reader()
    pos, bodies = 0, []
    while pos < len(stream):
        body = reader.next_frame()
        if body is not None:
            bodies.append(p.decode_request(body))
            continue
        take = min(reader.wanted(), 7)  # a slow stream: at most 7 bytes at a time
        reader.feed(stream[pos : pos + take])
        pos += take
        if reader.body_length is not None:
            assert pos <= 4 + 4 + 50 + 50 or len(bodies) == 1
    while (body := reader.next_frame()) is not None:
        bodies.append(p.decode_request(body))
    assert bodies == [p.LookupRequest("a" * 50), p.StatusRequest()]
    assert reader.at_boundary


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        p.decode_request(data)
    for request_ in REQUESTS:
        with contextlib.suppress(DecodeError, RemoteProtocolError, NodeUnavailableError):
            p.decode_ok(request_, data)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=6))
def test_random_msgpack_arrays_never_raise_anything_but_decode_error(obj: list[object]) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    with contextlib.suppress(DecodeError):
        p.decode_request(data)
    for request_ in REQUESTS:
        with contextlib.suppress(DecodeError, RemoteProtocolError, NodeUnavailableError):
            p.decode_ok(request_, data)


def _outcome(fn: object, *args: object) -> object:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except (DecodeError, RemoteProtocolError, NodeUnavailableError) as exc:
        return type(exc).__name__


submit_replies = st.one_of(
    st.tuples(
        st.sampled_from(["ok", "error", "unavailable", "other"]),
        st.one_of(
            st.lists(
                st.one_of(
                    st.integers(0, 2**63 - 1),
                    st.integers(2**63, 2**64 - 1),
                    st.integers(-5, -1),
                    st.booleans(),
                    st.none(),
                    st.floats(allow_nan=False),
                    st.binary(max_size=3),
                ),
                max_size=4,
            ),
            st.text(max_size=10),
            st.just("x" * (p.MAX_MESSAGE + 1)),
            st.none(),
        ),
    ).map(list),
    values,
)


@settings(max_examples=500, deadline=None)
@given(submit_replies, st.integers(0, 4))
def test_the_hooks_submit_reply_check_agrees_with_the_declarative_reply(
    obj: object, expected: int
) -> None:
    """The hook's lean check of a submit reply and `protocol.SubmitReply` give one answer."""
    data = msgpack.packb(obj, use_bin_type=True)

    def declarative(body: bytes, count: int) -> list[int]:
        reply = p.decode_ok(p.Submit((b"x",) * max(count, 1)), body)
        assert isinstance(reply, p.SubmitReply)
        if len(reply.indices) != count:
            raise DecodeError("malformed submit reply")
        return list(reply.indices)

    lean_outcome = _outcome(lean.submit_indices, data, expected)
    assert lean_outcome == _outcome(declarative, data, expected)
