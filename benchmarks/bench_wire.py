"""Decoding speed and memory of the strict wire reader, next to msgpack on the same bytes.

    .venv/bin/python benchmarks/bench_wire.py [--quick]

Each case is one message body, decoded by the schema-directed reader (`wire.decode_body`, or
`protocol.decode_request` for the control frame) and by `msgpack.unpackb` with the options
the msgpack-first decoder used (maps and extension types refused, nothing else bounded), in
the same run and interleaved, best of 3 rounds:

1. `Ping`: the smallest message, where the cost is per message, not per byte.
2. A reply holding 1,000 leaves of 250..350 bytes (`ListOf(Bytes)`): the case the reader's
   bins fast path is for.  Target: the same order of time as msgpack.
3. Hostile bodies of 4 MiB: empty arrays where a Ping's fields go, nested one-item arrays
   where an integer goes, empty arrays as the items of a list of leaves, and a control
   submission of 100,000 valid leaves whose last "leaf" is a string (the reader walks every
   header before it finds it).  The reader refuses each; msgpack builds what it can first.

For each case the table gives messages/s, MB/s of body and the peak memory tracemalloc sees
while one decode runs (tracemalloc slows allocation, so it is measured apart from the rates).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable

import attrs
import msgpack

from trustix_p2p.control import protocol
from trustix_p2p.core import wire
from trustix_p2p.core.entry import MAX_ENTRY_BYTES
from trustix_p2p.errors import DecodeError

MiB = 1 << 20

# A registry of its own, so benchmark messages never leak into the real protocol.
BENCH_REGISTRY = wire.MessageRegistry()


@BENCH_REGISTRY.register(1)
@attrs.frozen
class Ping(wire.Message):
    nonce: int = wire.field(wire.Integer())


@BENCH_REGISTRY.register(20)
@attrs.frozen
class Leaves(wire.Message):
    leaves: tuple[bytes, ...] = wire.field(wire.ListOf(wire.Bytes(1, MAX_ENTRY_BYTES), 10_000))


def _old_unpackb(body: bytes) -> object:
    return msgpack.unpackb(
        body, raw=False, use_list=True, strict_map_key=True, max_map_len=0, max_ext_len=0
    )


def _refusing(decode: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def run(body: bytes) -> object:
        try:
            return decode(body)
        except (DecodeError, ValueError):  # msgpack's errors are ValueErrors
            return None

    return run


@attrs.frozen
class Case:
    name: str
    body: bytes
    ours: Callable[[bytes], object]
    hostile: bool = False


def cases() -> list[Case]:
    rng = random.Random(7)
    leaves = tuple(rng.randbytes(rng.randint(250, 350)) for _ in range(1000))
    ping = bytes(wire.encode_message(Ping(123_456_789), registry=BENCH_REGISTRY)[4:])
    reply = bytes(wire.encode_message(Leaves(leaves), registry=BENCH_REGISTRY)[4:])
    assert wire.decode_body(reply, registry=BENCH_REGISTRY) == Leaves(leaves)

    def decode(body: bytes) -> object:
        return wire.decode_body(body, registry=BENCH_REGISTRY)

    fill = 4 * MiB
    count = protocol.MAX_LEAVES_PER_SUBMIT
    per_leaf = (fill // count) - 2  # bin8 header: 2 bytes
    submit = msgpack.packb(
        ["submit", [b"x" * per_leaf] * (count - 1) + ["not a leaf"]], use_bin_type=True
    )
    hostile = [
        Case(
            "hostile: empty arrays as Ping fields",
            b"\xdd" + (fill + 1).to_bytes(4, "big") + b"\x01" + b"\x90" * fill,
            _refusing(decode),
            hostile=True,
        ),
        Case(
            "hostile: nested arrays as Ping.nonce",
            b"\x92\x01" + b"\x91" * fill + b"\x00",
            _refusing(decode),
            hostile=True,
        ),
        Case(
            "hostile: empty arrays as leaves",
            b"\x92\x14\xdd" + fill.to_bytes(4, "big") + b"\x90" * fill,
            _refusing(decode),
            hostile=True,
        ),
        Case(
            "hostile: submit, last leaf a str",
            submit,
            _refusing(protocol.decode_request),
            hostile=True,
        ),
    ]
    return [
        Case("Ping", ping, decode),
        Case("1,000 leaves of 250..350 bytes", reply, decode),
        *hostile,
    ]


def _seconds_per_call(fn: Callable[[bytes], object], body: bytes, budget: float) -> float:
    """Best of 3 rounds, each of as many calls as fit in about `budget` seconds.

    A call slower than the budget (msgpack on a hostile body takes about a second) is timed
    twice, not three rounds over: the point it makes does not need the precision.
    """
    start = time.perf_counter()
    fn(body)
    best = time.perf_counter() - start
    if best >= budget:
        start = time.perf_counter()
        fn(body)
        return min(best, time.perf_counter() - start)
    calls = max(1, int(budget / max(best, 1e-7)))
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn(body)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _peak(fn: Callable[[bytes], object], body: bytes) -> int:
    tracemalloc.start()
    try:
        fn(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _figure(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x >= 0.1 else f"1/{1 / x:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds")
    args = parser.parse_args()
    budget = 0.05 if args.quick else 0.2

    header = (
        f"{'case':<38} {'body':>9}  {'decoder':<15} {'msgs/s':>9} {'MB/s':>9} "
        f"{'time':>9} {'peak mem':>10}"
    )
    rule = "-" * len(header)
    print(f"{rule}\n{header}\n{rule}")
    msgpack_first = _refusing(_old_unpackb)
    for case in cases():
        body = case.body
        # Interleaved: msgpack, the reader, msgpack again (the better of its two counts).
        theirs = _seconds_per_call(msgpack_first, body, budget)
        ours = _seconds_per_call(case.ours, body, budget)
        if theirs < budget:
            theirs = min(theirs, _seconds_per_call(msgpack_first, body, budget))
        rows = [("strict reader", ours, case.ours), ("msgpack.unpackb", theirs, msgpack_first)]
        for label, seconds, fn in rows:
            first = label == "strict reader"
            name, size = (case.name, _size(len(body))) if first else ("", "")
            ratio = _ratio(seconds / theirs) if first else "1x"
            print(
                f"{name:<38} {size:>9}  {label:<15} {_figure(1 / seconds):>9} "
                f"{_figure(len(body) / seconds / 1e6):>9} {ratio:>9} {_size(_peak(fn, body)):>10}"
            )
    print(rule)
    print(
        "time: per message, relative to msgpack.unpackb on the same bytes in the same run.\n"
        "peak mem: tracemalloc's peak during one decode (the body itself is not counted)."
    )


if __name__ == "__main__":
    main()
