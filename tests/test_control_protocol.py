"""Control-socket codec: round trips, and arbitrary bytes only ever raise DecodeError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.control import protocol as p
from trustix_p2p.errors import DecodeError, RemoteProtocolError


@pytest.mark.parametrize(
    "request_",
    [
        p.Submit((b"a", b"bc")),
        p.StatusRequest(),
        p.CheckpointRequest(None),
        p.CheckpointRequest(bytes(32)),
        p.LookupRequest("/nix/store/x"),
    ],
)
def test_requests_round_trip(request_: p.Request) -> None:
    framed = p.encode_request(request_)
    assert p.frame_length(framed[:4]) == len(framed) - 4
    assert p.decode_request(framed[4:]) == request_


def test_status_and_hits_round_trip() -> None:
    s = p.Status(bytes(32), bytes(32), 5, 4, 17, 0, 2, ("127.0.0.1:1",))
    assert p.status_from_wire(p.status_to_wire(s)) == s
    h = p.LookupHit(bytes(32), 3, b"leaf", b"note", (bytes(32),))
    assert p.hits_from_wire([p.hit_to_wire(h)]) == [h]


def test_error_replies_raise_with_the_nodes_message() -> None:
    with pytest.raises(RemoteProtocolError, match="nope"):
        p.decode_reply(p.encode_error("nope")[4:])


def test_oversized_frames_are_refused_before_reading_them() -> None:
    with pytest.raises(RemoteProtocolError):
        p.frame_length((p.MAX_FRAME + 1).to_bytes(4, "big"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    for decode in (p.decode_request, p.decode_reply):
        with contextlib.suppress(DecodeError, RemoteProtocolError):
            decode(data)


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
    for decode in (p.decode_request, p.decode_reply):
        with contextlib.suppress(DecodeError, RemoteProtocolError):
            decode(data)
    for fn in (p.status_from_wire, p.hits_from_wire):
        with contextlib.suppress(DecodeError):
            fn(obj)
