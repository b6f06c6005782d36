"""Helpers for tests that look at log lines: records rendered as the node writes them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from trustix_p2p.logfmt import KVFormatter

#: `<date> <time> <LEVEL> <logger> <message> key=value...`: the date, time, level and logger
#: name, then the rest (the message and its fields).
LINE = re.compile(
    r"(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d,\d{3}) "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>\S+) (?P<rest>.*)"
)
#: One ` key=value` field at the end of a line: a bare value or a double-quoted one.
_FIELD = r' (?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"=]+)'
_LAST_FIELD = re.compile(_FIELD + r"$")


def render(records: Iterable[logging.LogRecord]) -> str:
    """The records as lines of the node's log format."""
    formatter = KVFormatter()
    return "\n".join(formatter.format(r) for r in records)


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t"}


def unquote(value: str) -> str:
    """A field's value as it was logged (quotes and escapes undone)."""
    if not value.startswith('"'):
        return value
    return re.sub(
        r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)",
        lambda m: chr(int(m[1][1:], 16)) if len(m[1]) > 1 else _UNESCAPE.get(m[1], m[1]),
        value[1:-1],
    )


def parse_line(line: str) -> tuple[str, str, str, dict[str, str]] | None:
    """(level, logger, message, fields) of one line, or None if it is not in the format."""
    m = LINE.fullmatch(line)
    if m is None:
        return None
    rest = m["rest"]
    fields: list[tuple[str, str]] = []
    while (f := _LAST_FIELD.search(rest)) is not None:
        fields.append((f["key"], unquote(f["value"])))
        rest = rest[: f.start()]
    if not rest:
        return None  # no message
    return m["level"], m["logger"], rest, dict(reversed(fields))


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """A record's key=value fields (empty if it has none)."""
    kv = getattr(record, "kv", None)
    return dict(kv) if isinstance(kv, dict) else {}
