"""The project's one frame format and its one reader: bytes in, frame bodies out.

Every stream the project speaks (peer messages inside Noise, DESIGN §6, and the control
socket) is a sequence of frames: a 4-byte big-endian length, then that many bytes of body.
`FrameReader` is the only code that splits a stream into frames.  It is sans-IO: the caller
reads from its socket, trio stream or Noise transport and feeds what it got; the peer's
`wire.MessageReader` decodes each body with a message registry, the control server and the
blocking control client with the control protocol.

Lean layer (see `trustix_p2p.core.lean`): no I/O, no attrs, no `typing` at run time.
"""

from __future__ import annotations

from trustix_p2p.errors import DecodeError, LocalProtocolError

__all__ = ["LENGTH_PREFIX_SIZE", "FrameReader", "frame_header"]

LENGTH_PREFIX_SIZE = 4


def frame_header(size: int) -> bytes:
    """The length prefix of a body of `size` bytes."""
    return size.to_bytes(LENGTH_PREFIX_SIZE, "big")


class FrameReader:
    """Splits a byte stream into frame bodies.

    Call `next_frame()`; when it returns None, `feed()` more bytes.  A length above `max_size`
    is refused (`DecodeError`, naming `what`) as soon as its 4 bytes arrive, so the reader
    never holds more than one maximal frame plus the last `feed`.  After any error the reader
    is unusable (the stream has lost its framing); so is it after `fail()`.

    A caller that must not read past what it has room for (the control server takes a memory
    budget for each body before reading it) reads at most `wanted()` bytes at a time: that is
    exactly what completes the current header or body, never bytes of the next frame.
    `body_length` is the size of the frame being read once its header is in.

    Frames that arrive whole inside one fed chunk are returned as views of that chunk, not
    copied; only a frame split across chunks is copied, into a reassembly buffer that grows in
    amortised linear time, so a 4 MiB frame fed in small chunks costs one copy, not one per
    chunk.  A returned view is valid until the next `feed`.
    """

    __slots__ = ("_chunk", "_failed", "_max", "_partial", "_pos", "_what")

    def __init__(self, max_size: int, what: str = "message") -> None:
        self._max = max_size
        self._what = what
        # Unconsumed bytes: first `_partial` (the start of a frame split across chunks), then
        # self._chunk[self._pos:] (the rest of the last fed chunk, never mutated).
        self._partial = bytearray()
        self._chunk: bytes | bytearray | memoryview = b""
        self._pos = 0
        self._failed = False

    @property
    def max_size(self) -> int:
        return self._max

    def buffered(self) -> int:
        return len(self._partial) + len(self._chunk) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return self.buffered() == 0

    @property
    def body_length(self) -> int | None:
        """The body size of the frame under way once its header is buffered, else None."""
        self._check()
        if self._partial:
            if len(self._partial) < LENGTH_PREFIX_SIZE:
                return None
            return self._size_of(self._partial[:LENGTH_PREFIX_SIZE])
        start = self._pos + LENGTH_PREFIX_SIZE
        if len(self._chunk) < start:
            return None
        return self._size_of(self._chunk[self._pos : start])

    def wanted(self) -> int:
        """How many more bytes complete the header or body under way (at least 1).

        Meaningful once `next_frame()` has returned None.
        """
        have = self.buffered()
        if have < LENGTH_PREFIX_SIZE:
            return LENGTH_PREFIX_SIZE - have
        length = self.body_length
        assert length is not None
        return max(1, LENGTH_PREFIX_SIZE + length - have)

    def fail(self) -> None:
        """Mark the stream as broken (its caller could not judge a body)."""
        self._failed = True

    def _check(self) -> None:
        if self._failed:
            raise LocalProtocolError(f"the {self._what} reader failed earlier")

    def _size_of(self, prefix: bytes | bytearray | memoryview) -> int:
        size = int.from_bytes(prefix, "big")
        if size > self._max:
            self._failed = True
            raise DecodeError(f"{self._what} of {size} bytes is above the {self._max}-byte limit")
        return size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes; the reader keeps a reference, so do not mutate `data` afterwards.

        Allowed only after `next_frame()` returned None.
        """
        self._check()
        if self._pos < len(self._chunk):
            raise LocalProtocolError("feed() called before the previous bytes were consumed")
        partial = self._partial
        if not partial:
            self._chunk, self._pos = data, 0
            return
        rest = memoryview(data)
        if len(partial) < LENGTH_PREFIX_SIZE:
            take = LENGTH_PREFIX_SIZE - len(partial)
            partial += rest[:take]
            rest = rest[take:]
        if len(partial) >= LENGTH_PREFIX_SIZE:
            need = LENGTH_PREFIX_SIZE + self._size_of(partial[:LENGTH_PREFIX_SIZE]) - len(partial)
            partial += rest[:need]
            rest = rest[need:]
        self._chunk, self._pos = rest, 0

    def next_frame(self) -> memoryview | None:
        """The next whole frame's body, or None until more bytes are fed."""
        self._check()
        partial = self._partial
        if partial:
            if len(partial) < LENGTH_PREFIX_SIZE:
                return None
            end = LENGTH_PREFIX_SIZE + self._size_of(partial[:LENGTH_PREFIX_SIZE])
            if len(partial) < end:
                return None
            # A fresh buffer for the next split frame; this one is handed out and dropped.
            self._partial = bytearray()
            return memoryview(partial)[LENGTH_PREFIX_SIZE:end]
        chunk, pos = self._chunk, self._pos
        start = pos + LENGTH_PREFIX_SIZE
        if len(chunk) < start:
            self._carry_over()
            return None
        end = start + self._size_of(chunk[pos:start])
        if len(chunk) < end:
            self._carry_over()
            return None
        self._pos = end
        return memoryview(chunk)[start:end]

    def _carry_over(self) -> None:
        # The rest of the chunk starts a frame that continues in the next feed.
        self._partial += self._chunk[self._pos :]
        self._chunk, self._pos = b"", 0
