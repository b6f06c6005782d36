"""The log line format: one line per event, a short phrase, then the facts as key=value fields.

    2025-01-01 12:00:00,123 INFO trustix_p2p.node checkpoint signed node=alice log=9f3a... size=50

A call site passes its fields with `extra=kv(...)`; a `ContextLogger` adds the fields it was
bound to (the node's name, say) in front of them.  `KVFormatter` renders a record's fields in
their order: str(value), bytes as hex, and a value that is empty or holds whitespace, `=`, `"`
or a control character in double quotes with `"` and `\\` escaped (and control characters
written as escapes, so a field taken from a peer can never start a new line).  A traceback
follows its line unchanged.

Fields carry public facts only: keys as their public half (base64), log ids, sizes, addresses,
reasons.  Never a private key, a seed or anything derived from a handshake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["ContextLogger", "KVFormatter", "configure_logging", "kv", "render_value"]

_LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c == " " or c.isprintable():
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def render_value(value: object) -> str:
    """One field's value as it appears after `key=`."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    text = str(value)
    if text and not any(c.isspace() or c in '="' or not c.isprintable() for c in text):
        return text
    return '"' + "".join(_escape_char(c) for c in text) + '"'


def _one_line(message: str) -> str:
    """The message with line breaks and other control characters escaped."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() or c in " \t" else _escape_char(c) for c in message)


class KVFormatter(logging.Formatter):
    """`<asctime> <LEVEL> <logger name> <message> key=value...`, then any traceback."""

    def __init__(self, datefmt: str | None = None) -> None:
        super().__init__(_LINE_FORMAT, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = f"{record.asctime} {record.levelname} {record.name} {_one_line(record.message)}"
        fields = getattr(record, "kv", None)
        if isinstance(fields, Mapping) and fields:
            line += "".join(f" {key}={render_value(value)}" for key, value in fields.items())
        return line


def kv(**fields: object) -> dict[str, Any]:
    """`extra=kv(peer=..., size=...)`: a log call's fields."""
    return {"kv": fields}


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger with bound fields (`node=alice`), put before each call's own `extra=kv(...)`
    fields; a call's field replaces a bound one of the same key."""

    def __init__(self, logger: logging.Logger, fields: Mapping[str, object] | None = None) -> None:
        super().__init__(logger, None)
        self.fields: dict[str, object] = dict(fields or {})

    def bind(self, **more: object) -> ContextLogger:
        """A logger on the same underlying logger with `more` fields bound as well."""
        return ContextLogger(self.logger, {**self.fields, **more})

    def on(self, logger: logging.Logger | str) -> ContextLogger:
        """The same bound fields on another logger (by name or itself)."""
        target = logging.getLogger(logger) if isinstance(logger, str) else logger
        return ContextLogger(target, self.fields)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra") or {}
        call = extra.get("kv") or {}
        kwargs["extra"] = {**extra, "kv": {**self.fields, **call}}
        return msg, kwargs


_HANDLER_MARK = "_trustix_kv_handler"


def configure_logging(level: int | str) -> None:
    """Log to stderr in the KVFormatter format at `level` (a number or a name such as
    "warning").  Replaces a handler an earlier call installed; leaves others alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(KVFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
