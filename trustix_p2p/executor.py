"""Where blocking storage calls run: the one seam between the node and threads.

A real node runs store calls in a worker thread (`ThreadExecutor`) so that a slow disk never
stalls the event loop; a node in virtual time (`trio.testing.MockClock`, the simulation
harness) runs them inline (`InlineExecutor`), because a thread's real time would let virtual
timers fire out of order and a run could not be replayed.  Either way a node's store calls
never overlap: the thread executor runs one call at a time per node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TypeVar

import trio

__all__ = ["Executor", "InlineExecutor", "ThreadExecutor"]

T = TypeVar("T")


class Executor(abc.ABC):
    @abc.abstractmethod
    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` and return its result (or raise its exception)."""


class ThreadExecutor(Executor):
    """One worker thread call at a time (the store is not safe for concurrent use)."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)


class InlineExecutor(Executor):
    """Call inline, after a checkpoint (so a call is still a scheduling point)."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)
