"""The lean layer's `NamedTuple`: the same class as `typing.NamedTuple` builds, without typing.

Type checkers are shown `typing.NamedTuple` wherever the lean one is used at run time, so the
two must agree on everything a caller can see: fields, defaults, methods, the tuple behaviour,
and what a class body may not contain.
"""

from __future__ import annotations

import pickle
import typing

import pytest

from trustix_p2p.core import lean


# The same class body twice (at module level, so that pickle finds the classes by name).
class LeanPoint(lean.NamedTuple):  # type: ignore[misc]
    """A point."""

    x: int
    y: int = 0
    label: str = "p"

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class TypingPoint(typing.NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = "p"

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


@pytest.mark.parametrize("cls", [LeanPoint, TypingPoint])
def test_a_lean_namedtuple_behaves_as_typings(cls: type) -> None:
    p = cls(3, -4)
    assert p == (3, -4, "p")
    assert (p.x, p.y, p.label, p.norm1()) == (3, -4, "p", 7)
    assert cls._fields == ("x", "y", "label")
    assert cls._field_defaults == {"y": 0, "label": "p"}
    assert list(cls.__annotations__) == ["x", "y", "label"]
    assert repr(p) == f"{cls.__name__}(x=3, y=-4, label='p')"
    assert cls.__doc__ == "A point."
    assert type(p._replace(x=1)) is cls
    assert pickle.loads(pickle.dumps(p)) == p
    assert isinstance(p, tuple)
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.z = 5  # no __dict__: the class has empty slots, as a namedtuple does


def test_lean_and_typing_namedtuples_build_the_same_class() -> None:
    assert (LeanPoint.__qualname__, TypingPoint.__qualname__) == ("LeanPoint", "TypingPoint")
    assert LeanPoint.__module__ == TypingPoint.__module__ == __name__
    assert LeanPoint.__mro__[1:] == TypingPoint.__mro__[1:] == (tuple, object)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("x: int = 0\n    y: int", TypeError),  # a field without a default after one with
        ("x: int\n    __slots__ = ()", AttributeError),
        ("x: int\n    def _replace(self): ...", AttributeError),
        # The class a method's super() needs is not the one the body built (typing: RuntimeError).
        ("x: int\n    def f(self):\n        return super()", (TypeError, RuntimeError)),
    ],
)
def test_a_lean_namedtuple_refuses_what_typing_refuses(
    body: str, error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    for base in (lean.NamedTuple, typing.NamedTuple):
        namespace = {"Base": base}
        source = f"from __future__ import annotations\nclass C(Base):\n    {body}\n"
        with pytest.raises(error):
            exec(source, namespace)


def test_a_lean_namedtuple_has_no_other_base() -> None:
    with pytest.raises(TypeError, match="only inherit"):

        class Bad(lean.NamedTuple, int):  # type: ignore[misc]
            x: int
