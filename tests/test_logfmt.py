"""The log line format (`trustix_p2p.logfmt`): fields, quoting, bound loggers, tracebacks."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from tests.logs import parse_line
from trustix_p2p.logfmt import ContextLogger, KVFormatter, configure_logging, kv, render_value


def record(msg: str = "something happened", *args: object, **fields: object) -> logging.LogRecord:
    r = logging.LogRecord("trustix_p2p.test", logging.INFO, __file__, 1, msg, args, None)
    if fields:
        r.kv = fields
    return r


def line(msg: str = "something happened", *args: object, **fields: object) -> str:
    return KVFormatter().format(record(msg, *args, **fields))


def test_a_line_is_time_level_logger_message_then_fields_in_order() -> None:
    text = line("checkpoint signed", node="alice", log="ab" * 32, size=50)
    date, time_, rest = text.split(" ", 2)
    assert len(date) == 10 and date[4] == "-" and time_.count(":") == 2
    assert rest == f"INFO trustix_p2p.test checkpoint signed node=alice log={'ab' * 32} size=50"
    assert parse_line(text) == (
        "INFO",
        "trustix_p2p.test",
        "checkpoint signed",
        {"node": "alice", "log": "ab" * 32, "size": "50"},
    )


def test_a_line_without_fields_is_just_the_message() -> None:
    assert line("node ready").endswith(" INFO trustix_p2p.test node ready")
    assert line("%d things", 3).endswith(" 3 things")


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("alice", "alice"),
        (42, "42"),
        (1.5, "1.5"),
        (None, "None"),
        ("", '""'),
        ("two words", '"two words"'),
        ("tab\there", '"tab\\there"'),
        ("a=b", '"a=b"'),
        ("pk+/Base64Key=", '"pk+/Base64Key="'),
        ('say "hi"', '"say \\"hi\\""'),
        ('back\\slash "q"', '"back\\\\slash \\"q\\""'),
        ("back\\slash", "back\\slash"),  # nothing to quote: left as it is
        ("line\nbreak", '"line\\nbreak"'),
        ("cr\rlf", '"cr\\rlf"'),
        ("esc\x1b[31m", '"esc\\x1b[31m"'),
        ("wide\u2028sep", '"wide\\u2028sep"'),
        ("127.0.0.1:7946", "127.0.0.1:7946"),
        (b"\x00\xffab", "00ff6162"),
        (bytearray(b"\x01"), "01"),
        (ValueError("disk full"), '"disk full"'),
    ],
)
def test_values_are_quoted_and_escaped_only_when_they_must_be(value: object, rendered: str) -> None:
    assert render_value(value) == rendered
    assert line("x", k=value).endswith(f" x k={rendered}")


def test_quoted_values_parse_back() -> None:
    nasty = 'a "quoted" \\ value=1\nsecond line'
    text = line("x", reason=nasty, n=1)
    assert "\n" not in text
    parsed = parse_line(text)
    assert parsed is not None and parsed[3] == {"reason": nasty, "n": "1"}


def test_a_message_never_spans_lines() -> None:
    text = line("first\nsecond\r%s", "third\x1b")
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.endswith(" first\\nsecond\\rthird\\x1b")


def test_an_exception_keeps_its_traceback_after_the_line() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        r = logging.LogRecord(
            "trustix_p2p.test", logging.ERROR, __file__, 1, "handler failed", (), sys.exc_info()
        )
    r.kv = {"peer": "abc="}
    first, *rest = KVFormatter().format(r).split("\n")
    assert first.endswith(' ERROR trustix_p2p.test handler failed peer="abc="')
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: a bug"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("trustix_p2p.test.logfmt")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_kv_is_the_extra_of_a_plain_logger_call(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    assert kv(a=1, b="x") == {"kv": {"a": 1, "b": "x"}}
    logger.info("plain", extra=kv(size=3))
    assert records[0].kv == {"size": 3}  # type: ignore[attr-defined]


def test_a_context_logger_puts_its_fields_first_and_a_call_site_field_wins(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    log = ContextLogger(logger, {"node": "alice", "peer": "bound"})
    log.info("no fields of its own")
    log.warning("some", extra=kv(size=5, peer="call-site"))
    log.debug("other extra too", extra={"custom": 1, **kv(n=2)})
    assert [r.kv for r in records] == [  # type: ignore[attr-defined]
        {"node": "alice", "peer": "bound"},
        {"node": "alice", "peer": "call-site", "size": 5},
        {"node": "alice", "peer": "bound", "n": 2},
    ]
    assert records[2].custom == 1  # type: ignore[attr-defined]
    assert [r.levelname for r in records] == ["INFO", "WARNING", "DEBUG"]
    assert log.fields == {"node": "alice", "peer": "bound"}  # not changed by the calls
    text = KVFormatter().format(records[1])
    assert text.endswith(" WARNING trustix_p2p.test.logfmt some node=alice peer=call-site size=5")


def test_bind_adds_fields_and_leaves_the_parent_alone(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    parent = ContextLogger(logger, {"node": "alice"})
    child = parent.bind(peer="k=", addr="127.0.0.1:1")
    grandchild = child.bind(addr="127.0.0.1:2")
    child.info("child", extra=kv(reason="closed"))
    parent.info("parent")
    grandchild.info("grandchild")
    assert [r.kv for r in records] == [  # type: ignore[attr-defined]
        {"node": "alice", "peer": "k=", "addr": "127.0.0.1:1", "reason": "closed"},
        {"node": "alice"},
        {"node": "alice", "peer": "k=", "addr": "127.0.0.1:2"},
    ]
    assert isinstance(child, ContextLogger) and child.logger is logger


def test_on_moves_the_fields_to_another_logger(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    elsewhere = ContextLogger(logging.getLogger("trustix_p2p.elsewhere"), {"node": "bob"})
    moved = elsewhere.on("trustix_p2p.test.logfmt")
    assert moved.logger is logger
    moved.info("moved", extra=kv(x=1))
    assert records[0].name == "trustix_p2p.test.logfmt"
    assert records[0].kv == {"node": "bob", "x": 1}  # type: ignore[attr-defined]


def test_exception_through_a_context_logger_carries_fields_and_traceback(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    log = ContextLogger(logger, {"node": "alice"})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("failed", extra=kv(request="StatusRequest"))
    text = KVFormatter().format(records[0])
    assert text.split("\n")[0].endswith(
        " ERROR trustix_p2p.test.logfmt failed node=alice request=StatusRequest"
    )
    assert "ZeroDivisionError: division by zero" in text


def test_configure_logging_installs_one_kv_handler_on_the_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    try:
        configure_logging("warning")
        configure_logging(logging.INFO)  # a second call replaces the first handler
        ours = [h for h in root.handlers if h not in before_handlers]
        assert len(ours) == 1 and isinstance(ours[0].formatter, KVFormatter)
        assert root.level == logging.INFO
        ContextLogger(logging.getLogger("trustix_p2p.test.root"), {"node": "n"}).info(
            "hello", extra=kv(k="v w")
        )
        logging.getLogger("trustix_p2p.test.root").debug("not at info")
    finally:
        for handler in root.handlers[:]:
            if handler not in before_handlers:
                root.removeHandler(handler)
        root.setLevel(before_level)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert parse_line(lines[0]) == (
        "INFO",
        "trustix_p2p.test.root",
        "hello",
        {"node": "n", "k": "v w"},
    )
