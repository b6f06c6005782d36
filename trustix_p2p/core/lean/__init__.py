"""The lean layer: the project's rules over plain values, written once, quick to load.

Nix starts the post-build hook after every build and waits for it, so every module the hook
imports is start-up time added to every build.  This package holds everything the hook needs
from `trustix_p2p.core`, and it is the one place each of these rules is written:

* `storepath`: Nix's store path syntax, as fast yes/no checks and as checks that explain;
* `entry`: the log entry v1 value (`Entry`, its fields declared once, here), the rules each
  field obeys and the canonical leaf bytes;
* `nar`: the framing of the Nix ARchive format;
* `control`: the control socket's framing, the submit request and the reply checks.

The typed modules build on it and re-export it next to what only they have:
`trustix_p2p.core.storepath` (the attrs `StorePath`), `trustix_p2p.core.entry` (strict
decoding, the JSON form), `trustix_p2p.core.nar` (the reference serialiser and `NarHasher`)
and `trustix_p2p.control.protocol` (the attrs request classes).

Every module here is pure (no I/O, no clock, no randomness) and imports, at run time, only
the standard library's cheap modules (`re`, `struct`, `functools`, `collections`), msgpack,
`trustix_p2p.errors`, `trustix_p2p.core.nix32` and this package: never attrs, never `typing`
(importing it costs milliseconds), never anything that does.  Type annotations stay, and
`TYPE_CHECKING = False` (a name type checkers treat as true) guards what only they need.
tests/test_import_graph.py holds the layer to this.

`NamedTuple` below is the layer's record type: declared like `typing.NamedTuple` (one class
body with annotated fields, defaults and methods), so a value's fields are written once, but
built with `collections.namedtuple` and without importing `typing`.  Modules use it as

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from trustix_p2p.core.lean import NamedTuple

so type checkers see the real `typing.NamedTuple` and check the class as one.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["NamedTuple"]

# Called through a plain name: type checkers treat a direct `collections.namedtuple(...)` call
# as a declaration and want literal arguments.
_namedtuple: Callable[..., type] = collections.namedtuple

# What typing.NamedTuple refuses in a class body too: the tuple machinery itself.
_RESERVED = frozenset(
    {
        "__new__",
        "__init__",
        "__slots__",
        "__getnewargs__",
        "_fields",
        "_field_defaults",
        "_make",
        "_replace",
        "_asdict",
        "_source",
    }
)
_KEPT = frozenset({"__module__", "__qualname__", "__annotations__"})


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if not bases:  # `NamedTuple` itself
            return super().__new__(mcs, name, bases, namespace)
        if bases != (NamedTuple,):
            raise TypeError(f"{name}: a NamedTuple class can only inherit from NamedTuple")
        if "__classcell__" in namespace:
            # The class object `super()` would need is replaced below by the namedtuple.
            raise TypeError(f"{name}: NamedTuple methods cannot use super() or __class__")
        # With `from __future__ import annotations` the annotations are strings and cost
        # nothing; only their order (the fields') and the defaults matter here.
        annotations = dict(namespace.get("__annotations__", {}))
        defaults = []
        for field in annotations:
            if field in namespace:
                defaults.append(namespace[field])
            elif defaults:
                raise TypeError(f"{name}: field {field!r} without a default follows one with")
        cls = _namedtuple(
            name, tuple(annotations), defaults=defaults, module=namespace.get("__module__")
        )
        for key, value in namespace.items():
            if key in _RESERVED:
                raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
            if key not in _KEPT and key not in annotations:
                setattr(cls, key, value)
        cls.__qualname__ = namespace.get("__qualname__", name)
        cls.__annotations__ = annotations
        return cls


class NamedTuple(metaclass=_NamedTupleMeta):
    """Base of the lean layer's records; subclassing it builds a `collections.namedtuple`."""
